"""Incremental evaluation: recompute only what a change of a region can change.

Ablation predicts on a sequence and on copies whose region ``[s, s + W)`` was
shuffled. A convolution's output changes only near the region, so most of the
second pass repeats the first. :func:`analyze` traces a pure JAX model once (at a
batch of one) and builds from its jaxpr:

- ``reference(params, x, *args) -> (cache, outputs)``: the full forward pass on one
  unchanged sequence, keeping the activations the incremental pass reads;
- ``apply(params, cache, x_window, s, row=None) -> outputs``: the model's outputs
  for that sequence with positions ``[s, s + W)`` replaced by ``x_window``, computing
  each layer only on the window its input change can reach (static width, traced
  ``s``: one compiled program serves every region of width ``W``);
- ``summary``: per equation, how far its window reaches, where windowing stops and
  why, the predicted FLOP saving and the cache size.

Both functions take one item; ``jax.vmap`` them over sequences and items. Items
either carry their own sequence's cache, or index a cache of many sequences by
``row`` (no per-item copy of the cache)::

    inc = analyze(apply, params, X[0], width=20)
    cache, y_before = jax.vmap(inc.reference, (None, 0))(params, X)   # (N, ...)
    y_after = jax.vmap(inc.apply, (None, None, 0, 0, 0))(params, cache, windows,
                                                         starts, rows)

Which equations are windowed follows from the jaxpr alone (rules per primitive in
:mod:`jablate.incremental.rules`); an equation without a rule is computed in full,
and so is everything that depends on it. A sum over positions is updated by its
change (``reference + sum(new - old)``); the first equation that mixes positions
in any other way (max over positions, attention, a dense layer on flattened
positions) gets its windowed operands spliced into their references and runs in
full. Results equal the full forward pass up to float32 rounding (sums are taken
in another order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jablate._core.errors import InputError
from jablate.incremental.graph import Graph, Lit, flatten, flops, nbytes
from jablate.incremental.rules import apply_rule, break_rule, broken, full_bind
from jablate.incremental.windows import (
    ARG,
    CONST,
    FULL,
    Base,
    Context,
    Planner,
    Start,
    Unsupported,
    Window,
    cache_key,
    plan_full,
)

__all__ = ["Incremental", "Layer", "Summary", "analyze", "break_rule"]


@dataclass(frozen=True)
class Layer:
    """What the analysis decided for one equation of the flattened jaxpr.

    ``mode``: ``"const"`` (no dependence on ``x``: recomputed from parameters),
    ``"arg"`` (from ``args`` only: taken from the cache), ``"window"`` (computed on
    a window of ``width`` of its ``length`` positions), ``"delta"`` (a linear map over
    positions, updated by its change on a window of ``width``), ``"full"`` (computed
    in full). ``reach``: how many positions the output window extends before and
    after the region, when it is in the input's coordinates (``None`` after strides).
    ``reason``: why windowing stops here (only where a windowed operand meets an
    equation that must run in full).
    """

    index: int
    primitive: str
    mode: str
    width: int | None
    length: int | None
    reach: tuple | None
    reason: str | None
    flops_full: int
    flops_incremental: float


@dataclass(frozen=True)
class Summary:
    """The analysis of one model at one region width.

    ``flops_full`` / ``flops_incremental``: FLOPs of one sequence's full pass and of
    one item's incremental pass (data movement not counted); ``cache_bytes``: the
    cache of one sequence; ``stops``: ``(index, primitive, reason)`` where windows are
    spliced back into full activations; ``broken``: the primitive whose rule
    :func:`jablate.incremental.rules.break_rule` broke (tests only).
    """

    length: int
    width: int
    layers: tuple
    flops_full: int
    flops_incremental: float
    cache_bytes: int
    stops: tuple
    broken: str | None = None

    @property
    def flop_ratio(self) -> float:
        """Predicted saving: full FLOPs over incremental FLOPs."""
        return self.flops_full / max(self.flops_incremental, 1.0)

    def table(self) -> str:
        """A readable table of the equations that depend on the input."""
        rows = [f"{'#':>4}  {'primitive':<22}{'mode':<8}{'window':>14}{'reach':>14}"
                f"{'MFLOP full':>12}{'incr.':>10}  why full"]
        for ly in self.layers:
            if ly.mode in ("const", "arg"):
                continue
            window = f"{ly.width}/{ly.length}" if ly.width is not None else ""
            reach = f"{ly.reach[0]}+{ly.reach[1]}" if ly.reach else ""
            rows.append(f"{ly.index:>4}  {ly.primitive:<22}{ly.mode:<8}{window:>14}{reach:>14}"
                        f"{ly.flops_full / 1e6:>12.3f}{ly.flops_incremental / 1e6:>10.3f}"
                        f"  {ly.reason or ''}")
        rows.append(f"L={self.length} W={self.width}: {self.flops_full / 1e6:.2f} MFLOP full, "
                    f"{self.flops_incremental / 1e6:.2f} incremental ({self.flop_ratio:.1f}x); "
                    f"cache {self.cache_bytes / 2**20:.2f} MiB per sequence")
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.table()


class Incremental(NamedTuple):
    """The incremental evaluator of one model at one region width (see :func:`analyze`)."""

    reference: Callable
    apply: Callable
    summary: Summary
    length: int
    width: int


class _Step(NamedTuple):
    node: Any
    mode: str
    run: Callable | None
    reads: frozenset
    fraction: float


def _trace(apply, params, x, args):
    """The jaxpr of ``apply`` on one sequence (a batch of one, batch axis dropped)."""
    tree = []

    def one(params, x, *args):
        outs = apply(params, x[None], *[a[None] for a in args])
        leaves, treedef = jax.tree.flatten(outs)
        for leaf in leaves:
            if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != 1:
                raise InputError(f"analyze: the model returned an output of shape "
                                 f"{jnp.shape(leaf)} for a batch of one; every output needs a "
                                 "leading batch axis")
        tree.append(treedef)
        return [leaf[0] for leaf in leaves]

    closed = jax.make_jaxpr(one)(params, x, *args)
    return flatten(closed), tree[0]


def _plan_node(planner: Planner, node) -> tuple:
    """``(step, reason)`` for one equation, updating the planner's states."""
    states = [planner.state(r) for r in node.inputs]
    windowed = any(isinstance(s, Window) for s in states)
    if FULL not in states and not windowed:
        mode = ARG if ARG in states else CONST
        for r in node.outputs:
            planner.states[r] = mode
        if mode == ARG:
            return _Step(node, "arg", None, frozenset(), 0.0), None
        return _full_step(planner, node, "const"), None
    reason = None
    if windowed and FULL not in states:
        try:
            planned = apply_rule(planner, node)
        except Unsupported as why:
            reason = str(why)
        else:
            planner.states.update(zip(node.outputs, planned.states))
            return _Step(node, planned.mode, planned.run, planned.reads, planned.fraction), None
    for r in node.outputs:
        planner.states[r] = FULL
    return _full_step(planner, node, "full"), reason


