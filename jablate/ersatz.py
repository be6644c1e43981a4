"""Batch shuffles with tangermeme's signatures, built on :mod:`jablate.functional`."""

import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy

from . import engine, functional
from . import random as jrandom
from .frontdoor import check_int, inputs, region, to_family


@dataclass(frozen=True)
class ShuffleMethod:
    """One of jablate's own shuffles, as the engine sees it.

    Attributes
    ----------
    name: str
        For messages.
    key_fn: callable
        The key-first single-sequence shuffle ``key_fn(key, x, start, end)`` of
        :mod:`jablate.functional`.
    min_width: int
        The shortest region it accepts.
    tangermeme_permutations: bool
        Whether an int or RandomState ``random_state`` draws tangermeme's exact
        permutations (True for the mono shuffle) rather than seeding a key.
    count_arrangements: callable
        ``count_arrangements(X, seq_idx, starts, ends) -> (G,) float`` — the
        number of distinct sequences the shuffle can give each region
        (1 means it cannot change the region).
    """

    name: str
    key_fn: Callable
    min_width: int
    tangermeme_permutations: bool
    count_arrangements: Callable


def _log_factorials(n):
    return numpy.concatenate([[0.0], numpy.cumsum(numpy.log(numpy.arange(1, n + 1)))])


@partial(jax.jit, static_argnames=("width",))
def _symbol_counts_in(X, seq_idx, starts, ends, width):
    """Symbol counts of regions no wider than ``width``, read from a window of ``width``
    positions around each (not the whole sequence)."""
    def one(j, s, e):
        offset = jnp.clip(s, 0, X.shape[2] - width)
        sym = functional.symbols(jax.lax.dynamic_slice_in_dim(X[j], offset, width, 1))
        pos = offset + jnp.arange(width)
        inside = (pos >= s) & (pos < e)
        return jnp.sum((sym[None, :] == jnp.arange(X.shape[1] + 1)[:, None]) & inside, axis=1)
    return jax.vmap(one)(seq_idx, starts, ends)


def _symbol_counts(X, seq_idx, starts, ends):
    widest = int(numpy.max(numpy.asarray(ends) - numpy.asarray(starts)))
    width = min(X.shape[2], 1 << max(0, widest - 1).bit_length())  # few shapes
    return _symbol_counts_in(X, seq_idx, starts, ends, width=width)


@jax.jit
def _dinucleotide_counts(X, seq_idx, starts, ends):
    return jax.vmap(lambda j, s, e: functional.dinucleotide_counts(X[j], s, e))(
        seq_idx, starts, ends)


