"""In-silico saturation mutagenesis: tangermeme's ``saturation_mutagenesis`` on JAX.

Every single-base substitution of every sequence is one *item* ``(sequence, position,
character)``; a compiled step writes each item's substitution into its sequence and runs
the model, so the ``(N, L·(A−1), A, L)`` batch of edited sequences never exists. Items
that would re-write the base already there (identity edits) are skipped, as tangermeme
1.3+ does, and their predictions are the original ones (``y0``).

A substitution is a changed window of width 1, so the incremental engine
(:func:`jablate.incremental.analysis.analyze`) applies: per sequence one reference pass, then
per substitution only the positions of each layer it can reach (fastISM, Nair et al.,
Bioinformatics 2022). The first batch is checked against the full path at run time.

:func:`ism_fn` is the same computation for one sequence as a pure, jit- and
vmap-able function of ``(params, x, *args)`` (for ``ablate(func=...)``).
"""

from __future__ import annotations

import dataclasses
import weakref
from functools import partial
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy
from tqdm.auto import tqdm

from jablate._core.behaviour import carries
from jablate._core.caches import for_runner
from jablate._core.errors import InputError, warn_not_finite
from jablate._core.lowering import plain_convolutions
from jablate.api.predict import prepare, torch_dtype
from jablate.engine import stream as engine
from jablate.engine.executor import Collect, Job, checked, execute
from jablate.engine.per_sequence import SequenceFunc
from jablate.incremental.analysis import Incremental, analyze
from jablate.incremental.run import (
    AUTO_MAX_TIME_FRACTION,
    AUTO_MIN_ITEMS,
    BATCH_FLOPS,
    MEMORY_BUDGET,
    Mode,
    check_mode,
    check_precision,
    confirmed,
    evaluator,
    exact_float32,
    has_run,
    platform_of,
    predicted_time_fraction,
)
from jablate.models.frontdoor import (
    check_flag,
    check_int,
    family,
    inputs,
    is_torch_module,
    region,
    tree_to_family,
)
from jablate.models.runner import (
    Backend,
    _alive,
    _Strong,
    cast_input,
    check_backend,
    outputs_of,
)

__all__ = ["SaturationMutagenesisRawResult", "ism_fn", "saturation_mutagenesis"]

#: Substitutions listed on the host at once on the full path (12 bytes each).
ITEMS_PER_CHUNK = 1 << 20


class SaturationMutagenesisRawResult(NamedTuple):
    """What ``saturation_mutagenesis(..., raw_outputs=True)`` returns (tangermeme's fields).

    ``y0``: the predictions on the original sequences, (N, ...) (a list of such for a
    model with several outputs). ``y_hat``: the prediction for each substitution,
    (N, A, end - start, ...), laid out as ``[sequence, character, position]``; the
    identity entries (the base already there) hold ``y0``.
    """

    y0: Any
    y_hat: Any


# --- what both paths share -------------------------------------------------------------


def _target_key(target: Any) -> Any:
    """``target`` checked and made hashable: None, an int, ``("slice", start, stop,
    step)``, ``("index", i, j, ...)`` for a list or 1-d integer array (numpy, JAX or
    torch) of outputs, or ``("mask", b0, b1, ...)`` for booleans, as tangermeme's
    ``y[..., target]`` takes them."""
    if target is None:
        return None
    if isinstance(target, slice):
        for part in (target.start, target.stop, target.step):
            if part is not None:
                check_int(part, "target (slice bounds)")
        return ("slice", target.start, target.stop, target.step)
    if isinstance(target, (list, tuple)) or getattr(target, "ndim", 0) == 1:
        values = list(target.tolist() if hasattr(target, "tolist") else target)
        if not values:
            raise InputError("target must not be empty.")
        if all(isinstance(v, (bool, numpy.bool_)) for v in values):  # a mask of outputs
            return ("mask",) + tuple(bool(v) for v in values)
        return ("index",) + tuple(check_int(v, "target (each index)") for v in values)
    if isinstance(target, bool) or getattr(target, "ndim", 0) != 0:
        raise InputError(f"target must be None, an int, a slice or a list of ints; got "
                         f"{target!r}.")
    return check_int(target, "target")


def _index(key: Any) -> Any:
    """What :func:`_target_key` made, as an index of axis 1 of the outputs."""
    if isinstance(key, tuple):
        if key[0] == "mask":
            return numpy.flatnonzero(numpy.asarray(key[1:]))
        return slice(*key[1:]) if key[0] == "slice" else numpy.asarray(key[1:])
    return key


def _target_of(key: Any) -> Any:
    """The target :func:`_target_key` made ``key`` from, in a form it takes again (a
    slice, a list of ints or of booleans, an int or None)."""
    if isinstance(key, tuple):
        return slice(*key[1:]) if key[0] == "slice" else list(key[1:])
    return key


def _show(target: Any) -> str:
    return repr(_target_of(target))


def _select(y: jax.Array, target: Any) -> jax.Array:
    """tangermeme's ``y[:, ..., target]`` averaged over the remaining output axes: (B,)."""
    picked = y[:, _index(target)]
    return picked if picked.ndim == 1 else jnp.mean(picked, axis=tuple(range(1, picked.ndim)))


def _substitute(x: jax.Array, pos: jax.Array, char: jax.Array) -> jax.Array:
    """``x`` (A, L) with column ``pos`` set to the one-hot of ``char``; ``pos < 0``: ``x``."""
    column = jax.nn.one_hot(char, x.shape[0], dtype=x.dtype)[:, None]
    edited = jax.lax.dynamic_update_slice_in_dim(x, column, jnp.maximum(pos, 0), axis=1)
    return jnp.where(pos >= 0, edited, x)


