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
    """Build one batch ``(B, A, L)`` of (shuffled) inputs from ``X`` and plan items."""
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


def run(runner, X, args, shuffler, plan, batch_size, dtype=None, verbose=False, desc=None):
    """Run ``runner`` on every item of ``plan``, batch by batch.

    Parameters
    ----------
    runner: JaxRunner or bridges.torch.TorchRunner
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
    size = max(1, min(batch_size, len(plan)))
    pending, chunks = [], []
    params = runner.params if runner.jittable else None
    steps = range(0, len(plan), size)
    for lo in tqdm(steps, disable=not verbose, desc=desc):
        items, valid = plan.batch(lo, size)
        if runner.jittable:
            ys = _step(runner, params, X, args, shuffler.key, shuffler.perms, items,
                       shuffler.kind, dtype)
            pending.append((ys, valid))
            if len(pending) > 1:  # keep one step in flight while copying the last
                chunks.append(_to_host(*pending.pop(0)))
        else:
            x = _make_inputs(X, shuffler.key, shuffler.perms, items, shuffler.kind)[:valid]
            a = tuple(jnp.take(arg, items[0][:valid], axis=0) for arg in args)
            chunks.append(runner(x, a))
    chunks.extend(_to_host(*p) for p in pending)
    concat = numpy.concatenate if runner.jittable else runner.concat
    outputs = [concat([c[h] for c in chunks]) for h in range(len(chunks[0]))]
    return outputs, runner.multi


def _to_host(ys, valid):
    return tuple(numpy.asarray(y)[:valid] for y in ys)


def shuffled(X, shuffler, plan):
    """Materialise the (shuffled) inputs of every item: jax.Array (M, A, L)."""
    return _make_inputs(X, shuffler.key, shuffler.perms,
                        (plan.seq_idx, plan.starts, plan.ends, plan.key_ids, plan.perm_ids),
                        shuffler.kind)


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
    (float32), so memory is of order G rather than G * n.

    Returns
    -------
    stats: list of (mean, std) host arrays, each (G, ...)
    """
    size = max(1, min(batch_size, len(plan)))
    shifts = tuple(jnp.asarray(numpy.asarray(s), jnp.float32) for s in shifts)
    sums = tuple(jnp.zeros_like(s) for s in shifts)
    sqs = tuple(jnp.zeros_like(s) for s in shifts)
    params = runner.params if runner.jittable else None
    for lo in tqdm(range(0, len(plan), size), disable=not verbose, desc=desc):
        items, valid = plan.batch(lo, size)
        groups = jnp.asarray(numpy.minimum(numpy.arange(lo, lo + size), len(plan) - 1) // n)
        mask = jnp.arange(size) < valid
        if runner.jittable:
            ys = _step(runner, params, X, args, shuffler.key, shuffler.perms, items,
                       shuffler.kind, dtype)
        else:
            x = _make_inputs(X, shuffler.key, shuffler.perms, items, shuffler.kind)[:valid]
            a = tuple(jnp.take(arg, items[0][:valid], axis=0) for arg in args)
            ys = tuple(_pad_rows(runner.to_jax(y), size) for y in runner(x, a))
        sums, sqs = _accumulate(sums, sqs, ys, shifts, groups, mask)
    stats = []
    for s, q, shift in zip(sums, sqs, shifts):
        mean_d = s / n
        var = jnp.maximum(q / n - mean_d * mean_d, 0)
        stats.append((numpy.asarray(shift + mean_d), numpy.asarray(jnp.sqrt(var))))
    return stats


def _pad_rows(y, size):
    return jnp.concatenate([y, jnp.repeat(y[:1], size - y.shape[0], axis=0)]) if y.shape[0] < size else y
