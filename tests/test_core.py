"""The JAX core: shuffles, predict, ablate and ablate_annotations on JAX models."""

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy
import pytest
from flax import nnx
from scipy import stats

import jablate
from jablate import functional
from jablate.api import effects as effects_module

N, A, L = 6, 4, 50


def one_hot(rng, n, a, length, unknown=0.0):
    syms = rng.integers(0, a, size=(n, length))
    X = numpy.zeros((n, a, length), numpy.float32)
    numpy.put_along_axis(X, syms[:, None, :], 1.0, axis=1)
    X *= (rng.random((n, 1, length)) >= unknown)
    return X


@pytest.fixture(scope="module")
def X():
    return jnp.asarray(one_hot(numpy.random.default_rng(0), N, A, L, unknown=0.05))


W = jnp.asarray(numpy.random.default_rng(1).normal(size=(A, L)).astype(numpy.float32))


def linear(x):
    """A linear model whose float64 reference is easy to compute."""
    return jnp.einsum("bal,al->b", x, W)[:, None]


def two_heads(x):
    return jnp.cumsum(x[:, 0, :], axis=-1), jnp.sum(x * W, axis=(1, 2))


def np_linear(x):
    return numpy.einsum("...al,al->...", numpy.asarray(x, numpy.float64),
                        numpy.asarray(W, numpy.float64))[..., None]


def same(a, b):
    numpy.testing.assert_array_equal(*numpy.broadcast_arrays(numpy.asarray(a), numpy.asarray(b)))


def region_counts(Y, start, end):
    return numpy.asarray(Y)[..., start:end].sum(-1)


# --- shuffles -----------------------------------------------------------------------------

def test_shuffle_keeps_counts_and_flanks(X):
    Y = jablate.shuffle(X, 10, 30, n=5, random_state=jax.random.key(0))
    assert Y.shape == (N, 5, A, L) and isinstance(Y, jax.Array)
    Xn, Yn = numpy.asarray(X), numpy.asarray(Y)
    same(Yn[..., :10], Xn[:, None, :, :10])
    same(Yn[..., 30:], Xn[:, None, :, 30:])
    same(region_counts(Yn, 10, 30), region_counts(Xn, 10, 30)[:, None])
    assert not numpy.array_equal(Yn[:, 0], Yn[:, 1])


def test_key_shuffles_are_per_sequence_and_subset_invariant(X):
    same = jnp.broadcast_to(X[:1], X.shape)
    Y = numpy.asarray(jablate.shuffle(same, 0, -1, n=2, random_state=jax.random.PRNGKey(3)))
    assert not numpy.array_equal(Y[0], Y[1])  # independent per sequence
    full = jablate.shuffle(X, 5, 40, n=3, random_state=jax.random.key(7))
    part = jablate.shuffle(X[:2], 5, 40, n=3, random_state=jax.random.key(7))
    numpy.testing.assert_array_equal(full[:2], part)
    raw = jablate.shuffle(X, 5, 40, n=3, random_state=jax.random.PRNGKey(7))
    numpy.testing.assert_array_equal(full, raw)


def test_negative_end_counts_from_the_end(X):
    Y = numpy.asarray(jablate.shuffle(X, 0, -2, n=2, random_state=0))
    same(Y[..., L - 1], numpy.asarray(X)[:, None, :, L - 1])
    same(region_counts(Y, 0, L - 1), region_counts(X, 0, L - 1)[:, None])


def test_mono_shuffle_is_uniform_against_brute_force():
    x = jnp.eye(4, dtype=jnp.float32)[:, [3, 0, 1, 2, 3, 3]]  # TACGTT; shuffle ACGT at [1, 5)
    keys = jax.random.split(jax.random.key(11), 12000)
    Y = jax.jit(jax.vmap(functional.shuffle, (0, None, None, None)))(keys, x, 1, 5)
    words = ["".join("ACGT"[i] for i in numpy.asarray(y).argmax(0)) for y in Y]
    expected = {"T" + "".join(p) + "T" for p in itertools.permutations("ACGT")}
    counts = {w: words.count(w) for w in expected}
    assert set(words) == expected and sum(counts.values()) == len(words)
    assert stats.chisquare(list(counts.values())).pvalue > 1e-3


