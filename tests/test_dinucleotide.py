"""Tests for jablate.functional.dinucleotide: exact uniformity against brute-force enumeration,
invariants on longer sequences, traced regions, batching and compile-once."""

import collections
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import chisquare

import jablate
from jablate import functional
from jablate.functional import dinucleotide as dn
from jablate.functional.dinucleotide import dinucleotide_shuffle, symbols

DNA = "ACGT"
N_DRAWS = 20_000


def encode(seq, alphabet=DNA, dtype=np.float32):
    """One-hot (A, L); a character outside the alphabet ('N') is an all-zero column."""
    x = np.zeros((len(alphabet), len(seq)), dtype=dtype)
    for i, ch in enumerate(seq):
        if ch in alphabet:
            x[alphabet.index(ch), i] = 1
    return x


def decode(x, alphabet=DNA):
    x = np.asarray(x)
    return "".join(alphabet[a] if x[a, i] else "N" for i, a in enumerate(x.argmax(0)))


def dinucleotides(seq):
    return collections.Counter(zip(seq, seq[1:]))


def all_shuffles(seq):
    """Every distinct sequence with the first and last character and the dinucleotide
    counts of ``seq``: the Eulerian paths of its dinucleotide multigraph, by DFS."""
    remaining = dinucleotides(seq)
    found = set()

    def extend(path):
        if len(path) == len(seq):
            found.add("".join(path))
            return
        for (a, b), k in list(remaining.items()):
            if a == path[-1] and k > 0:
                remaining[a, b] -= 1
                path.append(b)
                extend(path)
                path.pop()
                remaining[a, b] += 1

    extend([seq[0]])
    return {s for s in found if s[-1] == seq[-1] and dinucleotides(s) == dinucleotides(seq)}


# One compiled sampler per input shape: keys batched, the sequence and the region
# shared, start/end traced.
draw_many = jax.jit(jax.vmap(dinucleotide_shuffle, in_axes=(0, None, None, None)))


def check_uniform(seq, alphabet, flank_left="", flank_right="", seed=0, sampler=None):
    """Draw N_DRAWS shuffles of ``seq`` (placed between the flanks) in one call and
    compare with the brute-force list of valid shuffles."""
    sampler = sampler or draw_many
    full = flank_left + seq + flank_right
    start = len(flank_left)
    end = start + len(seq)
    x = encode(full, alphabet)
    keys = jax.random.split(jax.random.key(seed), N_DRAWS)
    y = np.asarray(sampler(keys, jnp.asarray(x), start, end))
    assert y.shape == (N_DRAWS,) + x.shape

    valid = all_shuffles(seq)
    # The flanks are untouched in every draw.
    np.testing.assert_array_equal(y[:, :, :start],
                                  np.broadcast_to(x[:, :start], y[:, :, :start].shape))
    np.testing.assert_array_equal(y[:, :, end:], np.broadcast_to(x[:, end:], y[:, :, end:].shape))

    counts = collections.Counter(decode(row, alphabet)[start:end] for row in y)
    assert set(counts) <= valid, f"invalid shuffles: {set(counts) - valid}"
    assert set(counts) == valid, f"never drawn: {valid - set(counts)}"
    observed = [counts[s] for s in sorted(valid)]
    p = chisquare(observed).pvalue
    assert p > 1e-3, (len(valid), observed, p)
    return valid


def test_tangermeme_issue_27_sequence_is_uniform():
    # All 27 shuffles appear (tangermeme's sampler misses 9 of them), equally often.
    valid = check_uniform("ACCCACGATGATG", DNA)
    assert len(valid) == 27


def test_raw_prng_key_gives_a_valid_uniform_draw():
    x = jnp.asarray(encode("ACCCACGATGATG"))
    keys = jax.random.split(jax.random.PRNGKey(1), 2000)
    assert keys.dtype == jnp.uint32
    y = np.asarray(draw_many(keys, x, 0, 13))
    valid = all_shuffles("ACCCACGATGATG")
    assert {decode(r) for r in y} == valid


