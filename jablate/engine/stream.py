"""The streaming engine behind ``predict``, ``shuffle`` and ``ablate``.

A *plan* lists work items, one per model input: which sequence of ``X``, which
region, and which random draw. A *draw* is a small static value that turns a
batch of items into model inputs (:data:`UNCHANGED`, :class:`KeyShuffle` around a
key-first shuffle of :mod:`jablate.functional`, :class:`PermutationShuffle` for
tangermeme's permutations); its table (keys or permutations) is an argument.
Each batch's sequences are
gathered from ``X`` by a small program of their own (:func:`batch_rows`); the compiled
step shuffles them (inside the step) and feeds them to the model, so the shuffled
inputs are never held in memory all at once, and the step's shapes are the batch's,
whatever the number of sequences: runs of every ``N`` share a few programs (one per
power of two below a batch, see :meth:`Devices.size`). Only model
outputs go back to the host.
"""

import contextlib
import threading
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy

from jablate import functional
from jablate.engine.executor import (  # noqa: F401 (to_host, GroupMoments, accumulator_dtype: API)
    Collect,
    GroupMoments,
    Job,
    MeanStd,
    accumulator_dtype,
    execute,
    padded_rows,
    power_of_two_holding,
    to_host,
    window_start,
)
from jablate.models.runner import outputs_of


@dataclass(frozen=True)
class Plan:
    """Work items of a run, each field of shape (M,) (``draws``: (M, 3)).

    ``draws[m]`` says which random draw item ``m`` uses; its meaning belongs to the
    run's draw (:class:`KeyShuffle`: ``(b, j, i)``, shuffle ``i`` of sequence ``j``
    from base key ``b``; :class:`PermutationShuffle`: row ``draws[m, 0]`` of its
    permutation table; :data:`UNCHANGED`: nothing).
    """

    seq_idx: numpy.ndarray
    starts: numpy.ndarray
    ends: numpy.ndarray
    draws: numpy.ndarray

    @staticmethod
    def build(seq_idx, starts, ends, draws=None) -> "Plan":
        m = len(seq_idx)
        as32 = lambda a, shape: numpy.broadcast_to(
            numpy.zeros(shape, numpy.int32) if a is None else numpy.asarray(a, numpy.int32),
            shape)
        draws = None if draws is None else numpy.asarray(draws).reshape(m, -1)
        if draws is not None and draws.shape[1] < 3:
            draws = numpy.pad(draws, ((0, 0), (0, 3 - draws.shape[1])))
        return Plan(as32(seq_idx, (m,)), as32(starts, (m,)), as32(ends, (m,)),
                    as32(draws, (m, 3)))

    def __len__(self):
        return len(self.seq_idx)

    def batch(self, lo, size):
        """Items ``lo:lo+size``, padded to ``size`` by repeating item ``lo``."""
        hi = min(lo + size, len(self))
        take = numpy.arange(lo, lo + size)
        take[hi - lo:] = lo
        return (self.seq_idx[take], self.starts[take], self.ends[take], self.draws[take]), hi - lo

    def take(self, rows) -> "Plan":
        return Plan(self.seq_idx[rows], self.starts[rows], self.ends[rows], self.draws[rows])


# --- draws: how the items of a plan become model inputs ------------------------------------
#
# A draw is a small static value (hashable, a static argument of the compiled step) called as
# ``draw(x, table, items) -> (B, A, L)``: ``x`` (B, A, L) holds each item's sequence, gathered
# from ``X`` outside the step (:func:`batch_rows`), so that no program a draw is part of
# depends on the number of sequences; ``table`` is its dynamic data (base keys or a
# permutation table), passed as an argument so that one program serves every seed.


@dataclass(frozen=True)
class Unchanged:
    """The sequences as they are (predictions before any shuffle)."""

    def __call__(self, x, table, items):
        return x

    def for_regions(self, width: int, length: int) -> "Unchanged":
        """Itself: nothing to fit (see :meth:`KeyShuffle.for_regions`)."""
        return self

    def unwindowed(self) -> "Unchanged":
        """Itself (see :meth:`KeyShuffle.unwindowed`)."""
        return self


#: The narrowest window :meth:`KeyShuffle.for_regions` cuts: narrower regions share its
#: program (a shuffle of 64 positions costs next to nothing beside a model).
MIN_WINDOW = 64


