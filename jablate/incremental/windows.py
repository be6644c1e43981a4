"""Windows of sequence positions, and reading intermediates on them.

An intermediate that a change of the input positions ``[s, s + W)`` can change only
inside ``[start, start + width)`` of its position axis is a :class:`Window`: ``width``
is static, ``start`` a function of the traced region start ``s`` (a :class:`Start`).
Its value in the incremental pass is that window alone; everything outside it equals
the reference (unchanged) activation, read from the cache.

Windows are never clipped at the sequence ends: a window may reach past ``[0, L)``,
where its values are meaningless. The cache pads every reference activation along
its position axis (with zeros) far enough that no read ever clips, and consumers
that look at positions outside ``[0, L)`` (convolutions, pooling, sums, ``pad``) mask
them to the value they expect there. Because windows keep their offsets relative
to ``s``, reading an operand on a consumer's window is a few static slices in the
common stride-1 case, not a scatter.

:class:`Planner` holds what the analysis decided (the state of every variable,
which reference activations are read, and how far). The ``plan_*`` functions run
at analysis time and return :class:`Getter`\\ s, which run inside the traced
incremental pass with a :class:`Context`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

from jablate.incremental.graph import Graph, Lit, aval_of

#: The state of a variable that does not depend on ``x`` and is recomputed from the
#: parameters (cheap: parameters are not batched), of one computed from ``args``
#: (taken from the cache), and of one that depends on ``x`` and is computed in full.
CONST, ARG, FULL = "const", "arg", "full"


class Unsupported(Exception):
    """A rule cannot window this equation; the message says why (it is computed in full)."""


class Base:
    """A start position as a function of the region start ``s``.

    ``fn(s, xp)`` computes it with ``xp`` = ``numpy`` or ``jax.numpy``; ``values`` holds
    it for every ``s`` in ``[0, L - W]``, so that bounds and offsets are exact.
    """

    def __init__(self, fn: Callable, values: np.ndarray):
        self.fn, self.values = fn, np.asarray(values, np.int64)
        self.lo, self.hi = int(self.values.min()), int(self.values.max())


class Start(NamedTuple):
    """``base(s) + offset``. Starts sharing a base differ by a static offset."""

    base: Base
    offset: int

    @property
    def lo(self) -> int:
        return self.base.lo + self.offset

    @property
    def hi(self) -> int:
        return self.base.hi + self.offset

    def values(self) -> np.ndarray:
        return self.base.values + self.offset

    def at(self, s) -> Any:
        """The start for a traced ``s`` (int32)."""
        return self.base.fn(s, jnp) + self.offset

    def shifted(self, c: int) -> Start:
        return Start(self.base, self.offset + int(c))

    def floordiv(self, c: int, k: int) -> Start:
        """``floor((start + c) / k)``."""
        if k == 1:
            return self.shifted(c)
        fn, off = self.base.fn, self.offset + c
        return Start(Base(lambda s, xp: (fn(s, xp) + off) // k, (self.base.values + off) // k), 0)

    def times(self, k: int) -> Start:
        if k == 1:
            return self
        fn, off = self.base.fn, self.offset
        return Start(Base(lambda s, xp: (fn(s, xp) + off) * k, (self.base.values + off) * k), 0)

    def mirrored(self, total: int) -> Start:
        """``total - start``."""
        fn, off = self.base.fn, self.offset
        return Start(Base(lambda s, xp: total - off - fn(s, xp), total - off - self.base.values),
                     0)

    def offset_from(self, other: Start):
        """``self - other`` as an int when it is the same for every ``s``, else ``None``."""
        if self.base is other.base:
            return self.offset - other.offset
        d = self.values() - other.values()
        return int(d[0]) if d.min() == d.max() else None

    def minimum(self, other: Start) -> Start:
        d = self.offset_from(other)
        if d is not None:
            return self if d <= 0 else other
        a, b = self, other
        return Start(Base(lambda s, xp: xp.minimum(a.base.fn(s, xp) + a.offset,
                                                   b.base.fn(s, xp) + b.offset),
                          np.minimum(a.values(), b.values())), 0)


@dataclass(frozen=True)
class Window:
    """A variable changed only on ``[start, start + width)`` of axis ``axis`` (of size
    ``length``). ``origin``: where the variable's position 0 lies in the input's
    positions (moved by crops and padding), ``None`` once strides rescale positions;
    it only serves reports."""

    axis: int
    length: int
    width: int
    start: Start
    origin: int | None = 0

    def __post_init__(self):
        if self.width >= self.length:
            raise Unsupported(f"the window covers all {self.length} positions")

    @property
    def leaves(self) -> bool:
        """Whether the window may reach outside ``[0, length)``."""
        return self.start.lo < 0 or self.start.hi + self.width > self.length

    def same(self, other: Window) -> bool:
        return self.width == other.width and self.start == other.start


def union(windows: list, axis: int, length: int) -> Window:
    """The smallest static-width window holding every window of ``windows``."""
    start = windows[0].start
    for w in windows[1:]:
        start = start.minimum(w.start)
    ends = np.max([w.start.values() + w.width for w in windows], axis=0)
    origins = {w.origin for w in windows}
    return Window(axis, length, int(np.max(ends - start.values())), start,
                  origins.pop() if len(origins) == 1 else None)


class Getter(NamedTuple):
    """A value the incremental pass computes with ``fn(context)``; ``reads`` are the
    variables of the pass (not of the cache) it needs."""

    fn: Callable
    reads: frozenset = frozenset()


def mask_outside(x, axis: int, first, length: int, fill) -> Any:
    """``x`` with the positions outside ``[0, length)`` set to ``fill``; ``x``'s index 0
    along ``axis`` is position ``first``."""
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    pos = (first + jnp.arange(x.shape[axis], dtype=jnp.int32)).reshape(shape)
    return jnp.where((pos >= 0) & (pos < length), x, jnp.asarray(fill, x.dtype))


class Planner:
    """The analysis' decisions: variable states and the reference reads they imply."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.states: dict = {}
        self.bounds: dict = {}  # var -> [axis, lo, hi]: reference positions read

    def state(self, ref):
        return CONST if isinstance(ref, Lit) else self.states[ref]

    def aval(self, ref):
        return aval_of(self.graph, ref)

    def need(self, ref, axis, lo: int = 0, hi: int = 0):
        """Record that the pass reads the reference of ``ref`` on positions ``[lo, hi)``
        of ``axis`` (``axis=None``: the whole value, no position axis)."""
        entry = self.bounds.get(ref)
        if entry is not None and None not in (axis, entry[0]) and axis != entry[0]:
            raise Unsupported("an unchanged operand is read along two different axes")
        if entry is None:
            self.bounds[ref] = [axis, lo, hi]
        else:
            entry[0] = entry[0] if axis is None else axis
            entry[1], entry[2] = min(entry[1], lo), max(entry[2], hi)

    def pads(self, ref) -> tuple:
        """``(axis, before, after)``: how the reference of ``ref`` is padded."""
        axis, lo, hi = self.bounds.get(ref, (None, 0, 0))
        if axis is None:
            return None, 0, 0
        return axis, max(0, -lo), max(0, hi - self.aval(ref).shape[axis])

    def cached(self):
        """The variables whose reference values the cache holds: all that the pass reads
        from the reference, except constants (recomputed from the parameters)."""
        return [r for r in self.bounds if self.state(r) != CONST]