def test_unknown_base_is_a_symbol_of_its_own():
    valid = check_uniform("ANCANNGACNGAC", DNA)
    assert len(valid) > 10
    assert all(s.count("N") == 4 for s in valid)


def test_three_letter_alphabet():
    valid = check_uniform("ABCCABACBBCAB", "ABC")
    assert len(valid) > 10


def test_large_alphabet_uses_elimination_sampler():
    # S = 7 symbols is past the enumeration limit: the tree comes from elimination.
    alphabet = "ABCDEF"
    assert len(alphabet) + 1 > dn._ENUMERATE_MAX_SYMBOLS
    valid = check_uniform("ABCADBECFADBA", alphabet)
    assert len(valid) > 10


def test_elimination_sampler_on_dna(monkeypatch):
    # The elimination sampler, forced on DNA, is uniform too (a fresh function:
    # the switch is read when tracing).
    monkeypatch.setattr(dn, "_ENUMERATE_MAX_SYMBOLS", 0)
    sampler = jax.jit(jax.vmap(dinucleotide_shuffle, in_axes=(0, None, None, None)))
    assert len(check_uniform("ACCCACGATGATG", DNA, seed=3, sampler=sampler)) == 27


def test_sub_window_with_traced_region_is_uniform_and_keeps_flanks():
    check_uniform("ACCCACGATGATG", DNA, flank_left="GTTNA", flank_right="CNAG", seed=5)


def tree_probabilities(E, root):
    """Exact P(T) for every arborescence into ``root`` of the graph of ``E``."""
    E = np.asarray(E, dtype=np.float64)
    S = E.shape[0]
    present = E.sum(1) > 0
    out = {}
    for parents in itertools.product(range(S), repeat=S):
        if parents[root] != root or any(parents[v] == v for v in range(S) if v != root):
            continue
        w = 1.0
        for v in range(S):
            if v == root:
                continue
            w *= E[v, parents[v]] if present[v] else float(parents[v] == root)
        if w == 0:
            continue
        ok = True
        for v in range(S):
            u = v
            for _ in range(S):
                u = parents[u]
            ok &= u == root
        if ok:
            out[parents] = w
    total = sum(out.values())
    return {t: w / total for t, w in out.items()}


@pytest.mark.parametrize("sampler", [dn._tree_by_enumeration, dn._tree_by_elimination])
def test_last_exit_tree_distribution(sampler):
    seq = ["ACGTN".index(c) for c in "ACGNTTGCANACGGTACCTGANTCCAGTNA"]
    E = np.zeros((5, 5), np.float32)
    for (a, b), k in dinucleotides(seq).items():
        E[a, b] += k
    root = seq[-1]
    exact = tree_probabilities(E, root)
    n = 20_000
    keys = jax.random.split(jax.random.key(11), n)
    T = np.asarray(jax.jit(jax.vmap(sampler, in_axes=(0, None, None)))(keys, jnp.asarray(E), root))
    counts = collections.Counter(map(tuple, T))
    assert set(counts) <= set(exact)
    trees = sorted(exact)
    observed = [counts[t] for t in trees]
    expected = [exact[t] * n for t in trees]
    assert chisquare(observed, expected).pvalue > 1e-3


# ---------------------------------------------------------------------------
# Invariants on longer sequences, many regions at once.

L_LONG = 300


def random_batch(rng, n, length, alphabet_size=4, n_rate=0.05, dtype=np.float32):
    s = rng.integers(0, alphabet_size, size=(n, length))
    x = np.eye(alphabet_size, dtype=dtype)[s].transpose(0, 2, 1).copy()
    unknown = rng.random((n, length)) < n_rate
    x[np.broadcast_to(unknown[:, None, :], x.shape)] = 0
    starts = rng.integers(0, length - 3, size=n)
    ends = np.minimum(length, starts + 3 + rng.integers(0, length, size=n))
    return x, starts.astype(np.int32), ends.astype(np.int32)


