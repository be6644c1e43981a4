"""``jablate.incremental_report``: the incremental engine's analysis of a model, as a
table (the front door of :mod:`jablate.incremental`)."""

from typing import Any

from jablate._core.errors import InputError
from jablate.api.predict import prepare
from jablate.incremental.run import evaluator
from jablate.models.frontdoor import check_int, inputs, is_torch_module

__all__ = ["incremental_report"]


def incremental_report(model: Any, X: Any, width: int) -> str:
    """The analysis of ``model`` at regions of ``width``, as a readable table.

    Parameters
    ----------
    model: flax module, callable, pure model, or torch.nn.Module (translated first)
    X: array, shape=(N, A, L)
        Example inputs (their shape and dtype are used).
    width: int
        The region width, ``1 <= width <= L``.

    Returns
    -------
    table: str
        One row per equation that depends on the input: its mode (window, delta,
        full), window width, reach on each side, FLOPs full and incremental, and why
        windowing stops; then the predicted FLOP saving and the cache per sequence.

    Raises
    ------
    ValueError
        Bad ``X`` or ``width``, or a model jablate cannot run.
    """
    inp = inputs(X)
    width = check_int(width, "width", minimum=1)
    if width > inp.X.shape[-1]:
        raise InputError(f"width must be at most the sequence length {inp.X.shape[-1]}; "
                         f"got {width}.")
    inp, bound, _ = prepare(model, inp, backend="jax" if is_torch_module(model) else None,
                            what=None)  # it analyses the program, evaluates nothing
    if not bound.jittable:
        raise InputError("incremental_report needs a JAX model; translate a torch model.")
    return evaluator(bound, inp.X, inp.args, width)["inc"].summary.table()
