"""Effect statistics of an ablation: the drop, its spread over the shuffles, the z-score.

One definition for every table and summary jablate computes (``jablate ablate``'s table,
``jablate demo``, ``jablate hits``' ``effects.tsv`` and :func:`jablate.genome.hits.hit_effects`).
:func:`jablate.ablate` itself returns the model's outputs as they are, as tangermeme does.

For each region, with ``before`` the prediction on the sequence as it is and ``after`` the
``n`` predictions after shuffling the region:

* ``drop = before - mean(after)``.
* ``spread`` is the sample standard deviation of ``after`` (``ddof=1``); ``nan`` when
  ``n`` is 1.
* ``z = drop / spread``, except that ``z`` is ``nan`` where it would mean nothing:

  - **the shuffle cannot change the region** (its arrangement count is 1: a homopolymer
    under the mono shuffle, ``ACACAC`` under the dinucleotide shuffle, an all-N stretch):
    ``drop`` and ``spread`` are then exactly 0 and ``z`` is ``nan``, whatever float
    rounding made of the predictions;
  - **the spread is below float resolution**: ``spread < RESOLUTION * eps * scale``, where
    ``eps`` is the machine epsilon of the outputs' dtype (``2**-23`` for float32), and
    ``scale`` the largest absolute value among the row's ``before`` and ``after`` (or, for
    a sum over positions, the sum of absolute values). Shuffles whose predictions agree to
    rounding carry no spread to divide by, and a ``drop`` of rounding size over it would
    be an "infinitely significant" nothing. ``z`` is never ``±inf``.

``reduce="mean_std"`` in :func:`jablate.ablate` returns the *population* standard deviation
(``ddof=0``); :func:`from_mean_std` turns such a result into these statistics
(``ddof=1``), so no table mixes the two.
"""

from typing import Any, NamedTuple, Optional

import numpy

from jablate._core.dtypes import dtype_kind, resolution
from jablate._core.errors import InputError

__all__ = [
    "RESOLUTION",
    "Effects",
    "shuffle_effects",
    "from_mean_std",
    "dtype_kind",
    "float_resolution",
    "resolution",
    "changeable",
    "arrangements",
]

#: Multiples of the outputs' machine epsilon (times their scale) below which a spread over
#: the shuffles counts as none: ``z`` is then ``nan``. 16 ulps leaves room for the rounding
#: of a model's summations, while any spread a float32 model can resolve stays above it.
RESOLUTION = 16.0


class Effects(NamedTuple):
    """Per-region effect statistics; each field has shape (k,), float64.

    Attributes
    ----------
    drop : numpy.ndarray
        ``before - mean(after)``; exactly 0 where the region cannot change.
    spread : numpy.ndarray
        Sample standard deviation (``ddof=1``) of ``after``; ``nan`` when n is 1, exactly 0
        where the region cannot change.
    z : numpy.ndarray
        ``drop / spread``; ``nan`` where n is 1, the region cannot change, or the spread is
        below float resolution (see :mod:`jablate.api.effects`). Never ``±inf``.
    """

    drop: numpy.ndarray
    spread: numpy.ndarray
    z: numpy.ndarray


def float_resolution(*arrays: Any) -> float:
    """The machine epsilon that bounds the rounding of outputs in these arrays.

    Parameters
    ----------
    *arrays : array-like
        The model's outputs (before and after), in the dtype the model gave them
        (bfloat16 included: ``2**-7``).

    Returns
    -------
    eps : float
        The coarsest epsilon among the arrays' float dtypes; float32's (``2**-23``) when
        none is a float (integers, or values already widened without a dtype).
    """
    names = [numpy.asarray(a).dtype.name for a in arrays]
    eps = [resolution(name) for name in names if dtype_kind(name) == "f"]
    return max(eps) if eps else float(numpy.finfo(numpy.float32).eps)