def test_traced_regions_share_one_program(X):
    traces = []

    @jax.jit
    def f(key, x, start, end):
        traces.append(1)
        return functional.shuffle(key, x, start, end)

    for start, end in [(0, 5), (3, 40), (10, 11)]:
        y = f(jax.random.key(0), X[0], start, end)
        same(region_counts(y, start, end), region_counts(X[0], start, end))
    assert len(traces) == 1


def test_any_alphabet_and_unknown_bases_stay_zero():
    X = one_hot(numpy.random.default_rng(5), 3, 20, 30, unknown=0.2)  # protein-sized
    for fn, kw in ((jablate.shuffle, {}), (jablate.dinucleotide_shuffle, {"allow_N": True})):
        Y = numpy.asarray(fn(X, 0, -1, n=4, random_state=1, **kw))
        assert isinstance(Y, numpy.ndarray) and Y.dtype == X.dtype
        assert set(numpy.unique(Y.sum(2))) <= {0.0, 1.0}
        same((Y.sum(2) == 0).sum(-1), (X.sum(1) == 0).sum(-1)[:, None])
        same(Y.sum(-1), X.sum(-1)[:, None])


# --- pinned key streams --------------------------------------------------------------------
# Exact shuffles for fixed keys, written down: an accidental change of the random stream
# (key derivation, the sampler or its random words) fails here. A deliberate change
# rewrites these strings, and the release notes say that old keys give new shuffles
# (CHANGELOG.md: 0.2.0 replaced the mono shuffle's sequential sampler by a sort).

PINNED_SEQS = ("ACGTTGCAACGTNACGGTACCATGCA", "TTGACCANGTACGATCGATTACAGGC")


def encode(seq):
    """(A, L) one-hot; 'N' is an all-zero column."""
    return numpy.stack([[float(c == b) for c in seq] for b in "ACGT"]).astype(numpy.float32)


def decode(x):
    x = numpy.asarray(x)
    return "".join("ACGT"[a] if x[a, i] else "N" for i, a in enumerate(x.argmax(0)))


@pytest.fixture(scope="module")
def pinned_X():
    return jnp.asarray(numpy.stack([encode(s) for s in PINNED_SEQS]))


def test_pinned_key_shuffles(pinned_X):
    Y = jablate.shuffle(pinned_X, 3, 21, n=3, random_state=jax.random.key(0))
    assert [[decode(y) for y in row] for row in Y] == [
        ["ACGACGTCAATGGCNATTGCCATGCA", "ACGGATCTNCGCTAGTAACGCATGCA",
         "ACGGTTCGAAGCTANCACTCGATGCA"],
        ["TTGCGCANAGTACATGATATCCAGGC", "TTGATCGTAGAATAGATCCNCCAGGC",
         "TTGCCTCATACAAGGNAGTATCAGGC"]]
    Y = jablate.shuffle(pinned_X, 3, 21, n=3, random_state=jax.random.PRNGKey(42))
    assert [[decode(y) for y in row] for row in Y] == [
        ["ACGACTGTTCNACGCGATACGATGCA", "ACGTGGGAGCCAACCATTNTCATGCA",
         "ACGCAGCGTTGAAATCCGCTNATGCA"],
        ["TTGCTTACGAACGTCNGAATACAGGC", "TTGGGTCACATNAACAGACTTCAGGC",
         "TTGGATCATCAGGNATCAATCCAGGC"]]


def test_pinned_key_first_shuffles(pinned_X):
    x, shuffle = pinned_X[0], jax.jit(functional.shuffle)
    assert [decode(shuffle(jax.random.key(k), x, 3, 21)) for k in range(3)] == [
        "ACGAGNGCATCCCAGTTCTGAATGCA", "ACGCGATANGGATGCCTCTACATGCA",
        "ACGGCTACNCTTGCTCGAAAGATGCA"]
    # the batch function's shuffle i of sequence j is the key-first one's on
    # fold_in(fold_in(key, j), i)
    key = jax.random.key(0)
    Y = jablate.shuffle(pinned_X, 3, 21, n=3, random_state=key)
    for j in range(2):
        for i in range(3):
            sub = jax.random.fold_in(jax.random.fold_in(key, j), i)
            same(Y[j, i], shuffle(sub, pinned_X[j], 3, 21))


