"""The streaming engine behind ``predict``, ``shuffle`` and ``ablate``.

A *plan* lists work items, one per model input: which sequence of ``X``, which
region, and which random draw (``key_ids`` = (b, j, i): shuffle ``i`` of sequence
``j`` from base key ``b``, for key streams; ``perm_ids`` into a table of tangermeme
permutations). Each compiled step builds one batch of
inputs from ``X`` and the plan — shuffling inside the step — and feeds it to the
model, so the shuffled inputs are never held in memory all at once. Only model
outputs go back to the host.
"""

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy
from tqdm.auto import tqdm

from . import functional

KINDS = ("none", "mono-key", "mono-perm", "dinuc")


@dataclass(frozen=True)
class Plan:
    """Work items of a run, each field of shape (M,) (``key_ids``: (M, 3))."""

    seq_idx: numpy.ndarray
    starts: numpy.ndarray
    ends: numpy.ndarray
    key_ids: numpy.ndarray
    perm_ids: numpy.ndarray

    @staticmethod
    def build(seq_idx, starts, ends, key_ids=None, perm_ids=None):
        m = len(seq_idx)
        as32 = lambda a, shape: numpy.broadcast_to(
            numpy.zeros(shape, numpy.int32) if a is None else numpy.asarray(a, numpy.int32),
            shape)
        return Plan(as32(seq_idx, (m,)), as32(starts, (m,)), as32(ends, (m,)),
                    as32(key_ids, (m, 3)), as32(perm_ids, (m,)))

    def __len__(self):
        return len(self.seq_idx)

    def batch(self, lo, size):
        """Items ``lo:lo+size``, padded to ``size`` by repeating item ``lo``."""
        hi = min(lo + size, len(self))
        take = numpy.arange(lo, lo + size)
        take[hi - lo:] = lo
        return (self.seq_idx[take], self.starts[take], self.ends[take],
                self.key_ids[take], self.perm_ids[take]), hi - lo


@dataclass(frozen=True)
class Shuffler:
    """How items are shuffled: ``kind`` (one of KINDS), base keys (K,), a permutation table."""

    kind: str
    key: jax.Array
    perms: jax.Array

    @staticmethod
    def make(kind, key=None, perms=None):
        key = jax.random.key(0) if key is None else key
        key = key.reshape(-1)
        perms = jnp.zeros((1, 1), jnp.int32) if perms is None else jnp.asarray(perms, jnp.int32)
        return Shuffler(kind, key, perms)


def make_inputs(X, key, perms, items, kind):
    """Build one batch of (shuffled) model inputs from ``X`` and plan items.

    Parameters
    ----------
    X: jax.Array, shape=(N, A, L)
    key: jax.Array of keys, shape=(K,)
        Base keys; item ``(b, j, i)`` uses ``fold_in(fold_in(key[b], j), i)``.
    perms: jax.Array, shape=(P, W), int32
        tangermeme permutations, padded; used by ``kind='mono-perm'``.
    items: tuple of arrays
        ``(seq_idx, starts, ends, key_ids, perm_ids)`` of ``B`` items.
    kind: str (static)
        One of ``KINDS``: 'none' (no shuffle), 'mono-key', 'mono-perm', 'dinuc'.

    Returns
    -------
    x: jax.Array, shape=(B, A, L), dtype of ``X``
    """
    seq_idx, starts, ends, key_ids, perm_ids = items
    x = jnp.take(X, seq_idx, axis=0)
    if kind == "none":
        return x
    if kind == "mono-perm":
        return jax.vmap(functional.permute_region)(x, perms[perm_ids], starts, ends)
    keys = jax.vmap(lambda bji: jax.random.fold_in(jax.random.fold_in(key[bji[0]], bji[1]),
                                                   bji[2]))(key_ids)
    fn = functional.shuffle if kind == "mono-key" else functional.dinucleotide_shuffle
    return jax.vmap(fn)(keys, x, starts, ends)


_make_inputs = jax.jit(make_inputs, static_argnames=("kind",))


def _cast(x, dtype):
    if dtype is not None:
        return x.astype(dtype)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


