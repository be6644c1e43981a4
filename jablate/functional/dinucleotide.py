"""Uniform dinucleotide shuffles of a region of one sequence, in pure JAX.

A dinucleotide shuffle of positions ``[start, end)`` replaces them with a sequence
drawn uniformly at random from all sequences that start and end with the same
symbols and contain every dinucleotide (pair of adjacent symbols) as often as the
region does (Altschul & Erickson 1985; Kandel et al. 1996; uShuffle, Jiang et al.
2008). Such a sequence is an Eulerian path through the multigraph whose vertices
are the ``S`` symbols (the ``A`` letters and the unknown base) and whose edges are
the dinucleotides of the region, ``E[v, u]`` of them from ``v`` to ``u``.

The sampler follows Kandel et al.:

1. For every symbol ``v`` with out-edges other than the last symbol ``l``, pick
   the edge by which the path leaves ``v`` for the last time, ``T(v)``, so that
   these edges form a spanning arborescence directed into ``l``, with probability
   proportional to ``prod_v E[v, T(v)]``.
2. Walk from the first symbol, leaving the current symbol by one of its unused
   non-last out-edges chosen uniformly, or by ``T(v)`` once they are used up.

By the BEST theorem every valid sequence arises from exactly one tree and one
ordering of each symbol's non-last out-edges; a symbol with out-degree ``d_v``
has ``(d_v - 1)! * E[v, T(v)] / prod_u E[v, u]!`` orderings ending in ``T(v)``,
so the number of sequences with tree ``T`` is ``C * prod_v E[v, T(v)]`` for a
constant ``C``. Drawing the tree with that weight and then each ordering
uniformly (step 2 is sequential sampling without replacement) therefore draws
every valid sequence with the same probability. tangermeme's sampler instead
keeps each symbol's last successor, and misses shuffles.

Step 1 has two exact, loop-free implementations. Up to ``S = 5`` (DNA or RNA
with the unknown base) all ``S ** (S - 2)`` arborescences into a fixed vertex are
listed once; the log-weights of all of them are one small matrix product, and
one is drawn by inverse CDF. Trees using a missing edge have weight exactly
zero. For larger alphabets the tree is drawn vertex by vertex: given the choices
already made, ``P(T(v) = u)`` is proportional to ``E[v, u] * h(u)``, with ``h(u)``
the probability that a random walk from ``u`` reaches ``l`` before ``v`` (the
matrix-forest theorem for spanning forests rooted at ``{l, v}``). ``h`` comes from
an elimination that only adds, multiplies and divides non-negative numbers, so a
choice that would close a cycle has probability exactly zero; O(S^4) in all.

The dinucleotide counts come from each adjacent pair's code, parallel over the positions
(a scatter-add on the CPU, a sum of one-hot codes elsewhere). Step 2 is one
``lax.while_loop`` over the positions of the region (of the widest region of a batch), not
of the whole sequence, so ``start`` and
``end`` may be traced and one compiled program serves every region, and a short
region costs a short loop however long the sequence. Its random words come from a
counter-based integer hash of the absolute position, seeded by 64 bits drawn from
the key with ``jax.random`` (see ``_random_word``), and are turned into uniform
integers with 32 bits of precision. Under ``jax.vmap`` the walk runs with the batch
axis last (see ``_batch_minor``).
"""

import itertools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jablate._core.behaviour import carries, key_first
from jablate._core.caches import memoize
from jablate._core.errors import InputError

__all__ = ["dinucleotide_shuffle", "dinucleotide_counts", "symbols"]


def symbols(x: jax.Array) -> jax.Array:
    """The symbol index of each position of a one-hot sequence.

    Parameters
    ----------
    x: array, shape=(A, L)
        A one-hot sequence over an alphabet of ``A`` symbols, any dtype. An
        all-zero column is an unknown base.

    Returns
    -------
    s: jax.Array, shape=(L,), int32
        ``argmax(x[:, i])`` for a known base, ``A`` for an all-zero column.
    """
    x = jnp.asarray(x)
    # argmax written out over the short alphabet axis: elementwise along the
    # sequence, much faster on the CPU than a reduction over a major axis.
    best, best_value, known = jnp.zeros(x.shape[1], jnp.int32), x[0], x[0] != 0
    for a in range(1, x.shape[0]):
        greater = x[a] > best_value
        best = jnp.where(greater, a, best)
        best_value = jnp.where(greater, x[a], best_value)
        known = known | (x[a] != 0)
    return jnp.where(known, best, x.shape[0]).astype(jnp.int32)


