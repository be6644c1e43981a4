"""Per-sequence sums of a model's outputs, computed where the model runs, exact to float64.

``jablate ablate``'s table sums an output with several values per sequence (a profile, several
tasks) over its values, for every shuffle. Bringing every shuffle's output to the host for that
costs ``k * n * L`` numbers per head (gigabytes for a BED file of peaks and a profile model); a
float32 sum on the device costs rounding of about ``1e-7`` of the total, which moves drops that
are a few ``1e-6`` of the total by several per cent. :class:`DeviceSums` returns each sum as
two floats of the output's dtype, ``hi + lo``, from a pairwise *compensated* summation (Knuth's
error-free TwoSum at every addition of the tree, no loop: ``log2(L)`` levels of elementwise
operations), so that ``float64(hi) + float64(lo)`` equals the float64 sum of the values to about
``depth * eps**2`` of their absolute sum: the same table as summing every kept shuffle in
float64 on the host. Compiled together with a model whose output ends in an elementwise
product, XLA contracts that product with the tree's first additions into fused
multiply-adds: the sums are then those of the unrounded products, off by at most the float32
rounding of each value, not of the total. Outputs that end in a convolution, a dot or an
activation are summed exactly as computed.

The error-free transformation needs the compiler to keep IEEE addition as written (no
reassociation): XLA and torch do by default. :func:`compensation_holds` checks it on a backend
before the CLI relies on it.
"""

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional

import numpy

from jablate._core.behaviour import OutputFunc, mark
from jablate._core.dtypes import dtype_kind, resolution
from jablate._core.errors import InputError, a_or_an

__all__ = ["DeviceSums", "DEVICE_SUMS", "compensated_sum", "compensation_holds", "trusted",
           "array_ops"]


class ArrayOps(NamedTuple):
    """The few operations jablate's device-side reductions need, for one array family
    (JAX or torch); reductions keep the reduced axis (size 1)."""

    exp: Callable
    amax: Callable
    sum: Callable
    less: Callable
    constant: Callable
    zeros_like: Callable
    dtype_name: Callable
    to_float32: Callable
    concat: Callable
    where: Callable


def array_ops(v: Any) -> ArrayOps:
    """The :class:`ArrayOps` for ``v``'s family: torch for a ``torch.Tensor``, else JAX.

    Parameters
    ----------
    v : jax.Array, tracer or torch.Tensor

    Returns
    -------
    ArrayOps
    """

    if type(v).__module__.startswith("torch"):
        import torch

        return ArrayOps(torch.exp, lambda x, a: torch.amax(x, a, keepdim=True),
            lambda x, a: torch.sum(x, a, keepdim=True), torch.lt,
            lambda values, like: torch.tensor(values, dtype=like.dtype,
                device=like.device).expand(like.shape[0], len(values)),
            torch.zeros_like, lambda x: str(x.dtype).replace("torch.", ""),
            lambda x: x.to(torch.float32), lambda xs, a: torch.cat(xs, a),
            torch.where)
    import jax.numpy as jnp

    return ArrayOps(jnp.exp, lambda x, a: jnp.max(x, a, keepdims=True),
        lambda x, a: jnp.sum(x, a, keepdims=True), jnp.less,
        lambda values, like: jnp.broadcast_to(jnp.asarray(values, like.dtype),
            (like.shape[0], len(values))),
        jnp.zeros_like, lambda x: str(jnp.dtype(x.dtype)),
        lambda x: x.astype(jnp.float32), jnp.concatenate, jnp.where)


def _two_sum(a, b):
    """``s = fl(a + b)`` and its rounding error ``t``: ``s + t == a + b`` exactly."""
    s = a + b
    b_part = s - a
    return s, (a - (s - b_part)) + (b - b_part)


