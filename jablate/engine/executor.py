"""The one executor: every batch loop of jablate runs through :func:`execute`.

A *job* is a plan of work items (:class:`jablate.engine.stream.Plan`), a batch size and a
*step*, the compiled function that turns one padded batch of items into outputs on the
device. :func:`execute` cuts the plan into batches of one shape (the last one padded by
repeating an item, so one program serves them all), shards each batch's items over the
run's devices, splits whole groups of items between ``jax.distributed`` processes, keeps
one step in flight while the previous batch's outputs are handled, shows a progress bar,
and hands each batch's outputs to a *sink*:

* :class:`Collect` copies the valid rows to the host, concatenated per output;
* :class:`MeanStd` accumulates, per group of ``n`` items, the sums of the outputs'
  differences from a shift and of their squares on the device (``reduce="mean_std"``);
* :class:`Scatter` collects rows into given positions (a job that runs out of order).

:func:`checked` is the one "check the first batch, else fall back" combinator: it runs a
fast step and an exact one on the first batch, compares them, and keeps the fast one only
when they agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Optional, Protocol

import jax
import jax.numpy as jnp
import numpy
from tqdm.auto import tqdm

__all__ = ["Job", "Sink", "Collect", "MeanStd", "Scatter", "execute", "checked", "to_host",
           "accumulate", "summarize", "accumulator_dtype", "agree", "CHECK_TOLERANCE",
           "IncrementalMismatchWarning"]

#: A fast path agrees with the exact one when every output is within this fraction of the
#: exact output's largest absolute value (:func:`agree`).
CHECK_TOLERANCE = 1e-4


def to_host(ys: tuple, valid: int) -> tuple:
    """The first ``valid`` rows of each of a step's outputs, on the host."""
    return tuple(numpy.asarray(y)[:valid] for y in ys)


class Sink(Protocol):
    """Where a job's outputs go, batch by batch.

    ``add(ys, lo, valid)`` receives a batch's outputs (a tuple of arrays, one per model
    output, of the batch's padded size), the index of its first item in the plan and the
    number of valid rows; ``result()`` is what the job returns.
    """

    def add(self, ys: tuple, lo: int, valid: int) -> None: ...

    def result(self) -> Any: ...


@dataclass
class Collect:
    """Every valid row, on the host: ``result()`` is a list of arrays (M, ...), one per
    output. The previous batch is copied while the next one runs (one step in flight).

    Parameters
    ----------
    host: bool
        Whether outputs are device arrays to copy (True) or already host values (a torch
        model's outputs), concatenated by ``concat``.
    concat: callable
        Concatenates a list of one output's chunks. Default ``numpy.concatenate``.
    """

    host: bool = True
    concat: Callable = numpy.concatenate
    _pending: list = field(default_factory=list)
    _chunks: list = field(default_factory=list)

    def add(self, ys: tuple, lo: int, valid: int) -> None:
        if not self.host:
            self._chunks.append(tuple(y[:valid] for y in ys))
            return
        self._pending.append((ys, valid))
        if len(self._pending) > 1:  # the next step is already dispatched
            self._chunks.append(to_host(*self._pending.pop(0)))

    def result(self) -> list:
        self._chunks.extend(to_host(*p) for p in self._pending)
        self._pending.clear()
        return [self.concat([c[h] for c in self._chunks]) for h in range(len(self._chunks[0]))]


@dataclass
class Scatter:
    """Rows ``positions[lo:lo + valid]`` of host arrays of ``total`` rows, filled batch by
    batch (one step in flight, as :class:`Collect`); ``result()`` the list of arrays."""

    positions: numpy.ndarray
    total: int
    _pending: list = field(default_factory=list)
    _out: Optional[list] = None

    def add(self, ys: tuple, lo: int, valid: int) -> None:
        self._pending.append((ys, lo, valid))
        if len(self._pending) > 1:
            self._write(*self._pending.pop(0))

    def _write(self, ys, lo, valid):
        host = to_host(ys, valid)
        if self._out is None:
            self._out = [numpy.empty((self.total,) + y.shape[1:], y.dtype) for y in host]
        for out, y in zip(self._out, host):
            out[self.positions[lo:lo + valid]] = y

    def result(self) -> list:
        for p in self._pending:
            self._write(*p)
        self._pending.clear()
        return self._out


def accumulator_dtype(dtype: Any) -> Any:
    """The dtype sums of outputs of ``dtype`` accumulate in: float64 for float64 outputs
    (a run with ``jax_enable_x64`` asked for them), float32 for everything else."""
    return jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32


@partial(jax.jit, donate_argnums=(0, 1))
def accumulate(sums: tuple, sqs: tuple, ys: tuple, shifts: tuple, shift_rows: jax.Array,
               groups: jax.Array, valid: jax.Array) -> tuple[tuple, tuple]:
    """Add a batch of outputs to per-group sums and sums of squares (donated, on the device).

    Item ``b`` (a row of every ``ys``) belongs to group ``groups[b]`` and is counted as its
    difference from ``shifts[h][shift_rows[b]]``, which must be the same for every item of
    a group (the shift keeps the variance well conditioned); rows where ``valid`` is False
    are padding and count as nothing.
    """
    out_s, out_q = [], []
    for s, q, y, shift in zip(sums, sqs, ys, shifts):
        d = y.astype(s.dtype) - shift[shift_rows].astype(s.dtype)
        d = jnp.where(valid.reshape((-1,) + (1,) * (d.ndim - 1)), d, 0)
        out_s.append(s.at[groups].add(d))
        out_q.append(q.at[groups].add(d * d))
    return tuple(out_s), tuple(out_q)


