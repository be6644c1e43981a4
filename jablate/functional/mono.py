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
    _random_word_inverse,
    _write_region,
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
    included); the flanks are untouched. The region's positions are put in the order
    of 32-bit keys that are a keyed random bijection of the absolute position (two
    rounds of an invertible integer hash seeded by 64 bits drawn from ``key``; see
    :func:`jablate.functional.dinucleotide._random_word`): keys never tie, so the
    order is a random permutation of the region and every distinct arrangement of its
    symbols has the probability a uniform permutation gives it (checked against brute
    force). There is no loop over positions: one sort of the keys alone, the hash
    inverted to turn sorted keys back into positions, and a gather, all parallel on an
    accelerator. The result is a pure function of ``key`` and the absolute positions,
    with integer arithmetic only: the same on every backend.

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
    start, end = jnp.asarray(start, jnp.int32), jnp.asarray(end, jnp.int32)
    src = region_permutation(key, L, start, end, offset)
    # gather one symbol per position (not A values), then one-hot: the fast form on a CPU
    path = jnp.take(symbols(x), src, mode="clip")
    pos = jnp.arange(L, dtype=jnp.int32) + jnp.asarray(offset, jnp.int32)
    return _write_region(x, path, pos, start, end)


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
    offset = jnp.asarray(offset, jnp.int32)
    column = jnp.arange(L, dtype=jnp.int32)
    pos = column + offset
    inside = (pos >= start) & (pos < end)
    # Each position's key is a keyed bijection of its absolute position (two rounds of a
    # 32-bit integer hash, each step invertible), so no two keys tie. One sort of the keys
    # alone (no payload: the fastest sort XLA has on every backend) puts the region's
    # keys first, in random order, and the flanks' (all 0xFFFFFFFF) after them; inverting
    # the hash turns the sorted keys back into positions. A region key equal to the
    # flanks' decodes to its own position, so the first W entries are always the region.
    seed = jax.random.bits(key, (2,), jnp.uint32)
    flank = jnp.uint32(0xFFFFFFFF)
    keys = jnp.where(inside, _random_word(pos.astype(jnp.uint32), seed), flank)
    order = _random_word_inverse(lax.sort(keys), seed).astype(jnp.int32)  # absolute
    rank = jnp.clip(pos - start, 0, L - 1)
    return jnp.where(inside, jnp.take(order, rank, mode="clip") - offset, column)