def _check_outputs(shapes: Any, target: Any, raw_outputs: bool) -> bool:
    """Whether the model has several outputs; ``ValueError`` for what tangermeme rejects."""
    multi = isinstance(shapes, (tuple, list))
    if multi and not raw_outputs:
        raise InputError("raw_outputs=True is required for models that return several "
                         "outputs: the attribution assumes a single output array.")
    if not raw_outputs:
        shape = tuple(shapes.shape)
        size = shape[1] if len(shape) > 1 else 0
        index = _index(target)
        if isinstance(target, tuple) and target[0] == "mask" and len(target) - 1 != size:
            raise InputError(f"target {_show(target)}, a mask, has {len(target) - 1} entries; "
                             f"the model has {size} output(s) (axis 1 of its output).")
        picked = (len(range(*index.indices(size))) if isinstance(index, slice) else
                  size if index is None else int(numpy.size(index) > 0 and all(
                      -size <= i < size for i in numpy.ravel(index))))
        if target is not None and not picked:
            raise InputError(f"target {_show(target)} does not index the model's {size} "
                             f"output(s) (axis 1 of its output, {shape[1:]} per example).")
    return multi


# --- the pure core -------------------------------------------------------------------------


def ism_fn(apply: Callable, *, start: int = 0, end: int = -1, target: Any = None,
           hypothetical: bool = False, raw_outputs: bool = False, batch_size: int = 32,
           incremental: Optional[Incremental] = None) -> Callable:
    """Saturation mutagenesis of one sequence, as a pure function.

    Parameters
    ----------
    apply: callable
        ``apply(params, X, *args)`` with ``X`` (B, A, L), returning an array (or, with
        ``raw_outputs=True``, a tuple/list of arrays) with a leading batch axis. Any
        dtype cast is ``apply``'s business: the edited sequences have ``x``'s dtype.
    start, end: int, optional
        The span to mutate, tangermeme's semantics: ``start`` inclusive, ``end``
        exclusive when ``>= 0``, ``end = L + 1 + end`` when negative. Defaults 0, -1
        (the whole sequence).
    target: None, int, slice or list of ints, optional
        Output index along axis 1 to attribute (several are averaged); None averages
        over every output. Default None.
    hypothetical: bool, optional
        Return the attribution of every character rather than only the observed ones.
        Default False.
    raw_outputs: bool, optional
        Return ``SaturationMutagenesisRawResult(y0, y_hat)`` instead. Default False.
    batch_size: int, optional
        Substitutions per model call (a ``lax.map`` runs over the batches). Default 32.
    incremental: Incremental or None, optional
        ``analyze(apply, params, x, 1, args)`` of the same ``apply`` at width 1: then
        each sequence gets one reference pass and every substitution runs
        incrementally. Default None (full passes).

    Returns
    -------
    f: callable
        ``f(params, x, *args)`` with ``x`` (A, L) one-hot (all-zero columns allowed) and
        ``args`` one sequence's extra inputs (no batch axis). It returns the attribution
        (A, end - start): the change of the (target-averaged) output for each
        substitution, minus its mean over the alphabet at each position, times ``x``
        unless ``hypothetical``; or with ``raw_outputs``, ``y0`` (the output structure
        without batch axis) and ``y_hat`` (each leaf (A, end - start, ...)). Identity
        substitutions are skipped (their entries are ``y0``); an all-zero column gets
        all ``A`` substitutions. ``jax.jit`` and ``jax.vmap`` apply.

    Raises
    ------
    ValueError
        Bad ``start``, ``end`` (also when ``f`` is traced, against ``L``), ``target``,
        ``hypothetical``, ``raw_outputs``, ``batch_size`` or ``incremental``; several
        outputs without ``raw_outputs``.
    """
    check_int(start, "start")
    check_int(end, "end")
    key = _target_key(target)
    hypothetical = check_flag(hypothetical, "hypothetical")
    raw_outputs = check_flag(raw_outputs, "raw_outputs")
    size = check_int(batch_size, "batch_size", minimum=1)
    if incremental is not None and (not isinstance(incremental, Incremental)
                                    or incremental.width != 1):
        raise InputError("incremental must be None or the Incremental of analyze(apply, "
                         "params, x, 1, args), at width 1.")

    def f(params, x, *args):
        A, L = x.shape
        s, e = region(start, end, L)
        W = e - s
        span = x[:, s:e]
        ref = jnp.argmax(span, axis=0)
        clean = jnp.sum(span, axis=0) == 1  # one-hot column: its identity edit is skipped
        if incremental is not None:
            if incremental.length != L:
                raise InputError(f"incremental was analysed at length {incremental.length}, "
                                 f"x has {L}.")
            cache, y0 = incremental.reference(params, x, *args)

            def run(pos, char):
                windows = jax.nn.one_hot(char, A, dtype=x.dtype)[:, :, None]
                return jax.vmap(incremental.apply, (None, None, 0, 0))(params, cache,
                                                                       windows, pos)
        else:
            y0 = jax.tree.map(lambda y: y[0], apply(params, x[None], *(a[None] for a in args)))

            def run(pos, char):
                xs = jax.vmap(_substitute, (None, 0, 0))(x, pos, char)
                batch = tuple(jnp.broadcast_to(a, (pos.shape[0],) + a.shape) for a in args)
                return apply(params, xs, *batch)

        leaves0, treedef = jax.tree.flatten(y0)
        _check_outputs(jax.tree.map(lambda y: jax.ShapeDtypeStruct((1,) + y.shape, y.dtype),
                                    y0), key, raw_outputs)

        def outputs(pos, char):
            ys = jax.tree.leaves(run(pos, char))
            return ys if raw_outputs else [_select(ys[0] - leaves0[0][None], key)]

        grids = ([jnp.broadcast_to(y, (A, W) + y.shape).astype(y.dtype) for y in leaves0]
                 if raw_outputs else [jnp.zeros((A, W), leaves0[0].dtype)])
        K, B = A - 1, size
        if K * W:  # every column: the A - 1 characters other than its argmax
            M = K * W
            n_batches = -(-M // B)
            m = jnp.minimum(jnp.arange(n_batches * B), M - 1)
            p, k = m // K, m % K + 1
            res = jax.lax.map(lambda pc: outputs(*pc),
                              ((s + p).reshape(n_batches, B),
                               ((ref[p] + k) % A).reshape(n_batches, B)))
            p, k = jnp.arange(M) // K, jnp.arange(M) % K + 1
            grids = [g.at[(ref[p] + k) % A, p].set(r.reshape((-1,) + r.shape[2:])[:M])
                     for g, r in zip(grids, res)]

        # all-zero columns also need their argmax character (0): a loop over just those
        unknown = jnp.sum(~clean)
        order = jnp.argsort(clean, stable=True)

        def more(carry):
            return carry[0] < unknown

        def body(carry):
            lo, grids = carry
            idx = lo + jnp.arange(B)
            p = order[jnp.minimum(idx, W - 1)]
            res = outputs(s + p, jnp.zeros_like(p))
            p = jnp.where(idx < unknown, p, W)  # out of range: dropped
            return lo + B, [g.at[0, p].set(r, mode="drop") for g, r in zip(grids, res)]

        _, grids = jax.lax.while_loop(more, body, (jnp.int32(0), grids))
        if raw_outputs:
            return SaturationMutagenesisRawResult(y0, jax.tree.unflatten(treedef, grids))
        d = grids[0]
        attr = d - jnp.mean(d, axis=0, keepdims=True)
        return attr if hypothetical else attr * span.astype(attr.dtype)

    return f


# --- the streamed engine -------------------------------------------------------------------


def _programs(model: engine.Model) -> dict:
    """This module's compiled programs, cached on the runner (which dies with its model)."""
    return for_runner(model.runner, "ism.programs")


def _post_programs(model: engine.Model) -> tuple[dict, Any]:
    """The programs for ``model.post`` (tangermeme's ``func``) and a reference to it.

    Held weakly, as :meth:`jablate.models.runner.JaxRunner.step_for` holds its steps: a
    ``func`` the caller drops takes its programs along; one that cannot be weakly
    referenced gets programs for this call only.
    """
    if model.post is None:
        return _programs(model), None
    posts = for_runner(model.runner, "ism.posts", weakref.WeakKeyDictionary)
    try:
        return posts.setdefault(model.post, {}), weakref.ref(model.post)
    except TypeError:
        return {}, _Strong(model.post)


def _post(post_ref, y):
    """``y`` (a batch of model outputs) through ``func``, checked, when there is one."""
    if post_ref is None:
        return y
    outputs_of(y)
    y = _alive(post_ref)(y)
    outputs_of(y, "func")
    return y


def _full_step(apply, post_ref, params, x, args, pos, char, dtype):
    """The model (and ``func``) on a batch of sequences ``x`` (B, A, L) with ``char`` at
    ``pos`` (pos < 0: unchanged). ``N`` is not part of its shape: one program per batch
    shape."""
    y = apply(params, cast_input(jax.vmap(_substitute)(x, pos, char), dtype), *args)
    outputs_of(y)
    return _post(post_ref, y)


@jax.jit
def _take(X, args, seq):
    return jnp.take(X, seq, axis=0), tuple(jnp.take(a, seq, axis=0) for a in args)


def _full(model: engine.Model) -> Callable:
    store, post_ref = _post_programs(model)
    if "full" not in store:
        store["full"] = jax.jit(partial(_full_step, model.runner.apply, post_ref),
                                static_argnames=("dtype",))
    return store["full"]


def _incremental_step(inc, post_ref, params, caches, pos, char, rows, A, dtype):
    windows = jax.nn.one_hot(char, A, dtype=dtype)[:, :, None]
    y = jax.vmap(inc.apply, (None, None, 0, 0, 0))(params, caches, windows, pos, rows)
    return jax.tree.leaves(_post(post_ref, y))


def _key(model: engine.Model, X: jax.Array, args: tuple) -> tuple:
    return ("incremental", X.shape[1:], str(X.dtype), str(model.dtype),
            tuple((a.shape[1:], str(a.dtype)) for a in args))


def _evaluator(model: engine.Model, X: jax.Array, args: tuple) -> dict:
    """The width-1 analysis and its compiled reference and step, cached on the runner.

    Raises
    ------
    RuntimeError
        When the analysis failed (the failure is cached too, as text).
    """
    store = _programs(model)
    key = _key(model, X, args)
    if key not in store:
        try:  # the analysis is ablation's, at width 1 (one analysis serves both)
            ev = evaluator(model, X, args, 1)
        except Exception as error:  # noqa: BLE001 - any failure means: use the full path
            store[key] = f"the analysis failed: {type(error).__name__}: {error}"
        else:
            store[key] = dict(inc=ev["inc"], reference=ev["reference"])
    entry = store[key]
    if isinstance(entry, str):
        raise RuntimeError(entry)
    steps, post_ref = _post_programs(model)  # the step applies func (the analysis does not)
    step_key = ("incremental step",) + key
    if step_key not in steps:
        steps[step_key] = jax.jit(partial(_incremental_step, entry["inc"], post_ref,
                                          A=X.shape[1], dtype=X.dtype))
    return dict(entry, step=steps[step_key], mark_ran=lambda: entry.__setitem__("ran", True))


def _choose(model: engine.Model, X: jax.Array, args: tuple, n_items: int,
            mode: Any, devices: Any) -> Optional[dict]:
    """The incremental evaluator when this run should use it, else None (``devices``:
    where the run computes, for the cost model)."""
    if mode is False:
        return None
    warm = _programs(model).get(_key(model, X, args))
    warm = isinstance(warm, dict) and has_run(warm)
    if mode == "auto" and not warm and n_items < AUTO_MIN_ITEMS:
        return None  # cold and small: the analysis and compiles would cost more
    try:
        ev = _evaluator(model, X, args)
    except RuntimeError as error:
        if mode is True:
            raise InputError(f"incremental=True, but the incremental engine cannot run this "
                             f"model: {error}.") from None
        return None
    summary = ev["inc"].summary
    fraction = predicted_time_fraction(summary.flops_full, summary.flops_incremental,
                                       n_items, X.shape[0], platform_of(devices))
    if mode is True or fraction <= AUTO_MAX_TIME_FRACTION:
        return ev
    return None


@partial(jax.jit, static_argnames=("target",))
def _deltas(ys, y0, seq, target):
    return _select(ys[0] - jnp.take(y0, seq, axis=0), target)


def _edits(Xh: numpy.ndarray, seqs: numpy.ndarray, start: int, end: int) -> tuple:
    """The items of sequences ``seqs``: every substitution but the identity ones, in
    tangermeme's ``[sequence, character, position]`` order. int32 ``(seq, pos, char)``."""
    span = Xh[seqs][:, :, start:end]
    identity = (span == 1) & (span.sum(1, keepdims=True) == 1)
    c, a, w = numpy.nonzero(~identity)
    return (seqs[c].astype(numpy.int32), (w + start).astype(numpy.int32),
            a.astype(numpy.int32))


def _plan(seq: numpy.ndarray, pos: numpy.ndarray, char: numpy.ndarray) -> engine.Plan:
    """Substitutions as an :class:`jablate.engine.stream.Plan` for
    :func:`jablate.engine.executor.execute`: item ``m`` writes character ``char[m]`` (in
    ``ends``) at position ``pos[m]`` (in ``starts``; ``pos < 0``: none) of sequence
    ``seq[m]``."""
    return engine.Plan.build(seq, pos, char)


class _Grids:
    """The sink of every job of one run: each batch's outputs go to host grids
    (N, A, W, ...) at its items' ``[sequence, character, position - start]``, one step
    behind across jobs (the copy of a batch overlaps the next step), and the progress bar
    counts the substitutions.

    :meth:`job` routes the next job's batches (its plan says where their rows go);
    :meth:`flush` writes the last batch once every job is done.
    """

    def __init__(self, grids: list, start: int, bar: Any):
        self.grids, self.start, self.bar, self.pending, self.plan = grids, start, bar, None, None

    def job(self, plan: engine.Plan) -> "_Grids":
        """Route the next job's batches (items of ``plan``)."""
        self.plan = plan
        return self

    def add(self, ys: tuple, lo: int, valid: int) -> None:
        self.flush()
        rows = slice(lo, lo + valid)
        plan = self.plan
        self.pending = (ys, plan.seq_idx[rows], plan.starts[rows] - self.start,
                        plan.ends[rows], valid)

    def result(self) -> None:
        return None  # the run reads the grids once every job is done (see flush)

    def flush(self) -> None:
        if self.pending is not None:
            outputs, seq, pos, char, valid = self.pending
            for grid, y in zip(self.grids, outputs):
                grid[seq, char, pos] = numpy.asarray(y)[:valid]
            self.bar.update(valid)
            self.pending = None


def _full_job(model, X, args, plan, batch_size, finish, where):
    """The :class:`jablate.engine.executor.Job` of the full path over the substitutions ``plan``:
    each batch of edited sequences through the model (and ``func``), then ``finish``; each
    batch's items sharded over the run's devices (``where``, a
    :class:`jablate.engine.stream.Devices`)."""
    full = _full(model)

    def step(items, lo):
        seq, pos, char, _ = items
        ys = full(model.params, *_take(X, args, seq), pos, char, dtype=model.dtype)
        return finish(jax.tree.leaves(ys), seq)

    return Job(plan, step, where.size(batch_size, 1 << 30), where.shard)


def _run_full(model, X, args, Xh, start, end, batch_size, finish, collect, where):
    """Fill ``collect`` (a :class:`_Grids`) on the full path: the substitutions are listed
    on the host by chunks of sequences (at most about :data:`ITEMS_PER_CHUNK` of them), one
    job per chunk."""
    per_chunk = max(1, ITEMS_PER_CHUNK // (X.shape[1] * (end - start)))
    for lo in range(0, X.shape[0], per_chunk):  # chunks of the listing, not batches
        plan = _plan(*_edits(Xh, numpy.arange(lo, min(lo + per_chunk, X.shape[0])), start,
                             end))
        if len(plan):
            execute(_full_job(model, X, args, plan, batch_size, finish, where),
                    collect.job(plan))
    collect.flush()


class _Mismatch(Exception):
    """The incremental path disagreed with the full path on the checked batch."""


def _run_incremental(model, ev, X, args, Xh, start, end, batch_size, finish, collect,
                     where):
    """Fill ``collect`` (a :class:`_Grids`) incrementally; False when the runtime check
    failed (an :class:`IncrementalMismatchWarning` was issued, and nothing is kept).

    Per chunk of sequences (their reference caches within :data:`MEMORY_BUDGET`), one
    reference pass, then the chunk's substitutions as one job. The first chunk's job is
    preceded by a job of the substitutions :func:`_check_items` picks, run by
    :func:`jablate.engine.executor.checked` on both paths and compared.
    """
    inc = ev["inc"]
    per_item = max(inc.summary.flops_incremental, 1.0)
    size = where.size(1 << min(8, max(4, int(BATCH_FLOPS // per_item).bit_length() - 1)),
                      1 << 30)
    N = X.shape[0]
    per_chunk = max(1, min(N, MEMORY_BUDGET // max(inc.summary.cache_bytes, 1)))
    per_chunk = 1 << (per_chunk.bit_length() - 1)  # a power of two: few shapes
    for lo in range(0, N, per_chunk):  # chunks of reference caches, not batches
        seqs = numpy.arange(lo, min(lo + per_chunk, N))
        padded = numpy.concatenate([seqs, numpy.repeat(seqs[-1:], per_chunk - len(seqs))])
        caches, _ = ev["reference"](model.params, *engine.take_rows((X,) + tuple(args), padded))

        def fast(items, _lo, caches=caches, first=lo):
            seq, pos, char, _ = items
            return ev["step"](model.params, caches, pos, char, seq - first)

        plan = _plan(*_edits(Xh, seqs, start, end))
        jobs = [(plan, fast, size)]
        if lo == 0 and len(plan):
            keep = _check_items(plan, size, batch_size, start, end)
            step = _checked(model, ev, X, args, fast, len(keep), batch_size, padded,
                            where.devices)
            jobs = [(plan.take(keep), step, size),
                    (plan.take(numpy.delete(numpy.arange(len(plan)), keep)), fast, size)]
        for items, step, job_size in jobs:
            if len(items):
                try:
                    execute(Job(items, lambda b, i, step=step: finish(step(b, i), b[0]),
                                job_size, where.shard), collect.job(items))
                except _Mismatch:
                    return False
    collect.flush()
    ev["mark_ran"]()  # warm from now on (see _choose)
    return True


def _check_items(plan, size, batch_size, start, end) -> numpy.ndarray:
    """The items of ``plan`` the incremental path is checked on: substitutions of the
    first sequence, every one at both ends of the span (where windows meet the padding)
    and others spread between them, at most one batch of either path."""
    seq, pos = plan.seq_idx, plan.starts
    first = numpy.flatnonzero(seq == seq[0])
    n = min(size, batch_size, len(first))
    ends = first[(pos[first] == start) | (pos[first] == end - 1)]
    spread = first[numpy.linspace(0, len(first) - 1, n).round().astype(int)]
    return numpy.concatenate([ends, spread[~numpy.isin(spread, ends)]])[:n]


def _checked(model, ev, X, args, fast, n, batch_size, padded, devices) -> Callable:
    """The incremental step ``fast`` checked against the full path on its first batch (of
    ``n`` valid items) by :func:`jablate.engine.executor.checked`; the full path runs that batch at
    ``batch_size`` (its own compiled shape). On a mismatch ``confirmed`` warns and the
    step raises :class:`_Mismatch`: the run then starts over on the full path.

    Where float32 matmuls are not exact (a GPU's TF32, a TPU's bfloat16 passes; see
    :func:`jablate.incremental.run.exact_float32`), both sides of the check are
    programs of their own at full float32 precision (the first chunk's reference pass
    ``padded`` included), and the run keeps ``fast``'s own outputs."""
    full = _full(model)
    take = engine.padded_rows(0, batch_size, n)

    def exact(items, lo):
        seq, pos, char, _ = (a[take] for a in items)
        return jax.tree.leaves(full(model.params, *_take(X, args, seq), pos, char,
                                    dtype=model.dtype))

    def mismatch():
        raise _Mismatch

    def agree(ys, full_ys):
        return confirmed([y[:n] for y in ys], [f[:n] for f in full_ys], ev["inc"],
                         "saturation_mutagenesis: ")

    if exact_float32(devices):
        return checked(fast, exact, agree, mismatch)

    def precise(step):
        def run(items, lo):
            with check_precision():
                return step(items, lo)
        return run

    def precise_fast(items, lo):
        caches, _ = ev["reference"](model.params, *engine.take_rows((X,) + tuple(args), padded))
        seq, pos, char, _ = items
        return ev["step"](model.params, caches, pos, char, seq - int(padded[0]))

    verdict = checked(precise(precise_fast), precise(exact), agree, mismatch)

    def step(items, lo):
        if verdict.kept() is None:
            verdict(items, lo)  # raises _Mismatch when they disagree
        return fast(items, lo)

    return step


# --- the front door ------------------------------------------------------------------------


def _tangermeme(model, X, args, inp, start, end, batch_size, target, hypothetical,
                raw_outputs, dtype, device, verbose, fast, func):
    """tangermeme's own ``saturation_mutagenesis`` on the torch module, in ``X``'s family."""
    try:
        from tangermeme.saturation_mutagenesis import saturation_mutagenesis as reference
    except ImportError:
        raise InputError("backend='torch' runs tangermeme's saturation_mutagenesis, and "
                         "tangermeme is not installed: pip install tangermeme, or leave "
                         "backend=None to translate the module to JAX.") from None
    if family(X) != "torch":
        X = tree_to_family(inp.X, "torch")
    if args is not None:
        args = tuple(a if family(a) == "torch" else tree_to_family(b, "torch")
                     for a, b in zip(args, inp.args))
    out = reference(model, X, args=args, start=start, end=end, batch_size=batch_size,
                    target=target, hypothetical=hypothetical, raw_outputs=raw_outputs,
                    dtype=torch_dtype(model, dtype, inp.family), device=device,
                    verbose=verbose, func=func, fast=fast)
    as_list = lambda y: list(y) if isinstance(y, (tuple, list)) else y
    if raw_outputs:
        return SaturationMutagenesisRawResult(tree_to_family(as_list(out[0]), inp.family),
                                              tree_to_family(as_list(out[1]), inp.family))
    return tree_to_family(out, inp.family)


# --- on ablate's fast path -----------------------------------------------------------------

_ABLATE_KEYWORDS = ("start", "end", "target", "hypothetical", "raw_outputs", "incremental",
                    "func", "fast")
#: Substitutions per ``lax.map`` step of one sequence inside ``ablate`` on the full path.
ABLATE_EDITS = 32


def _ablate_options(kwargs: dict) -> Optional[tuple]:
    """saturation_mutagenesis's keywords inside ``ablate``, checked; None for
    ``raw_outputs=True`` (only the materialised path gives its structure)."""
    for name in kwargs:
        if name not in _ABLATE_KEYWORDS:
            raise TypeError(f"saturation_mutagenesis() got an unexpected keyword argument "
                            f"{name!r}")
    start = check_int(kwargs.get("start", 0), "start")
    end = check_int(kwargs.get("end", -1), "end")
    target = _target_key(kwargs.get("target"))
    hypothetical = check_flag(kwargs.get("hypothetical", False), "hypothetical")
    mode = _mode(check_mode(kwargs.get("incremental", "auto")), kwargs.get("fast"))
    post = kwargs.get("func")
    if post is not None and not callable(post):
        raise InputError(f"func must be a callable or None; got {type(post).__name__}.")
    if check_flag(kwargs.get("raw_outputs", False), "raw_outputs") or post is not None:
        return None  # func: the materialised path applies it
    return (start, end, target, hypothetical, mode)


def _ablate_build(apply, params, x, args, options, exact):
    """ISM of one (shuffled) sequence; with ``exact=False`` through the incremental
    engine (one reference pass, each substitution on its windows) when it applies (and,
    for 'auto', predicts a saving), else None."""
    start, end, target, hypothetical, mode = options
    target = _target_of(target)  # a mask stays a mask: ism_fn checks its length
    kw = dict(start=start, end=end, target=target, hypothetical=hypothetical)
    if exact:
        f = ism_fn(apply, batch_size=ABLATE_EDITS, **kw)
    elif mode is False:
        return None
    else:
        try:
            with plain_convolutions():  # the analysis sees convolutions, not their lowerings
                inc = analyze(apply, params, x, 1, args)
        except Exception as error:  # noqa: BLE001 - any failure means: use the full path
            if mode is True:
                raise InputError(f"incremental=True, but the incremental engine cannot run "
                                 f"this model: {type(error).__name__}: {error}.") from None
            return None
        edits = (x.shape[0] - 1) * (end - start)  # substitutions of one sequence
        if mode == "auto" and predicted_time_fraction(
                inc.summary.flops_full, inc.summary.flops_incremental, edits, 1,
                jax.default_backend()) > AUTO_MAX_TIME_FRACTION:
            return None
        per_edit = max(inc.summary.flops_incremental, 1.0)
        edits = 1 << min(10, max(4, int(BATCH_FLOPS // per_edit).bit_length() - 1))
        f = ism_fn(apply, batch_size=edits, incremental=inc, **kw)
    def fn(params, x, key, *a):  # diagnostics: whether anything is not finite
        out = f(params, x, *a)
        finite = jnp.all(jnp.stack([jnp.isfinite(v).all() for v in jax.tree.leaves(out)]))
        return out, (~finite).astype(jnp.float32)[None]

    return fn


def _no_key(random_state: Any) -> jax.Array:
    return jax.random.key(0)  # ISM draws nothing


def _ablate_check(sums, maxima, count, options) -> None:
    _say_not_finite(int(sums[0]), count, "items")


#: How ``ablate`` runs ``saturation_mutagenesis`` as its ``func`` (the value it carries).
SATURATION_MUTAGENESIS = SequenceFunc(
    "saturation_mutagenesis", _ablate_options, _ablate_build, _no_key, _ablate_check,
    per_step=lambda batch_size, options: 1, takes_incremental=True)


@carries(SATURATION_MUTAGENESIS)
def saturation_mutagenesis(model: Any, X: Any, args: Optional[Any] = None, start: int = 0,
                           end: int = -1, batch_size: int = 32,
                           target: Union[int, slice, Sequence[int], None] = None,
                           hypothetical: bool = False,
                           raw_outputs: bool = False, dtype: Any = None, device: Any = None,
                           verbose: bool = False, func: Optional[Callable] = None,
                           fast: Optional[bool] = None, *, backend: Backend = None,
                           incremental: Mode = "auto") -> Any:
    """In-silico saturation mutagenesis, as tangermeme's ``saturation_mutagenesis``.

    Every position in ``[start, end)`` of every sequence is substituted by every other
    character, one at a time, and the model predicts on each edited sequence. By default
    the predictions become attributions: for each substitution the change of the
    prediction (edited minus original), minus its mean over the alphabet at that
    position, averaged over the outputs selected by ``target``, and, unless
    ``hypothetical``, multiplied by the one-hot ``X``.

    Substitutions are made inside the compiled step from ``(sequence, position,
    character)`` items, so the edited sequences are never held in memory; the identity
    edits (the base already there) are skipped and get the original predictions, as in
    tangermeme 1.3+. With the incremental engine (fastISM) each sequence gets one full
    pass and each substitution recomputes only the positions of each layer it can
    change; its first batch is checked against the full path.

    Parameters
    ----------
    model: flax.linen.Module (bound), flax.nnx.Module, callable, pure model or torch.nn.Module
        Anything :func:`jablate.predict` accepts, run in evaluation mode as there (an
        nnx module through an eval view: Dropout off, BatchNorm on its running
        statistics; the module keeps its own mode). A torch module is translated to JAX
        (``backend=None`` or ``'jax'``) or handed to tangermeme (``backend='torch'``).
    X: jax.Array, numpy.ndarray or torch.Tensor, shape=(N, A, L)
        One-hot sequences; all-zero columns (unknown bases) get all ``A`` substitutions.
    args: tuple or list of arrays with N rows, or None, optional
        Extra model inputs; each edit of sequence ``i`` gets row ``i``. Default None.
    start: int, optional
        First position to mutate. Default 0.
    end: int, optional
        End of the span: exclusive when ``>= 0``, ``L + 1 + end`` when negative (tangermeme's
        rule: ``-1`` includes the last position). Default -1.
    batch_size: int, optional
        Edited sequences per model call on the full path (the last batch is padded: one
        compiled program). The incremental path sizes its own batches by FLOPs (16 to 256
        items). Default 32.
    target: int, slice, list of ints, 1-d integer array or None, optional
        Output index along axis 1 of the model's output to attribute; several (a slice,
        a list or an array, as tangermeme indexes with them) are averaged; None averages
        over every output. Default None.
    hypothetical: bool, optional
        Return the attribution of every character at every position, not only of the
        observed ones. Default False.
    raw_outputs: bool, optional
        Return the predictions instead of attributions. Default False.
    dtype: str, dtype or None, optional
        The input dtype the model sees (JAX), spelled as JAX, NumPy or torch spell it
        (``'float16'``, ``jnp.bfloat16``, ``numpy.float32``, ``torch.float16``);
        tangermeme's autocast dtype (``backend='torch'``; float64 there needs a
        float64 module). float64 on JAX needs its 64-bit mode
        (``jax.config.update("jax_enable_x64", True)`` before any JAX work, or
        ``JAX_ENABLE_X64=1``); without it a ``ValueError`` says so rather than
        computing in float32. Default None: float32 (or ``X``'s float dtype). A
        torch module translated to JAX (the default for torch modules) runs in
        ``dtype``, its floating weights cast to it, and by default in its own dtype
        (its first parameter's, as tangermeme): a float16 module in float16, a float64
        one in float64 (64-bit mode needed: else ``ValueError``).
    device: str, jax.Device, torch.device or None, optional
        Where the model runs. Default None (JAX's default device).
    verbose: bool, optional
        A progress bar over the substitutions. Default False.
    func: callable or None, optional
        tangermeme's: applied to each batch of predictions, identically to those of the
        original sequences and of every substitution, so that ``target`` and the
        attributions are computed on its values (e.g. select one output head, or apply
        a final nonlinearity). It is in the model's framework: for a torch module, torch
        code, as tangermeme's is, translated to JAX with the module
        (:func:`jablate.bridges.torch.translate_func`), so that it keeps torch's meaning
        (``y.std(-1)`` is torch's unbiased sd; a func torch.export cannot capture is a
        ``ValueError``); for a JAX model, a JAX-traceable function of the model's output
        batch (an array or tuple/list of arrays). Each row of its result must come from
        its own row (jablate's batches, padded, are not tangermeme's: ``y - y.mean(0)``
        would mix substitutions). It runs inside the compiled step, on the
        full and the incremental path alike (compiled once per ``func`` object: pass a
        module-level function rather than a new lambda per call). With
        ``backend='torch'`` tangermeme applies it to torch tensors. Default None.
    fast: bool or None, optional
        tangermeme's name for the incremental engine: ``True`` is
        ``incremental='auto'``, ``False`` is ``incremental=False``. Giving both
        ``fast`` and an ``incremental`` other than 'auto' that disagree (``fast=False``
        with ``incremental=True``, ``fast=True`` with ``incremental=False``) raises
        ``ValueError``. Default None (``incremental`` decides).
    backend: None, 'jax' or 'torch', optional, keyword-only
        ``'torch'`` calls ``tangermeme.saturation_mutagenesis`` on the torch module
        itself (tangermeme must be installed); otherwise a torch module is translated
        to JAX. Default None.
    incremental: 'auto', True or False, optional, keyword-only
        Use the incremental engine (substitutions as windows of width 1). ``'auto'``:
        where the backend's cost model predicts it is faster
        (:func:`jablate.incremental.run.predicted_time_fraction`; cold, only for runs of
        at least 2,048 substitutions). ``True``: always (``ValueError`` when it cannot
        run). ``False``: full passes. With ``backend='torch'``, ``'auto'`` and ``False``
        become tangermeme's ``fast=True`` and ``fast=False``. Default 'auto'.

    Returns
    -------
    attr: array, shape=(N, A, end - start)
        In ``X``'s family (torch tensors on the CPU for torch input).

    -- or, with raw_outputs=True --

    SaturationMutagenesisRawResult(y0, y_hat)
        ``y0``: (N, ...) predictions on ``X``; ``y_hat``: (N, A, end - start, ...), the
        identity entries holding ``y0``. Lists of such for a model with several outputs.

    Raises
    ------
    ValueError
        Before any model call: bad ``X``, ``args``, ``start``, ``end``, ``batch_size``,
        ``target`` (also one that does not index the output), ``hypothetical``,
        ``raw_outputs``, ``backend``, ``incremental``, ``fast`` (also one that
        contradicts ``incremental``), ``func`` (not callable), ``dtype`` (also float64
        without JAX's 64-bit mode) or ``device``; a model
        with several outputs without ``raw_outputs=True``; ``incremental=True`` where the
        engine cannot run; ``backend='torch'`` without a torch module or tangermeme.

    Warns
    -----
    IncrementalMismatchWarning
        When the incremental engine's first batch differs from the full path; the run
        then finishes on the full path.
    """
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    key = _target_key(target)
    hypothetical = check_flag(hypothetical, "hypothetical")
    raw_outputs = check_flag(raw_outputs, "raw_outputs")
    incremental = _mode(check_mode(incremental), fast)
    if func is not None and not callable(func):
        raise InputError(f"func must be a callable or None; got {type(func).__name__}.")
    check_backend(backend)
    inp = inputs(X, args)
    N, A, L = inp.X.shape
    start, end = region(start, end, L)
    if backend == "torch":
        if not is_torch_module(model):
            raise InputError("backend='torch' needs a torch.nn.Module as model.")
        if incremental is True:
            raise InputError("incremental=True needs the JAX backend; with backend='torch', "
                             "tangermeme's own fast path decides (incremental='auto').")
        return _tangermeme(model, X, args, inp, start, end, batch_size, target, hypothetical,
                           raw_outputs, dtype, device, verbose, incremental is not False, func)
    inp, bound, _ = prepare(model, inp, func, device, dtype,
                            "jax" if is_torch_module(model) else backend,
                            what="saturation_mutagenesis")
    # jablate._core.placement's policy: every device of the run, each batch's substitutions
    # sharded over them (the inputs and parameters replicated)
    where = engine.Devices(bound, inp.X)
    bound = dataclasses.replace(bound, params=where.replicate(bound.params))
    X_, args_ = where.replicate((inp.X, inp.args))
    full = _full(bound)
    dummy = numpy.zeros(batch_size, numpy.int32)
    shapes = full.eval_shape(bound.params, *_take(X_, args_, dummy), dummy - 1, dummy,
                             dtype=bound.dtype)
    multi = _check_outputs(shapes, key, raw_outputs)

    Xh = numpy.asarray(X_)
    # the predictions on X: items that substitute nothing (pos -1)
    y0 = execute(_full_job(bound, X_, args_, _plan(numpy.arange(N), -1, 0), batch_size,
                           lambda ys, seq: ys, where), Collect())

    W = end - start
    if raw_outputs:
        def finish(ys, seq):
            return ys

        fresh = lambda: [numpy.repeat(numpy.repeat(y[:, None, None], A, 1), W, 2) for y in y0]
    else:
        y0_device = where.replicate(jnp.asarray(y0[0]))

        def finish(ys, seq):
            return [_deltas(ys, y0_device, seq, key)]

        fresh = lambda: [numpy.zeros((N, A, W), y0[0].dtype)]

    span = Xh[:, :, start:end]
    n_items = int(N * A * W - numpy.sum((span == 1) & (span.sum(1, keepdims=True) == 1)))
    bar = tqdm(total=n_items, disable=not verbose, desc="saturation_mutagenesis",
               unit="substitution")
    collect = _Grids(fresh(), start, bar)
    ev = _choose(bound, X_, args_, n_items, incremental, where.devices)
    done = ev is not None and _run_incremental(bound, ev, X_, args_, Xh, start, end, batch_size,
                                               finish, collect, where)
    if not done:
        if bar.n:  # the incremental path stopped part way: count again from 0
            bar.reset()
        collect = _Grids(fresh(), start, bar)
        _run_full(bound, X_, args_, Xh, start, end, batch_size, finish, collect, where)
    bar.close()

    if raw_outputs:
        y_hat = collect.grids
        return SaturationMutagenesisRawResult(
            tree_to_family(y0 if multi else y0[0], inp.family),
            tree_to_family(y_hat if multi else y_hat[0], inp.family))
    d = collect.grids[0]
    with numpy.errstate(invalid="ignore"):  # said below, once
        attr = d - d.mean(axis=1, keepdims=True)
        if not hypothetical:
            attr = attr * span.astype(attr.dtype)
    _warn_not_finite(attr)
    return tree_to_family(attr, inp.family)


def _warn_not_finite(attr: numpy.ndarray) -> None:
    """Say how many sequences' attributions hold NaN or inf: the model's output was not
    finite for one of their substitutions (or for the sequence itself)."""
    _say_not_finite(int((~numpy.isfinite(attr).reshape(len(attr), -1).all(axis=1)).sum()),
                    len(attr), "sequences")


def _say_not_finite(bad: int, total: int, unit: str) -> None:
    if bad:
        warn_not_finite(f"{bad} of {total} {unit} or their substitutions",
                        "their attributions hold NaN (or inf) there")


def _mode(incremental: Mode, fast: Optional[bool]) -> Mode:
    """``incremental`` after tangermeme's ``fast`` (True: 'auto', False: False).

    Raises
    ------
    ValueError
        For a ``fast`` that is not None, True or False, or one that contradicts a
        non-default ``incremental``.
    """
    if fast is None:
        return incremental
    fast = check_flag(fast, "fast")
    if incremental == "auto":
        return "auto" if fast else False
    if incremental is not fast:
        raise InputError(f"fast={fast} (tangermeme's name for incremental='auto' or False) "
                         f"contradicts incremental={incremental}; pass only one of them.")
    return incremental