def test_pinned_ablate_key_stream(pinned_X):
    # the identity model returns the shuffled sequences that ablate drew in its compiled step
    y_after = jablate.ablate(lambda x: x, pinned_X, 3, 21, n=2,
                             random_state=jax.random.key(5)).y_after
    assert [[decode(y) for y in row] for row in y_after] == [
        ["ACGCTGACGGACNCAGCTTTAATGCA", "ACGTCNTTGCTGCGACACAGAATGCA"],
        ["TTGACNGACTAAAACTGCTTGCAGGC", "TTGAAGCGCCNAGTATCTTAACAGGC"]]


# --- predict --------------------------------------------------------------------------------

def test_predict_compiles_once_per_batch_shape(X):
    traces = []

    def model(x):
        traces.append(x.shape)
        return linear(x)

    y1 = jablate.predict(model, X, batch_size=4)  # 6 = 4 + a padded batch of 2
    y2 = jablate.predict(model, X, batch_size=4)
    assert traces == [(4, A, L)]
    numpy.testing.assert_allclose(y1, np_linear(X), rtol=1e-5)
    numpy.testing.assert_array_equal(y1, y2)


def test_predict_progress_bar(X, capsys):
    jablate.predict(linear, X, batch_size=2, verbose=True)
    err = capsys.readouterr().err
    assert f"{N}/{N}" in err and "input/s" in err  # the items done (in batches of 2)