@carries(key_first(min_width=3))
def dinucleotide_shuffle(key: jax.Array, x: jax.Array, start: "int | jax.Array",
                         end: "int | jax.Array", offset: "int | jax.Array" = 0,
                         length: "int | None" = None) -> jax.Array:
    """Dinucleotide shuffle positions ``[start, end)`` of one one-hot sequence.

    The region is replaced by a sequence drawn uniformly at random from all
    sequences with its first symbol, its last symbol and its count of every
    dinucleotide (see the module docstring for the algorithm). Positions outside
    the region are returned unchanged. Compose with ``jax.vmap`` for batches of
    keys, sequences or regions; ``start`` and ``end`` may be traced, so one
    compiled program serves every region of a given sequence shape.

    Parameters
    ----------
    key: jax.random key
        A typed (``jax.random.key``) or raw (``jax.random.PRNGKey``) key.
    x: array, shape=(A, L)
        A one-hot sequence over an alphabet of ``A`` symbols, any float or int
        dtype. An all-zero column, an unknown base, is shuffled as a symbol of
        its own and stays all-zero.
    start: int or traced int scalar
        First position of the region, inclusive.
    end: int or traced int scalar
        End of the region, exclusive: ``0 <= start < end <= L``, already
        normalised (a negative ``end`` is not interpreted). A region shorter
        than three positions has a single dinucleotide shuffle, itself.
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
        ``x`` with the region dinucleotide shuffled.

    Notes
    -----
    The walk uses integer arithmetic only; the last-exit tree is drawn by inverse CDF from
    float32 weights (a logarithm, an exponential and a cumulative sum). Another backend (a
    GPU's transcendental functions) may round those weights by an ulp, so a draw that falls
    within rounding of the boundary between two trees can pick the other one there: at most
    about one region in 10^5 (125 trees, a few ulps each), and never on the same backend.
    """
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise InputError(f"x must be one sequence of shape (A, L); got shape {x.shape}.")
    A, L = x.shape
    S = A + 1
    start, end = jnp.asarray(start, jnp.int32), jnp.asarray(end, jnp.int32)
    key_tree, key_walk = jax.random.split(key)

    offset = jnp.asarray(offset, jnp.int32)
    s = symbols(x)
    counts = _edge_counts(s, start - offset, end - offset, S)
    first, last = s[start - offset], s[end - 1 - offset]
    tree = _last_exit_tree(key_tree, counts.astype(jnp.float32), last)

    # Counts fit int16 for sequences up to 32,768 long, which halves the work of
    # the walk.
    dtype = jnp.int16 if (length or L) <= 2 ** 15 else jnp.int32
    idx = jnp.arange(S, dtype=jnp.int32)
    reserved = ((idx[None, :] == tree[:, None]) & (idx != last)[:, None]
                & (counts.sum(axis=1) > 0)[:, None])
    cumulative = jnp.cumsum(counts - reserved.astype(jnp.int32), axis=1).astype(dtype)
    seed = jax.random.bits(key_walk, (2,), jnp.uint32)
    pos = jnp.arange(L, dtype=jnp.int32) + offset
    path = _walk(cumulative, tree.astype(dtype), first.astype(dtype), seed, start, end, pos)

    return _write_region(x, path, pos, start, end)


def _write_region(x, path, pos, start, end):
    """``x`` (A, L) with the columns at absolute positions ``pos`` inside ``[start, end)``
    replaced by the one-hot encoding of the symbols ``path`` (L,) (``A``: unknown, an
    all-zero column)."""
    y = (path[None, :] == jnp.arange(x.shape[0], dtype=path.dtype)[:, None]).astype(x.dtype)
    return jnp.where(((pos >= start) & (pos < end))[None, :], y, x)


