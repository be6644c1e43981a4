"""Window rules: how each primitive moves the window of changed positions.

A rule takes the :class:`~jablate.incremental.windows.Planner` and an equation with at
least one windowed operand (the others unchanged: constants, parameters, ``args``),
and returns a :class:`Planned` step: the output states and a function computing the
outputs' windows (or, for linear maps over positions, their full values from the
reference plus the change). It raises :class:`Unsupported` with a reason when it
cannot; the engine then computes that equation in full, and everything after it.
A primitive without a rule is computed in full, so a missing rule costs speed,
never correctness.

Rules (``RULES``):

- elementwise ops (``add``, ``mul``, ``max``, ``select_n``, ``exp``, ``logistic``,
  ``integer_pow``, ``convert_element_type``, ...; see ``ELEMENTWISE``), broadcasting
  against unchanged operands: the union of the operands' windows;
- ``conv_general_dilated`` along positions (padding, dilation, strides; not input
  dilation) and ``reduce_window_{max,min,sum}`` (pooling): the window widened by the
  kernel's reach and rounded for strides;
- ``dot_general`` with positions a free or batch axis (dense layers over channels),
  or contracting positions against an unchanged operand (updated by its change);
- ``reduce_*``/``argmax``/``argmin``/``cum*`` over other axes; ``reduce_sum`` over
  positions (updated by its change);
- ``transpose``, ``reshape`` keeping the position axis whole, ``squeeze``,
  ``broadcast_in_dim``, ``rev``, ``split`` and ``concatenate`` along other axes;
  ``slice``, ``pad`` and ``dynamic_slice`` (static start) along positions.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Callable, NamedTuple, Optional

import jax.numpy as jnp
import numpy as np
from jax import lax

from jablate.incremental.graph import ELEMENTWISE, REDUCTIONS, Lit, Node
from jablate.incremental.windows import (
    FULL,
    Getter,
    Planner,
    Unsupported,
    Window,
    mask_outside,
    plan_change,
    plan_full,
    plan_window,
    union,
)


class Planned(NamedTuple):
    """A windowed step: ``mode`` is ``"window"`` (outputs are windows) or ``"delta"``
    (outputs are full values: reference + change). ``run(ctx)`` returns the outputs;
    ``fraction`` is the step's cost relative to computing it in full."""

    mode: str
    states: list
    run: Callable
    reads: frozenset
    fraction: float


def _windowed(planner: Planner, node: Node) -> list:
    return [(i, r) for i, r in enumerate(node.inputs)
            if isinstance(planner.state(r), Window)]


def _only(planner: Planner, node: Node):
    """The single windowed operand of ``node`` (its first), with its window."""
    found = _windowed(planner, node)
    if len(found) != 1 or found[0][0] != 0:
        raise Unsupported(f"{node.name} of several changed operands")
    ref = node.inputs[0]
    return ref, planner.state(ref)


def _step(node: Node, states: list, getters: list, compute: Callable, fraction: float,
          mode: str = "window") -> Planned:
    def run(ctx):
        return compute(ctx, [g.fn(ctx) for g in getters])
    reads = frozenset().union(*(g.reads for g in getters))
    return Planned(mode, states, run, reads, fraction)


def _delta(planner: Planner, node: Node, getters: list, w: Window) -> Planned:
    """A map linear in its windowed operand, given ``getters`` for its operands with the
    windowed one replaced by its change: the output is its reference plus the map of
    the change, a full value (no position axis left)."""
    out = node.outputs[0]
    planner.need(out, None)
    return _step(node, [FULL], getters,
                 lambda ctx, vals: [ctx.unpadded(out) + node.bind(*vals)[0]],
                 w.width / w.length, mode="delta")