class LinenModel(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(x.reshape(x.shape[0], -1))


def test_flax_linen_and_nnx_models(X):
    variables = LinenModel().init(jax.random.key(0), X[:1])
    bound = LinenModel().bind(variables)
    y = jablate.predict(bound, X)
    numpy.testing.assert_allclose(y, LinenModel().apply(variables, X), rtol=1e-5)
    linear_nnx = nnx.Linear(A * L, 2, rngs=nnx.Rngs(0))
    model = lambda x: linear_nnx(x.reshape(x.shape[0], -1))  # noqa: E731
    y_nnx = jablate.predict(nnx.Sequential(lambda x: x.reshape(x.shape[0], -1), linear_nnx), X)
    numpy.testing.assert_allclose(y_nnx, model(X), rtol=1e-5)
    with pytest.raises(ValueError, match="unbound"):
        jablate.predict(LinenModel(), X)


# --- ablate --------------------------------------------------------------------------------

@pytest.mark.parametrize("shuffle_fn", [jablate.shuffle, jablate.dinucleotide_shuffle])
def test_ablate_equals_float64_reference_on_its_shuffles(X, shuffle_fn):
    key = jax.random.key(4)
    y_before, y_after = jablate.ablate(linear, X, 10, 30, n=5, shuffle_fn=shuffle_fn,
                                       random_state=key, batch_size=7)
    # X holds unknown bases, which dinucleotide_shuffle takes with allow_N=True (ablate
    # shuffles them as symbols of their own)
    kw = {"allow_N": True} if shuffle_fn is jablate.dinucleotide_shuffle else {}
    Y = shuffle_fn(X, 10, 30, n=5, random_state=key, **kw)
    numpy.testing.assert_allclose(y_before, np_linear(X), rtol=1e-5, atol=1e-5)
    numpy.testing.assert_allclose(y_after, np_linear(Y), rtol=1e-5, atol=1e-5)
    assert y_after.shape == (N, 5, 1)


def test_ablate_independent_of_batch_size_and_other_sequences(X):
    key = jax.random.key(9)
    full = jablate.ablate(linear, X, 0, -1, n=4, random_state=key, batch_size=5)
    other = jablate.ablate(linear, X, 0, -1, n=4, random_state=key, batch_size=32)
    part = jablate.ablate(linear, X[:3], 0, -1, n=4, random_state=key, batch_size=5)
    # the same shuffles; only float summation order may differ with the batch shape
    numpy.testing.assert_allclose(full.y_after, other.y_after, rtol=1e-5, atol=1e-6)
    numpy.testing.assert_allclose(full.y_after[:3], part.y_after, rtol=1e-5, atol=1e-6)


def test_int_seed_gives_the_same_permutation_for_every_sequence(X):
    same = jnp.broadcast_to(X[:1], X.shape)
    Y = numpy.asarray(jablate.shuffle(same, 0, -1, n=2, random_state=5))
    assert numpy.array_equal(Y[0], Y[1]) and not numpy.array_equal(Y[0, 0], Y[0, 1])
    rs = numpy.random.RandomState(5)
    numpy.testing.assert_array_equal(jablate.shuffle(same, 0, -1, n=2, random_state=rs), Y)


def test_seeded_permutation_blocks_are_cached_and_read_only():
    from jablate._core import random as jrandom

    block = jrandom.seeded_permutations(7, 5, 12, 16)
    assert jrandom.seeded_permutations(7, 5, 12, 16) is block  # drawn once per run
    numpy.testing.assert_array_equal(block, jrandom.tangermeme_permutations(
        numpy.random.RandomState(7), 5, 12, 16))
    assert sorted(block[3, :12]) == list(range(12)) and list(block[3, 12:]) == [12, 13, 14, 15]
    with pytest.raises(ValueError, match="read-only"):
        block[0, 0] = 1


def test_multi_output_and_args(X):
    y_before, y_after = jablate.ablate(two_heads, X, 5, 25, n=3, random_state=0)
    assert isinstance(y_before, list) and len(y_after) == 2
    assert y_before[0].shape == (N, L) and y_after[0].shape == (N, 3, L)
    assert y_after[1].shape == (N, 3)
    alpha = jnp.arange(N, dtype=jnp.float32)[:, None] * 100
    y_before, y_after = jablate.ablate(lambda x, a: linear(x) + a, X, 5, 25, n=3,
                                       args=(alpha,), random_state=0)
    base = jablate.ablate(linear, X, 5, 25, n=3, random_state=0)
    numpy.testing.assert_allclose(y_after, base.y_after + alpha[:, None], rtol=1e-5)
    numpy.testing.assert_allclose(y_before, base.y_before + alpha, rtol=1e-5)


def test_numpy_in_numpy_out(X):
    r = jablate.ablate(linear, numpy.asarray(X), 0, 10, n=2, random_state=0)
    assert isinstance(r.y_before, numpy.ndarray) and isinstance(r.y_after, numpy.ndarray)
    y_before, y_after = r  # unpacks like a tuple
    assert y_after.shape == (N, 2, 1)


def test_reduce_mean_std_matches_full_output(X):
    key = jax.random.key(2)
    full = jablate.ablate(two_heads, X, 0, -1, n=6, random_state=key, batch_size=5)
    summary = jablate.ablate(two_heads, X, 0, -1, n=6, random_state=key, batch_size=5,
                             reduce="mean_std")
    for h in range(2):
        after = numpy.asarray(full.y_after[h], numpy.float64)
        numpy.testing.assert_allclose(summary.y_after_mean[h], after.mean(1), rtol=1e-5, atol=1e-4)
        numpy.testing.assert_allclose(summary.y_after_std[h], after.std(1), rtol=1e-4, atol=1e-4)
        numpy.testing.assert_allclose(summary.y_before[h], full.y_before[h])


@pytest.mark.parametrize("incremental", [False, True])
def test_reduce_mean_std_keeps_small_spreads_far_from_before(X, incremental):
    """The spread of shuffles that all land far from the prediction before is computed
    about their own mean, not from sums of squares of the (large) drops: none at all stays
    below float resolution (so z is nan, never thousands), a small one is right to the
    outputs' own rounding (a sum-of-squares spread had a floor of sqrt(eps) * drop, about
    3.5e-4 * drop, the difference of two nearly equal float32 sums)."""
    reference = jnp.asarray(X[0, :, 20:40])

    def make(spread):  # 0.5 before; 3.0 once the region changes, plus `spread` per A in it
        def model(x):
            changed = jnp.abs(x[:, :, 20:40] - reference).sum((1, 2)) > 0
            weights = jnp.arange(20, dtype=jnp.float32) / 20
            return (0.5 + changed * (2.5 + spread * (x[:, 0, 20:40] * weights).sum(-1)))[:, None]
        return model

    for spread in (0.0, 1e-4):
        model = make(spread)
        kw = dict(n=20, random_state=jax.random.key(4), incremental=incremental)
        kept = jablate.ablate(model, X[:1], 20, 40, **kw)
        summary = jablate.ablate(model, X[:1], 20, 40, reduce="mean_std", **kw)
        after = numpy.asarray(kept.y_after, numpy.float64)[0, :, 0]
        mean = float(numpy.asarray(summary.y_after_mean)[0, 0])
        std = float(numpy.asarray(summary.y_after_std)[0, 0])
        assert abs(mean - after.mean()) < 4 * 2.0 ** -23 * 3
        if spread == 0:
            assert after.std() == 0 and std < 16 * 2.0 ** -23 * 3
            drop, sd, z = effects_module.from_mean_std(
                numpy.asarray(summary.y_before)[:, 0], numpy.asarray(summary.y_after_mean)[:, 0],
                numpy.asarray(summary.y_after_std)[:, 0], 20)
            assert numpy.isnan(z[0]) and drop[0] == pytest.approx(-2.5, abs=1e-6)
        else:
            assert after.std() > 1e-5
            numpy.testing.assert_allclose(std, after.std(), rtol=0.05)


def test_group_moments_refuse_groups_sent_other_than_n_items_and_wait_for_nothing():
    """Per-group moments are counted on the host from the groups sent with each batch (so
    the check needs nothing from the device) and come back as device arrays equal to the
    float64 mean and population spread."""
    from jablate.engine.executor import GroupMoments

    rng = numpy.random.default_rng(0)
    ys = rng.normal(size=(6, 3)).astype(numpy.float32)
    shifts = (numpy.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]], numpy.float32),)
    moments = GroupMoments(2)
    moments.add((jnp.asarray(ys[:4]),), tuple(map(jnp.asarray, shifts)), None,
                numpy.array([0, 0, 0, 1]), 4)
    moments.add((jnp.asarray(numpy.concatenate([ys[4:], ys[:2]])),),
                tuple(map(jnp.asarray, shifts)), None, numpy.array([1, 1, 1, 1]), 2)
    (mean, std), = moments.result(shifts, 3)
    assert isinstance(mean, jax.Array) and isinstance(std, jax.Array)
    groups = ys.astype(numpy.float64).reshape(2, 3, 3)
    numpy.testing.assert_allclose(mean, groups.mean(1), rtol=1e-6)
    numpy.testing.assert_allclose(std, groups.std(1), rtol=1e-5)
    short = GroupMoments(2)
    short.add((jnp.asarray(ys[:4]),), tuple(map(jnp.asarray, shifts)), None,
              numpy.array([0, 0, 0, 1]), 4)
    with pytest.raises(RuntimeError, match="counted 1 to 3 items per group, not 3"):
        short.result(shifts, 3)