def dinucleotide_counts(x: jax.Array, start: "int | jax.Array",
                        end: "int | jax.Array") -> tuple[jax.Array, jax.Array]:
    """The dinucleotide counts of positions ``[start, end)`` and the region's last symbol.

    Parameters
    ----------
    x: array, shape=(A, L)
        A one-hot sequence; an all-zero column is symbol ``A``.
    start, end: int or traced int
        ``0 <= start < end <= L``.

    Returns
    -------
    E: jax.Array, shape=(A + 1, A + 1), int32
        ``E[u, v]``: how often ``v`` follows ``u`` inside the region.
    last: jax.Array, int32
        The symbol at ``end - 1``.
    """
    x = jnp.asarray(x)
    s = symbols(x)
    start, end = jnp.asarray(start, jnp.int32), jnp.asarray(end, jnp.int32)
    return _edge_counts(s, start, end, x.shape[0] + 1), s[end - 1]


# ---------------------------------------------------------------------------
# Batched loops with the batch axis last.


def _batch_minor(fn, broadcast):
    """``fn``, written for arrays with trailing batch axes, wrapped so that under
    ``jax.vmap`` it receives the batch axis last (vmap's default puts it first).

    With the batch axis last, a scan's per-step state spans whole vector
    registers and its short symbol axes become sums over a few rows, which
    XLA's CPU backend runs several times faster than gathers. ``broadcast[i]``
    says whether an unbatched argument ``i`` must be broadcast to the batch size
    (scan state and scanned inputs); the others get a trailing axis of size one.
    ``fn`` returns one array whose last axis is the batch axis.
    """
    wrapped = jax.custom_batching.custom_vmap(fn)

    @wrapped.def_vmap
    def rule(axis_size, in_batched, *args):
        def last(a, batched, full):
            if batched:
                return jnp.moveaxis(a, 0, -1)
            a = a[..., None]
            return jnp.broadcast_to(a, a.shape[:-1] + (axis_size,)) if full else a
        out = fn(*(last(*a) for a in zip(args, in_batched, broadcast)))
        return jnp.moveaxis(out, -1, 0), True

    return wrapped


# ---------------------------------------------------------------------------
# Dinucleotide counts.


def _edge_counts(s, start, end, S):
    """Dinucleotide counts ``E`` (S, S) int32 of ``s[start:end]``: ``E[u, v] =
    sum_p [s[p - 1] = u] [s[p] = v]``, counted from each pair's code ``S * s[p - 1] +
    s[p]``, parallel over the positions (no loop): on the CPU by
    :func:`_pair_counts_scattered` (20x faster there), elsewhere by
    :func:`_pair_counts_summed`. Both count exactly: every backend gets the same counts."""
    p = jnp.arange(1, s.shape[0], dtype=jnp.int32)
    inside = (p > start) & (p < end)
    code = s[:-1] * S + s[1:]                                              # (L - 1,)
    return lax.platform_dependent(code, inside, cpu=partial(_pair_counts_scattered, bins=S * S),
                                  default=partial(_pair_counts_summed, bins=S * S)
                                  ).reshape(S, S)


def _pair_counts_scattered(code, inside, bins):
    """How often each code in ``[0, bins)`` occurs where ``inside``: a scatter-add."""
    return jnp.zeros(bins, jnp.int32).at[code].add(inside.astype(jnp.int32))


def _pair_counts_summed(code, inside, bins):
    """The same, as the codes' one-hot encoding summed over the positions: a plain
    reduction, without the atomic additions into a few bins a scatter costs a GPU."""
    return jnp.sum((code[None, :] == jnp.arange(bins, dtype=code.dtype)[:, None])
                   & inside[None, :], axis=1, dtype=jnp.int32)


# ---------------------------------------------------------------------------
# The last-exit tree.


def _tree_graph(E, root):
    """The weighted graph the last-exit tree is drawn from, ``(S, S)``: the
    dinucleotide counts without self-loops; the root has no out-edge and a
    symbol absent from the region a single edge of weight 1 to the root."""
    S = E.shape[0]
    idx = jnp.arange(S)
    is_root = idx == root
    present = E.sum(axis=1) > 0
    W = jnp.where(jnp.eye(S, dtype=bool), 0.0, E)
    return jnp.where(is_root[:, None], 0.0,
                     jnp.where(present[:, None], W, is_root[None, :].astype(E.dtype)))