def as_symbols(x):
    x = np.asarray(x)
    return np.where(x.any(0), x.argmax(0), x.shape[0])


def check_invariants(x, y, start, end):
    x, y = np.asarray(x), np.asarray(y)
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(y[:, :start], x[:, :start])
    np.testing.assert_array_equal(y[:, end:], x[:, end:])
    # One-hot or all-zero columns, of 0s and 1s.
    assert set(np.unique(y.astype(np.float32))) <= {0.0, 1.0}
    assert (y.astype(np.float32).sum(0) <= 1).all()
    sx, sy = as_symbols(x)[start:end], as_symbols(y)[start:end]
    assert sx[0] == sy[0] and sx[-1] == sy[-1]
    assert dinucleotides(sx.tolist()) == dinucleotides(sy.tolist())
    np.testing.assert_array_equal(y.any(0)[start:end].sum(), x.any(0)[start:end].sum())


shuffle_regions = jax.jit(jax.vmap(dinucleotide_shuffle))


@pytest.mark.parametrize("dtype", [np.float32, np.int8])
def test_invariants_on_random_sequences_and_regions(dtype):
    rng = np.random.default_rng(0)
    x, starts, ends = random_batch(rng, 64, L_LONG, dtype=dtype)
    keys = jax.random.split(jax.random.key(0), len(x))
    y = np.asarray(shuffle_regions(keys, x, starts, ends))
    for i in range(len(x)):
        check_invariants(x[i], y[i], starts[i], ends[i])
    # The shuffles do change the regions.
    inside = [(y[i] != x[i]).any() for i in range(len(x)) if ends[i] - starts[i] > 30]
    assert np.mean(inside) > 0.9


def test_batched_equals_unbatched_and_same_key_same_result():
    # Same shapes as the test above: the batched function is compiled already.
    rng = np.random.default_rng(1)
    x, starts, ends = random_batch(rng, 64, L_LONG)
    keys = jax.random.split(jax.random.key(2), len(x))
    batched = np.asarray(shuffle_regions(keys, x, starts, ends))
    single = jax.jit(dinucleotide_shuffle)
    for i in range(6):
        np.testing.assert_array_equal(batched[i],
                                      np.asarray(single(keys[i], x[i], starts[i], ends[i])))
    again = np.asarray(shuffle_regions(keys, x, starts, ends))
    np.testing.assert_array_equal(batched, again)
    # Nested vmap (sequences outside, keys inside) gives the same shuffles.
    nested = jax.jit(jax.vmap(jax.vmap(dinucleotide_shuffle, in_axes=(0, None, None, None))))
    keys2 = jax.random.split(jax.random.key(3), (4, 3))
    out = np.asarray(nested(keys2, x[:4], starts[:4], ends[:4]))
    for i in range(4):
        for j in range(3):
            want = single(keys2[i, j], x[i], starts[i], ends[i])
            np.testing.assert_array_equal(out[i, j], np.asarray(want))
    # Different keys give different shuffles.
    other_keys = jax.random.split(jax.random.key(4), len(x))
    other = np.asarray(shuffle_regions(other_keys, x, starts, ends))
    assert (other != batched).any()


def test_one_compilation_serves_every_region():
    traces = []

    def f(key, x, start, end):
        traces.append(1)
        return dinucleotide_shuffle(key, x, start, end)

    g = jax.jit(f)
    rng = np.random.default_rng(2)
    x = random_batch(rng, 1, L_LONG)[0][0]
    for i, (start, end) in enumerate([(0, L_LONG), (10, 50), (100, 103), (5, 290), (0, 1), (7, 9)]):
        y = g(jax.random.key(i), x, start, end)
        check_invariants(x, y, start, end)
    assert len(traces) == 1
    assert g._cache_size() == 1