def test_mean_std_of_a_jax_input_stays_on_the_device(X):
    """issue 19: with a JAX input, ``reduce='mean_std'`` hands back device arrays (nothing
    read back to the host and put there again), equal to a numpy input's host arrays."""
    kw = dict(n=6, random_state=jax.random.key(3), incremental=False, reduce="mean_std")
    on_device = jablate.ablate_annotations(two_heads, X, ANNOTATIONS, **kw)
    on_host = jablate.ablate_annotations(two_heads, numpy.asarray(X), ANNOTATIONS, **kw)
    for got, want in zip(on_device, on_host, strict=True):
        for g, w in zip(got, want, strict=True):
            assert isinstance(g, jax.Array) and isinstance(w, numpy.ndarray)
            numpy.testing.assert_array_equal(numpy.asarray(g), w)


# --- ablate_annotations --------------------------------------------------------------------

ANNOTATIONS = numpy.array([[0, 5, 20], [3, 10, 13], [0, 30, 50], [5, 0, 40], [3, 10, 13]])


@pytest.mark.parametrize("shuffle_fn", [jablate.shuffle, jablate.dinucleotide_shuffle])
@pytest.mark.parametrize("seed", [0, "key", "rs"])
def test_ablate_annotations_equals_the_loop(X, shuffle_fn, seed):
    make = {0: lambda: 0, "key": lambda: jax.random.key(1),
            "rs": lambda: numpy.random.RandomState(1)}[seed]
    got = jablate.ablate_annotations(two_heads, X, ANNOTATIONS, n=4, shuffle_fn=shuffle_fn,
                                     random_state=make(), batch_size=6)
    state = make()
    loop = [jablate.ablate(two_heads, X[i:i + 1], s, e, n=4, shuffle_fn=shuffle_fn,
                           random_state=state) for i, s, e in ANNOTATIONS]
    for h in range(2):
        assert got.y_befores[h].shape[:2] == (len(ANNOTATIONS), 1)
        assert got.y_afters[h].shape[:3] == (len(ANNOTATIONS), 1, 4)
        numpy.testing.assert_allclose(got.y_befores[h], numpy.stack([b[h] for b, _ in loop]),
                                      rtol=1e-5)
        numpy.testing.assert_allclose(got.y_afters[h], numpy.stack([a[h] for _, a in loop]),
                                      rtol=1e-5)


