"""Result containers, named as tangermeme names them."""

from typing import Any, NamedTuple


class PerturbationResult(NamedTuple):
    """Predictions before and after a perturbation of every sequence.

    Unpacks as ``(y_before, y_after)``. ``y_before`` has shape ``(N, ...)``
    and ``y_after`` ``(N, n, ...)``; each is a list of such arrays for a
    multi-output model.
    """

    y_before: Any
    y_after: Any


class PerturbationAnnotationsResult(NamedTuple):
    """Predictions before and after ablating each of ``k`` annotations.

    Unpacks as ``(y_befores, y_afters)`` with shapes ``(k, 1, ...)`` and
    ``(k, 1, n, ...)``; lists of such arrays for a multi-output model.
    """

    y_befores: Any
    y_afters: Any


class PerturbationSummaryResult(NamedTuple):
    """Per-sequence summary over the ``n`` shuffles (``reduce="mean_std"``).

    ``y_before`` has shape ``(N, ...)``; ``y_after_mean`` and ``y_after_std``
    ``(N, ...)`` (population standard deviation over the shuffles). Lists of
    such arrays for a multi-output model.
    """

    y_before: Any
    y_after_mean: Any
    y_after_std: Any


class PerturbationAnnotationsSummaryResult(NamedTuple):
    """Per-annotation summary over the ``n`` shuffles (``ablate_annotations(...,
    reduce="mean_std")``).

    ``y_befores``, ``y_after_means`` and ``y_after_stds`` have shape ``(k, 1, ...)``, as
    ``y_befores`` of :class:`PerturbationAnnotationsResult` (population standard
    deviation over the shuffles, ``ddof=0``; :func:`jablate.api.effects.from_mean_std` gives
    the tables' statistics). Lists of such arrays for a multi-output model.
    """

    y_befores: Any
    y_after_means: Any
    y_after_stds: Any
