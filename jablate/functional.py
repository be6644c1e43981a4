"""Key-first, single-sequence shuffles, traceable in ``start`` and ``end``.

Every function takes one sequence ``x`` of shape ``(A, L)`` and returns an array of
the same shape and dtype with positions ``[start, end)`` rearranged. ``start``
and ``end`` (``0 <= start < end <= L``) may be traced integers, so one compiled
program serves regions of any position and width; compose them with
``jax.vmap`` for batches and ``jax.jit`` for speed.
"""

from typing import Union

import jax
import jax.numpy as jnp
from jax import lax

from .behaviour import carries, key_first
from .dinucleotide import (
    _batch_minor,
    _below,
    _random_word,
    dinucleotide_counts,
    dinucleotide_shuffle,
    symbols,
)

IntLike = Union[int, jax.Array]

__all__ = ["shuffle", "permute_region", "dinucleotide_shuffle", "dinucleotide_counts", "symbols"]


def permute_region(x: jax.Array, perm: jax.Array, start: IntLike, end: IntLike) -> jax.Array:
    """Apply a region-relative permutation, as tangermeme's ``shuffle`` does.

    Parameters
    ----------
    x: jax.Array, shape=(A, L)
    perm: jax.Array, shape=(W,), int
        A permutation of ``range(end - start)`` padded to any ``W >= end - start``.
    start, end: int or traced int

    Returns
    -------
    y: jax.Array, shape=(A, L)
        ``y[:, start + k] = x[:, start + perm[k]]`` inside the region, ``x`` outside.
    """
    length = x.shape[-1]
    pos = jnp.arange(length, dtype=jnp.int32)
    inside = (pos >= start) & (pos < end)
    rel = jnp.clip(pos - start, 0, perm.shape[0] - 1)
    src = jnp.where(inside, start + perm[rel].astype(jnp.int32), pos)
    return jnp.take(x, src, axis=-1)


@carries(key_first(min_width=1))
def shuffle(key: jax.Array, x: jax.Array, start: IntLike, end: IntLike, offset: IntLike = 0,
            length: int | None = None) -> jax.Array:
    """Shuffle positions ``[start, end)`` of one sequence uniformly at random.

    Keeps the count of every symbol in the region (unknown, all-zero columns
    included); the flanks are untouched. The region is drawn by sequential
    sampling without replacement from its symbol counts -- a ``lax.scan`` over
    positions with an ``(A + 1,)`` state, no sort -- which gives every distinct
    arrangement of the region the probability a uniform random permutation of
    its positions would. The scan's random words come from a counter hash
    seeded by two ``jax.random`` words of ``key`` (as in
    :func:`dinucleotide_shuffle`), so the result is a pure function of ``key``.

    Parameters
    ----------
    key: jax.random key
        Typed (``jax.random.key``) or raw (``jax.random.PRNGKey``).
    x: jax.Array, shape=(A, L)
        A one-hot sequence, any dtype.
    start, end: int or traced int
        ``0 <= start < end <= L``; start inclusive, end exclusive.
    offset: int or traced int, optional
        The absolute position of ``x``'s first column when ``x`` is a window cut
        from a longer sequence (``start``/``end`` are then absolute too and must
        lie inside the window). The random stream is indexed by absolute
        positions, so a window gives exactly the shuffle of the whole sequence.
        Default 0.
    length: int or None, optional
        The whole sequence's length when ``x`` is a window (chooses the same
        integer width as the whole sequence's shuffle). Default ``L``.

    Returns
    -------
    y: jax.Array, shape=(A, L), dtype of ``x``
    """
    x = jnp.asarray(x)
    A, L = x.shape
    start, end = jnp.asarray(start, jnp.int32), jnp.asarray(end, jnp.int32)
    pos = jnp.arange(L, dtype=jnp.int32) + jnp.asarray(offset, jnp.int32)
    inside = (pos >= start) & (pos < end)
    known = jnp.sum((x != 0) & inside[None, :], axis=1, dtype=jnp.int32)
    counts = jnp.concatenate([known, (end - start - jnp.sum(known))[None]])
    dtype = jnp.int16 if (length or L) <= 2 ** 15 else jnp.int32
    seed = jax.random.bits(key, (2,), jnp.uint32)
    path = _mono_walk(jnp.cumsum(counts).astype(dtype), seed, start, end, pos)
    y = (path[None, :] == jnp.arange(A, dtype=path.dtype)[:, None]).astype(x.dtype)
    return jnp.where(inside[None, :], y, x)


def _mono_steps(cumulative, seed, start, end, positions):
    """Sampling without replacement along the region, with trailing batch axes.

    ``cumulative`` (S, *b): remaining symbols ``<= u``; returns the symbol of
    every position (L, *b), meaningful inside ``[start, end)``.
    """
    S, dtype = cumulative.shape[0], cumulative.dtype
    symbol = jnp.arange(S, dtype=dtype).reshape((S,) + (1,) * (cumulative.ndim - 1))

    def step(C, p):
        active = (p >= start) & (p < end)
        k = _below(_random_word(p.astype(jnp.uint32), seed), C[-1]).astype(dtype)
        nxt = jnp.sum(C <= k[None], axis=0, dtype=dtype)
        C = C - ((symbol >= nxt[None]) & active[None]).astype(dtype)
        return C, nxt.astype(jnp.int8 if S <= 127 else dtype)

    return lax.scan(step, cumulative, positions)[1]


_mono_walk = _batch_minor(_mono_steps, broadcast=(True, False, False, False, False))