def test_ablate_annotations_args_follow_their_example(X):
    alpha = jnp.arange(N, dtype=jnp.float32)[:, None] * 100
    got = jablate.ablate_annotations(lambda x, a: linear(x) + a, X, ANNOTATIONS, n=3,
                                     random_state=0, args=(alpha,))
    base = jablate.ablate_annotations(linear, X, ANNOTATIONS, n=3, random_state=0)
    shift = numpy.asarray(alpha)[ANNOTATIONS[:, 0]]
    numpy.testing.assert_allclose(got.y_befores, base.y_befores + shift[:, None], rtol=1e-5)
    numpy.testing.assert_allclose(got.y_afters, base.y_afters + shift[:, None, None], rtol=1e-5)


def test_ablate_annotations_batches_the_model_calls(X):
    calls = []

    def model(x):
        calls.append(x.shape[0])
        return linear(x)

    ann = numpy.array([[i % N, i % 30, i % 30 + 3 + i % 7] for i in range(40)])
    jablate.ablate_annotations(model, X, ann, n=5, random_state=0, batch_size=64)
    jablate.ablate_annotations(model, X, ann[::-1].copy(), n=5, random_state=1, batch_size=64)
    # one trace per batch shape, shared by both calls and all regions; the predictions
    # before (N items, fewer than a batch) run padded to a power of two
    assert calls == [1 << (N - 1).bit_length(), 64]


# --- bad input -----------------------------------------------------------------------------

def never_called(x):
    raise AssertionError("the model must not run on bad input")


@pytest.mark.parametrize("kwargs, match", [
    (dict(X=jnp.zeros((4, L))), "X must have shape"),
    (dict(X=jnp.zeros((0, A, L))), "X must hold at least one example"),
    (dict(X=jnp.full((2, A, L), 0.5)), "one-hot"),
    (dict(X=jnp.ones((2, A, L))), "sums above 1"),
    (dict(start=-1), "start"),
    (dict(end=L + 1), "end"),
    (dict(start=20, end=20), "end must come after start"),
    (dict(n=0), "n must be at least 1"),
    (dict(n=2.5), "n must be an integer"),
    (dict(args=(jnp.zeros((N + 1, 1)),)), r"args\[0\]"),
    (dict(shuffle_fn=jablate.dinucleotide_shuffle, start=10, end=12), "at least 3"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=2.0), "batch_size"),
    (dict(reduce="median"), "reduce must be one of"),
    (dict(random_state="seed"), "random_state"),
])
def test_ablate_bad_input(X, kwargs, match):
    call = dict(X=X, start=0, end=10, n=2)
    call.update(kwargs)
    with pytest.raises(ValueError, match=match):
        jablate.ablate(never_called, **call)