def summarize(sums: tuple, sqs: tuple, shifts: Any, n: int) -> list:
    """``(mean, std)`` host arrays (in the sums' dtype, computed in float64) per output from
    the sums and sums of squares of ``n`` differences from ``shifts`` per group, as
    :func:`accumulate` keeps them (population standard deviation)."""
    stats = []
    for s, q, shift in zip(sums, sqs, shifts):
        mean_d = numpy.asarray(s, numpy.float64) / n
        var = numpy.maximum(numpy.asarray(q, numpy.float64) / n - mean_d ** 2, 0)
        dtype = numpy.asarray(s).dtype
        stats.append(((numpy.asarray(shift, numpy.float64) + mean_d).astype(dtype),
                      numpy.sqrt(var).astype(dtype)))
    return stats


@dataclass
class MeanStd:
    """Per group of ``n`` consecutive items, the mean and population standard deviation
    (``ddof=0``) of the outputs, accumulated on the device as differences from ``shifts``
    (one host array (G, ...) per output, e.g. the predictions before shuffling), so memory
    is of order G rather than G * n. ``result()`` is a list of ``(mean, std)`` host pairs.

    Parameters
    ----------
    shifts: list of arrays (G, ...)
    n: int
        Items per group.
    total: int
        Items in the (local) plan; padding rows past it count as nothing.
    """

    shifts: list
    n: int
    total: int
    _sums: Optional[tuple] = None
    _sqs: Optional[tuple] = None

    def __post_init__(self):
        self.shifts = tuple(jnp.asarray(numpy.asarray(s), accumulator_dtype(
            numpy.asarray(s).dtype)) for s in self.shifts)
        self._sums = tuple(jnp.zeros_like(s) for s in self.shifts)
        self._sqs = tuple(jnp.zeros_like(s) for s in self.shifts)

    def add(self, ys: tuple, lo: int, valid: int) -> None:
        size = ys[0].shape[0]
        groups = jnp.asarray(numpy.minimum(numpy.arange(lo, lo + size), self.total - 1)
                             // self.n)
        self._sums, self._sqs = accumulate(self._sums, self._sqs, ys, self.shifts, groups,
                                           groups, jnp.arange(size) < valid)

    def result(self) -> list:
        return summarize(self._sums, self._sqs, self.shifts, self.n)


@dataclass(frozen=True)
class Job:
    """One run of a step over a plan.

    Attributes
    ----------
    plan: jablate.engine.stream.Plan
        The work items.
    step: callable
        ``step(items, lo) -> tuple of arrays``: the outputs of one batch of items (the
        plan's batch starting at item ``lo``, padded, sharded over the devices).
    size: int
        Items per step (a multiple of the device count).
    shard: callable
        Places a batch's items on the run's devices (identity for one device).
    progress: bool
        Show a progress bar over the batches.
    desc: str or None
        The progress bar's label.
    """

    plan: Any
    step: Callable
    size: int
    shard: Callable = lambda items: items
    progress: bool = False
    desc: Optional[str] = None


def execute(job: Job, sink: Any) -> Any:
    """Run ``job``, batch by batch, into ``sink``; return ``sink.result()``.

    Every batch has ``job.size`` items (the last one padded by repeating its first item;
    the sink is told how many rows are valid), so one compiled program serves them all.
    Each step is dispatched before the previous batch's outputs reach the sink, so a
    host copy overlaps the next step's computation.

    Parameters
    ----------
    job: Job
    sink: Collect, MeanStd, Scatter or any object with ``add`` and ``result``

    Returns
    -------
    What ``sink.result()`` returns.
    """
    plan = job.plan
    for lo in tqdm(range(0, len(plan), job.size), disable=not job.progress, desc=job.desc):
        items, valid = plan.batch(lo, job.size)
        sink.add(job.step(job.shard(items), lo), lo, valid)
    return sink.result()


def checked(fast: Callable, exact: Callable, agree: Callable[[tuple, tuple], bool],
            on_mismatch: Callable[[], None]) -> Callable:
    """A step that checks ``fast`` against ``exact`` on its first batch.

    Parameters
    ----------
    fast, exact: callable
        Steps ``(items, lo) -> tuple of arrays`` meant to give the same outputs.
    agree: callable
        ``agree(fast_outputs, exact_outputs) -> bool``.
    on_mismatch: callable
        Called once when they disagree (say, to warn); the job then finishes on ``exact``.

    Returns
    -------
    step: callable
        On the first call, both steps run and the exact outputs are returned when they
        disagree; later calls run whichever step was kept. ``step.kept()`` says which:
        ``"fast"``, ``"exact"`` or ``None`` before the first call.
    """
    state = {"step": None}

    def step(items, lo):
        if state["step"] is not None:
            return state["step"](items, lo)
        ys, ys_exact = fast(items, lo), exact(items, lo)
        if agree(ys, ys_exact):
            state["step"] = fast
            return ys
        state["step"] = exact
        on_mismatch()
        return ys_exact

    step.kept = lambda: None if state["step"] is None else (
        "fast" if state["step"] is fast else "exact")
    return step


class IncrementalMismatchWarning(UserWarning):
    """The runtime check found the incremental results differ from the full path's."""


def agree(ys: Any, full: Any) -> bool:
    """Whether the outputs ``ys`` equal ``full`` (the exact path's) within
    :data:`CHECK_TOLERANCE` of each output's largest absolute value."""
    for y, f in zip(ys, full):
        y, f = numpy.asarray(y, numpy.float64), numpy.asarray(f, numpy.float64)
        scale = max(float(numpy.max(numpy.abs(f))), 1e-12)
        if y.shape != f.shape or float(numpy.max(numpy.abs(y - f))) > CHECK_TOLERANCE * scale:
            return False
    return True