class Context:
    """The traced incremental pass of one item: region start ``s``, the ``cache`` (of
    this item's sequence, or of several sequences with this item's at index ``row``),
    and ``env``, the values computed so far (windows, full values)."""

    def __init__(self, planner: Planner, s, cache: dict, env: dict, row=None):
        self.planner, self.s, self.cache, self.env, self.row = planner, s, cache, env, row
        self.memo: dict = {}

    def value(self, ref):
        return ref.value if isinstance(ref, Lit) else self.env[ref]

    def padded(self, ref):
        """The reference (or constant) value of ``ref``, padded with zeros as planned."""
        if self.planner.state(ref) != CONST:
            value = self.cache[cache_key(ref)]
            return value if self.row is None else \
                lax.dynamic_index_in_dim(value, self.row, 0, keepdims=False)
        key = ("padded", ref)
        if key not in self.memo:
            axis, lo, hi = self.planner.pads(ref)
            value = jnp.asarray(self.value(ref))
            if axis is not None and lo + hi:
                pad = [(0, 0)] * value.ndim
                pad[axis] = (lo, hi)
                value = jnp.pad(value, pad)
            self.memo[key] = value
        return self.memo[key]

    def reference(self, ref, first, width: int):
        """The reference of ``ref`` on ``[first, first + width)`` (``first`` traced)."""
        axis, lo, _ = self.planner.pads(ref)
        if self.row is None or self.planner.state(ref) == CONST:
            return lax.dynamic_slice_in_dim(self.padded(ref), first + lo, width, axis)
        value = self.cache[cache_key(ref)]  # one slice of the row: no copy of the row
        starts = [self.row] + [0] * (value.ndim - 1)
        starts[axis + 1] = first + lo
        starts = [jnp.asarray(i, jnp.int32) for i in starts]  # one index dtype under x64 too
        sizes = (1,) + value.shape[1:axis + 1] + (width,) + value.shape[axis + 2:]
        return lax.dynamic_slice(value, starts, sizes)[0]

    def unpadded(self, ref):
        axis, lo, _ = self.planner.pads(ref)
        value = self.padded(ref)
        length = None if axis is None else self.planner.aval(ref).shape[axis]
        if length is None or value.shape[axis] == length:
            return value
        return lax.slice_in_dim(value, lo, lo + length, axis=axis)


def cache_key(ref: int) -> str:
    return f"v{ref}"


