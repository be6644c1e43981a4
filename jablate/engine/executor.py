"""The one executor: every batch loop of jablate runs through :func:`execute`.

A *job* is a plan of work items (:class:`jablate.engine.stream.Plan`), a batch size and a
*step*, the compiled function that turns one padded batch of items into outputs on the
device. :func:`execute` cuts the plan into batches of one shape (the last one padded by
repeating an item, so one program serves them all), shards each batch's items over the
run's devices, splits whole groups of items between ``jax.distributed`` processes, keeps
one step in flight while the previous batch's outputs are handled, shows a progress bar,
and hands each batch's outputs to a *sink*:

* :class:`Collect` copies the valid rows to the host, concatenated per output;
* :class:`MeanStd` merges, per group of ``n`` items, the count, mean and squared
  deviations of the outputs' differences from a shift on the device
  (``reduce="mean_std"``), and hands back device arrays without waiting for them;
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

from jablate._core import interrupts
from jablate._core.dtypes import dtype_kind, resolution

__all__ = ["Job", "Sink", "Collect", "MeanStd", "Scatter", "execute", "checked", "to_host",
           "GroupMoments", "accumulator_dtype", "agree", "check_tolerance", "CHECK_TOLERANCE",
           "IncrementalMismatchWarning", "power_of_two_holding", "padded_rows", "window_start"]

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


@partial(jax.jit, donate_argnums=(0, 1, 2))
def _merge(counts, means, m2s, ys, shifts, shift_rows, packed):
    """Merge one batch into per-group moments (Chan et al.'s pairwise update).

    ``packed`` is ``local``, ``groups`` (each (B,)) and ``valid_count``, one transfer: item
    ``b < valid_count`` counts as ``ys[h][b] - shifts[h][shift_rows[b]]``, in group
    ``groups[local[b]]`` (``local``: the item's index among the batch's distinct groups;
    ``groups`` padded with an index past the moments' last row, which reads as empty and is
    never written); later rows are padding. The moments have a row per group and more (a
    power of two, :class:`GroupMoments`), so this program depends on the number of groups
    only through that power of two. The batch's own mean and sum of squared deviations
    per group are taken about that mean (two passes), then merged, so no sum of squares
    of large differences is ever subtracted from another: a group whose items are all
    equal keeps a spread of exactly 0 however far they lie from the shift.
    """
    size = ys[0].shape[0]
    local, groups, valid_count = packed[:size], packed[size:2 * size], packed[2 * size]
    valid = jnp.arange(size) < valid_count  # rows from valid_count on are padding
    w = valid.astype(counts.dtype)
    c_b = jax.ops.segment_sum(w, local, num_segments=size)
    c = counts.at[groups].get(mode="fill", fill_value=0)
    c_new = c + c_b
    frac = jnp.where(c_new > 0, c_b / jnp.maximum(c_new, 1), 0)
    out_m, out_q = [], []
    if shift_rows is None:  # each group its own shift
        shift_rows = jnp.minimum(groups[local], counts.shape[0] - 1)
    for m_all, q_all, y, shift in zip(means, m2s, ys, shifts):
        tail = (1,) * (y.ndim - 1)
        d = y.astype(m_all.dtype) - shift[shift_rows].astype(m_all.dtype)
        d = jnp.where(valid.reshape((-1,) + tail), d, 0)
        mean_b = jax.ops.segment_sum(d, local, num_segments=size) / jnp.maximum(
            c_b, 1).reshape((-1,) + tail)
        dev = jnp.where(valid.reshape((-1,) + tail), d - mean_b[local], 0)
        q_b = jax.ops.segment_sum(dev * dev, local, num_segments=size)
        m = m_all.at[groups].get(mode="fill", fill_value=0)
        q = q_all.at[groups].get(mode="fill", fill_value=0)
        delta = mean_b - m
        f = frac.reshape((-1,) + tail)
        out_m.append(m_all.at[groups].set(m + delta * f, mode="drop"))
        out_q.append(q_all.at[groups].set(q + q_b + delta * delta * c.reshape(
            (-1,) + tail) * f, mode="drop"))
    return counts.at[groups].set(c_new, mode="drop"), tuple(out_m), tuple(out_q)


def _on_device(x: Any) -> jax.Array:
    """``x`` as a JAX array: a JAX array as it is (no host round trip), anything else
    (a numpy array, a torch CPU tensor) through numpy."""
    return x if isinstance(x, jax.Array) else jnp.asarray(numpy.asarray(x))


@partial(jax.jit, static_argnames=("n", "groups"))
def _finish(means, m2s, shifts, n, groups):
    """Each output's ``(shift + mean, sqrt(m2 / n))`` of the first ``groups`` rows: a float32
    sum of float32 values is rounded once, as a float64 sum rounded to float32 would be."""
    return tuple((s[:groups].astype(m.dtype) + m[:groups],
                  jnp.sqrt(jnp.maximum(q[:groups] / n, 0)))
                 for m, q, s in zip(means, m2s, shifts))


@partial(jax.jit, static_argnames=("rows", "dtype"))
def _pad_rows_to(x, rows, dtype):
    """``x`` (R, ...) in ``dtype``, with zero rows appended up to ``rows``."""
    return jnp.pad(x.astype(dtype), [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1))


def padded_rows(lo: int, size: int, count: int) -> numpy.ndarray:
    """Rows ``lo .. lo + size - 1`` of a table of ``count`` rows, those past its end
    repeating its last: a batch padded to its static size (the padded rows' results are
    dropped). int64, shape (size,)."""
    return numpy.minimum(numpy.arange(lo, lo + size), count - 1)


def window_start(start: Any, length: int, width: int) -> Any:
    """Where the window of ``width`` positions that holds a region starting at ``start``
    begins, in a sequence of ``length``: at the region's start, moved left where the
    window would run off the end (so it holds any region of up to ``width`` positions).
    numpy in, numpy out; JAX (traced too) in, JAX out."""
    xp = jnp if isinstance(start, jax.Array) else numpy
    return xp.minimum(start, length - width)


def power_of_two_holding(n: int) -> int:
    """The smallest power of two at least ``n`` (1 for ``n <= 1``): the size that runs of
    many lengths are padded to, so that they share a few compiled programs."""
    return 1 << max(0, n - 1).bit_length()


class GroupMoments:
    """Per-group count, mean and sum of squared deviations of outputs, kept on the device
    and merged batch by batch (:func:`_merge`), as differences from a per-group shift (say,
    the prediction before shuffling: the mean then keeps the precision of the drop).

    Nothing here waits for the device: the items each group receives are counted on the
    host from the groups sent with every batch (the device's own counts weight the merge),
    and :meth:`result` returns device arrays, so a caller can dispatch the next job before
    reading them.

    The moments keep :func:`power_of_two_holding` ``(G)`` rows, so that runs of
    many numbers of groups share the merge's compiled program; rows past G stay empty.

    Parameters
    ----------
    groups: int
        How many groups (G).
    """

    def __init__(self, groups: int):
        self.groups = groups
        self.capacity = power_of_two_holding(groups)
        self.counts, self.means, self.m2s = None, None, None
        self.received = numpy.zeros(groups, numpy.int64)

    def add(self, ys: tuple, shifts: tuple, shift_rows: Any, groups: numpy.ndarray,
            valid: int) -> None:
        """Merge a batch: row ``b`` of every ``ys`` belongs to group ``groups[b]`` (host
        ints) and is taken as its difference from ``shifts[h][shift_rows[b]]`` (None: row
        ``groups[b]`` of ``shifts``); rows from ``valid`` on are padding."""
        size = ys[0].shape[0]
        if self.counts is None:
            self.counts = jnp.zeros(self.capacity, accumulator_dtype(ys[0].dtype))
            self.means = tuple(jnp.zeros((self.capacity,) + y.shape[1:],
                                         accumulator_dtype(y.dtype)) for y in ys)
            self.m2s = tuple(jnp.zeros_like(m) for m in self.means)
        groups = numpy.asarray(groups)
        self.received += numpy.bincount(groups[:valid], minlength=self.groups)[:self.groups]
        distinct, local = numpy.unique(groups[:max(valid, 1)], return_inverse=True)
        local = numpy.concatenate([local, numpy.zeros(size - len(local), local.dtype)])
        padded = numpy.full(size, self.capacity, numpy.int32)  # past the last: never written
        padded[:len(distinct)] = distinct
        packed = jnp.asarray(numpy.concatenate([local, padded, [valid]]).astype(numpy.int32))
        self.counts, self.means, self.m2s = _merge(
            self.counts, self.means, self.m2s, ys, shifts, shift_rows, packed)

    def result(self, shifts: Any, n: int) -> list:
        """``(mean, std)`` per output, device arrays (G, ...) in the outputs' accumulator
        dtype (population standard deviation; the shift added back): dispatched, not
        waited for.

        Parameters
        ----------
        shifts: sequence of arrays (G, ...)
            One per output, host or device (rows past G, if any, are not read).
        n: int
            The items each group must have received.

        Raises
        ------
        RuntimeError
            When a group was not sent exactly ``n`` items (a bug, never a result).
        """
        if self.groups and (self.received != n).any():
            raise RuntimeError(f"jablate: per-group moments counted {self.received.min()} to "
                               f"{self.received.max()} items per group, not {n}: refusing "
                               "to report them")
        return list(_finish(self.means, self.m2s, tuple(_on_device(s) for s in shifts), n,
                            groups=self.groups))


@dataclass
class MeanStd:
    """Per group of ``n`` consecutive items, the mean and population standard deviation
    (``ddof=0``) of the outputs, accumulated on the device as differences from ``shifts``
    (one array (G, ...) per output, e.g. the predictions before shuffling), so memory
    is of order G rather than G * n. ``result()`` is a list of ``(mean, std)`` device
    pairs (:meth:`GroupMoments.result`: not waited for).

    Parameters
    ----------
    shifts: list of arrays (G, ...)
        Host or device arrays (device ones are used where they are).
    n: int
        Items per group.
    total: int
        Items in the (local) plan; padding rows past it count as nothing.
    """

    shifts: list
    n: int
    total: int
    _moments: Optional[GroupMoments] = None

    def __post_init__(self):
        shifts = tuple(_on_device(s) for s in self.shifts)
        self._moments = GroupMoments(shifts[0].shape[0] if shifts else 0)
        # as many rows as the moments (zeros past G, never read): one merge program per
        # power of two of groups
        self.shifts = tuple(_pad_rows_to(s, self._moments.capacity,
                                         jnp.dtype(accumulator_dtype(s.dtype)))
                            for s in shifts)

    def add(self, ys: tuple, lo: int, valid: int) -> None:
        size = ys[0].shape[0]
        groups = padded_rows(lo, size, self.total) // self.n
        self._moments.add(ys, self.shifts, None, groups, valid)

    def result(self) -> list:
        return self._moments.result(self.shifts, self.n)


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
        Show a progress bar of the items done.
    desc: str or None
        The progress bar's label.
    unit: str
        What an item is, for the progress bar (its rate: ``inputs/s``). Default "input".
    """

    plan: Any
    step: Callable
    size: int
    shard: Callable = lambda items: items
    progress: bool = False
    desc: Optional[str] = None
    unit: str = "input"


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
    with tqdm(total=len(plan), disable=not job.progress, desc=job.desc, unit=job.unit) as bar:
        for lo in range(0, len(plan), job.size):
            items, valid = plan.batch(lo, job.size)
            sink.add(job.step(job.shard(items), lo), lo, valid)
            bar.update(valid)
            interrupts.check()  # an interrupt Python swallowed stops the run here
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


def check_tolerance(dtype_name: str) -> float:
    """The fraction of an output's largest absolute value within which a fast path's output
    agrees with the exact one: :data:`CHECK_TOLERANCE`, or for a coarser float dtype
    (float16, bfloat16) four of its epsilons, since two right programs in that dtype
    (windowed and whole, summing in different orders) differ by about one."""
    eps = resolution(dtype_name) if dtype_kind(dtype_name) == "f" else 0.0
    return max(CHECK_TOLERANCE, 4 * eps)


def agree(ys: Any, full: Any) -> bool:
    """Whether the outputs ``ys`` equal ``full`` (the exact path's) within
    :func:`check_tolerance` of each output's largest absolute value."""
    for y, f in zip(ys, full):
        tolerance = check_tolerance(numpy.asarray(f).dtype.name)
        y, f = numpy.asarray(y, numpy.float64), numpy.asarray(f, numpy.float64)
        scale = max(float(numpy.max(numpy.abs(f))), 1e-12)
        if y.shape != f.shape or float(numpy.max(numpy.abs(y - f))) > tolerance * scale:
            return False
    return True