def test_short_regions_are_returned_unchanged():
    x = encode("ACGTNACGTA")
    for start, end in [(0, 1), (3, 4), (4, 6), (8, 10), (0, 2)]:
        y = np.asarray(jax.jit(dinucleotide_shuffle)(jax.random.key(0), x, start, end))
        np.testing.assert_array_equal(y, x)


def test_homopolymer_and_two_symbol_regions():
    x = encode("AAAAAAAAAA")
    y = np.asarray(jax.jit(dinucleotide_shuffle)(jax.random.key(0), x, 0, 10))
    np.testing.assert_array_equal(y, x)
    # 'ACACAC...' has a single dinucleotide shuffle: itself.
    x = encode("ACACACACAC")
    y = np.asarray(jax.jit(dinucleotide_shuffle)(jax.random.key(0), x, 0, 10))
    np.testing.assert_array_equal(y, x)


def test_long_sequence_uses_int32_counts():
    length = 2**15 + 8
    rng = np.random.default_rng(3)
    x = random_batch(rng, 1, length, n_rate=0.01)[0][0]
    start, end = 5, length - 3
    y = jax.jit(dinucleotide_shuffle)(jax.random.key(0), x, start, end)
    check_invariants(x, y, start, end)


def test_symbols():
    x = encode("ACGTNNA")
    np.testing.assert_array_equal(np.asarray(symbols(x)), [0, 1, 2, 3, 4, 4, 0])
    assert symbols(x).dtype == jnp.int32
    cab = encode("CAB", "ABC").astype(np.int8)
    np.testing.assert_array_equal(np.asarray(symbols(cab)), [2, 0, 1])


def test_below_is_the_high_word_of_the_64_bit_product():
    rng = np.random.default_rng(4)
    bits = rng.integers(0, 2**32, 20_000, dtype=np.uint64)
    n = np.concatenate([rng.integers(1, 2**31 - 1, 10_000),
                        rng.integers(1, 40_000, 10_000)]).astype(np.uint64)
    expected = (bits * n) >> np.uint64(32)
    got = dn._below(jnp.asarray(bits.astype(np.uint32)), jnp.asarray(n.astype(np.int32)))
    np.testing.assert_array_equal(np.asarray(got), expected.astype(np.int64))


# ---------------------------------------------------------------------------
# Pinned key streams: exact shuffles for fixed keys and seeds, written down, so that
# an accidental change of the random stream (key derivation, the tree or the walk
# sampler, their random words) fails. A deliberate change rewrites these strings, and
# the release notes say that old keys give new shuffles.

PINNED_SEQS = ("ACGTTGCAACGTNACGGTACCATGCA", "TTGACCANGTACGATCGATTACAGGC")


def pinned_batch():
    return jnp.asarray(np.stack([encode(s) for s in PINNED_SEQS]))


def test_pinned_batch_shuffles_for_a_key_and_an_int_seed():
    X = pinned_batch()
    Y = jablate.dinucleotide_shuffle(X, 2, 24, n=3, random_state=jax.random.key(0),
                                   allow_N=True)
    assert [[decode(y) for y in row] for row in Y] == [
        ["ACGCGGTNATTGTGTAACCACACGCA", "ACGTGGCGTGTTNACCACAATACGCA",
         "ACGGTTNAATGCCACACGTGTACGCA"],
        ["TTGACAGACATATTACGANGTCCGGC", "TTGATCAGACACGTTATANGACCGGC",
         "TTGACGACGATCACCATANGTTAGGC"]]
    # an int seeds the key stream: random_state=7 is jax.random.key(7)
    Y = jablate.dinucleotide_shuffle(X, 0, -1, n=3, random_state=7, allow_N=True)
    assert [[decode(y) for y in row] for row in Y] == [
        ["ACGTGTTGCGCCGGTATNAACACACA", "ACGTGTTNACCATGCACGCGGTACAA",
         "ATGTTNACGCCGTGTACGGCACAACA"],
        ["TACGATTGCCACATTCGGANGTAGAC", "TACGGAGCATANGTTCCACGATTGAC",
         "TTGACGCACCATACGTAGANGGATTC"]]
    np.testing.assert_array_equal(
        Y, jablate.dinucleotide_shuffle(X, 0, -1, n=3, random_state=jax.random.key(7),
                                        allow_N=True))