def plan_full(planner: Planner, ref) -> Getter:
    """The full value of ``ref`` in the incremental pass; a window is spliced into its
    reference (``dynamic_update_slice``)."""
    state = planner.state(ref)
    if isinstance(ref, Lit):
        return Getter(lambda ctx: ref.value)
    if state in (CONST, FULL):
        return Getter(lambda ctx: ctx.env[ref], frozenset({ref}))
    if state == ARG:
        planner.need(ref, None)
        return Getter(lambda ctx: ctx.unpadded(ref))
    w = state
    planner.need(ref, w.axis, w.start.lo, w.start.hi + w.width)

    def splice(ctx):
        if ("full", ref) not in ctx.memo:
            axis, lo, _ = planner.pads(ref)
            whole = lax.dynamic_update_slice_in_dim(ctx.padded(ref), ctx.env[ref],
                                                    w.start.at(ctx.s) + lo, axis)
            ctx.memo[("full", ref)] = lax.slice_in_dim(whole, lo, lo + w.length, axis=axis)
        return ctx.memo[("full", ref)]
    return Getter(splice, frozenset({ref}))


def plan_window(planner: Planner, ref, axis: int, start: Start, width: int) -> Getter:
    """The value of ``ref`` on ``[start, start + width)`` of ``axis`` in the incremental
    pass: its own window completed with the reference, or a slice of an unchanged value.
    Rank-0 operands (scalars broadcast by elementwise ops) come whole."""
    aval = planner.aval(ref)
    if len(aval.shape) == 0:
        return plan_full(planner, ref)
    state = planner.state(ref)
    if not isinstance(state, Window):
        planner.need(ref, axis, start.lo, start.hi + width)
        reads = frozenset({ref}) if state == CONST and not isinstance(ref, Lit) else frozenset()
        return Getter(lambda ctx: ctx.reference(ref, start.at(ctx.s), width), reads)
    if state.axis != axis:
        raise Unsupported("operands disagree on the position axis")
    if state.start == start and state.width == width:
        return Getter(lambda ctx: ctx.env[ref], frozenset({ref}))
    planner.need(ref, axis, start.lo, start.hi + width)
    o = state.start.offset_from(start)
    if o is not None:
        compose = _static_overlay(ref, state, start, width, o)
    else:
        compose = _dynamic_overlay(ref, state, start, width)
    return Getter(_reusing(ref, axis, start, width, compose), frozenset({ref}))


def _reusing(ref, axis: int, start: Start, width: int, compose: Callable) -> Callable:
    """``compose``, unless the pass already completed a window of ``ref`` holding this
    one at a static offset (a convolution's input holds the residual branch's window):
    then a slice of it."""
    def get(ctx):
        done = ctx.memo.setdefault(("windows", ref), [])
        for other, other_width, value in done:
            o = start.offset_from(other)
            if o is not None and 0 <= o and o + width <= other_width:
                return value if width == other_width else \
                    lax.slice_in_dim(value, o, o + width, axis=axis)
        value = compose(ctx)
        done.append((start, width, value))
        return value
    return get


def _static_overlay(ref, state: Window, start: Start, width: int, o: int) -> Callable:
    """Window ``state`` of ``ref`` sits at static offset ``o`` in the target window."""
    axis, w = state.axis, state.width
    cut_lo, cut_hi = max(0, -o), min(w, width - o)
    mid = max(0, cut_hi - cut_lo)
    left = min(max(0, o), width) if mid else width
    right = width - left - mid

    def get(ctx):
        first = start.at(ctx.s)
        parts = []
        if left:
            parts.append(ctx.reference(ref, first, left))
        if mid:
            window = ctx.env[ref]
            parts.append(window if mid == w else
                         lax.slice_in_dim(window, cut_lo, cut_hi, axis=axis))
        if right:
            parts.append(ctx.reference(ref, first + left + mid, right))
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=axis)
    return get


def _dynamic_overlay(ref, state: Window, start: Start, width: int) -> Callable:
    """Window ``state`` of ``ref`` sits at an offset that depends on ``s`` (strides)."""
    axis, w = state.axis, state.width
    d = state.start.values() - start.values()
    before, after = max(0, int(d.max())), max(0, width - int(d.min()) - w)

    def get(ctx):
        delta = state.start.at(ctx.s) - start.at(ctx.s)
        pad = [(0, 0)] * ctx.env[ref].ndim
        pad[axis] = (before, after)
        moved = lax.dynamic_slice_in_dim(jnp.pad(ctx.env[ref], pad), before - delta, width, axis)
        base = ctx.reference(ref, start.at(ctx.s), width)
        return _select_window(moved, base, axis, delta, w)
    return get


def _select_window(moved, base, axis: int, delta, w: int):
    shape = [1] * moved.ndim
    shape[axis] = moved.shape[axis]
    i = (jnp.arange(moved.shape[axis], dtype=jnp.int32) - delta).reshape(shape)
    return jnp.where((i >= 0) & (i < w), moved, base)


def plan_change(planner: Planner, ref) -> Getter:
    """``new - old`` on the window of ``ref``, zero outside ``[0, L)``: what a linear
    map over positions (a sum, a product contracting positions) adds to its reference."""
    w = planner.state(ref)
    planner.need(ref, w.axis, w.start.lo, w.start.hi + w.width)

    def get(ctx):
        first = w.start.at(ctx.s)
        diff = ctx.env[ref] - ctx.reference(ref, first, w.width)
        return mask_outside(diff, w.axis, first, w.length, 0) if w.leaves else diff
    return Getter(get, frozenset({ref}))