@memoize("dinucleotide.arborescences")
def _arborescences(S):
    """Every spanning arborescence of the complete graph on ``S`` vertices
    directed into vertex ``S - 1``: ``trees`` (n, S) int32, ``trees[t, v]`` the
    parent of ``v`` (``S - 1`` for the root itself), and ``edges`` (n, S * S)
    float32, the indicator of the edges each tree uses. ``n = S ** (S - 2)``
    (Cayley's formula)."""
    root = S - 1
    trees = []
    for parents in itertools.product(*[[u for u in range(S) if u != v] for v in range(root)]):
        parent = list(parents) + [root]

        def reaches_root(v, parent=parent):
            for _ in range(S):
                v = parent[v]
            return v == root

        if all(reaches_root(v) for v in range(root)):
            trees.append(parent)
    trees = np.asarray(trees, dtype=np.int32).reshape(-1, S)
    edges = np.zeros((len(trees), S, S), dtype=np.float32)
    for t, parent in enumerate(trees):
        edges[t, np.arange(root), parent[:root]] = 1.0
    return trees, edges.reshape(len(trees), S * S)


def _tree_by_enumeration(key, E, root):
    """Last-exit tree drawn from the list of every arborescence of the complete
    graph, with log-weight ``sum_v log G[v, T(v)]`` (one small matrix product),
    by inverse CDF. The symbols are relabelled so that the root is the last
    one, swapping ``root`` and ``S - 1``. A tree using an edge that is not in
    the graph has log-weight below -1e29, weight exactly zero, and is never
    drawn."""
    S = E.shape[0]
    trees, edges = _arborescences(S)
    n = trees.shape[0]
    idx = jnp.arange(S, dtype=jnp.int32)
    swap = jnp.where(idx == root, S - 1, jnp.where(idx == S - 1, root, idx))
    G = _tree_graph(E, root)
    log_weight = jnp.where(G > 0, jnp.log(jnp.where(G > 0, G, 1.0)), -1e30)
    log_weight = log_weight[swap][:, swap].reshape(S * S)
    logits = jnp.dot(jnp.asarray(edges), log_weight, precision=lax.Precision.HIGHEST)
    # A tree of weight zero adds nothing to the cumulative sum, so it is never
    # the first entry above the draw.
    weight = jnp.exp(logits - jnp.max(logits))
    cdf = jnp.cumsum(weight)
    draw = jax.random.uniform(key, (), cdf.dtype) * cdf[-1]
    t = jnp.sum(cdf <= draw, dtype=jnp.int32)
    # Rounding can put the draw on the total; take the last tree of weight > 0.
    t = jnp.where(t < n, t, jnp.max(jnp.where(weight > 0, jnp.arange(n, dtype=jnp.int32), 0)))
    return swap[jnp.asarray(trees)[t][swap]]


def _hit_probabilities(G, root, v):
    """For every vertex u, the probability that a random walk on ``G`` from ``u``
    reaches ``root`` before ``v``; both absorb the walk.

    ``G`` is ``(S, S)``, non-negative, zero diagonal; ``root`` and ``v`` may be
    traced. Computed by eliminating the other vertices one by one (a Kron
    reduction) and substituting back, with additions, multiplications and
    divisions of non-negative numbers only (as in the Grassmann-Taksar-Heyman
    algorithm), so a probability is zero exactly when ``u`` cannot reach
    ``root`` without passing through ``v``, and accurate to rounding otherwise.
    Returns ``(S,)``.
    """
    S = G.shape[0]
    idx = jnp.arange(S)
    offdiag = ~jnp.eye(S, dtype=bool)
    H = jnp.where(((idx == root) | (idx == v))[:, None], 0.0, G)

    def eliminate(k, carry):
        H, exits = carry
        interior = (k != root) & (k != v)
        row = H[k]
        total = row.sum()
        p = jnp.where(interior & (total > 0), row / jnp.where(total > 0, total, 1.0), 0.0)
        keep = idx != k
        reduced = jnp.where(offdiag & keep[None, :] & keep[:, None],
                            H + H[:, k, None] * p[None, :], 0.0)
        return jnp.where(interior, reduced, H), exits.at[k].set(p)

    _, exits = lax.fori_loop(0, S, eliminate, (H, jnp.zeros_like(G)))

    def substitute(i, h):
        k = S - 1 - i
        return jnp.where((idx == k) & (k != root) & (k != v), jnp.dot(exits[k], h), h)

    return lax.fori_loop(0, S, substitute, (idx == root).astype(G.dtype))