def in_window(fn: Callable, width: int) -> Callable:
    """The key-first shuffle ``fn(key, x, start, end)`` of a region of at most ``width``
    positions, computed on the window of ``width`` positions that holds it (starting at
    ``start``, at most ``L - width``) and written back: the same values as ``fn`` on the
    whole sequence (a key-first shuffle's stream is indexed by absolute positions, and
    ``fn(..., offset=, length=)`` on a window gives the whole sequence's shuffle there),
    with work that grows with ``width`` rather than ``L`` (the mono shuffle sorts
    ``width`` keys, not ``L``)."""

    def shuffled(key, x, start, end):
        L = x.shape[-1]
        if width >= L:
            return fn(key, x, start, end)
        at = window_start(jnp.asarray(start, jnp.int32), L, width)
        y = fn(key, jax.lax.dynamic_slice_in_dim(x, at, width, 1), start, end, offset=at,
               length=L)
        return jax.lax.dynamic_update_slice_in_dim(x, y, at, 1)

    return shuffled


@dataclass(frozen=True)
class KeyShuffle:
    """Shuffles drawn from JAX keys by a key-first function ``fn(key, x, start, end)``.

    ``table`` holds base keys (K,); item ``(b, j, i)`` uses
    ``fold_in(fold_in(table[b], j), i)``. With ``width`` (static), every region has at most
    ``width`` positions and is shuffled in a window of that many (:func:`in_window`): the
    same values, less work (:meth:`for_regions` chooses it).
    """

    fn: Callable
    width: Optional[int] = None

    def __call__(self, x, table, items):
        _, starts, ends, draws = items
        return jax.vmap(self.one)(self._keys(table, draws), x, starts, ends)

    @property
    def one(self) -> Callable:
        """The shuffle of one item, ``one(key, x, start, end)``."""
        return self.fn if self.width is None else in_window(self.fn, self.width)

    def for_regions(self, width: int, length: int) -> "KeyShuffle":
        """The same draw for regions of at most ``width`` positions of sequences of
        ``length``: shuffled in windows of a power of two of positions (at least
        :data:`MIN_WINDOW`, so that runs of many widths share a few programs) where that
        is shorter than ``length``."""
        window = max(MIN_WINDOW, power_of_two_holding(int(width)))
        return replace(self, width=window if window < length else None)

    def unwindowed(self) -> "KeyShuffle":
        """The draw without its window: what :meth:`window` callers (the incremental
        engine, whose windows are its own) compile, so that their programs do not change
        with the plan's widest region."""
        return replace(self, width=None)

    def window(self, x, table, items, offsets, length):
        """The shuffled positions ``[offsets, offsets + W)`` of each item's sequence of
        length ``length``, from the unshuffled windows ``x`` (B, A, W) there
        (:func:`batch_windows`): (B, A, W), the same values as ``self`` gives there (the
        region must lie inside the window)."""
        _, starts, ends, draws = items
        return jax.vmap(lambda k, xw, s, e, o: self.fn(k, xw, s, e, offset=o, length=length))(
            self._keys(table, draws), x, starts, ends, offsets)

    @staticmethod
    def _keys(table, draws):
        return jax.vmap(lambda bji: jax.random.fold_in(
            jax.random.fold_in(table[bji[0]], bji[1]), bji[2]))(draws)


@dataclass(frozen=True)
class PermutationShuffle:
    """Region-relative permutations from a table (P, W) (tangermeme's stream)."""

    def __call__(self, x, table, items):
        _, starts, ends, draws = items
        return jax.vmap(functional.permute_region)(x, table[draws[:, 0]], starts, ends)

    def for_regions(self, width: int, length: int) -> "PermutationShuffle":
        """Itself: a gather of ``L`` columns is already cheap."""
        return self

    def unwindowed(self) -> "PermutationShuffle":
        """Itself (see :meth:`KeyShuffle.unwindowed`)."""
        return self

    def window(self, x, table, items, offsets, length):
        """As :meth:`KeyShuffle.window`."""
        _, starts, ends, draws = items
        return jax.vmap(functional.permute_region)(x, table[draws[:, 0]], starts - offsets,
                                                   ends - offsets)