def _z(drop, spread, scale, eps, can_change):
    tiny = RESOLUTION * eps * scale
    defined = numpy.isfinite(spread) & (spread > tiny) & can_change
    z = numpy.full(drop.shape, numpy.nan)
    z[defined] = drop[defined] / spread[defined]
    return z


def _can_change(changes, k):
    if changes is None:
        return numpy.ones(k, dtype=bool)
    changes = numpy.asarray(changes, dtype=bool).reshape(-1)
    if changes.shape != (k,):
        raise InputError(f"changes must hold one flag per region ({k}); got shape "
                         f"{changes.shape}.")
    return changes


def shuffle_effects(before: Any, after: Any, changes: Optional[Any] = None,
                    scale: Optional[Any] = None, eps: Optional[float] = None) -> Effects:
    """The drop, its spread over the shuffles and the z-score, per region.

    Parameters
    ----------
    before : array-like, shape (k,)
        The prediction for each of k unshuffled sequences (or regions).
    after : array-like, shape (k, n)
        The prediction after each of the n shuffles.
    changes : array-like of bool, shape (k,), optional
        Whether the shuffle can change each region (its arrangement count is above 1; see
        :func:`changeable`). Where False, ``drop`` and ``spread`` are exactly 0 and ``z`` is
        ``nan``. Default None: every region can change.
    scale : array-like, shape (k,), optional
        The magnitude the float resolution is measured against. Default: the largest
        absolute value among ``before`` and ``after`` of each row. Give the sum of absolute
        values when ``before`` and ``after`` are sums.
    eps : float, optional
        The outputs' machine epsilon. Default: :func:`float_resolution` of ``before`` and
        ``after`` (give it when they were widened to float64 from the model's float32).

    Returns
    -------
    Effects(drop, spread, z)
        Each of shape (k,), float64; see :mod:`jablate.api.effects` for the rules.

    Raises
    ------
    ValueError
        When the shapes do not fit: ``before`` (k,), ``after`` (k, n), ``changes`` (k,).
    """

    eps = float_resolution(before, after) if eps is None else float(eps)
    before = numpy.asarray(before, dtype=numpy.float64)
    after = numpy.asarray(after, dtype=numpy.float64)
    if before.ndim != 1 or after.ndim != 2 or after.shape[0] != before.shape[0]:
        raise InputError(f"before must have shape (k,) and after (k, n); got {before.shape} "
                         f"and {after.shape}.")
    k, n = after.shape
    can_change = _can_change(changes, k)
    if scale is None:
        scale = numpy.maximum(numpy.abs(before), numpy.abs(after).max(axis=1, initial=0.0))
    drop = before - after.mean(axis=1)
    spread = after.std(axis=1, ddof=1) if n > 1 else numpy.full(k, numpy.nan)
    drop = numpy.where(can_change, drop, 0.0)
    spread = numpy.where(can_change | (n < 2), spread, 0.0)
    return Effects(drop, spread, _z(drop, spread, numpy.asarray(scale, numpy.float64), eps,
                                    can_change))