def _tree_by_elimination(key, E, root):
    """Last-exit tree, one vertex at a time: ``P(T(v) = u)`` is proportional to
    ``G[v, u]`` times the probability that a walk from ``u`` reaches the root
    before ``v``, given the choices made so far. O(S^4); any alphabet."""
    S = E.shape[0]
    idx = jnp.arange(S)
    gumbel = jax.random.gumbel(key, (S, S), E.dtype)

    def choose(v, carry):
        G, T = carry
        weight = G[v] * _hit_probabilities(G, root, v)
        logits = jnp.where(weight > 0, jnp.log(jnp.where(weight > 0, weight, 1.0)), -jnp.inf)
        u = jnp.where(v == root, root, jnp.argmax(logits + gumbel[v]).astype(jnp.int32))
        G = G.at[v].set(jnp.where(v == root, G[v], (idx == u).astype(G.dtype)))
        return G, T.at[v].set(u)

    T = jnp.full((S,), root, dtype=jnp.int32)
    return lax.fori_loop(0, S, choose, (_tree_graph(E, root), T))[1]


# Listing the trees is cheaper than eliminating up to S = 5 (125 trees), which
# covers DNA and RNA with their unknown base.
_ENUMERATE_MAX_SYMBOLS = 5


def _last_exit_tree(key, E, root):
    """Sample the last-exit edge of every symbol: an arborescence into ``root``
    with probability proportional to ``prod_v E[v, T(v)]``.

    Parameters
    ----------
    key: jax.random key
    E: jax.Array, shape=(S, S), float32
        Dinucleotide counts of the region.
    root: int32 scalar
        The last symbol of the region.

    Returns
    -------
    T: jax.Array, shape=(S,), int32
        ``T[v]`` for every symbol with out-edges other than ``root``; ``root``
        for ``root`` itself and for symbols absent from the region.
    """
    if E.shape[0] <= _ENUMERATE_MAX_SYMBOLS:
        return _tree_by_enumeration(key, E, root)
    return _tree_by_elimination(key, E, root)


# ---------------------------------------------------------------------------
# The walk.


def _random_word(counter, seed):
    """A 32-bit random word for each ``counter`` (uint32), from a 64-bit ``seed``
    (two uint32 drawn with ``jax.random``): two rounds of the ``triple32``
    integer hash (a bijection of uint32 with near-ideal avalanche, from
    C. Wellons' hash prospector), each keyed by one seed word.

    Generated inside the walk it costs a few operations per position; a
    pre-drawn array of Threefry words costs a pass over memory and about as
    much time as the rest of the shuffle.
    """
    x = counter
    for s in seed:
        x = x ^ s
        x = x ^ (x >> 17)
        x = x * jnp.uint32(0xED5AD4BB)
        x = x ^ (x >> 11)
        x = x * jnp.uint32(0xAC4C1B51)
        x = x ^ (x >> 15)
        x = x * jnp.uint32(0x31848BAB)
        x = x ^ (x >> 14)
    return x