@pytest.mark.parametrize("annotations, match", [
    (numpy.zeros((2, 2), int), r"shape \(k, 3\)"),
    (numpy.zeros((0, 3), int), "at least one"),
    (numpy.array([[N, 0, 5]]), "outside X"),
    (numpy.array([[0, 40, L + 1]]), "region"),
    (numpy.array([[0, 5, 5]]), "region"),
    (numpy.array([[0.5, 1, 5]]), "integers"),
])
def test_ablate_annotations_bad_input(X, annotations, match):
    with pytest.raises(ValueError, match=match):
        jablate.ablate_annotations(never_called, X, annotations)


def test_unknown_keyword_is_a_type_error(X):
    with pytest.raises(TypeError, match="bogus"):
        jablate.ablate(never_called, X, 0, 10, n=2, bogus=1)


def test_runs_on_other_numbers_of_sequences_reuse_the_compiled_steps():
    """A step takes its batch's sequences, gathered by a small program of their own, not the
    whole ``X`` (and a run smaller than a batch is padded to a power of two): ``ablate`` and
    ``ablate_annotations`` on 6, 7 and 8 sequences trace the model once per batch shape, on
    the full path, on the incremental engine, with ``func`` and with ``reduce="mean_std"``;
    each sequence's values stay those of its index."""
    K = jnp.asarray(numpy.random.default_rng(3).normal(size=(4, A, 5)), jnp.float32)
    traced = []

    def model(x):
        traced.append(x.shape)
        return jax.nn.relu(jax.lax.conv(x, K, (1,), "SAME")).mean((1, 2))[:, None]

    X8 = one_hot(numpy.random.default_rng(4), 8, A, L)
    key = jax.random.key(5)
    runs = dict(
        full=lambda X: jablate.ablate(model, X, 20, 30, n=3, random_state=key,
                                      incremental=False, batch_size=8),
        incremental=lambda X: jablate.ablate(model, X, 20, 30, n=3, random_state=key,
                                             incremental=True, batch_size=8),
        annotations=lambda X: jablate.ablate_annotations(
            model, X, numpy.array([[j, 10 + j, 16 + j] for j in range(len(X))]), n=3,
            random_state=key, incremental=False, batch_size=8),
        func=lambda X: jablate.ablate(model, X, 20, 30, n=2, random_state=key, batch_size=8,
                                      func=jablate.deep_lift_shap, n_shuffles=2),
        mean_std=lambda X: jablate.ablate(model, X, 20, 30, n=3, random_state=key,
                                          incremental=False, batch_size=8, reduce="mean_std"),
        mean_std_incremental=lambda X: jablate.ablate(
            model, X, 20, 30, n=3, random_state=key, incremental=True, batch_size=8,
            reduce="mean_std"),
    )
    from jablate.engine import executor

    for name, run in runs.items():
        first = run(X8[:6])
        before, merges = len(traced), executor._merge._cache_size()
        rest = [run(X8[:n]) for n in (7, 8)]
        assert len(traced) == before, (name, traced[before:])
        # the moments keep a power of two of groups: 6, 7 and 8 share one merge program
        assert executor._merge._cache_size() == merges, name
        for small, large in ((first, rest[0]), (rest[0], rest[1])):
            for a, b in zip(jax.tree.leaves(small), jax.tree.leaves(large)):
                a, b = numpy.asarray(a), numpy.asarray(b)
                numpy.testing.assert_allclose(b[:len(a)], a, rtol=1e-6, atol=1e-7,
                                              err_msg=name)