UNCHANGED = Unchanged()


def block_rows(size: int, items: int, per_item: int, budget: int) -> int:
    """How many items to draw ahead at once: a power of two of ``size``-item batches, about
    ``budget`` bytes of ``per_item`` bytes each (at least one batch), no more batches than
    ``items`` need, rounded up to a power of two, so that a batch never straddles two
    blocks and runs of many lengths share a few block shapes (one program each).

    Parameters
    ----------
    size : int
        Items per batch.
    items : int
        Items in the run.
    per_item : int
        Bytes drawn per item.
    budget : int
        Bytes a block may take.

    Returns
    -------
    int
        A multiple of ``size``.
    """
    batches = -(-items // size)
    cap = max(1, budget // max(1, per_item * size))
    cap = 1 << (cap.bit_length() - 1)  # a power of two
    return size * min(cap, power_of_two_holding(batches))


@jax.jit
def take_rows(arrays: tuple, rows: Any) -> tuple:
    """Rows ``rows`` (axis 0) of each of ``arrays``, in one compiled gather.

    Parameters
    ----------
    arrays: tuple of jax.Array, each (N, ...)
    rows: array of int, shape (R,)

    Returns
    -------
    tuple of jax.Array, each (R, ...)
        On the arrays' device. (Indexing a ``jax.Array`` with a numpy array dispatches
        several eager operations: about 0.3 ms a call on a CPU, against 0.06 ms here.)
    """
    return tuple(jnp.take(a, rows, axis=0) for a in arrays)


def batch_rows(X: jax.Array, args: tuple, items: tuple, where: Any = None) -> tuple:
    """The sequences and extra inputs of a batch's items, gathered from the whole run's by
    a small program of their own, so that the steps that consume them have the batch's
    shapes, not ``X``'s.

    Parameters
    ----------
    X: jax.Array, shape=(N, A, L)
    args: tuple of jax.Array, each (N, ...)
    items: tuple
        A batch of plan items (:meth:`Plan.batch`); ``items[0]`` (B,) their sequences.
    where: Devices, optional
        The run's devices: the rows are sharded over them as the items are.

    Returns
    -------
    x: jax.Array, shape=(B, A, L)
    args: tuple of jax.Array, each (B, ...)
    """
    got = take_rows((X,) + tuple(args), items[0])
    if where is not None:
        got = where.shard(got)
    return got[0], got[1:]


@partial(jax.jit, static_argnames=("width",))
def batch_windows(X: jax.Array, items: tuple, width: int) -> jax.Array:
    """Each item's window of ``width`` positions of its sequence, unshuffled, starting at
    its region's start, at most ``L - width`` (so it holds a region of up to ``width``
    positions): (B, A, width), gathered by a small program of its own (as
    :func:`batch_rows`)."""
    offsets = window_start(jnp.asarray(items[1]), X.shape[-1], width)
    return jax.vmap(lambda j, o: jax.lax.dynamic_slice_in_dim(X[j], o, width, 1))(
        items[0], offsets)


def key_table(keys: jax.Array) -> jax.Array:
    """Base keys as a (K,) array of typed keys."""
    return jnp.asarray(keys).reshape(-1)


def no_table() -> jax.Array:
    """The (unused) table of :data:`UNCHANGED`."""
    return jnp.zeros((1, 1), jnp.int32)


class Devices:
    """Where a run's steps execute: every local device, the batch axis split across them.

    With one device this places nothing. With several, each step's items are
    sharded along the batch axis (``X``, ``args`` and parameters replicated) and
    the batch size is rounded up to a multiple of the device count.
    """

    def __init__(self, model, X):
        if model.device is not None or not model.jittable:
            devices = [model.device]  # the caller chose one device (or torch places batches)
        elif model.placement is not None:
            devices = list(model.placement.devices)  # jablate._core.placement's policy
        elif len(X.devices()) > 1:
            devices = list(X.devices())
        else:
            devices = jax.local_devices(backend=next(iter(X.devices())).platform)
        self.devices = tuple(devices)
        self.count = len(devices)
        if self.count > 1:
            mesh = jax.sharding.Mesh(numpy.array(devices), ("batch",))
            self.split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
            self.whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def size(self, batch_size: int, items: int) -> int:
        """Items per step: ``batch_size``, or for a run of fewer ``items`` the power of two
        that holds them (runs of different lengths share a few step shapes, one program
        each, for at most twice the work of a run smaller than a batch), rounded up to a
        multiple of the device count."""
        size = max(1, min(batch_size, power_of_two_holding(items)))
        return -(-size // self.count) * self.count

    def replicate(self, tree):
        return tree if self.count == 1 else jax.device_put(tree, self.whole)

    def shard(self, tree):
        return tree if self.count == 1 else jax.device_put(tree, self.split)


_LOCAL = threading.local()


@contextlib.contextmanager
def processes_apart():
    """Within this context, a ``jax.distributed`` process runs every call on its own, on
    its local devices, as a single process would: no split of the items between processes
    and no gather (``jablate hits`` gives each process chunks of its own)."""
    before = getattr(_LOCAL, "apart", False)
    _LOCAL.apart = True
    try:
        yield
    finally:
        _LOCAL.apart = before


def process_count() -> int:
    """The processes a call splits its items between: ``jax.process_count()``, or 1 inside
    :func:`processes_apart`."""
    return 1 if getattr(_LOCAL, "apart", False) else jax.process_count()


def process_share(plan: Plan, n: int) -> tuple:
    """This process's share of ``plan`` under ``jax.distributed``: whole groups of ``n``
    items, padded so every process runs the same number of items."""
    count = process_count()
    if count == 1:
        return plan, None
    groups = len(plan) // n
    per = -(-groups // count)
    lo = min(jax.process_index() * per, groups) * n
    take = padded_rows(lo, per * n, len(plan))
    return plan.take(take), len(plan)


def gather_processes(arrays: list, total: Optional[int]) -> list:
    """Concatenate every process's share (in process order); all processes get it all."""
    if total is None:
        return arrays
    from jax.experimental import multihost_utils
    out = []
    for a in arrays:
        a = numpy.asarray(a)
        every = numpy.asarray(multihost_utils.process_allgather(a, tiled=False))
        out.append(every.reshape(-1, *a.shape[1:])[:total])
    return out


@dataclass(frozen=True)
class Model:
    """What the engine runs: a runner, its parameters, a post-processing ``func``, the
    input dtype (JAX runners; None keeps a float ``X`` and casts others to float32), the
    device the caller chose, and where the run computes (:class:`jablate._core.placement.
    Placement`; None: every local device of ``X``'s platform)."""

    runner: Any
    params: Any = None
    post: Optional[Callable] = None
    dtype: Any = None
    device: Any = None  # a jax.Device the caller chose: run there alone, unsharded
    placement: Any = None  # jablate._core.placement.Placement, from predict.prepare

    @property
    def jittable(self) -> bool:
        return self.runner.jittable


@dataclass(frozen=True)
class Stream:
    """What a run streams through a model, as one value: the bound model, the inputs, the
    items (``plan``) and how items become inputs (``draw`` and its ``table``).

    Attributes
    ----------
    model: Model
    X: jax.Array, shape=(N, A, L)
    args: tuple of jax.Array, each (N, ...)
    plan: Plan
        The items, one model input each.
    draw: UNCHANGED, KeyShuffle or PermutationShuffle
        How a batch of items becomes model inputs. Default :data:`UNCHANGED`.
    table: jax.Array or None
        The draw's data (base keys or permutations); None: :func:`no_table`.
    batch_size: int
        Items per model call on the full path. Default 32.
    verbose: bool
        Progress bars. Default False.
    """

    model: Model
    X: jax.Array
    args: tuple
    plan: Plan
    draw: Any = UNCHANGED
    table: Any = None
    batch_size: int = 32
    verbose: bool = False

    def __post_init__(self):
        if self.table is None:
            object.__setattr__(self, "table", no_table())
        if len(self.plan):  # the draw fitted to the plan's widest region
            width = int((self.plan.ends - self.plan.starts).max())
            object.__setattr__(self, "draw", self.draw.for_regions(width, self.X.shape[-1]))

    def unshuffled(self, sequences: Any) -> "Stream":
        """The same run on ``sequences`` as they are (the predictions before shuffling)."""
        return replace(self, plan=Plan.build(sequences, 0, self.X.shape[-1]), draw=UNCHANGED,
                       table=no_table())


def _job(stream, plan, desc):
    """The :class:`jablate.engine.executor.Job` of ``stream``'s model over ``plan``: a step per
    batch of items, sharded over the run's devices. Whether the model (or ``func``)
    returned several outputs is kept in ``multi[0]`` once a step ran."""
    model, X, args, draw, table = stream.model, stream.X, stream.args, stream.draw, stream.table
    batch_size, verbose = stream.batch_size, stream.verbose
    where = Devices(model, X)
    size = where.size(batch_size, len(plan))
    multi = [False]
    what = "func" if model.post is not None else "the model"
    if model.jittable:
        compiled = model.runner.step_for(model.post)
        params = where.replicate(model.params)
        X, args, table = where.replicate((X, args, table))

        def step(items, lo):
            x, rows = batch_rows(X, args, items, where)
            y = compiled(params, x, rows, table, items, draw=draw, dtype=model.dtype)
            ys, multi[0] = outputs_of(y, what)
            return ys
    else:
        def step(items, lo):
            valid = min(size, len(plan) - lo)
            x, rows = batch_rows(X, args, items)
            x = _draw_eagerly(x, table, items, draw)[:valid]
            y = model.runner(x, tuple(a[:valid] for a in rows))
            ys, multi[0] = outputs_of(y, what)
            return ys
    job = Job(plan, step, size, where.shard if model.jittable else (lambda items: items),
              verbose, desc)
    return job, multi


@partial(jax.jit, static_argnames=("draw",))
def _draw_eagerly(x, table, items, draw):
    return draw(x, table, items)


def run(stream: Stream, desc: Optional[str] = None,
        on_device: bool = False) -> tuple[list, bool]:
    """Run ``model`` on every item of ``plan``, batch by batch (:func:`jablate.engine.executor.
    execute` into a :class:`~jablate.engine.executor.Collect`).

    Steps are sharded over every local device; under ``jax.distributed`` each
    process runs its share of the items and every process receives all outputs.

    Parameters
    ----------
    stream: Stream
        The model, the inputs and M items; ``stream.batch_size`` items per model call
        (the last batch is padded so every step has one shape; a run of fewer items, to
        :meth:`Devices.size`).
    desc: str, optional
        The progress bar's label.
    on_device: bool, optional
        Keep a JAX model's outputs on the device, not waited for (one process; under
        ``jax.distributed`` they are gathered on the host all the same). Default False.

    Returns
    -------
    outputs: list of arrays, each (M, ...)
        Host arrays; device arrays with ``on_device``; a torch model's outputs as its
        runner concatenates them.
    multi: bool
        Whether the model (or ``func``) returned a tuple or list.
    """
    local, total = process_share(stream.plan, 1)
    job, multi = _job(stream, local, desc)
    model = stream.model
    if not model.jittable:
        sink = Collect(host=False, concat=model.runner.concat)
    elif on_device and total is None:
        sink = Collect(host=False, concat=jnp.concatenate)
    else:
        sink = Collect()
    outputs = execute(job, sink)
    return gather_processes(outputs, total), multi[0]


def run_mean_std(stream: Stream, n: int, shifts: list, desc: Optional[str] = None) -> list:
    """Per-group mean and standard deviation of the outputs over ``n`` shuffles
    (:func:`jablate.engine.executor.execute` into a :class:`~jablate.engine.executor.MeanStd`).

    Items ``g * n + i`` of ``stream.plan`` belong to group ``g``. Each group's count,
    mean and sum of squared deviations of the outputs' differences from ``shifts`` (one
    array (G, ...) per output, e.g. the predictions before shuffling) are merged batch by
    batch on the device (:class:`~jablate.engine.executor.GroupMoments`; float32, float64
    for float64 outputs), so memory is of order G rather than G * n. Sharded and split
    across processes as :func:`run`.

    Parameters
    ----------
    shifts: list of arrays (G, ...)
        Host or device arrays; device ones stay there (one process).

    Returns
    -------
    stats: list of (mean, std) pairs, each (G, ...)
        Device arrays, not waited for (host arrays under ``jax.distributed``).
    """
    local, total = process_share(stream.plan, n)
    model = stream.model
    if total is not None:  # this process's groups; the padded tail repeats the last one (a
        # process past the last group, when there are fewer groups than processes, repeats
        # it throughout: its results are dropped when the processes' are joined)
        per = len(local) // n
        rows = padded_rows(jax.process_index() * per, per, total // n)
        shifts = [numpy.asarray(s)[rows] for s in shifts]
    job, _ = _job(stream, local, desc)
    if not model.jittable:  # torch outputs, as JAX arrays of the batch's padded size
        torch_step = job.step
        job = Job(job.plan, lambda items, lo: tuple(
            _pad_rows(model.runner.to_jax(y), job.size) for y in torch_step(items, lo)),
            job.size, job.shard, job.progress, job.desc)
    stats = execute(job, MeanStd(shifts, n, len(local)))
    means, stds = [m for m, _ in stats], [sd for _, sd in stats]
    groups = None if total is None else total // n
    return list(zip(gather_processes(means, groups), gather_processes(stds, groups)))


#: Bytes of shuffles up to which :func:`shuffle_all` pads the sequences to a power of two.
SHUFFLE_BLOCK_BYTES = 64 * 2 ** 20


def shuffle_all(X: jax.Array, table: jax.Array, start: int, end: int, draw: Callable,
                n: int, key_per_sequence: bool = False) -> jax.Array:
    """All ``n`` shuffles of every sequence of ``X``: jax.Array (N, n, A, L).

    Draws exactly what a plan of items ``j * n + i`` with draws ``(0, j, i)``
    (:class:`KeyShuffle`) or ``(i, 0, 0)`` (:class:`PermutationShuffle`) gives,
    without first gathering ``X`` to ``(N * n, A, L)``. With ``key_per_sequence``,
    ``table`` holds a base key per sequence and the draws are ``(j, 0, i)``: each
    sequence shuffled as it would be alone with its own key.

    Shuffles of up to :data:`SHUFFLE_BLOCK_BYTES` are drawn by one program for a power of
    two of sequences (the rows past ``N`` repeat the last one, their shuffles dropped), so
    calls on many numbers of sequences share it; larger ones by one program on ``X`` as it
    is (drawing them a block at a time would add a copy of the whole result, 15-60% of the
    warm time on a CPU, to save a compile that such a call amortises).
    """
    N = X.shape[0]
    draw = draw.for_regions(end - start, X.shape[-1])
    padded = power_of_two_holding(N)
    if padded * n * X[0].size * jnp.dtype(X.dtype).itemsize > SHUFFLE_BLOCK_BYTES:
        rows = numpy.arange(N, dtype=numpy.int32)
        return _shuffle_block(X, table, rows, start, end, draw=draw, n=n,
                              key_per_sequence=key_per_sequence)
    rows = padded_rows(0, padded, N).astype(numpy.int32)
    if key_per_sequence:  # the block's own base keys
        x, keys = take_rows((X, table), rows)
    else:
        x, keys = take_rows((X,), rows)[0], table
    Y = _shuffle_block(x, keys, rows, start, end, draw=draw, n=n,
                       key_per_sequence=key_per_sequence)
    return Y if padded == N else Y[:N]


@partial(jax.jit, static_argnames=("draw", "n", "key_per_sequence"))
def _shuffle_block(x, table, rows, start, end, draw, n, key_per_sequence):
    """:func:`shuffle_all` of a block of sequences ``x`` (B, A, L), rows ``rows`` of ``X``
    (with ``key_per_sequence``, ``table`` holds their own base keys, (B,))."""
    shuffles = jnp.arange(n)

    def per_sequence(xj, j, b):
        if isinstance(draw, PermutationShuffle):
            return jax.vmap(lambda p: functional.permute_region(xj, p, start, end))(table)
        key_j = jax.random.fold_in(table[b], 0) if key_per_sequence else \
            jax.random.fold_in(table[0], j)
        return jax.vmap(lambda i: draw.one(jax.random.fold_in(key_j, i), xj, start, end))(
            shuffles)

    return jax.vmap(per_sequence)(x, rows, jnp.arange(x.shape[0]))


def _pad_rows(y, size):
    if y.shape[0] >= size:
        return y
    return jnp.concatenate([y, jnp.repeat(y[:1], size - y.shape[0], axis=0)])
