"""jablate funcs of one sequence (attributions) on ``ablate``'s fast path.

``ablate(model, X, start, end, func=jablate.deep_lift_shap)`` (or
``func=jablate.saturation_mutagenesis``) means, as in tangermeme::

    y_before = func(model, X, **kw)
    y_after = func(model, shuffle(X, start, end, n).reshape(N * n, A, L), **kw)

Here the shuffled inputs are never materialised: each compiled step draws one batch of
shuffles (as :mod:`jablate.engine.stream` does for predictions) and applies the func's pure
per-sequence function to each of them, so ``y_after`` streams out batch by batch, or
accumulates into a per-sequence mean and standard deviation (``reduce='mean_std'``).

A func says how it runs here with a :class:`SequenceFunc`, the value it carries from its
definition (``@behaviour.carries(SequenceFunc(...))``, read by :func:`spec_of`): a builder
of the pure function ``fn(params, x (A, L), key, *args)`` of one sequence, and a check of
its keywords. The random key of row ``m`` of the materialised call is ``fold_in(base,
m)`` (see :func:`position_keys`), so the fast path gives what calling the func on the
materialised shuffles gives.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Mapping, Optional, Union

import jax
import jax.numpy as jnp
import numpy

from jablate._core.behaviour import PartialFallbackWarning, PredictFunc, describe, find
from jablate._core.caches import for_runner
from jablate._core.errors import InputError, outside_stacklevel
from jablate.engine import stream as engine
from jablate.engine.executor import (
    Collect,
    IncrementalMismatchWarning,
    Job,
    MeanStd,
    agree,
    checked,
    execute,
)
from jablate.models.runner import (
    cast_input,
    input_dtype,
    outputs_of,
)


@dataclass(frozen=True)
class SequenceFunc:
    """How ``ablate`` runs a jablate func on its fast path.

    Attributes
    ----------
    name: str
        The func's name, for messages.
    options: callable
        ``options(kwargs: dict) -> tuple or None``: the func's keywords checked
        (``ValueError`` naming a bad one, ``TypeError`` for an unknown one, before any
        model runs) and turned into a hashable tuple; None when the fast path cannot
        give what these keywords ask for (``ablate`` then calls the func on the
        materialised shuffles, as tangermeme does).
    build: callable
        ``build(apply, params, x, args, options, exact) -> fn`` with ``fn(params, x, key,
        *args) -> (result, diagnostics)``: the func's result for one sequence ``x``
        (A, L) (an array), drawing any randomness from ``key``, and a vector (K,) of
        diagnostics (K may be 0); ``args`` are that sequence's extra model inputs.
        ``params``, ``x`` and ``args`` (one sequence's) are examples for shapes.
        ``exact=False`` may return a faster function whose results are not certain (the
        incremental engine); it may also return None (no faster function: the exact one
        serves). Then the first batch of every run is also computed with
        ``exact=True`` and compared (:func:`jablate.incremental.run.agree`); on a
        mismatch an ``IncrementalMismatchWarning`` is issued and the run finishes exactly.
    key: callable
        ``key(random_state) -> JAX key``: the base key the func itself draws from for
        that ``random_state``.
    check: callable
        ``check(sums, maxima, count, options)``: told the sums and maxima of the
        diagnostics over all ``count`` sequences of a call, warns as the func would.
    per_step: callable
        ``per_step(batch_size, options) -> int``: sequences per compiled step for the
        func's own ``batch_size`` (say, sequence-reference pairs). Default: itself.
    takes_incremental: bool
        Whether the func has an ``incremental`` keyword ('auto', True, False), which
        ``ablate``'s own ``incremental`` sets unless the func's keywords do.
    ahead: callable or None
        ``ahead(options) -> draw or None``: an input of the func's function drawn
        ahead of the steps, for a block of items at once (:data:`AHEAD_BLOCK_BYTES` of
        it): ``draw(xs (B, A, L), keys (B,)) -> (B, ...)``, from the items' sequences as
        the step gives them and their keys (a batch, so that a draw can be one batch of
        its own). The built function then takes an item's row: ``fn(params, x, key,
        *args, ahead=value)``. For draws sequential over the positions (a whole-sequence
        dinucleotide shuffle's walk: an accelerator synchronises with the host at every
        step of a loop), once per block rather than once per batch of a few sequences.
        Results do not change: the same sequences and keys. Default None.
    """

    name: str
    options: Callable
    build: Callable
    key: Callable
    check: Callable
    per_step: Callable = lambda batch_size, options: batch_size
    takes_incremental: bool = False
    ahead: Optional[Callable] = None


#: What ``ablate`` passes every func itself: ``model`` and ``X`` by position, ``args`` by
#: keyword. A ``functools.partial`` binding one of them is called as it is.
CALL_ARGUMENTS = ("model", "X", "args")


@dataclass(frozen=True)
class OwnFunc:
    """One of jablate's funcs as ``ablate``'s ``func``, as :func:`spec_of` found it.

    Attributes
    ----------
    spec: behaviour.PredictFunc or SequenceFunc
        How the engine runs it.
    keywords: dict
        Keywords bound by a ``functools.partial``; the engine merges them under the
        call's keywords (``**kwargs``, ``additional_func_kwargs``), which win, as in a
        call of the partial.
    shown: str
        The func, for messages.
    """

    spec: Union[PredictFunc, SequenceFunc]
    keywords: Mapping[str, Any] = field(default_factory=dict)
    shown: str = ""


def spec_of(func: Any, role: str = "func") -> Optional[OwnFunc]:
    """How the engine runs ``func``: the one lookup of ``ablate``'s funcs.

    ``func`` is jablate's ``predict``, ``deep_lift_shap`` or ``saturation_mutagenesis``
    (by the value it carries from its definition, not by identity), or a
    ``functools.partial`` of one: its bound keywords are the func's keywords, as if
    passed through ``additional_func_kwargs`` (the call's own win, as in a call of the
    partial), and the func's own check (:attr:`SequenceFunc.options`) decides whether
    the fast path can give what they ask for. A partial binding positional arguments or
    one of ``model``, ``X``, ``args`` (which ``ablate`` passes itself) is called as it
    is, on the materialised path, with a :class:`~jablate._core.behaviour.PartialFallbackWarning`
    naming them.

    Returns
    -------
    own: OwnFunc or None
        None for a foreign func (or a partial that falls back).
    """
    found = find(func)
    if found is None or not isinstance(found.value, (PredictFunc, SequenceFunc)):
        return None
    unhonoured = ([f"positional argument {i + 1}" for i in range(len(found.args))]
                  + [k for k in found.keywords if k in CALL_ARGUMENTS])
    shown = describe(func, found)
    if unhonoured:
        warnings.warn(f"{role}={shown} binds {', '.join(unhonoured)}, which ablate passes "
                      "itself (model and X by position, args by keyword): the partial is "
                      "called as it is, on the materialised path (tangermeme's), not the "
                      "fast path.", PartialFallbackWarning, stacklevel=outside_stacklevel())
        return None
    return OwnFunc(found.value, dict(found.keywords), shown)


def position_keys(base: jax.Array, positions: jax.Array) -> jax.Array:
    """The key of each row ``positions[b]`` of a materialised call: ``fold_in(base, m)``."""
    return jax.vmap(lambda m: jax.random.fold_in(base, m))(positions)


#: Bytes of a func's inputs drawn ahead at once (a block of items; see ``SequenceFunc.ahead``).
AHEAD_BLOCK_BYTES = 64 * 2 ** 20


def _step(fn, params, x, rows, table, items, positions, base, *drawn, draw, dtype):
    """``fn`` on a batch of items, their sequences ``x`` (B, A, L) and ``rows`` of ``args``
    (:func:`jablate.engine.stream.batch_rows`); with ``drawn`` (one row per item), each
    item's input drawn ahead (``SequenceFunc.ahead``), passed as ``fn(..., ahead=row)``."""
    x = cast_input(draw(x, table, items), dtype)
    keys = position_keys(base, positions)
    if not drawn:
        return jax.vmap(fn, (None, 0, 0) + (0,) * len(rows))(params, x, keys, *rows)
    return jax.vmap(lambda p, xi, k, d, *a: fn(p, xi, k, *a, ahead=d),
                    (None, 0, 0, 0) + (0,) * len(rows))(params, x, keys, *drawn, *rows)