@partial(jax.jit, static_argnames=("runner", "kind", "dtype"))
def _step(runner, params, X, args, key, perms, items, kind, dtype):
    x = _cast(make_inputs(X, key, perms, items, kind), dtype)
    args = tuple(jnp.take(a, items[0], axis=0) for a in args)
    return runner.apply(params, x, *args)


class _Devices:
    """Where a run's steps execute: every local device, the batch axis split across them.

    With one device this places nothing. With several, each step's items are
    sharded along the batch axis (``X``, ``args`` and parameters replicated) and
    the batch size is rounded up to a multiple of the device count.
    """

    def __init__(self, runner, X):
        devices = list(X.devices()) if len(X.devices()) > 1 else jax.local_devices()
        devices = [d for d in devices if d.platform == next(iter(X.devices())).platform]
        self.count = len(devices) if runner.jittable else 1
        if self.count > 1:
            mesh = jax.sharding.Mesh(numpy.array(devices), ("batch",))
            self.split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
            self.whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def size(self, batch_size, items):
        size = max(1, min(batch_size, items))
        return -(-size // self.count) * self.count

    def replicate(self, tree):
        return tree if self.count == 1 else jax.device_put(tree, self.whole)

    def shard(self, tree):
        return tree if self.count == 1 else jax.device_put(tree, self.split)


def _process_share(plan, n):
    """This process's share of ``plan`` under ``jax.distributed``: whole groups of ``n``
    items, padded so every process runs the same number of items."""
    count = jax.process_count()
    if count == 1:
        return plan, None
    groups = len(plan) // n
    per = -(-groups // count)
    lo = min(jax.process_index() * per, groups) * n
    take = numpy.minimum(numpy.arange(lo, lo + per * n), len(plan) - 1)
    return Plan(*(getattr(plan, f)[take] for f in Plan.__dataclass_fields__)), len(plan)


def _gather_processes(arrays, total):
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


def _batches(runner, X, args, shuffler, plan, batch_size, dtype, verbose, desc):
    """Yield ``(outputs, valid, lo, size)`` per step; JAX outputs stay on the device."""
    where = _Devices(runner, X)
    size = where.size(batch_size, len(plan))
    params = where.replicate(runner.params) if runner.jittable else None
    X, args, key, perms = where.replicate((X, args, shuffler.key, shuffler.perms))
    for lo in tqdm(range(0, len(plan), size), disable=not verbose, desc=desc):
        items, valid = plan.batch(lo, size)
        if runner.jittable:
            ys = _step(runner, params, X, args, key, perms, where.shard(items), shuffler.kind,
                       dtype)
        else:
            x = _make_inputs(X, key, perms, items, shuffler.kind)[:valid]
            ys = runner(x, tuple(jnp.take(a, items[0][:valid], axis=0) for a in args))
        yield ys, valid, lo, size


def run(runner, X, args, shuffler, plan, batch_size, dtype=None, verbose=False, desc=None):
    """Run ``runner`` on every item of ``plan``, batch by batch.

    Steps are sharded over every local device; under ``jax.distributed`` each
    process runs its share of the items and every process receives all outputs.

    Parameters
    ----------
    runner: JaxRunner or jablate.bridges.torch.TorchRunner
    X: jax.Array, shape=(N, A, L)
    args: tuple of jax.Array, each (N, ...)
    shuffler: Shuffler
    plan: Plan with M items
    batch_size: int
        Items per model call; the last batch is padded so every step has one shape.
    dtype: dtype or None
        Input dtype for JAX models (default: float32 for non-float ``X``).

    Returns
    -------
    outputs: list of host arrays, each (M, ...)
    multi: bool
        Whether the model returned a tuple or list.
    """
    local, total = _process_share(plan, 1)
    pending, chunks = [], []
    for ys, valid, _, _ in _batches(runner, X, args, shuffler, local, batch_size, dtype,
                                    verbose, desc):
        if runner.jittable:
            pending.append((ys, valid))
            if len(pending) > 1:  # keep one step in flight while copying the last
                chunks.append(_to_host(*pending.pop(0)))
        else:
            chunks.append(ys)
    chunks.extend(_to_host(*p) for p in pending)
    concat = numpy.concatenate if runner.jittable else runner.concat
    outputs = [concat([c[h] for c in chunks]) for h in range(len(chunks[0]))]
    return _gather_processes(outputs, total), runner.multi


def _to_host(ys, valid):
    return tuple(numpy.asarray(y)[:valid] for y in ys)


@partial(jax.jit, static_argnames=("kind", "n"))
def shuffle_all(X, key, perms, start, end, kind, n):
    """All ``n`` shuffles of every sequence of ``X``: jax.Array (N, n, A, L).

    Draws exactly what a plan of items ``j * n + i`` with ``key_ids = (0, j, i)``
    (key kinds) or ``perm_ids = i`` (tangermeme permutations) gives, without
    first gathering ``X`` to ``(N * n, A, L)``.
    """
    shuffles = jnp.arange(n)

    def per_sequence(x, j):
        if kind == "mono-perm":
            return jax.vmap(lambda p: functional.permute_region(x, p, start, end))(perms)
        fn = functional.shuffle if kind == "mono-key" else functional.dinucleotide_shuffle
        key_j = jax.random.fold_in(key[0], j)
        return jax.vmap(lambda i: fn(jax.random.fold_in(key_j, i), x, start, end))(shuffles)

    return jax.vmap(per_sequence)(X, jnp.arange(X.shape[0]))


@partial(jax.jit, donate_argnums=(0, 1))
def _accumulate(sums, sqs, ys, shifts, groups, valid):
    out_s, out_q = [], []
    for s, q, y, shift in zip(sums, sqs, ys, shifts):
        d = y.astype(s.dtype) - shift[groups]
        d = jnp.where(valid.reshape((-1,) + (1,) * (d.ndim - 1)), d, 0)
        out_s.append(s.at[groups].add(d))
        out_q.append(q.at[groups].add(d * d))
    return tuple(out_s), tuple(out_q)


def run_mean_std(runner, X, args, shuffler, plan, n, shifts, batch_size, dtype=None,
                 verbose=False, desc=None):
    """Per-group mean and standard deviation of the outputs over ``n`` shuffles.

    Items ``g * n + i`` of ``plan`` belong to group ``g``. Sums of the outputs'
    differences from ``shifts`` (one array (G, ...) per output, e.g. the
    predictions before shuffling) and of their squares accumulate on the device
    (float32), so memory is of order G rather than G * n. Sharded and split
    across processes as :func:`run`.

    Returns
    -------
    stats: list of (mean, std) host arrays, each (G, ...)
    """
    local, total = _process_share(plan, n)
    first = 0 if total is None else (jax.process_index() * len(local)) // n
    shifts = tuple(jnp.asarray(numpy.asarray(s)[first:first + len(local) // n], jnp.float32)
                   for s in shifts)
    if total is not None:  # the padded tail of the last process repeats its last group
        shifts = tuple(jnp.concatenate([s, jnp.repeat(s[-1:], len(local) // n - s.shape[0], 0)])
                       for s in shifts)
    sums = tuple(jnp.zeros_like(s) for s in shifts)
    sqs = tuple(jnp.zeros_like(s) for s in shifts)
    for ys, valid, lo, size in _batches(runner, X, args, shuffler, local, batch_size,
                                        dtype, verbose, desc):
        groups = jnp.asarray(numpy.minimum(numpy.arange(lo, lo + size), len(local) - 1) // n)
        mask = jnp.arange(size) < valid
        if not runner.jittable:
            ys = tuple(_pad_rows(runner.to_jax(y), size) for y in ys)
        sums, sqs = _accumulate(sums, sqs, ys, shifts, groups, mask)
    means, stds = [], []
    for s, q, shift in zip(sums, sqs, shifts):
        mean_d = s / n
        means.append(numpy.asarray(shift + mean_d))
        stds.append(numpy.asarray(jnp.sqrt(jnp.maximum(q / n - mean_d * mean_d, 0))))
    groups = None if total is None else total // n
    return list(zip(_gather_processes(means, groups), _gather_processes(stds, groups)))


def _pad_rows(y, size):
    return jnp.concatenate([y, jnp.repeat(y[:1], size - y.shape[0], axis=0)]) if y.shape[0] < size else y
