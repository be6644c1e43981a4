"""Batch shuffles with tangermeme's signatures, built on :mod:`jablate.functional`."""

import numpy

from . import engine, random as jrandom, validate
from .arrays import to_family
from .frontdoor import inputs


def plan_shuffles(kind, random_state, seq_idx, starts, ends, n, per_annotation=False):
    """Plan ``n`` shuffles for each of ``G`` groups (a sequence, or an annotation).

    Item ``g * n + i`` is shuffle ``i`` of group ``g``: sequence ``seq_idx[g]``,
    region ``[starts[g], ends[g])``.

    ``kind`` 'mono' with an int or RandomState draws tangermeme's permutations
    (for annotations, an int re-seeds per annotation, a RandomState is shared,
    as tangermeme's loop does). Otherwise the stream is a JAX key: shuffle
    ``i`` of sequence ``j`` from ``fold_in(fold_in(key, j), i)``; for
    annotations ``j = 0`` as in ``ablate(X[idx:idx+1])``, except that None gives
    every annotation fresh randomness and a RandomState a seed of its own.

    Returns
    -------
    shuffler: engine.Shuffler
    plan: engine.Plan with G * n items
    """
    seq_idx, starts, ends = (numpy.asarray(a, numpy.int64) for a in (seq_idx, starts, ends))
    G = len(seq_idx)
    g = numpy.repeat(numpy.arange(G), n)
    i = numpy.tile(numpy.arange(n), G)
    item = dict(seq_idx=seq_idx[g], starts=starts[g], ends=ends[g])
    rs = jrandom.tangermeme_stream(random_state) if kind == "mono" else None
    if rs is not None:
        widths = ends - starts
        if not per_annotation:
            perms = jrandom.tangermeme_permutations(rs, n, int(widths[0]))
            return engine.Shuffler.make("mono-perm", perms=perms), engine.Plan.build(perm_ids=i, **item)
        pad, table, by_width = int(widths.max()), [], {}
        for w in widths:
            if isinstance(random_state, numpy.random.RandomState):
                table.append(jrandom.tangermeme_permutations(rs, n, int(w), pad))
            else:  # an int: every annotation starts from RandomState(seed) again
                if w not in by_width:
                    by_width[w] = jrandom.tangermeme_permutations(
                        jrandom.tangermeme_stream(random_state), n, int(w), pad)
                table.append(by_width[w])
        return (engine.Shuffler.make("mono-perm", perms=numpy.concatenate(table)),
                engine.Plan.build(perm_ids=g * n + i, **item))
    skind = "mono-key" if kind == "mono" else "dinuc"
    zeros = numpy.zeros_like(g)
    if not per_annotation:
        key, ids = jrandom.key_from(random_state), (zeros, g, i)
    elif isinstance(random_state, numpy.random.RandomState):
        import jax.numpy as jnp
        key = jnp.stack([jrandom.key_from(random_state) for _ in range(G)])
        ids = (g, zeros, i)
    elif random_state is None:
        key, ids = jrandom.key_from(None), (zeros, g, i)
    else:
        key, ids = jrandom.key_from(random_state), (zeros, zeros, i)
    return engine.Shuffler.make(skind, key=key), engine.Plan.build(key_ids=numpy.stack(ids, 1), **item)


def _shuffle(kind, X, start, end, n, random_state):
    n = validate.check_int(n, "n", minimum=1)
    inp = inputs(X)
    start, end = validate.region(start, end, inp.X.shape[-1], min_width=3 if kind == "dinuc" else 1)
    shuffler, _ = plan_shuffles(kind, random_state, [0], [start], [end], n)
    Y = to_family(engine.shuffle_all(inp.X, shuffler.key, shuffler.perms, start, end,
                                     shuffler.kind, n), inp.family)
    if inp.family == "torch":
        return Y.to(inp.dtype)
    return Y if Y.dtype == inp.dtype else Y.astype(inp.dtype)


def shuffle(X, start=0, end=-1, n=1, random_state=None):
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
    return _shuffle("mono", X, start, end, n, random_state)


def dinucleotide_shuffle(X, start=0, end=-1, n=20, random_state=None, verbose=False):
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
    return _shuffle("dinuc", X, start, end, n, random_state)