@partial(jax.jit, static_argnames=("ahead", "draw", "dtype"))
def _draw_ahead(ahead, x, table, items, positions, base, draw, dtype):
    """The inputs ``ahead(x, keys)`` of a block of items (their sequences ``x``), the
    sequences and keys as :func:`_step` makes them."""
    x = cast_input(draw(x, table, items), dtype)
    return ahead(x, position_keys(base, positions))


@jax.jit
def _rows_of(block, rows):
    return jnp.take(block, rows, axis=0)


class _Ahead:
    """A func's inputs drawn ahead (``SequenceFunc.ahead``), a block of items at a time:
    a power of two of the step's ``size`` (so a batch never straddles two blocks, and
    runs of different lengths share a few block shapes), about :data:`AHEAD_BLOCK_BYTES`
    of them, no more than the plan needs; the last block padded by repeating an item.
    Every device draws the whole block; a step receives its own rows (``size`` of them,
    whatever the block), so the steps' programs do not depend on the plan."""

    def __init__(self, ahead, plan, positions, size, where, X, table, base, draw, dtype):
        x = jax.ShapeDtypeStruct((1,) + X.shape[1:], input_dtype(X.dtype, dtype))
        out = jax.eval_shape(ahead, x, jax.random.split(jax.random.key(0), 1))  # one item
        self.block = engine.block_rows(size, len(plan), out.size * out.dtype.itemsize,
                                       AHEAD_BLOCK_BYTES)
        self.ahead, self.plan, self.positions, self.where = ahead, plan, positions, where
        self.X, self.table, self.base, self.draw, self.dtype = X, table, base, draw, dtype
        self.lo, self.values = None, None

    def rows(self, lo: int, size: int):
        """``(drawn,)``: the inputs of items ``lo`` to ``lo + size`` (the last padded)."""
        if self.lo is None or not self.lo <= lo < self.lo + self.block:
            items, _ = self.plan.batch(lo, self.block)
            at = self.positions[engine.padded_rows(lo, self.block, len(self.plan))]
            self.lo = lo
            items = self.where.replicate(items)
            self.values = _draw_ahead(self.ahead, engine.batch_rows(self.X, (), items)[0],
                                      self.table, items,
                                      self.where.replicate(jnp.asarray(at)), self.base,
                                      draw=self.draw, dtype=self.dtype)
        rows = numpy.arange(lo, lo + size, dtype=numpy.int32) - self.lo
        return (self.where.shard(_rows_of(self.values, self.where.replicate(
            jnp.asarray(rows)))),)