def from_mean_std(before: Any, mean: Any, std: Any, n: int,
                  changes: Optional[Any] = None) -> Effects:
    """:func:`shuffle_effects` from a ``reduce="mean_std"`` result.

    ``reduce="mean_std"`` keeps the mean and the population standard deviation
    (``ddof=0``) of the ``n`` shuffled predictions; the tables' spread is the sample
    standard deviation (``ddof=1``), ``std * sqrt(n / (n - 1))``.

    Parameters
    ----------
    before : array-like, shape (k,)
        The predictions before shuffling.
    mean, std : array-like, shape (k,)
        ``y_after_mean`` and ``y_after_std`` of :func:`jablate.ablate` with
        ``reduce="mean_std"``.
    n : int
        The number of shuffles they summarise.
    changes : array-like of bool, shape (k,), optional
        As in :func:`shuffle_effects`.

    Returns
    -------
    Effects(drop, spread, z)
        As :func:`shuffle_effects` on the n predictions would return (to rounding); the
        float resolution is measured against ``max(|before|, |mean|)``.

    Raises
    ------
    ValueError
        When ``n`` is not a positive integer or the shapes differ.
    """

    if isinstance(n, bool) or not isinstance(n, (int, numpy.integer)) or n < 1:
        raise InputError(f"n must be a positive integer; got {n!r}.")
    eps = float_resolution(before, mean)
    before = numpy.asarray(before, dtype=numpy.float64)
    mean = numpy.asarray(mean, dtype=numpy.float64)
    std = numpy.asarray(std, dtype=numpy.float64)
    if not (before.shape == mean.shape == std.shape) or before.ndim != 1:
        raise InputError(f"before, mean and std must have one shape (k,); got "
                         f"{before.shape}, {mean.shape} and {std.shape}.")
    can_change = _can_change(changes, before.shape[0])
    drop = numpy.where(can_change, before - mean, 0.0)
    spread = std * numpy.sqrt(n / (n - 1)) if n > 1 else numpy.full(before.shape, numpy.nan)
    spread = numpy.where(can_change | (n < 2), spread, 0.0)
    scale = numpy.maximum(numpy.abs(before), numpy.abs(mean))
    return Effects(drop, spread, _z(drop, spread, scale, eps, can_change))


def arrangements(shuffle_fn: Any, X: Any, annotations: Any) -> numpy.ndarray:
    """How many distinct sequences the shuffle can make of each region.

    Parameters
    ----------
    shuffle_fn : callable
        ``jablate.shuffle`` or ``jablate.dinucleotide_shuffle``.
    X : array-like, shape (N, A, L)
        One-hot sequences (all-zero columns are unknown bases, a symbol of their own).
        Counted on JAX's CPU backend: a JAX array there where it lives, one on an
        accelerator copied to the host (never queued behind the accelerator's work).
    annotations : array-like of int, shape (k, 3)
        Rows ``(example_idx, start, end)``, ``end`` exclusive.

    Returns
    -------
    counts : numpy.ndarray of float64, shape (k,)
        The number of arrangements (``inf`` when it overflows float64): for the mono
        shuffle the multinomial ``W! / prod c_a!`` of the region's symbol counts, for the
        dinucleotide shuffle the number of sequences with the region's first and last
        symbols and dinucleotide counts. 1 means every shuffle equals the original (a
        homopolymer, an all-N stretch; ``ACAC`` under the dinucleotide shuffle).

    Raises
    ------
    ValueError
        When ``shuffle_fn`` is not one of jablate's shuffles (a foreign shuffle's
        arrangements cannot be counted), or an annotation names a sequence outside ``X``
        or a region outside ``[0, L)`` (or ``end <= start``).
    """

    from jablate.api.ersatz import method_of

    method = method_of(shuffle_fn, refuse=True)
    if method is None:
        raise InputError(f"shuffle_fn {shuffle_fn!r} is not one of jablate's shuffles; "
                         "the arrangements of a foreign shuffle cannot be counted.")
    if numpy.size(annotations) == 0:
        return numpy.zeros(0, dtype=numpy.float64)
    from jablate.models.frontdoor import annotations as checked

    shape = numpy.shape(X)  # reads .shape where there is one (JAX, torch), no copy
    ann = checked(annotations, shape[0], shape[-1])  # 0 <= start < end <= L, rows in X
    return numpy.asarray(method.count_arrangements(X, ann[:, 0], ann[:, 1], ann[:, 2]),
                         dtype=numpy.float64)


def changeable(shuffle_fn: Any, X: Any, annotations: Any) -> numpy.ndarray:
    """Which regions the shuffle can change: ``arrangements(...) > 1``.

    Parameters
    ----------
    shuffle_fn, X, annotations
        As for :func:`arrangements`.

    Returns
    -------
    changes : numpy.ndarray of bool, shape (k,)
        False where every shuffle of the region equals the original.

    Raises
    ------
    ValueError
        As :func:`arrangements`.
    """

    return arrangements(shuffle_fn, X, annotations) > 1