def compensated_sum(flat: Any, ops: Optional[ArrayOps] = None) -> tuple:
    """The sum of each row as ``hi + lo``, by pairwise summation with error-free additions.

    Parameters
    ----------
    flat : jax.Array or torch.Tensor, shape (B, m)
        Floating-point values (float32 or float64), ``m >= 1``.
    ops : ArrayOps, optional
        Default :func:`array_ops` of ``flat``.

    Returns
    -------
    hi, lo : arrays of shape (B, 1), ``flat``'s dtype
        ``hi`` the rounded sum, ``lo`` what rounding left out: ``hi + lo`` (added in float64)
        is the exact sum of the row to about ``ceil(log2 m) * eps**2`` times the sum of its
        absolute values (``eps`` of ``flat``'s dtype). Non-finite values give non-finite sums.

    Notes
    -----
    No loop is compiled: the tree's ``ceil(log2 m)`` levels are unrolled while tracing, each a
    few elementwise operations on half as many columns as the one before, and the columns
    left over by odd widths are added at the end.
    """

    ops = array_ops(flat) if ops is None else ops
    total, error = flat, ops.zeros_like(flat)
    left = []
    while total.shape[1] > 1:
        h = total.shape[1] // 2
        if total.shape[1] % 2:
            left.append((total[:, 2 * h:], error[:, 2 * h:]))
        total, rounding = _two_sum(total[:, :h], total[:, h:2 * h])
        error = error[:, :h] + error[:, h:2 * h] + rounding
    for extra, extra_error in left:
        total, rounding = _two_sum(total, extra)
        error = error + extra_error + rounding
    return total, error


@dataclass(frozen=True)
class DeviceSums:
    """What ``jablate ablate``'s table needs of each prediction, computed where the model runs.

    ``predict``'s ``func`` for :func:`jablate.ablate_annotations` (reduce=None): for each
    output head, one (B, 3) array: the sum of its values per sequence as ``hi`` and ``lo``
    (:func:`compensated_sum`) and the sum of their absolute values (the z-score's scale, in
    the output's dtype). A last output says how to read them, ``[size_0, eps_0, size_1,
    eps_1, ...]`` (each head's values per sequence and the machine epsilon of its dtype), so
    the host never guesses the layout. Heads of float16, bfloat16, bool or integer values
    are summed in float32 (exact conversions, integers below ``2**24``); float64 stays
    float64. Works on JAX arrays and torch tensors (a model bridged from torch).

    The sum of absolute values is ``inf`` (or ``nan``) wherever the sums cannot be trusted:
    a value that is not finite, a sum beyond the dtype's range, integers of ``2**24`` or
    more (float32 holds integers exactly only below that). :func:`trusted` says whether a
    run has no such row; where it has, ``jablate ablate`` keeps every shuffle's output.

    Keep one instance (:data:`DEVICE_SUMS`): compiled programs are cached on it, weakly.

    Raises
    ------
    InputError
        (while the model runs) When an output is not an array of real numbers.
    """

    def __post_init__(self):
        mark(self, OutputFunc("DeviceSums"))  # the same on torch tensors and JAX arrays

    def __call__(self, y: Any) -> tuple:
        ys = list(y) if isinstance(y, (tuple, list)) else [y]
        if not ys:
            raise InputError("cannot summarise the model's output: it is an empty "
                f"{type(y).__name__}")
        out, layout = [], []
        for h, v in enumerate(ys):
            where = f"output {h}" if len(ys) > 1 else "the model's output"
            if not (hasattr(v, "reshape") and hasattr(v, "dtype") and hasattr(v, "shape")):
                raise InputError(f"cannot summarise {where}: it is {a_or_an(type(v).__name__)}, "
                    "not an array (the model must return an array or a tuple/list of arrays)")
            ops = array_ops(v)
            kind = dtype_kind(ops.dtype_name(v))
            if kind not in "biuf":
                raise InputError(f"cannot summarise {where}: it holds {ops.dtype_name(v)} "
                    "values, not real numbers")
            if v.ndim < 1:
                raise InputError(f"cannot summarise {where}: it has no batch axis")
            eps = resolution(ops.dtype_name(v))
            flat = v.reshape(v.shape[0], -1)
            if flat.shape[1] == 0:
                raise InputError(f"cannot summarise {where}: it has no values per sequence "
                    f"(shape {tuple(v.shape[1:])} each; a model that trims its input, as "
                    "BPNet does, returns nothing for sequences shorter than it expects: are "
                    "the sequences as long as the model's input?)")
            if ops.dtype_name(flat) not in ("float32", "float64"):
                flat = ops.to_float32(flat)
            hi, lo = compensated_sum(flat, ops)
            absolute = ops.sum(abs(flat), -1)
            if kind in "iu":  # float32 holds integers exactly up to 2**24 only
                absolute = ops.where(ops.amax(abs(flat), -1) >= 2.0 ** 24, float("inf"),
                                     absolute)
            out.append(ops.concat([hi, lo, absolute], -1))
            layout += [float(flat.shape[1]), eps]
        out.append(ops.constant(layout, out[0]))
        return tuple(out)


