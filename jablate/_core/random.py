"""Turning ``random_state`` into the streams jablate draws from.

Two kinds of stream exist:

* a JAX key: shuffle ``i`` of sequence ``j`` uses ``fold_in(fold_in(key, j), i)``,
  so a result never depends on batch size, devices or the other sequences;
* a ``numpy.random.RandomState``: tangermeme's stream for ``shuffle``. For each
  of the ``n`` shuffles, ``idxs = numpy.arange(end - start); rs.shuffle(idxs)``,
  the same permutation for every sequence of the batch.
"""

import functools
import numbers
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy

from jablate._core.errors import InputError


def is_key(x: Any) -> bool:
    """True for a typed JAX key or a raw ``PRNGKey`` (uint32 array of shape (2,))."""
    if isinstance(x, jax.Array):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return x.shape == ()
        return x.dtype == jnp.uint32 and x.shape == (2,)
    return False


def as_typed_key(key: jax.Array) -> jax.Array:
    """Return ``key`` as a typed scalar JAX key (raw ``PRNGKey`` data is wrapped)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(key)


def _check(random_state):
    if random_state is None or is_key(random_state):
        return
    if isinstance(random_state, numpy.random.RandomState):
        return
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if not 0 <= int(random_state) < 2**32:
            raise InputError(f"random_state must be between 0 and 2**32 - 1; got {random_state}.")
        return
    raise InputError(
        "random_state must be a JAX key (jax.random.key or jax.random.PRNGKey), an int, "
        f"a numpy.random.RandomState or None; got {type(random_state).__name__}.")


def key_from(random_state: Any) -> jax.Array:
    """A typed JAX key from any accepted ``random_state``.

    A key is used as is; an int seeds ``jax.random.key``; a RandomState gives
    one draw of a 32-bit seed (advancing it); None takes fresh OS entropy.

    Raises
    ------
    ValueError
        If ``random_state`` is of none of those kinds.
    """
    _check(random_state)
    if random_state is None:
        return jax.random.key(int.from_bytes(os.urandom(4), "little"))
    if is_key(random_state):
        return as_typed_key(random_state)
    if isinstance(random_state, numpy.random.RandomState):
        return jax.random.key(int(random_state.randint(0, 2**31 - 1)))
    return jax.random.key(int(random_state))


def tangermeme_stream(random_state: Any) -> Optional[numpy.random.RandomState]:
    """The RandomState tangermeme's ``shuffle`` would use, or None for a key stream.

    An int becomes a fresh ``RandomState(int)``, a RandomState is returned as is
    (and is advanced by the draws), a JAX key or None gives None.
    """
    _check(random_state)
    if isinstance(random_state, numpy.random.RandomState):
        return random_state
    if random_state is None or is_key(random_state):
        return None
    return numpy.random.RandomState(int(random_state))


def tangermeme_permutations(rs: numpy.random.RandomState, n: int, width: int,
                            pad_to: Optional[int] = None) -> numpy.ndarray:
    """Draw tangermeme's ``n`` permutations of ``range(width)`` from ``rs``.

    Returns
    -------
    perms: numpy.ndarray, shape=(n, pad_to or width), int32
        Row ``i`` is the ``i``-th permutation, padded with its identity tail.
    """
    pad_to = width if pad_to is None else pad_to
    perms = numpy.tile(numpy.arange(pad_to, dtype=numpy.int32), (n, 1))
    for i in range(n):
        idxs = numpy.arange(width)
        rs.shuffle(idxs)
        perms[i, :width] = idxs
    return perms


@functools.lru_cache(maxsize=256)
def seeded_permutations(seed: int, n: int, width: int, pad_to: int) -> numpy.ndarray:
    """:func:`tangermeme_permutations` of a fresh ``RandomState(seed)``, cached.

    What an int ``random_state`` gives every annotation of one width (tangermeme's loop
    re-seeds per annotation), so a long run of chunks draws each block once.

    Returns
    -------
    perms: numpy.ndarray, shape=(n, pad_to), int32
        Read-only.
    """
    perms = tangermeme_permutations(numpy.random.RandomState(seed), n, width, pad_to)
    perms.setflags(write=False)
    return perms