def test_pinned_key_first_shuffles():
    X, shuffle = pinned_batch(), jax.jit(functional.dinucleotide_shuffle)
    assert [decode(shuffle(jax.random.key(k), X[0], 2, 24)) for k in range(3)] == [
        "ACGCGGTACACGTNACCAATTGTGCA", "ACGGTNACGTTGCCATAACACGTGCA",
        "ACGTNACGCAATTGTACACCGGTGCA"]
    # the batch function's shuffle i of sequence j is the key-first one's on
    # fold_in(fold_in(key, j), i)
    key = jax.random.key(0)
    Y = np.asarray(jablate.dinucleotide_shuffle(X, 2, 24, n=3, random_state=key, allow_N=True))
    for j in range(2):
        for i in range(3):
            sub = jax.random.fold_in(jax.random.fold_in(key, j), i)
            np.testing.assert_array_equal(Y[j, i], shuffle(sub, X[j], 2, 24))


def test_pinned_ablate_key_stream():
    # the identity model returns the shuffles that ablate drew in its compiled step
    y_after = jablate.ablate(lambda x: x, pinned_batch(), 2, 24, n=2,
                             shuffle_fn=jablate.dinucleotide_shuffle,
                             random_state=jax.random.key(5)).y_after
    assert [[decode(y) for y in row] for row in y_after] == [
        ["ACGTTNACGTACACAATGCCGTGGCA", "ACGCATTGTNAACCACGGTGTACGCA"],
        ["TTGATAGATTACACANGTCCGACGGC", "TTGTTATANGAGATCACCGACACGGC"]]


def test_tangermemes_options():
    """allow_N, one seed per sequence, return_packed and n_jobs, as tangermeme takes them."""
    X = pinned_batch()  # holds unknown bases
    with pytest.raises(ValueError, match="unknown bases.*allow_N=True"):
        jablate.dinucleotide_shuffle(X, n=2, random_state=0)
    # a seed per sequence: each sequence shuffled as it would be alone with its seed
    Y = jablate.dinucleotide_shuffle(X, 2, 24, n=3, random_state=[5, 9], allow_N=True)
    for j, seed in enumerate([5, 9]):
        alone = jablate.dinucleotide_shuffle(X[j:j + 1], 2, 24, n=3, random_state=seed,
                                             allow_N=True)
        np.testing.assert_array_equal(Y[j:j + 1], alone)
    np.testing.assert_array_equal(  # seeds as an array; X as numpy
        jablate.dinucleotide_shuffle(np.asarray(X), 2, 24, n=3, random_state=np.array([5, 9]),
                                     allow_N=True), Y)
    with pytest.raises(ValueError, match=r"one int seed per sequence \(2\)"):
        jablate.dinucleotide_shuffle(X, random_state=[1, 2, 3], allow_N=True)
    # no PackedSequence; n_jobs accepted without effect
    for fn in (jablate.shuffle, jablate.dinucleotide_shuffle):
        with pytest.raises(ValueError, match="return_packed must be None or False"):
            fn(X, random_state=0, return_packed=True)
    same = jablate.dinucleotide_shuffle(X, 2, 24, n=3, random_state=[5, 9], allow_N=True,
                                        n_jobs=-1, return_packed=False)
    np.testing.assert_array_equal(same, Y)
    with pytest.raises(ValueError, match="n_jobs"):
        jablate.dinucleotide_shuffle(X, allow_N=True, n_jobs=0)