def _chunked(fn, X, seq_idx, starts, ends, budget=64 * 2**20):
    """``fn`` over groups in chunks of one shape, on the host.

    A chunk is a power of two of at most 512 groups, and small enough that its
    gathered sequences (and the per-position work on them) stay near ``budget`` bytes.
    """
    G = len(seq_idx)
    per_group = 16 * (X.shape[1] + 1) * X.shape[2]
    chunk = 1 << max(0, min(9, (G - 1).bit_length(), (budget // per_group).bit_length() - 1))
    outs = []
    for lo in range(0, G, chunk):
        take = numpy.minimum(numpy.arange(lo, lo + chunk), G - 1)
        out = fn(X, *(jnp.asarray(numpy.asarray(a)[take], jnp.int32)
                      for a in (seq_idx, starts, ends)))
        valid = min(chunk, G - lo)
        outs.append(jax.tree.map(lambda a, valid=valid: numpy.asarray(a)[:valid], out))
    return jax.tree.map(lambda *a: numpy.concatenate(a), *outs)


def count_mono_arrangements(X: jax.Array, seq_idx: Any, starts: Any, ends: Any) -> numpy.ndarray:
    """Distinct arrangements of each region's symbols (unknown bases a symbol of their own):
    ``W! / prod_a c_a!``, in float64 (``inf`` when it overflows)."""
    counts = _chunked(_symbol_counts, X, seq_idx, starts, ends).astype(numpy.int64)
    lf = _log_factorials(int(counts.sum(1).max()))
    log = lf[counts.sum(1)] - lf[counts].sum(1)
    with numpy.errstate(over="ignore"):
        return numpy.round(numpy.exp(log))


def count_dinucleotide_arrangements(X: jax.Array, seq_idx: Any, starts: Any,
                                    ends: Any) -> numpy.ndarray:
    """Distinct sequences with each region's first and last symbols and dinucleotide
    counts, in float64 (``inf`` when it overflows).

    By the BEST theorem for Eulerian trails ending at the last symbol ``t``:
    ``tau_t * prod_{v != t, r_v > 0} (r_v - 1)! * r_t! / prod_{u,v} E[u, v]!``, with
    ``r_v`` the out-degree of symbol ``v`` and ``tau_t`` the number of
    arborescences into ``t`` (the matrix-tree theorem on the edge counts).
    """
    E, last = _chunked(_dinucleotide_counts, X, seq_idx, starts, ends)
    E = E.astype(numpy.int64)
    G, S, _ = E.shape
    lf = _log_factorials(int(E.sum((1, 2)).max()) + 1)
    r = E.sum(2)
    is_root = numpy.arange(S)[None, :] == last[:, None]
    W = numpy.where(numpy.eye(S, dtype=bool)[None], 0, E).astype(numpy.float64)
    W = numpy.where((r[:, :, None] == 0) & ~is_root[:, :, None], is_root[:, None, :], W)
    lap = numpy.eye(S)[None] * W.sum(2)[:, :, None] - W
    lap = numpy.where(is_root[:, :, None] | is_root[:, None, :], numpy.eye(S)[None], lap)
    tau = numpy.linalg.det(lap)
    exits = numpy.where(is_root, r, numpy.maximum(r - 1, 0))
    log = numpy.log(numpy.maximum(tau, 1e-300)) + lf[exits].sum(1) - lf[E].sum((1, 2))
    with numpy.errstate(over="ignore"):
        return numpy.where(tau < 0.5, 0.0, numpy.round(numpy.exp(log)))


MONO = ShuffleMethod("shuffle", functional.shuffle, 1, True, count_mono_arrangements)
DINUCLEOTIDE = ShuffleMethod("dinucleotide_shuffle", functional.dinucleotide_shuffle, 3,
                             False, count_dinucleotide_arrangements)


class UnchangedRegionWarning(UserWarning):
    """Some regions have a single arrangement under the shuffle: ablating them measures nothing."""


def warn_unchangeable(method: ShuffleMethod, X: jax.Array, seq_idx: Any, starts: Any, ends: Any,
                      stacklevel: int = 3) -> int:
    """Warn when the shuffle cannot change some regions; return how many.

    A homopolymer under the mono shuffle, or a region whose dinucleotide counts
    allow only one sequence (``AAAA``, ``ACAC``) under the dinucleotide shuffle,
    comes back unchanged: its ``y_after`` equals ``y_before``.
    """
    count = method.count_arrangements(X, seq_idx, starts, ends)
    stuck = int(numpy.sum(count <= 1))
    if stuck:
        warnings.warn(
            f"{stuck} of {len(count)} regions cannot be changed by {method.name}: each has a "
            "single arrangement (e.g. a homopolymer, or a short tandem repeat under the "
            "dinucleotide shuffle), so every shuffle of it equals the original and ablating "
            "it measures nothing.", UnchangedRegionWarning, stacklevel=stacklevel)
    return stuck


def plan_shuffles(method: ShuffleMethod, random_state: Any, seq_idx: Any, starts: Any, ends: Any,
                  n: int, per_annotation: bool = False) -> tuple:
    """Plan ``n`` shuffles for each of ``G`` groups (a sequence, or an annotation).

    Item ``g * n + i`` is shuffle ``i`` of group ``g``: sequence ``seq_idx[g]``,
    region ``[starts[g], ends[g])``.

    With ``method.tangermeme_permutations`` an int or RandomState draws
    tangermeme's permutations (for annotations, an int re-seeds per annotation,
    a RandomState is shared, as tangermeme's loop does). Otherwise the stream is
    a JAX key: shuffle ``i`` of sequence ``j`` from ``fold_in(fold_in(key, j),
    i)``; for annotations ``j = 0`` as in ``ablate(X[idx:idx+1])``, except that
    None gives every annotation fresh randomness and a RandomState a seed of its own.

    Returns
    -------
    draw: engine.KeyShuffle or engine.PermutationShuffle
    table: jax.Array
        Its keys (K,) or permutations (P, W).
    plan: engine.Plan with G * n items
    """
    seq_idx, starts, ends = (numpy.asarray(a, numpy.int64) for a in (seq_idx, starts, ends))
    G = len(seq_idx)
    g = numpy.repeat(numpy.arange(G), n)
    i = numpy.tile(numpy.arange(n), G)
    item = dict(seq_idx=seq_idx[g], starts=starts[g], ends=ends[g])
    rs = jrandom.tangermeme_stream(random_state) if method.tangermeme_permutations else None
    if rs is not None:
        widths = ends - starts
        if not per_annotation:
            perms = jrandom.tangermeme_permutations(rs, n, int(widths[0]))
            return (engine.PermutationShuffle(), jnp.asarray(perms),
                    engine.Plan.build(draws=i, **item))
        pad = 1 << (int(widths.max()) - 1).bit_length()  # fewer table shapes, fewer compiles
        if isinstance(random_state, numpy.random.RandomState):  # one shared stream, in order
            table = numpy.concatenate([jrandom.tangermeme_permutations(rs, n, int(w), pad)
                                       for w in widths])
            rows = g * n + i
        else:  # an int: every annotation starts from RandomState(seed) again, so one block
            # of n permutations per distinct width serves every annotation of that width
            uniq, block = numpy.unique(widths, return_inverse=True)
            table = numpy.concatenate([jrandom.tangermeme_permutations(
                jrandom.tangermeme_stream(random_state), n, int(w), pad) for w in uniq])
            rows = block[g] * n + i
        table = numpy.pad(table, ((0, (1 << (len(table) - 1).bit_length()) - len(table)), (0, 0)),
                          mode="edge")
        return (engine.PermutationShuffle(), jnp.asarray(table),
                engine.Plan.build(draws=rows, **item))
    zeros = numpy.zeros_like(g)
    if not per_annotation:
        key, ids = jrandom.key_from(random_state), (zeros, g, i)
    elif isinstance(random_state, numpy.random.RandomState):
        key = jnp.stack([jrandom.key_from(random_state) for _ in range(G)])
        ids = (g, zeros, i)
    elif random_state is None:
        key, ids = jrandom.key_from(None), (zeros, g, i)
    else:
        key, ids = jrandom.key_from(random_state), (zeros, zeros, i)
    return (engine.KeyShuffle(method.key_fn), engine.key_table(key),
            engine.Plan.build(draws=numpy.stack(ids, 1), **item))


def _shuffle(method, X, start, end, n, random_state):
    n = check_int(n, "n", minimum=1)
    inp = inputs(X)
    start, end = region(start, end, inp.X.shape[-1], min_width=method.min_width)
    warn_unchangeable(method, inp.X, numpy.arange(inp.X.shape[0]), [start] * inp.X.shape[0],
                      [end] * inp.X.shape[0], stacklevel=4)
    draw, table, _ = plan_shuffles(method, random_state, [0], [start], [end], n)
    Y = to_family(engine.shuffle_all(inp.X, table, start, end, draw, n), inp.family)
    if inp.family == "torch":
        return Y.to(inp.dtype)
    return Y if Y.dtype == inp.dtype else Y.astype(inp.dtype)


def shuffle(X: Any, start: int = 0, end: int = -1, n: int = 1, random_state: Any = None) -> Any:
    """Shuffle a region of each sequence ``n`` times, keeping its symbol counts.

    Parameters
    ----------
    X: jax.Array, numpy.ndarray or torch.Tensor, shape=(N, A, L)
        One-hot sequences; all-zero columns (unknown bases) are allowed and
        are shuffled like any other symbol.
    start: int, optional
        Start of the region, inclusive. Default is 0.
    end: int, optional
        End of the region, exclusive when ``>= 0``; negative counts from the
        end inclusively (``-1`` is the whole sequence). Default is -1.
    n: int, optional
        Shuffles per sequence. Default is 1.
    random_state: JAX key, int, numpy.random.RandomState or None, optional
        An int or RandomState draws exactly tangermeme's permutations (the same
        permutation for every sequence in shuffle ``i``), so results equal
        ``tangermeme.ersatz.shuffle``'s. A JAX key gives every sequence its own
        permutations, shuffle ``i`` of sequence ``j`` drawn from
        ``fold_in(fold_in(key, j), i)``. None uses fresh entropy. Default None.

    Returns
    -------
    Y: array, shape=(N, n, A, L)
        In ``X``'s family and dtype.

    Raises
    ------
    ValueError
        If ``X`` is not one-hot (N, A, L), the region is outside the sequence or
        empty, ``n < 1``, or ``random_state`` is of an unknown kind.
    """
    return _shuffle(MONO, X, start, end, n, random_state)


def dinucleotide_shuffle(X: Any, start: int = 0, end: int = -1, n: int = 20,
                         random_state: Any = None, verbose: bool = False) -> Any:
    """Shuffle a region of each sequence ``n`` times, keeping its dinucleotide counts.

    Each shuffle is drawn uniformly from all sequences with the region's first
    and last symbols and dinucleotide counts (the Altschul-Erickson/uShuffle
    method), unlike tangermeme's sampler which misses some of them. An unknown
    base (all-zero column) is a symbol of its own.

    Parameters
    ----------
    X: jax.Array, numpy.ndarray or torch.Tensor, shape=(N, A, L)
        One-hot sequences.
    start: int, optional
        Start of the region, inclusive. Default is 0.
    end: int, optional
        End of the region, exclusive when ``>= 0``, negative from the end
        inclusively. Default is -1.
    n: int, optional
        Shuffles per sequence. Default is 20.
    random_state: JAX key, int, numpy.random.RandomState or None, optional
        Shuffle ``i`` of sequence ``j`` is drawn from ``fold_in(fold_in(key,
        j), i)``; an int seeds the key, a RandomState gives one seed. Default None.
    verbose: bool, optional
        Accepted for tangermeme compatibility; the shuffles run as one compiled
        program and have no progress bar.

    Returns
    -------
    Y: array, shape=(N, n, A, L), in ``X``'s family and dtype.

    Raises
    ------
    ValueError
        As :func:`shuffle`, and for a region shorter than 3.
    """
    return _shuffle(DINUCLEOTIDE, X, start, end, n, random_state)


#: jablate's own batch shuffles and what the engine runs for each.
METHODS = {shuffle: MONO, dinucleotide_shuffle: DINUCLEOTIDE}
