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

from jablate._core.behaviour import carries, key_first
from jablate.functional.dinucleotide import (
    _random_word,
    dinucleotide_counts,
    dinucleotide_shuffle,
    symbols,
)

IntLike = Union[int, jax.Array]

__all__ = ["shuffle", "region_permutation", "permute_region", "dinucleotide_shuffle",
           "dinucleotide_counts", "symbols"]


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
    included); the flanks are untouched. The region's columns are permuted by a sort
    of 62-bit random keys, one per position: every permutation of the region is
    equally likely (two keys tie with probability about ``W**2 / 2**63`` for a
    region of ``W`` positions, 5e-13 for 2,114; a tie keeps the two positions in
    order), so every
    distinct arrangement of the region has the probability a uniform random
    permutation gives it. There is no loop over positions: one sort and one gather,
    which an accelerator runs in parallel. The keys come from a counter hash of the
    absolute position seeded by four ``jax.random`` words of ``key`` (see
    :func:`jablate.functional.dinucleotide._random_word`), so the result is a pure function of
    ``key`` and the same on every backend.

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
        lie inside the window). The random keys are indexed by absolute positions,
        so a window gives exactly the shuffle of the whole sequence. Default 0.
    length: int or None, optional
        The whole sequence's length when ``x`` is a window. Accepted for the
        signature the key-first shuffles share; the result does not depend on it.

    Returns
    -------
    y: jax.Array, shape=(A, L), dtype of ``x``
        ``y[:, p] = x[:, q]`` for a uniformly random permutation ``p -> q`` of the
        region, ``x`` outside it.

    Notes
    -----
    jablate 0.1.0 drew the region by sequential sampling from its symbol counts, a
    loop over every position; the same keys give other shuffles since 0.2.0.
    """
    del length
    x = jnp.asarray(x)
    L = x.shape[-1]
    return jnp.take(x, region_permutation(key, L, start, end, offset), axis=-1,
                    mode="clip")


def region_permutation(key: jax.Array, L: int, start: IntLike, end: IntLike,
                       offset: IntLike = 0) -> jax.Array:
    """The source column of every column of :func:`shuffle`: a uniformly random
    permutation of ``[start, end)`` (absolute positions; the columns are
    ``offset .. offset + L - 1``), the identity outside it.

    Parameters
    ----------
    key: jax.random key
    L: int
        The number of columns.
    start, end, offset: int or traced int

    Returns
    -------
    src: jax.Array, shape=(L,), int32
        Column indices in ``[0, L)``.
    """
    start, end = jnp.asarray(start, jnp.int32), jnp.asarray(end, jnp.int32)
    column = jnp.arange(L, dtype=jnp.int32)
    pos = column + jnp.asarray(offset, jnp.int32)
    inside = (pos >= start) & (pos < end)
    # Two 32-bit sort keys: the top two bits say the side (the flank before the region,
    # the region, the flank after it); inside the region the other 62 bits are random,
    # in a flank they are the column, so the flanks keep their order. (XLA's CPU sort
    # pays per key compared: two keys cost a fifth less than three.)
    side = jnp.where(pos < start, 0, jnp.where(inside, 1, 2)).astype(jnp.uint32) << 30
    seed = jax.random.bits(key, (4,), jnp.uint32)
    counter = pos.astype(jnp.uint32)
    flank = column.astype(jnp.uint32)
    high = side | jnp.where(inside, _random_word(counter, seed[:2]) >> 2, 0)
    low = jnp.where(inside, _random_word(counter, seed[2:]), flank)
    return lax.sort((high, low, column), dimension=0, is_stable=True, num_keys=2)[-1]