@partial(jax.jit, donate_argnums=(0, 1))
def _diagnose(sums, maxima, diagnostics, valid):
    d = jnp.where(valid[:, None], diagnostics, 0)
    m = jnp.where(valid[:, None], diagnostics, -jnp.inf)
    return sums + d.sum(0), jnp.maximum(maxima, m.max(0))


def compiled(model: engine.Model, spec: SequenceFunc, options: tuple, X: jax.Array,
             args: tuple, exact: bool = True) -> Optional[Callable]:
    """The compiled step of ``spec`` with ``options`` for ``model`` (None: the inexact
    one does not exist), cached on its runner (which dies with the model): one program
    per batch shape (with or without inputs drawn ahead)."""
    store = for_runner(model.runner, "per_sequence.steps")
    key = (spec.name, options, exact, X.shape[1:], str(X.dtype), model.dtype,
           tuple((a.shape[1:], str(a.dtype)) for a in args))
    if key not in store:
        fn = spec.build(model.runner.apply, model.params,
                        jnp.zeros(X.shape[1:], input_dtype(X.dtype, model.dtype)),
                        tuple(a[0] for a in args), options, exact)
        store[key] = None if fn is None else jax.jit(partial(_step, fn),
                                                     static_argnames=("draw", "dtype"))
    return store[key]