def _passthrough(planner: Planner, node: Node, axis: int, shift=0, changes=None) -> Planned:
    """One windowed operand, every output windowed like it on ``axis`` (its positions
    moved by ``shift``: an int, or a function of the window); bound with the parameter
    ``changes`` (a function of the window width)."""
    ref, w = _only(planner, node)
    length = planner.aval(node.outputs[0]).shape[axis]
    if callable(shift):
        out = Window(axis, length, w.width, shift(w), None)
    else:
        out = Window(axis, length, w.width, w.start.shifted(shift),
                     None if w.origin is None else w.origin - shift)
    getters = [Getter(lambda ctx: ctx.env[ref], frozenset({ref}))]
    getters += [plan_full(planner, r) for r in node.inputs[1:]]
    params = changes(w.width) if changes else {}
    return _step(node, [out] * len(node.outputs), getters,
                 lambda ctx, vals: node.bind(*vals, **params), out.width / out.length)


def elementwise(planner: Planner, node: Node) -> Planned:
    """Position-by-position ops: the output changes on the union of the operands'
    windows. Operands may broadcast along other axes (size 1); unchanged operands of
    the output's length along positions are sliced to the window, scalars and
    operands broadcast along positions pass whole."""
    shape = planner.aval(node.outputs[0]).shape
    found = _windowed(planner, node)
    axis = planner.state(found[0][1]).axis
    whole = []
    for r in node.inputs:
        s, a = planner.state(r), planner.aval(r).shape
        if isinstance(s, Window) and s.axis != axis:
            raise Unsupported(f"{node.name} of operands with different position axes")
        if len(a) not in (0, len(shape)) or (len(a) and a[axis] not in (1, shape[axis])):
            raise Unsupported(f"{node.name} broadcasts an operand of shape {a}")
        whole.append(len(a) == 0 or a[axis] == 1)
    out = union([planner.state(r) for _, r in found], axis, shape[axis])
    getters = [plan_full(planner, r) if w else plan_window(planner, r, axis, out.start, out.width)
               for r, w in zip(node.inputs, whole)]
    return _step(node, [out] * len(node.outputs), getters,
                 lambda ctx, vals: node.bind(*vals), out.width / out.length)


def transpose(planner, node):
    p = planner.state(node.inputs[0]).axis
    return _passthrough(planner, node, list(node.params["permutation"]).index(p))


def squeeze(planner, node):
    p = planner.state(node.inputs[0]).axis
    dims = node.params["dimensions"]
    if p in dims:
        raise Unsupported("squeeze of the position axis")
    return _passthrough(planner, node, p - sum(d < p for d in dims))


def rev(planner, node):
    w = planner.state(node.inputs[0])
    if w.axis not in node.params["dimensions"]:
        return _passthrough(planner, node, w.axis)
    return _passthrough(planner, node, w.axis,
                        shift=lambda w: w.start.mirrored(w.length - w.width))


def cumulative(planner, node):
    p = planner.state(node.inputs[0]).axis
    if node.params["axis"] == p:
        raise Unsupported(f"{node.name} along positions")
    return _passthrough(planner, node, p)


def split(planner, node):
    p = planner.state(node.inputs[0]).axis
    if node.params["axis"] == p:
        raise Unsupported("split along positions")
    return _passthrough(planner, node, p)


def reduction(planner, node):
    """A reduction over other axes keeps the window; ``reduce_sum`` over positions
    becomes ``reference + sum(new - old)`` on the window."""
    ref, w = _only(planner, node)
    axes = node.params["axes"]
    if w.axis not in axes:
        return _passthrough(planner, node, w.axis - sum(a < w.axis for a in axes))
    if node.name != "reduce_sum":
        raise Unsupported(f"{node.name} over positions mixes them")
    return _delta(planner, node, [plan_change(planner, ref)], w)


def broadcast_in_dim(planner, node):
    ref, w = _only(planner, node)
    if len(node.inputs) != 1:
        raise Unsupported("broadcast_in_dim with dynamic shapes")
    q = node.params["broadcast_dimensions"][w.axis]
    shape = tuple(node.params["shape"])

    def changes(width):
        return {"shape": shape[:q] + (width,) + shape[q + 1:]}
    return _passthrough(planner, node, q, changes=changes)


