"""Key-first, single-sequence shuffles, traceable in ``start`` and ``end``.

Every function takes one sequence ``x`` of shape ``(A, L)`` and returns an array of
the same shape and dtype with positions ``[start, end)`` rearranged. ``start``
and ``end`` (``0 <= start < end <= L``) may be traced integers, so one compiled
program serves regions of any position and width; compose them with
``jax.vmap`` for batches and ``jax.jit`` for speed.
"""

import jax
import jax.numpy as jnp
from jax import lax

from .dinucleotide import dinucleotide_shuffle, symbols

__all__ = ["shuffle", "region_permutation", "permute_region", "dinucleotide_shuffle", "symbols"]


def region_permutation(key, length, start, end):
    """A uniformly random permutation of ``[start, end)`` inside ``range(length)``.

    Parameters
    ----------
    key: jax.random key
        Typed or raw key.
    length: int (static)
        The sequence length ``L``.
    start, end: int or traced int
        The region, ``start`` inclusive, ``end`` exclusive.

    Returns
    -------
    idx: jax.Array, shape=(L,), int32
        ``idx[p]`` is the source position of output position ``p``: ``p`` itself
        outside the region, a uniform random permutation of the region inside.
    """
    pos = jnp.arange(length, dtype=jnp.int32)
    inside = (pos >= start) & (pos < end)
    group = jnp.where(inside, start, pos).astype(jnp.int32)
    bits = jax.random.bits(key, (length,), jnp.uint32)
    # Stable two-key sort: flanks keep their order; the region is ordered by the
    # random bits, i.e. a uniform permutation (up to 32-bit ties, kept in order).
    _, _, idx = lax.sort((group, bits, pos), num_keys=2)
    return idx


def permute_region(x, perm, start, end):
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


def shuffle(key, x, start, end):
    """Shuffle positions ``[start, end)`` of one sequence uniformly at random.

    Keeps the count of every symbol in the region (unknown, all-zero columns
    included); the flanks are untouched.

    Parameters
    ----------
    key: jax.random key
        Typed (``jax.random.key``) or raw (``jax.random.PRNGKey``).
    x: jax.Array, shape=(A, L)
        A one-hot sequence, any dtype.
    start, end: int or traced int
        ``0 <= start < end <= L``; start inclusive, end exclusive.

    Returns
    -------
    y: jax.Array, shape=(A, L), dtype of ``x``
    """
    return jnp.take(x, region_permutation(key, x.shape[-1], start, end), axis=-1)