def trusted(*parts: Any) -> bool:
    """Whether every sum of a :class:`DeviceSums` run can be trusted: every absolute sum
    (column 2 of each head's array) is finite.

    Parameters
    ----------
    *parts : list of arrays
        What the run returned, e.g. ``y_befores`` and ``y_afters``: per head an array
        (..., 3), then the layout (ignored).

    Returns
    -------
    bool
    """

    return all(bool(numpy.isfinite(numpy.asarray(head)[..., 2]).all())
               for part in parts for head in list(part)[:-1])


#: The one :class:`DeviceSums` (compiled programs are cached on it).
DEVICE_SUMS = DeviceSums()

_HOLDS: dict = {}


def compensation_holds(device: Any = None, framework: str = "jax") -> bool:
    """Whether :func:`compensated_sum` is exact where a model runs (cached per backend).

    Sums there (compiled, for JAX) rows whose float32 sum loses most of its value to rounding
    (``1 + 2**-30 - 1``, and a random row with two large values that cancel) and compares
    ``hi + lo``, added in float64, with the exact sums (``math.fsum``). A compiler that
    reassociated floating-point addition would lose ``lo`` and fail this.

    Parameters
    ----------
    device : jax.Device, torch.device or None, optional
        Where the model runs. Default None: JAX's default device, or for torch CUDA when
        available (as jablate runs torch models).
    framework : {"jax", "torch"}, optional
        Which framework computes the sums. Default ``"jax"``.

    Returns
    -------
    bool
    """

    import math

    rows = numpy.zeros((2, 2114), numpy.float32)
    rows[0, :3] = (1.0, 2.0 ** -30, -1.0)
    rows[1] = numpy.random.RandomState(0).standard_normal(2114) * numpy.float32(1e4)
    rows[1, 7], rows[1, 1000] = 3e8, -3e8
    if framework == "torch":
        import torch

        if device is None:
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        key = ("torch", torch.device(device).type)

        def run():
            return [x.double().cpu().numpy() for x in
                    compensated_sum(torch.from_numpy(rows).to(device))]
    else:
        import jax

        device = jax.devices()[0] if device is None else device
        key = ("jax", device.platform)

        def run():
            return [numpy.asarray(x, numpy.float64) for x in
                    jax.jit(compensated_sum)(jax.device_put(rows, device))]
    if key not in _HOLDS:
        hi, lo = run()
        got = hi[:, 0] + lo[:, 0]
        exact = numpy.array([math.fsum(row.astype(numpy.float64)) for row in rows])
        bound = 16 * float(numpy.finfo(numpy.float32).eps) ** 2 * numpy.abs(rows).sum(
            axis=1, dtype=numpy.float64)
        _HOLDS[key] = bool((numpy.abs(got - exact) <= bound).all())
    return _HOLDS[key]