def reshape(planner, node):
    """A reshape that keeps the position axis whole (only other axes split or merge)."""
    ref, w = _only(planner, node)
    if node.params.get("dimensions") is not None or len(node.inputs) != 1:
        raise Unsupported("reshape with a dimension order")
    old, new = planner.aval(ref).shape, tuple(node.params["new_sizes"])
    before, after = math.prod(old[:w.axis]), math.prod(old[w.axis + 1:])
    for q in range(len(new)):
        if new[q] == w.length and math.prod(new[:q]) == before \
                and math.prod(new[q + 1:]) == after:
            return _passthrough(planner, node, q,
                                changes=lambda width, q=q: {"new_sizes": new[:q] + (width,)
                                                            + new[q + 1:]})
    raise Unsupported(f"reshape {old} -> {new} merges positions with another axis")


def slice_(planner, node):
    """A crop along positions shifts the window."""
    ref, w = _only(planner, node)
    p = w.axis
    strides = node.params["strides"]
    if strides is not None and strides[p] != 1:
        raise Unsupported("strided slice along positions")
    first = node.params["start_indices"][p]
    starts = tuple(node.params["start_indices"])
    limits = tuple(node.params["limit_indices"])
    return _passthrough(planner, node, p, shift=-first,
                        changes=lambda width: {"start_indices": starts[:p] + (0,) + starts[p + 1:],
                                               "limit_indices": limits[:p] + (width,)
                                               + limits[p + 1:]})


def pad(planner, node):
    """Padding along positions shifts the window; window positions that fall in the
    padding get the padding value."""
    ref, w = _only(planner, node)
    p = w.axis
    config = tuple(tuple(c) for c in node.params["padding_config"])
    lo, _, interior = config[p]
    if interior:
        raise Unsupported("interior padding along positions")
    config = config[:p] + ((0, 0, 0),) + config[p + 1:]
    out = Window(p, planner.aval(node.outputs[0]).shape[p], w.width, w.start.shifted(lo),
                 None if w.origin is None else w.origin - lo)
    value = plan_full(planner, node.inputs[1])

    def compute(ctx, vals):
        x = mask_outside(vals[0], p, w.start.at(ctx.s), w.length, vals[1])
        return node.bind(x, vals[1], padding_config=config)
    getters = [Getter(lambda ctx: ctx.env[ref], frozenset({ref})), value]
    return _step(node, [out], getters, compute, out.width / out.length)


def dynamic_slice(planner, node):
    """A crop along positions at a start known when tracing."""
    ref, w = _only(planner, node)
    p = w.axis
    index = node.inputs[1 + p]
    if not isinstance(index, Lit):
        raise Unsupported("dynamic_slice along positions at a traced start")
    sizes = tuple(node.params["slice_sizes"])
    first = int(np.clip(int(np.asarray(index.value)), 0, w.length - sizes[p]))
    out = Window(p, sizes[p], w.width, w.start.shifted(-first),
                 None if w.origin is None else w.origin + first)
    sizes = sizes[:p] + (w.width,) + sizes[p + 1:]
    zero = np.zeros((), np.asarray(index.value).dtype)
    getters = [Getter(lambda ctx: ctx.env[ref], frozenset({ref}))]
    getters += [plan_full(planner, r) for r in node.inputs[1:]]

    def compute(ctx, vals):
        vals[1 + p] = zero
        return node.bind(*vals, slice_sizes=sizes)
    return _step(node, [out], getters, compute, out.width / out.length)


def concatenate(planner, node):
    shape = planner.aval(node.outputs[0]).shape
    found = _windowed(planner, node)
    axis = planner.state(found[0][1]).axis
    if node.params["dimension"] == axis:
        raise Unsupported("concatenation along positions")
    if any(planner.state(r).axis != axis for _, r in found):
        raise Unsupported("operands disagree on the position axis")
    out = union([planner.state(r) for _, r in found], axis, shape[axis])
    getters = [plan_window(planner, r, axis, out.start, out.width) for r in node.inputs]
    return _step(node, [out], getters, lambda ctx, vals: node.bind(*vals),
                 out.width / out.length)