def _unshift(x, k):
    """The inverse of ``x ^ (x >> k)`` on uint32."""
    y = x
    for _ in range(32 // k):
        y = x ^ (y >> k)
    return y


def _random_word_inverse(word, seed):
    """The counter :func:`_random_word` maps to ``word`` for this ``seed``: every step of
    the hash is a bijection of uint32 (xor with a seed word, xor with a right shift,
    multiplication by an odd constant), undone in reverse order."""
    x = word
    for s in reversed(tuple(seed)):
        x = _unshift(x, 14)
        x = x * jnp.uint32(0x32B21703)  # the inverse of 0x31848BAB modulo 2**32
        x = _unshift(x, 15)
        x = x * jnp.uint32(0x469E0DB1)  # of 0xAC4C1B51
        x = _unshift(x, 11)
        x = x * jnp.uint32(0x79A85073)  # of 0xED5AD4BB
        x = _unshift(x, 17)
        x = x ^ s
    return x


def _below(bits, n):
    """``floor(bits * n / 2**32)``: an integer in ``[0, n)`` from 32 random bits
    (``n < 2**31``), within ``n / 2**32`` of uniform, with 32-bit arithmetic."""
    a_hi, a_lo = bits >> 16, bits & 0xFFFF
    n = n.astype(jnp.int32).astype(jnp.uint32)
    b_hi, b_lo = n >> 16, n & 0xFFFF
    m1 = a_hi * b_lo + ((a_lo * b_lo) >> 16)
    m2 = a_lo * b_hi + (m1 & 0xFFFF)
    return (a_hi * b_hi + (m1 >> 16) + (m2 >> 16)).astype(jnp.int32)


def _walk_steps(cumulative, tree, first, seed, start, end, positions):
    """The Eulerian walk, on arrays with any number of trailing batch axes ``b``.

    One ``lax.while_loop`` step per position of the widest region (not per position
    of the sequence): step ``i`` draws the symbol at position ``start + i``, with
    the random word of that absolute position.

    Parameters
    ----------
    cumulative: shape=(S, S, *b), int16 or int32
        ``cumulative[v, u]``: the unused non-last out-edges of ``v`` into
        symbols ``<= u``.
    tree: shape=(S, *b), same dtype
        The last exit of every symbol.
    first: shape=(*b), same dtype
        The first symbol of the region.
    seed: shape=(2, *b), uint32
        The seed of the random words of the walk.
    start, end: shape=(*b), int32
        The region, in absolute positions.
    positions: shape=(L, ...), int32
        The absolute position of every column.

    Returns
    -------
    path: shape=(L, *b), int8 (the dtype of ``tree`` beyond 127 symbols)
        The symbol at every position inside the region (anything outside it).
    """
    S = cumulative.shape[0]
    dtype = cumulative.dtype
    symbol = jnp.arange(S, dtype=dtype).reshape((S,) + (1,) * (cumulative.ndim - 2))
    path_dtype = jnp.int8 if S <= 127 else dtype
    L = positions.shape[0]
    width = end - start
    path = jnp.zeros((L,) + first.shape, path_dtype).at[0].set(first.astype(path_dtype))

    def step(carry):
        i, c, C, path = carry
        active = i < width
        here = symbol == c[None]                                              # (S, *b)
        cum = jnp.sum(here[:, None].astype(dtype) * C, axis=0, dtype=dtype)  # row c
        total = cum[-1]
        has = total > 0
        p = (start + i).astype(jnp.uint32)
        k = _below(_random_word(p, seed), total).astype(dtype)
        nxt = jnp.sum(cum <= k[None], axis=0, dtype=dtype)
        nxt = jnp.where(has, nxt, jnp.sum(jnp.where(here, tree, 0), axis=0, dtype=dtype))
        used = here[:, None] & (symbol >= nxt[None])[None] & (has & active)[None, None]
        C = C - used.astype(dtype)
        c = jnp.where(active, nxt, c)
        path = lax.dynamic_update_index_in_dim(path, c.astype(path_dtype), i, 0)
        return i + 1, c, C, path

    steps = jnp.minimum(jnp.max(width), L)
    path = lax.while_loop(lambda carry: carry[0] < steps, step,
                          (jnp.int32(1), first, cumulative, path))[-1]
    positions = positions.reshape(positions.shape + (1,) * (path.ndim - positions.ndim))
    column = jnp.broadcast_to(jnp.clip(positions - start[None], 0, L - 1), path.shape)
    return jnp.take_along_axis(path, column, axis=0)


#: Which unbatched arguments of :func:`_walk_steps` are broadcast to the batch size.
_WALK_BROADCAST = (True, False, True, False, False, False, False)
_walk = _batch_minor(_walk_steps, broadcast=_WALK_BROADCAST)