def run(stream: engine.Stream, spec: SequenceFunc, options: tuple, positions: numpy.ndarray,
        base: jax.Array, n: Optional[int] = None, shifts: Optional[list] = None,
        desc: Optional[str] = None) -> tuple[list, bool]:
    """Apply the func to every item of ``stream.plan``, batch by batch (through the
    executor; ``stream.batch_size`` as the func counts it, see ``spec.per_step``).

    Parameters
    ----------
    stream: engine.Stream with M items
    spec: SequenceFunc
    options: tuple
        The func's options (``spec.options``).
    positions: int array (M,)
        Each item's row in the materialised call (its key is ``fold_in(base, row)``).
    base: JAX key
    shifts: None, or a list of host arrays (G, ...) (one per output)
        Given, items ``g * n + i`` form group ``g`` and only the per-group mean and
        (population) standard deviation over its ``n`` items are kept, accumulated on
        the device as differences from ``shifts`` (say, the func on the unshuffled
        sequence: ``reduce='mean_std'``).

    Returns
    -------
    outputs: list of host arrays, each (M, ...), or (mean, std) pairs, each (M / n, ...)
    multi: bool

    The func's diagnostics over the M items go to ``spec.check`` before returning.
    """
    model, X, args, plan = stream.model, stream.X, stream.args, stream.plan
    draw, table, batch_size = stream.draw, stream.table, stream.batch_size
    if not model.jittable:
        raise InputError(f"func={spec.name} runs JAX models; translate a torch model first "
                         "(backend='jax').")
    ahead = None if spec.ahead is None else spec.ahead(options)
    exact = compiled(model, spec, options, X, args)
    fast = compiled(model, spec, options, X, args, exact=False)
    # every device of the run: each step's items sharded over them, the rest replicated
    where = engine.Devices(model, X)
    size = where.size(max(1, spec.per_step(batch_size, options)), len(plan))
    positions = numpy.asarray(positions, numpy.int32)
    params, X, args, table, base = where.replicate((model.params, X, args, table, base))
    blocks = None if ahead is None else _Ahead(ahead, plan, positions, size, where, X, table,
                                               base, draw, model.dtype)

    def call(program):
        def step(items, lo):
            at = positions[engine.padded_rows(lo, size, len(plan))]
            drawn = () if blocks is None else blocks.rows(lo, size)
            x, rows = engine.batch_rows(X, args, items, where)
            return program(params, x, rows, table, items, where.shard(jnp.asarray(at)), base,
                           *drawn, draw=draw, dtype=model.dtype)
        return step

    def mismatch():
        warnings.warn(f"{spec.name}: the incremental engine disagreed with the full path on "
                      "the first batch; finishing on the full path.",
                      IncrementalMismatchWarning, stacklevel=outside_stacklevel())

    inner = call(exact) if fast is None else checked(
        call(fast), call(exact), lambda a, b: agree(outputs_of(a[0])[0], outputs_of(b[0])[0]),
        mismatch)
    state = {"diag": None, "multi": False}

    def step(items, lo):
        y, diagnostics = inner(items, lo)
        if state["diag"] is None:
            state["diag"] = (jnp.zeros(diagnostics.shape[1:], jnp.float32),
                             jnp.full(diagnostics.shape[1:], -jnp.inf, jnp.float32))
        valid = min(size, len(plan) - lo)
        state["diag"] = _diagnose(*state["diag"], diagnostics.astype(jnp.float32),
                                  jnp.arange(size) < valid)
        ys, state["multi"] = outputs_of(y, spec.name)
        return ys

    sink = Collect() if shifts is None else MeanStd(shifts, n, len(plan))
    out = execute(Job(plan, step, size, where.shard, progress=stream.verbose, desc=desc), sink)
    diag = state["diag"]
    spec.check(numpy.asarray(diag[0]), numpy.asarray(diag[1]), len(plan), options)
    return out, state["multi"]