def _sliding(planner, node, ref, w: Window, out_axis: int, kernel: int, stride: int,
             dilation: int, pad_lo: int, fill, compute: Callable, extra: list) -> Planned:
    """A sliding window over positions (convolution, pooling) with padding ``pad_lo``
    before position 0: output ``q`` reads inputs ``q * stride - pad_lo + k * dilation``.

    The changed outputs are those reading a changed input; they are computed from
    the input on their reach (its window completed with the reference), with
    positions outside ``[0, L)`` set to ``fill`` and no padding.
    """
    reach = (kernel - 1) * dilation
    out_length = planner.aval(node.outputs[0]).shape[out_axis]
    width = (w.width - 1 + reach) // stride + 1
    start = w.start.floordiv(pad_lo - reach + stride - 1, stride)  # ceil((a + pad - reach) / st)
    origin = None if stride != 1 or w.origin is None else w.origin - pad_lo + reach // 2
    out = Window(out_axis, out_length, width, start, origin)
    in_start = start.times(stride).shifted(-pad_lo)
    in_width = (width - 1) * stride + reach + 1
    read = plan_window(planner, ref, w.axis, in_start, in_width)
    # The cache pads references with zeros: only a window reaching past the ends, or a
    # fill other than zero, needs masking.
    masked = w.leaves or (fill != 0 and (in_start.lo < 0 or in_start.hi + in_width > w.length))

    def get(ctx):
        x = read.fn(ctx)
        return mask_outside(x, w.axis, in_start.at(ctx.s), w.length, fill) if masked else x
    return _step(node, [out], [Getter(get, read.reads)] + extra, compute,
                 out.width / out.length)


def conv_general_dilated(planner, node):
    lhs, rhs = node.inputs
    w = planner.state(lhs)
    if not isinstance(w, Window) or isinstance(planner.state(rhs), Window):
        raise Unsupported("the kernel changes with the input")
    p = node.params
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    if w.axis not in lhs_spec[2:]:
        raise Unsupported("positions are the batch or feature axis of a convolution")
    i = list(lhs_spec).index(w.axis) - 2
    if p["lhs_dilation"][i] != 1 or p["batch_group_count"] != 1:
        raise Unsupported("input dilation (a transposed convolution) along positions")
    rhs_shape = planner.aval(rhs).shape
    kernel = rhs_shape[rhs_spec[2 + i]]
    padding = tuple(tuple(x) for x in p["padding"])
    valid = padding[:i] + ((0, 0),) + padding[i + 1:]
    if _by_taps(node, rhs_shape):
        compute = lambda ctx, vals: [_conv1d_by_taps(*vals, p["dimension_numbers"],
                                                     p["rhs_dilation"][0])]
    else:
        compute = lambda ctx, vals: node.bind(*vals, padding=valid)
    return _sliding(planner, node, lhs, w, out_spec[2 + i], kernel, p["window_strides"][i],
                    p["rhs_dilation"][i], padding[i][0], 0, compute, [plan_full(planner, rhs)])


def _by_taps(node: Node, rhs_shape: tuple) -> bool:
    """Whether a 1-D convolution runs faster as :func:`_conv1d_by_taps` (many taps, few
    outputs, stride 1, no groups)."""
    p = node.params
    lhs_spec, rhs_spec, _ = p["dimension_numbers"]
    kernel = rhs_shape[rhs_spec[2]] if len(rhs_spec) == 3 else 0
    return (len(lhs_spec) == 3 and p["window_strides"] == (1,)
            and p.get("precision") is None and p.get("preferred_element_type") is None
            and p["feature_group_count"] == 1 and p["batch_group_count"] == 1
            and p["lhs_dilation"] == (1,) and kernel >= 8
            and rhs_shape[rhs_spec[0]] * kernel <= 256)


