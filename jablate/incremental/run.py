"""Running the shuffled items of an ablation incrementally (issue 11).

:func:`run` is the incremental counterpart of :func:`jablate.engine.stream.run` for an
ablation: predictions before (from the reference passes) and after every shuffle.
Items are grouped in width buckets (each width, when a run has at most four, else
powers of two, at most ``L``): a region of width ``w`` goes to the bucket ``W >= w``, its window
starting at ``s = min(start, L - W)``, so the window holds the whole region and the
unchanged bases around it. Per bucket one analysis (:func:`jablate.incremental.analysis.analyze`,
cached on the runner, which dies with its model) and one compiled step serve every
region. Reference activations are computed per chunk of sequences, so the cache
stays under ``memory_budget`` bytes.

Correctness never rests on the analysis alone: the first 16 items of a run are also
computed by the full path and compared, within ``1e-4`` of each output's scale. On an
accelerator both sides of that check are programs of their own at full float32 precision
(:func:`check_precision`): XLA's default float32 matmuls there (TF32 on a GPU) round the
full and windowed paths differently by about 1e-3, which is the hardware's rounding, not
a wrong rule. On a mismatch :class:`IncrementalMismatchWarning` names where windowing
stopped (or the broken rule) and the whole run falls back to the full path.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Optional

import jax
import jax.numpy as jnp
import numpy
from tqdm.auto import tqdm

from jablate._core.caches import for_runner
from jablate._core.errors import InputError, outside_stacklevel
from jablate._core.lowering import plain_convolutions
from jablate.engine import stream as engine
from jablate.engine.executor import (
    IncrementalMismatchWarning,
    Job,
    agree,
    execute,
)
from jablate.incremental.analysis import Incremental, analyze
from jablate.models.runner import cast_input, outputs_of

#: The default memory budget of the reference caches of one chunk of sequences.
MEMORY_BUDGET = 2**30
#: ``incremental="auto"`` uses the engine when the backend's cost model predicts that it
#: takes at most this fraction of the full path's time (so that it is never expected to be
#: slower, and a misestimate of 10% still does not make it so).
AUTO_MAX_TIME_FRACTION = 1 / 1.1
#: Cold, ``"auto"`` analyses a model only for runs of at least this many shuffled items:
#: below it the analysis and the extra compilations cost more than they can save. Warm
#: (this width's analysis done and its programs compiled by an earlier run), it does not
#: apply: small jobs get the engine when it wins.
AUTO_MIN_ITEMS = 2048
#: How fast an incremental item's FLOPs run, as a fraction of the full pass's FLOP rate,
#: per backend platform: the cost model of ``"auto"``. Measured: on a 2-core CPU both ran
#: at about 200 GFLOP/s (BPNet, issue 11); on an H200 the windowed kernels of a 100-bp
#: BPNet ablation (about half the full pass's FLOPs) took 3x the full pass's time
#: (1.00 s against 0.33 s, issue 19), a sixth of its FLOP rate. Other platforms are taken to
#: be as the GPU.
EFFICIENCY = {"cpu": 1.0, "gpu": 1 / 6, "cuda": 1 / 6, "rocm": 1 / 6, "tpu": 1 / 6}
#: Items per incremental call are a power of two in [16, 1024], sized so that a call does
#: about this many FLOPs (BPNet: 16 items, a small conv: 1,024). Measured on a 2-core CPU:
#: BPNet's incremental step was fastest at 8-16 items, the small conv's at 1,024.
BATCH_FLOPS = 128e6
#: Reference passes run on chunks of at most this many FLOPs (BPNet: 16 sequences, the
#: fastest chunk measured; a small conv: up to 256).
REFERENCE_FLOPS = 8e9
#: Up to this many distinct region widths get a program each; more are bucketed by
#: powers of two.
EXACT_BUCKETS = 4
#: The runtime check compares the first this many items with the full path.
CHECK_ITEMS = 16

#: The ``incremental`` option of ``ablate``, ``ablate_annotations`` and
#: ``saturation_mutagenesis``: ``'auto'`` (when the analysis predicts a saving), True
#: (always; an error where the engine cannot run) or False (never). Checked by
#: :func:`check_mode`, the one place.
Mode = Literal["auto", True, False]


@dataclass(frozen=True)
class Choice:
    """Whether a run goes incremental, and why (for messages and reports)."""

    use: bool
    reason: str


def buckets(widths: Any, length: int, exact: Optional[bool] = None) -> numpy.ndarray:
    """The width bucket of each region width in ``widths`` (an int array): the widths
    themselves when there are at most :data:`EXACT_BUCKETS` distinct ones (or as
    ``exact`` says, decided on a whole plan), else the next power of two (at most
    ``length``), so a run compiles a handful of programs."""
    widths = numpy.asarray(widths, numpy.int64).reshape(-1)
    if exact is None:
        exact = len(numpy.unique(widths)) <= EXACT_BUCKETS
    if exact:
        return widths.copy()
    return numpy.minimum(length, 1 << numpy.ceil(numpy.log2(widths)).astype(numpy.int64))


def _evaluator_key(X, args, model, width) -> tuple:
    return (width, X.shape[1:], str(X.dtype), model.dtype,
            tuple((a.shape[1:], str(a.dtype)) for a in args))


def evaluator(model: engine.Model, X: jax.Array, args: tuple, width: int) -> dict:
    """The analysis at ``width`` (``inc``), its compiled ``reference`` pass (vmapped over
    sequences) and the ablation ``step``, cached on the runner (which dies with its model).
    Raises what the analysis raises."""
    store = for_runner(model.runner, "incremental_engine.evaluators")
    key = _evaluator_key(X, args, model, width)
    if key not in store:
        apply = model.runner.apply

        def cast_apply(params, x, *a):
            return apply(params, cast_input(x, model.dtype), *a)

        with plain_convolutions():  # the analysis sees convolutions, not their lowerings
            inc = analyze(cast_apply, model.params, X[0], width, tuple(a[0] for a in args))
        store[key] = dict(
            inc=inc,
            reference=jax.jit(jax.vmap(inc.reference, (None, 0) + (0,) * len(args))),
            step=jax.jit(partial(_step, inc), static_argnames=("draw",)))
    return store[key]


def _step(inc: Incremental, params, caches, x, table, items, rows, draw):
    """One batch of items: each item's window ``x`` (B, A, W) (:func:`jablate.engine.stream.
    batch_windows`), shuffled inside the step, run incrementally."""
    starts = jnp.minimum(items[1], inc.length - inc.width)
    windows = draw.window(x, table, items, starts, inc.length)  # (B, A, W), shuffled in-step
    return jax.vmap(inc.apply, (None, None, 0, 0, 0))(params, caches, windows, starts, rows)


def platform_of(devices: Any) -> str:
    """The platform the run computes on (``'cpu'``, ``'gpu'``, ``'tpu'``): the first
    device's."""
    for d in devices:
        if d is not None:
            return getattr(d, "platform", "cpu")
    return jax.default_backend()


def predicted_time_fraction(flops_full: float, flops_incremental: float, items: int,
                            sequences: int, platform: str) -> float:
    """The incremental path's predicted time as a fraction of the full path's.

    The full path runs ``items`` passes of ``flops_full``; the incremental path runs
    ``items`` windowed passes of ``flops_incremental`` at :data:`EFFICIENCY` of the full
    pass's FLOP rate on ``platform``, plus one reference pass per sequence.
    """
    efficiency = EFFICIENCY.get(platform, min(EFFICIENCY.values()))
    full = items * flops_full
    return (items * flops_incremental / efficiency + sequences * flops_full) / max(full, 1.0)


def has_run(ev: dict) -> bool:
    """Whether an evaluator's programs have run before in this process (its analysis done,
    its programs compiled): a warm run of ``"auto"``."""
    return bool(ev.get("ran"))


def choose(model: engine.Model, X: jax.Array, args: tuple, widths: numpy.ndarray,
           mode: Mode, sequences: int, devices: Any = ()) -> Choice:
    """Decide whether the items of widths ``widths`` run incrementally.

    Parameters
    ----------
    mode: 'auto', True or False
        ``True`` raises ``ValueError`` when the engine cannot run this model.
        ``'auto'``: by the backend's cost model (:func:`predicted_time_fraction`), the
        engine when it is predicted to take at most :data:`AUTO_MAX_TIME_FRACTION` of the
        full path's time; cold (a width not run before in this process), only for runs of
        at least :data:`AUTO_MIN_ITEMS` items, which pay for the analysis and compiles.
        Deterministic: it measures nothing.
    sequences: int
        The distinct sequences of the run (one reference pass each).
    devices: sequence of jax devices, optional
        Where the run computes (its platform picks the cost model). Default: JAX's
        default backend.
    """
    if mode is False:
        return Choice(False, "incremental=False")
    problem = None
    if not model.jittable:
        problem = ("the model runs in torch; translate it (backend='jax') for the "
                   "incremental engine")
    if problem is not None:
        if mode is True:
            raise InputError(f"incremental=True, but the incremental engine cannot run this "
                             f"ablation: {problem}.")
        return Choice(False, problem)
    if mode is True:
        return Choice(True, "incremental=True")
    widths_run = numpy.unique(buckets(widths, X.shape[-1])).tolist()
    store = for_runner(model.runner, "incremental_engine.evaluators")
    warm = all(has_run(store.get(_evaluator_key(X, args, model, w), {})) for w in widths_run)
    if not warm and len(widths) < AUTO_MIN_ITEMS:
        return Choice(False, f"{len(widths)} items < {AUTO_MIN_ITEMS}: too few to pay for "
                             "the analysis and compiles")
    platform = platform_of(devices)
    fractions = []
    for w in widths_run:
        try:
            summary = evaluator(model, X, args, w)["inc"].summary
        except Exception as error:  # the analysis itself failed: the full path is exact
            return Choice(False, f"the analysis failed: {type(error).__name__}: {error}")
        fractions.append(predicted_time_fraction(summary.flops_full,
                                                 summary.flops_incremental, len(widths),
                                                 sequences, platform))
    fraction = max(fractions)
    if fraction > AUTO_MAX_TIME_FRACTION:
        return Choice(False, f"predicted {fraction:.2f}x the full path's time on {platform}")
    return Choice(True, f"predicted {fraction:.2f}x the full path's time on {platform}")


class _Collect:
    """Keeps every item's outputs on the host, in plan order."""

    def __init__(self, total: int):
        self.total, self.outputs = total, None

    def add(self, ys, positions, chunk_outputs, rows):
        host = [numpy.asarray(y)[:len(positions)] for y in ys]
        if self.outputs is None:
            self.outputs = [numpy.empty((self.total,) + h.shape[1:], h.dtype) for h in host]
        for out, h in zip(self.outputs, host):
            out[positions] = h

    def result(self, before_of_item):
        return self.outputs


class _MeanStd:
    """Per-group mean and standard deviation over the ``n`` items of each group (items
    ``g * n + i`` of the plan), accumulated on the device around the group's reference
    outputs (its sequence's prediction before shuffling), as
    :func:`jablate.engine.stream.run_mean_std` does."""

    def __init__(self, total: int, n: int):
        self.n, self.moments = n, engine.GroupMoments(total // n)

    def add(self, ys, positions, chunk_outputs, rows):
        size = ys[0].shape[0]
        padded = numpy.zeros(size, numpy.int64)
        padded[:len(positions)] = positions
        self.moments.add(ys, chunk_outputs, rows, padded // self.n, len(positions))

    def result(self, before_of_group):
        return self.moments.result(before_of_group, self.n)


class _Items:
    """The items ``mine`` of ``plan`` (one chunk's, in one width bucket), each with its
    sequence's row in the chunk's reference caches; a plan for :func:`jablate.engine.executor.
    execute` whose batches ``((seq_idx, starts, ends, draws), rows)`` are padded by
    repeating the last item."""

    def __init__(self, plan: engine.Plan, mine: numpy.ndarray, rows: numpy.ndarray):
        self.plan, self.mine, self.rows = plan, mine, rows

    def __len__(self):
        return len(self.mine)

    def take(self, lo: int, size: int) -> numpy.ndarray:
        return engine.padded_rows(lo, size, len(self.mine))

    def batch(self, lo: int, size: int) -> tuple:
        take = self.take(lo, size)
        m = self.mine[take]
        plan = self.plan
        items = (plan.seq_idx[m], plan.starts[m], plan.ends[m], plan.draws[m])
        return (items, self.rows[take]), min(size, len(self.mine) - lo)


class _InFlight:
    """The sink of every job of one incremental run: each batch's outputs go to ``sink``
    (:class:`_Collect` or :class:`_MeanStd`) one step behind, across jobs, so a copy
    overlaps the next step; one progress bar counts the items."""

    def __init__(self, sink, bar):
        self.sink, self.bar, self.pending = sink, bar, []
        self.items, self.outputs = None, None

    def job(self, items: _Items, outputs: tuple) -> "_InFlight":
        """Route the next job's batches: its items and its chunk's reference outputs."""
        self.items, self.outputs = items, outputs
        return self

    def add(self, ys, lo, valid):
        items = self.items
        self.pending.append((ys, items.mine[lo:lo + valid], self.outputs,
                             items.rows[items.take(lo, ys[0].shape[0])]))
        if len(self.pending) > 1:  # one step in flight while the last one is copied
            self.sink.add(*self.pending.pop(0))
        self.bar.update(valid)

    def result(self):
        return None  # the run reads its sink once every job is done (see flush)

    def flush(self):
        for p in self.pending:
            self.sink.add(*p)
        self.pending.clear()


def _bucket(model, X, args, draw, table, plan, sequences, W, width_of, params, devices,
            batch_size, memory_budget, before, multi, reduce, post, where, flight, checks):
    """One width bucket of :func:`run`: per chunk of sequences, the reference pass, then
    the bucket's items of the chunk through the executor (the first ``CHECK_ITEMS`` items
    of the bucket as a job of their own, also run by the full path: both outputs are
    appended to ``checks``, compared when the run ends). Nothing here waits for the
    device: the predictions before shuffling stay there too. Returns ``(before,
    multi)``, ``before`` a list of device arrays (S, ...) in the order of ``sequences``."""
    ev = evaluator(model, X, args, W)
    windows = draw.unwindowed()  # the incremental steps' draw: their windows are their own
    summary = ev["inc"].summary
    in_bucket = numpy.flatnonzero(width_of == W)
    # no larger than the power of two that holds the bucket's items (few shapes, and a
    # small run is not padded to a thousand items)
    size = devices.size(batch_size or 1 << min(10, max(4, int(
        BATCH_FLOPS // max(summary.flops_incremental, 1.0)).bit_length() - 1)), len(in_bucket))
    state = {"checked": False, "multi": multi}  # every bucket has its own program: checked
    pieces = []  # the first bucket's reference outputs, chunk by chunk, on the device
    # the first bucket's reference passes give every sequence's prediction before
    first = before is None
    seqs = sequences if first else numpy.unique(plan.seq_idx[in_bucket])
    per_chunk = min(memory_budget // max(summary.cache_bytes, 1),
                    REFERENCE_FLOPS // max(summary.flops_full, 1), 256)
    per_chunk = 1 << (max(1, min(int(per_chunk), 2 * len(seqs) - 1)).bit_length() - 1)
    per_chunk = devices.size(per_chunk, 1 << 30)  # a multiple of the device count
    full = model.runner.step_for(None)  # the check compares the model's own outputs
    for lo in range(0, len(seqs), per_chunk):
        chunk = seqs[lo:lo + per_chunk]
        padded = numpy.concatenate([chunk, numpy.repeat(chunk[-1:], per_chunk - len(chunk))])
        caches, outputs = ev["reference"](params, *devices.shard(
            engine.take_rows((X,) + tuple(args), padded)))
        caches = devices.replicate(caches)  # every device's items read any sequence
        outputs, state["multi"] = outputs_of(post(outputs), where)
        if first:  # the chunks are consecutive runs of ``sequences``
            pieces.append(tuple(o[:len(chunk)] for o in outputs))
        elif reduce == "mean_std":  # shifts: the first bucket's values, whatever bucket
            outputs = engine.take_rows(tuple(before), numpy.searchsorted(sequences, padded))
        mine = in_bucket[numpy.isin(plan.seq_idx[in_bucket], chunk)]
        if not state["checked"] and len(mine) > 2:  # the regions nearest both ends first
            edges = numpy.unique([numpy.argmin(plan.starts[mine]),
                                  numpy.argmax(plan.ends[mine])])
            mine = numpy.concatenate([mine[edges], numpy.delete(mine, edges)])
        rows = numpy.searchsorted(chunk, plan.seq_idx[mine]).astype(numpy.int32)

        def step(batch, lo, caches=caches, padded=padded):
            items, item_rows = batch
            x = devices.shard(engine.batch_windows(X, items, W))
            raw = ev["step"](params, caches, x, table, items, item_rows, draw=windows)
            ys, state["multi"] = outputs_of(post(raw), where)
            if not state["checked"]:
                # The model's outputs, before ``func`` (a sum or a softmax of a profile
                # would dilute an error in a few positions). Where the run's programs are
                # exact (the CPU), they are what is checked; elsewhere the check has its
                # own, every matmul at full float32 precision.
                exact = exact_float32(devices.devices)
                with contextlib.nullcontext() if exact else check_precision():
                    if exact:
                        check = outputs_of(raw)[0]
                    else:
                        check_caches, _ = ev["reference"](params, *devices.shard(
                            engine.take_rows((X,) + tuple(args), padded)))
                        check = outputs_of(ev["step"](
                            params, devices.replicate(check_caches), x, table, items,
                            item_rows, draw=windows))[0]
                    reference = full(params, *engine.batch_rows(X, args, items, devices),
                                     table, items, draw=draw, dtype=model.dtype)
                checks.append((check, outputs_of(reference)[0], ev["inc"]))
                state["checked"] = True
            return ys

        jobs = []
        if not state["checked"] and len(mine):  # a first, smaller batch: the check
            check = min(size, devices.size(CHECK_ITEMS, 1 << 30))
            jobs.append((_Items(plan, mine[:check], rows[:check]), check))
            mine, rows = mine[check:], rows[check:]
        jobs.append((_Items(plan, mine, rows), size))
        for items, job_size in jobs:
            if len(items):
                execute(Job(items, step, job_size, devices.shard), flight.job(items, outputs))
    ev["ran"] = True  # warm from now on (see choose)
    if first:
        before = [jnp.concatenate(parts) if len(parts) > 1 else parts[0]
                  for parts in zip(*pieces)]
    return before, state["multi"]


def run(stream: engine.Stream, sequences: numpy.ndarray, n: int,
        reduce: Optional[str] = None, batch_size: Optional[int] = None,
        desc: Optional[str] = None,
        memory_budget: Optional[int] = None) -> Optional[tuple[list, list, bool]]:
    """Predictions before (on ``sequences``) and after every item of ``plan``, incrementally.

    The predictions before shuffling are the reference passes' outputs. Items are
    processed by width bucket, then by chunk of sequences (the reference caches of a
    chunk stay under ``memory_budget`` bytes), in batches dispatched ahead of the
    copies of earlier results. The first :data:`CHECK_ITEMS` items are also run by the
    full path and compared; on a mismatch an :class:`IncrementalMismatchWarning` is
    issued and None is returned (the caller runs the full path).

    As :func:`jablate.engine.stream.run`: each step's items are sharded over the local devices
    (the chunk's caches replicated, its reference pass sharded by sequence), and under
    ``jax.distributed`` every process runs its share of whole groups and receives every
    output (each process computes the references of all ``sequences``; all processes
    take the full path if the check fails in any).

    Parameters
    ----------
    stream: engine.Stream
        Its plan has M items, ``n`` consecutive ones per group (``M = G * n``); its
        ``batch_size`` is the full path's (this engine sizes its own, see
        ``batch_size`` below).
    sequences: int array (S,)
        The sorted distinct sequences whose predictions before shuffling are wanted;
        must hold every ``plan.seq_idx``.
    reduce: None or 'mean_std'
        None keeps every item's outputs; 'mean_std' the per-group mean and (population)
        standard deviation over its ``n`` items, accumulated on the device.
    batch_size: int or None
        Items per call; None sizes calls by :data:`BATCH_FLOPS`.

    Returns
    -------
    before: list of arrays, each (S, ...)
        Host arrays; device arrays, not waited for, with ``reduce='mean_std'`` in one
        process.
    after: list of host arrays, each (M, ...) (or (mean, std) pairs, each (G, ...), as
        :func:`jablate.engine.stream.run_mean_std` returns them)
    multi: bool
        Whether the model returns a tuple or list.
    """
    model, X, args, plan = stream.model, stream.X, stream.args, stream.plan
    draw, table, verbose = stream.draw, stream.table, stream.verbose
    memory_budget = MEMORY_BUDGET if memory_budget is None else memory_budget
    sequences = numpy.asarray(sequences)
    L = X.shape[-1]
    n_groups = len(plan) // n
    exact = len(numpy.unique(plan.ends - plan.starts)) <= EXACT_BUCKETS  # the whole plan's
    every_bucket = sorted(set(buckets(plan.ends - plan.starts, L, exact).tolist()))
    plan, total = engine.process_share(plan, n)  # this process's whole groups
    devices = engine.Devices(model, X)
    params, X, args, table = devices.replicate((model.params, X, args, table))
    width_of = buckets(plan.ends - plan.starts, L, exact)  # this process's items
    sink = _MeanStd(len(plan), n) if reduce == "mean_std" else _Collect(len(plan))
    before, multi = None, False
    # predict's ``func``: applied to each batch's outputs (compiled once per ``func``)
    post = (lambda y: y) if model.post is None else jax.jit(model.post)
    where = "func" if model.post is not None else "the model"
    bar = tqdm(total=len(plan), disable=not verbose, desc=desc)
    flight = _InFlight(sink, bar)
    checks = []  # (incremental, exact) outputs of each bucket's first batch
    for W in every_bucket:  # every process, every bucket, in one order
        before, multi = _bucket(model, X, args, draw, table, plan, sequences, W, width_of,
                                params, devices, batch_size, memory_budget, before, multi,
                                reduce, post, where, flight, checks)
    # Every batch is dispatched: now the checks are read (the first wait of the run), and
    # all processes take the full path if one disagreed anywhere (one collective).
    if not _everywhere(all(confirmed(*check) for check in checks)):
        bar.close()
        return None
    flight.flush()
    bar.close()
    if reduce == "mean_std":
        group_seq = numpy.searchsorted(sequences, plan.seq_idx[::n])
        stats = sink.result(list(engine.take_rows(tuple(before), group_seq)))
        if total is not None:  # under jax.distributed, host arrays (as the full path's)
            before = jax.device_get(before)
        means = engine.gather_processes([m for m, _ in stats], None if total is None else n_groups)
        stds = engine.gather_processes([s for _, s in stats], None if total is None else n_groups)
        return before, list(zip(means, stds)), multi
    return jax.device_get(before), engine.gather_processes(sink.result(None), total), multi


def exact_float32(devices: Any) -> bool:
    """Whether XLA computes float32 matmuls and convolutions exactly (to float32 rounding)
    on ``devices`` (jax devices) whatever the precision setting: on the CPU. On a GPU
    the default float32 precision uses TF32 (a 10-bit mantissa) and on a TPU bfloat16
    passes, so the full and windowed paths round differently, by about 1e-3 of the
    output's scale: there the runtime check runs programs of its own under
    :func:`check_precision`."""
    return platform_of(devices) == "cpu"


def check_precision():
    """The context the runtime check's programs are traced in: every matmul and
    convolution at full float32 precision (``jax.default_matmul_precision('highest')``),
    so the check compares the algorithm (windows, rules), not the hardware's rounding,
    within :func:`~jablate.engine.executor.check_tolerance`. The run itself keeps the
    precision in effect."""
    return jax.default_matmul_precision("highest")


def _everywhere(ok: bool) -> bool:
    """``ok`` in every process of a ``jax.distributed`` run (all take the same path)."""
    if engine.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils
    return bool(numpy.all(multihost_utils.process_allgather(numpy.array([ok]))))


def stops_text(inc: Incremental) -> str:
    """Where windowing stops in ``inc`` (or the broken rule), for mismatch warnings."""
    s = inc.summary
    return (f"the broken rule for {s.broken}" if s.broken else
            "; ".join(f"{name} ({why})" for _, name, why in s.stops[:3])
            or "no stop: every layer windowed")


def confirmed(ys: Any, full: Any, inc: Incremental, who: str = "") -> bool:
    """:func:`agree`, or else an :class:`IncrementalMismatchWarning` saying where the
    windows of ``inc`` stop (``who`` prefixes the message); the caller finishes exactly."""
    if agree(ys, full):
        return True
    warnings.warn(
        f"{who}the incremental engine disagreed with the full path on the first batch "
        f"(width {inc.width}; windowing stops at: {stops_text(inc)}); finishing on the full "
        f"path.", IncrementalMismatchWarning, stacklevel=outside_stacklevel())
    return False


def check_mode(incremental: Any) -> Mode:
    """``incremental`` checked: 'auto', True or False (``InputError``, a ``ValueError``,
    otherwise). The one check of the option, for every function that takes it."""
    if not (incremental == "auto" if isinstance(incremental, str) else
            isinstance(incremental, bool)):
        raise InputError(f"incremental must be 'auto', True or False; got {incremental!r}.")
    return incremental