def _full_step(planner: Planner, node, mode: str) -> _Step:
    getters = [plan_full(planner, r) for r in node.inputs]

    def run(ctx):
        return node.bind(*[g.fn(ctx) for g in getters])
    return _Step(node, mode, run, frozenset().union(*(g.reads for g in getters)), 1.0)


def _live(steps: list, outputs: frozenset) -> list:
    """The steps the incremental pass must run to produce ``outputs``."""
    needed, kept = set(outputs), []
    for step in reversed(steps):
        if step.run is not None and needed.intersection(step.node.outputs):
            kept.append(step)
            needed |= step.reads
    return kept[::-1]


def _reference_nodes(graph: Graph, wanted: set) -> list:
    needed, kept = set(wanted), []
    for node in reversed(graph.nodes):
        if needed.intersection(node.outputs):
            kept.append(node)
            needed.update(r for r in node.inputs if not isinstance(r, Lit))
    return kept[::-1]


def analyze(apply: Callable, params: Any, x: Any, width: int, args: tuple = ()) -> Incremental:
    """Build the incremental evaluator of ``apply`` for regions of ``width`` positions.

    Parameters
    ----------
    apply: callable
        ``apply(params, X, *args)`` with ``X`` of shape ``(B, A, L)``, returning an
        array or a tuple/list (any pytree) of arrays, each with a leading batch axis.
        It must be traceable by JAX; it is traced once, at ``B = 1``.
    params: pytree of arrays
        The parameters; :func:`analyze` uses their shapes, the evaluator their values.
    x: array, shape (A, L)
        One sequence; only its shape and dtype are used.
    width: int
        ``W``, the width of the replaced positions, ``1 <= W <= L``.
    args: tuple of arrays
        One sequence's extra model inputs, without the batch axis.

    Returns
    -------
    Incremental
        ``reference(params, x, *args) -> (cache, outputs)`` with ``x`` (A, L): the
        outputs of the full pass for that sequence (each without its batch axis) and
        ``cache``, a dict of arrays (``summary.cache_bytes`` in all).
        ``apply(params, cache, x_window, s, row=None) -> outputs`` with ``x_window``
        (A, W) and ``s`` an int in ``[0, L - W]`` (traced or not): the outputs for the
        sequence whose positions ``[s, s + W)`` hold ``x_window``. With ``row``, ``cache``
        holds several sequences (``reference`` vmapped over them: a leading axis) and
        the item's is ``cache[...][row]``; vmap over items with ``cache`` unbatched
        reads only the slices each item needs instead of copying its sequence's cache.
        A region ending past ``L - W`` is handled by ``s = L - W`` with the unchanged
        positions copied into ``x_window``; ``s`` out of range gives wrong results,
        not an error.
        ``summary``: a :class:`Summary`.
    """
    x = jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
    if len(x.shape) != 2:
        raise InputError(f"analyze: x must be one sequence of shape (A, L), got {x.shape}")
    length = x.shape[1]
    if not 1 <= int(width) <= length:
        raise InputError(f"analyze: width must be in [1, {length}], got {width}")
    width = int(width)
    args = tuple(jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)) for a in args)
    graph, out_tree = _trace(apply, params, x, args)
    params_tree = jax.tree.structure(params)
    n_params = params_tree.num_leaves
    x_id = graph.inputs[n_params]

    planner = Planner(graph)
    for r in graph.inputs[:n_params]:
        planner.states[r] = CONST
    for r in graph.inputs[n_params + 1:]:
        planner.states[r] = ARG
    identity = Base(lambda s, xp: s, np.arange(length - width + 1))
    region = Start(identity, 0)
    planner.states[x_id] = Window(1, length, width, region) if width < length else FULL

    steps, layers, stops = [], [], []
    for node in graph.nodes:
        step, reason = _plan_node(planner, node)
        steps.append(step)
        if reason is not None:
            stops.append((node.index, node.name, reason))
        layers.append((node, step, reason))
    outputs = [plan_full(planner, r) for r in graph.outputs]
    for r in graph.outputs:
        if not isinstance(r, Lit) and isinstance(planner.state(r), Window):
            stops.append((None, "output", "the output window is spliced into the reference"))
    live = _live(steps, frozenset().union(*(g.reads for g in outputs)))
    live_ids = {id(s) for s in live}

    cached = planner.cached()
    wanted = set(cached) | {r for r in graph.outputs if not isinstance(r, Lit)}
    reference_nodes = [(node, full_bind(node, _rhs_shape(planner, node)))
                       for node in _reference_nodes(graph, wanted)]
    summary = _summary(planner, layers, stops, live_ids, region, length, width, cached)

    def reference(params, x, *args):
        values = jax.tree.leaves(params)
        if len(values) != n_params:
            raise InputError(f"reference: params has {len(values)} leaves, the analysed "
                             f"model {n_params}")
        env = dict(zip(graph.inputs, [*values, x, *args]))
        read = lambda r: r.value if isinstance(r, Lit) else env[r]
        for node, bind in reference_nodes:
            env.update(zip(node.outputs, bind(*map(read, node.inputs))))
        cache = {cache_key(r): _pad(env[r], planner.pads(r)) for r in cached}
        return cache, jax.tree.unflatten(out_tree, [read(r) for r in graph.outputs])

    def incremental_apply(params, cache, x_window, s, row=None):
        values = jax.tree.leaves(params)
        if len(values) != n_params:
            raise InputError(f"apply: params has {len(values)} leaves, the analysed "
                             f"model {n_params}")
        if jnp.shape(x_window) != (x.shape[0], width):
            raise InputError(f"apply: x_window must have shape {(x.shape[0], width)}, "
                             f"got {jnp.shape(x_window)}")
        env = dict(zip(graph.inputs[:n_params], values))
        env[x_id] = jnp.asarray(x_window, x.dtype)
        ctx = Context(planner, jnp.asarray(s, jnp.int32), cache, env,
                      None if row is None else jnp.asarray(row, jnp.int32))
        for step in live:
            env.update(zip(step.node.outputs, step.run(ctx)))
        return jax.tree.unflatten(out_tree, [g.fn(ctx) for g in outputs])

    return Incremental(reference, incremental_apply, summary, length, width)