def full_bind(node: Node, rhs_shape: Optional[tuple] = None) -> Callable:
    """How the reference pass computes ``node`` in full: ``node.bind``, except for the
    1-D convolutions :func:`_conv1d_by_taps` runs faster (with their padding applied
    first)."""
    if node.name != "conv_general_dilated" or rhs_shape is None \
            or not _by_taps(node, rhs_shape) or min(node.params["padding"][0]) < 0:
        return node.bind
    p = node.params
    lhs_spec = p["dimension_numbers"][0]
    (lo, hi), = p["padding"]

    def run(x, kernel):
        widths = [(0, 0)] * 3
        widths[lhs_spec[2]] = (lo, hi)
        return [_conv1d_by_taps(jnp.pad(x, widths), kernel, p["dimension_numbers"],
                                p["rhs_dilation"][0])]
    return run


def _conv1d_by_taps(x, kernel, dimension_numbers, dilation: int):
    """A 'VALID' stride-1 1-D convolution as one matmul to every (tap, output) pair and
    a shifted sum over taps: XLA's CPU convolution runs kernels with many taps and few
    outputs (a profile head: 75 taps, 2 outputs) at a fraction of matmul speed."""
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    x = jnp.transpose(x, (lhs_spec[0], lhs_spec[2], lhs_spec[1]))  # (N, L, C)
    kernel = jnp.transpose(kernel, (rhs_spec[2], rhs_spec[1], rhs_spec[0]))  # (K, C, O)
    taps = jnp.einsum("nlc,kco->nlko", x, kernel)
    k = kernel.shape[0]
    length = x.shape[1] - dilation * (k - 1)
    y = sum(taps[:, j * dilation:j * dilation + length, j] for j in range(k))  # (N, L, O)
    order = [0, 0, 0]
    order[out_spec[0]], order[out_spec[1]], order[out_spec[2]] = 0, 2, 1
    return jnp.transpose(y, order)


_POOL_FILL = {"reduce_window_max": -np.inf, "reduce_window_min": np.inf, "reduce_window_sum": 0}


def reduce_window(planner, node):
    ref, w = _only(planner, node)
    p, a = node.params, w.axis
    if p["base_dilation"][a] != 1:
        raise Unsupported("base dilation along positions")
    fill = _POOL_FILL[node.name]
    dtype = planner.aval(ref).dtype
    if fill and not np.issubdtype(dtype, np.floating):
        info = np.iinfo(dtype)
        fill = info.min if fill < 0 else info.max
    padding = tuple(tuple(x) for x in p["padding"])
    valid = padding[:a] + ((0, 0),) + padding[a + 1:]
    return _sliding(planner, node, ref, w, a, p["window_dimensions"][a], p["window_strides"][a],
                    p["window_dilation"][a], padding[a][0], fill,
                    lambda ctx, vals: node.bind(*vals, padding=valid), [])