@pytest.mark.parametrize("dtype", [numpy.float32, numpy.int8, numpy.bool_])
def test_the_host_one_hot_check_reads_every_block(monkeypatch, dtype):
    """A host ``X`` is checked by numpy a block of rows at a time: a bad value in any block
    (the last, a partial one, included) is found, as the compiled check finds it."""
    from jablate.models import frontdoor

    monkeypatch.setattr(frontdoor, "ONE_HOT_CHECK_BYTES", 3 * A * L * numpy.dtype(dtype).itemsize)
    X = one_hot(numpy.random.default_rng(6), 10, A, L).astype(dtype)  # blocks of 3, 3, 3, 1

    def flags(x):
        got = tuple(bool(v) for v in frontdoor._one_hot_flags(jnp.asarray(x)))
        assert got == tuple(bool(v) for v in frontdoor._one_hot_flags_jitted(jnp.asarray(x)))
        return got

    assert flags(X) == (True, True)
    for row in (0, 4, 9):
        x = X.copy()
        x[row, :2, 7] = 1  # a column that sums to 2
        assert flags(x) == (True, False), row
        if dtype != numpy.bool_:
            x = X.copy()
            x[row, 0, 3] = 2
            assert flags(x)[0] is False, row
        x = X.copy()
        x[row, :, 11] = 0  # an unknown base, found in place and where X is alike
        assert frontdoor.has_unknown_bases(jnp.asarray(x)), row
        assert bool(frontdoor._has_unknown_bases_jitted(jnp.asarray(x))), row
    assert not frontdoor.has_unknown_bases(jnp.asarray(X))
    assert not bool(frontdoor._has_unknown_bases_jitted(jnp.asarray(X)))


def test_a_numpy_X_is_checked_on_the_host_whatever_the_device(monkeypatch):
    """A numpy ``X`` is checked as numpy (``inputs`` hands it to ``check_X``), even when its
    JAX copy lives on an accelerator (a GPU simulated by the devices arrays report): no
    program on the device for each new ``N``; a JAX array there is checked where it is."""
    from jax._src.array import ArrayImpl

    from jablate.models import frontdoor

    X = one_hot(numpy.random.default_rng(7), 3, A, L)
    handed = []
    check = frontdoor.check_X
    monkeypatch.setattr(frontdoor, "check_X", lambda Xj, host=None, **kw:
                        handed.append(host) or check(Xj, host=host, **kw))
    frontdoor.inputs(X)
    frontdoor.inputs(jnp.asarray(X))
    assert handed[0] is X and handed[1] is None
    monkeypatch.undo()

    class Gpu:
        platform, id = "gpu", 0

    compiled = []
    jitted = frontdoor._one_hot_flags_jitted
    monkeypatch.setattr(frontdoor, "_one_hot_flags_jitted",
                        lambda X: compiled.append(X.shape) or jitted(X))
    Xj = jnp.asarray(X)
    monkeypatch.setattr(ArrayImpl, "devices", lambda self: {Gpu()})
    frontdoor.check_X(Xj, host=X)
    assert compiled == []
    frontdoor.check_X(Xj)
    assert compiled == [(3, A, L)]
    bad = X.copy()
    bad[1, :, 4] = 1
    with pytest.raises(ValueError, match="sums above 1"):
        frontdoor.check_X(Xj, host=bad)


def test_a_numpy_X_is_checked_as_the_model_gets_it_and_int64_wraps_are_refused():
    """The host check reads floats in the dtype the model gets (float64 as float32 without
    JAX's 64-bit mode: ``1 + 1e-9`` is 1 there, as before) and integers as given: an int64
    value that the int32 copy would wrap to 1 is refused, not silently run as a 1."""
    X = one_hot(numpy.random.default_rng(8), 3, A, L).astype(numpy.float64)
    at = int(X[0, :, 3].argmax())
    near = X.copy()
    near[0, at, 3] = 1 + 1e-9
    ism = lambda X: jablate.saturation_mutagenesis(linear, X, start=2, end=5)  # noqa: E731
    same(ism(near), ism(X))
    wrapped = X.astype(numpy.int64)
    wrapped[0, at, 3] = 2 ** 32 + 1
    # refused when converted (any use of X: predict takes any values, but not wrapped ones)
    for use in (ism, functools.partial(jablate.predict, linear)):
        with pytest.raises(ValueError, match="X holds integers that int32 cannot hold"):
            use(wrapped)
    same(jablate.predict(linear, X.astype(numpy.int64)), jablate.predict(linear, X))