def _rhs_shape(planner, node):
    if len(node.inputs) != 2 or isinstance(node.inputs[1], Lit):
        return None
    return planner.aval(node.inputs[1]).shape


def _pad(value, pads):
    axis, lo, hi = pads
    if axis is None or not lo + hi:
        return value
    widths = [(0, 0)] * value.ndim
    widths[axis] = (lo, hi)
    return jnp.pad(value, widths)


def _summary(planner, layers, stops, live_ids, region, length, width, cached) -> Summary:
    rows, total, incremental = [], 0, 0.0
    for node, step, reason in layers:
        cost = flops(planner.graph, node)
        total += cost
        spent = cost * step.fraction if id(step) in live_ids else 0.0
        incremental += spent
        w = planner.state(node.outputs[0]) if node.outputs else None
        if step.mode == "delta":
            w = next(planner.state(r) for r in node.inputs
                     if isinstance(planner.state(r), Window))
        win = w if isinstance(w, Window) else None
        reach = None
        if win is not None and win.start.base is region.base and win.origin is not None:
            first = win.start.offset + win.origin
            reach = (-first, first + win.width - width)
        rows.append(Layer(node.index, node.name, step.mode, win and win.width,
                          win and win.length, reach, reason, cost, spent))
    cache_bytes = 0
    for r in cached:
        aval = planner.aval(r)
        axis, lo, hi = planner.pads(r)
        extra = 0 if axis is None else (lo + hi) * nbytes(aval) // max(aval.shape[axis], 1)
        cache_bytes += nbytes(aval) + extra
    return Summary(length, width, tuple(rows), total, incremental, cache_bytes, tuple(stops),
                   broken())