def dot_general(planner, node):
    """Products over channels keep the window (positions a free or batch axis); a
    product contracting positions with an unchanged operand is updated by its change."""
    (lc, rc), (lb, rb) = node.params["dimension_numbers"]
    lhs, rhs = node.inputs
    wl, wr = planner.state(lhs), planner.state(rhs)
    out_shape = planner.aval(node.outputs[0]).shape
    if isinstance(wl, Window) and isinstance(wr, Window):
        if wl.axis in lb and rb[list(lb).index(wl.axis)] == wr.axis:
            q = list(lb).index(wl.axis)
            out = union([wl, wr], q, out_shape[q])
            getters = [plan_window(planner, lhs, wl.axis, out.start, out.width),
                       plan_window(planner, rhs, wr.axis, out.start, out.width)]
            return _step(node, [out], getters, lambda ctx, vals: node.bind(*vals),
                         out.width / out.length)
        raise Unsupported("a product of two changed operands (attention) mixes positions")
    side = 0 if isinstance(wl, Window) else 1
    ref, other, w = (lhs, rhs, wl) if side == 0 else (rhs, lhs, wr)
    mine, theirs = ((lc, lb), (rc, rb)) if side == 0 else ((rc, rb), (lc, lb))
    order = (lambda a, b: (a, b)) if side == 0 else (lambda a, b: (b, a))
    p = w.axis
    if p in mine[0] or p in mine[1]:
        group = 0 if p in mine[0] else 1
        po = theirs[group][list(mine[group]).index(p)]
        if group == 0:  # contracting positions: reference + product of the change
            getters = order(plan_change(planner, ref),
                            plan_window(planner, other, po, w.start, w.width))
            return _delta(planner, node, list(getters), w)
        q = list(mine[1]).index(p)
        getters = order(Getter(lambda ctx: ctx.env[ref], frozenset({ref})),
                        plan_window(planner, other, po, w.start, w.width))
    else:
        ndim = [len(planner.aval(lhs).shape), len(planner.aval(rhs).shape)]
        free = [[d for d in range(ndim[k]) if d not in (lc, rc)[k] and d not in (lb, rb)[k]]
                for k in (0, 1)]
        q = len(lb) + (free[0].index(p) if side == 0 else len(free[0]) + free[1].index(p))
        getters = order(Getter(lambda ctx: ctx.env[ref], frozenset({ref})),
                        plan_full(planner, other))
    out = Window(q, out_shape[q], w.width, w.start, w.origin)
    return _step(node, [out], list(getters), lambda ctx, vals: node.bind(*vals),
                 out.width / out.length)


RULES = {name: elementwise for name in ELEMENTWISE}
RULES.update({name: reduction for name in REDUCTIONS})
RULES.update({name: cumulative for name in ("cumsum", "cumprod", "cummax", "cummin",
                                            "cumlogsumexp")})
RULES.update({name: reduce_window for name in _POOL_FILL})
RULES.update(transpose=transpose, squeeze=squeeze, rev=rev, split=split,
             broadcast_in_dim=broadcast_in_dim, reshape=reshape, slice=slice_, pad=pad,
             dynamic_slice=dynamic_slice, concatenate=concatenate,
             conv_general_dilated=conv_general_dilated, dot_general=dot_general)


_BROKEN = contextvars.ContextVar("jablate_incremental_broken_rule", default=None)


@contextlib.contextmanager
def break_rule(primitive: str):
    """Test-only: while active, analyses give ``primitive``'s window rule a bug (its
    output window is one position too narrow on each side), so that a runtime check
    comparing the incremental and the full pass can be tested to catch it."""
    token = _BROKEN.set(primitive)
    try:
        yield
    finally:
        _BROKEN.reset(token)


def broken() -> str | None:
    """The primitive whose rule :func:`break_rule` breaks, if any."""
    return _BROKEN.get()


def apply_rule(planner: Planner, node: Node) -> Planned:
    """The planned windowed step for ``node``; raises :class:`Unsupported` when the
    node has no rule or its rule does not apply."""
    rule = RULES.get(node.name)
    if rule is None:
        raise Unsupported(f"no window rule for {node.name}")
    step = rule(planner, node)
    if _BROKEN.get() == node.name and step.mode == "window":
        step = _narrowed(step)
    return step


def _narrowed(step: Planned) -> Planned:
    """``step`` with its windows cropped by one position on each side (a wrong rule)."""
    w = step.states[0]
    cut = 1 if w.width >= 3 else 0
    out = Window(w.axis, w.length, w.width - 2 * cut, w.start.shifted(1), w.origin)

    def run(ctx):
        vals = step.run(ctx)
        return [lax.slice_in_dim(v, cut, v.shape[w.axis] - cut, axis=w.axis) for v in vals]
    return step._replace(states=[out] * len(step.states), run=run)
