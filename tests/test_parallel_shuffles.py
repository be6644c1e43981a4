"""The key-stream shuffles are parallel over positions (issue 19, item 1).

An accelerator runs a loop's control from the host, one synchronisation per iteration, so a
loop over every position of a 2,114-bp sequence costs milliseconds per batch whatever the
batch holds. These tests check the structure without a GPU: the mono shuffle traces to no
loop at all, the dinucleotide shuffle to one loop whose trip count is the region's width,
whatever the sequence's length; and what the structure must keep (a pure function of the
key, windows that agree with the whole sequence, counts and uniformity).
"""

import itertools
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy
import pytest
from jax import lax
from scipy import stats

from jablate import functional
from jablate.functional import dinucleotide

LOOPS = {"while", "scan", "fori_loop"}


def one_hot(rng, L, A=4):
    return jnp.asarray(numpy.eye(A, dtype=numpy.float32)[rng.integers(0, A, L)].T)


def equations(jaxpr):
    """Every equation of a closed jaxpr, sub-jaxprs (jit, while, cond, custom_vmap) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from equations(inner)


def primitives(jaxpr):
    """Every primitive of a closed jaxpr, sub-jaxprs included."""
    return [eqn.primitive.name for eqn in equations(jaxpr)]


def batched(fn, L, n=8):
    keys = jax.random.split(jax.random.key(0), n)
    x = one_hot(numpy.random.default_rng(L), L)
    return jax.make_jaxpr(jax.vmap(fn, (0, None, None, None)))(keys, x, 40, 140).jaxpr


@pytest.mark.parametrize("L", [200, 2114])
def test_the_mono_shuffle_has_no_loop(L):
    names = primitives(batched(functional.shuffle, L))
    assert not LOOPS & set(names), names
    assert "sort" in names


def test_the_dinucleotide_shuffle_has_one_loop_the_same_at_every_length():
    short, long = (primitives(batched(functional.dinucleotide_shuffle, L)) for L in (200, 2114))
    assert short.count("while") == long.count("while") == 1
    assert "scan" not in short + long
    assert sorted(short) == sorted(long)  # the same program, only the shapes differ


@pytest.mark.parametrize("width", [3, 20])
def test_the_walk_steps_over_the_region_not_the_sequence(monkeypatch, width):
    steps = []

    def counting_while(cond, body, init):
        def counted(carry):  # a host callback counts the iterations as they run
            jax.debug.callback(lambda: steps.append(1))
            return body(carry)
        return lax.while_loop(cond, counted, init)

    shim = {k: getattr(lax, k) for k in dir(lax) if not k.startswith("_")}
    monkeypatch.setattr(dinucleotide, "lax", SimpleNamespace(**dict(
        shim, while_loop=counting_while)))
    # a walk of its own: custom_vmap caches its trace by function and shapes (jax 0.11),
    # and the start and end are traced, so another width would reuse an earlier trace
    monkeypatch.setattr(dinucleotide, "_walk", dinucleotide._batch_minor(
        lambda *args: dinucleotide._walk_steps(*args), dinucleotide._WALK_BROADCAST))
    for L in (60, 3000):
        x = one_hot(numpy.random.default_rng(1), L)
        steps.clear()
        # compiled (as every caller runs it; eagerly, each operation compiles on its own)
        y = jax.jit(functional.dinucleotide_shuffle, static_argnums=(2, 3))(
            jax.random.key(2), x, 30, 30 + width)
        jax.effects_barrier()
        assert len(steps) == width - 1  # the first symbol is kept; a step per other position
        numpy.testing.assert_array_equal(y[:, :30], x[:, :30])
        numpy.testing.assert_array_equal(y[:, 30 + width:], x[:, 30 + width:])
        steps.clear()  # batched: as many steps as the widest region
        jax.jit(jax.vmap(functional.dinucleotide_shuffle, (None, None, 0, 0)))(
            jax.random.key(2), x, jnp.array([30, 40]), jnp.array([30 + width, 43]))
        jax.effects_barrier()
        assert len(steps) == max(width, 3) - 1


def test_the_counts_are_the_brute_force_counts():
    rng = numpy.random.default_rng(3)
    x = numpy.array(one_hot(rng, 300))
    x[:, rng.integers(0, 300, 30)] = 0  # unknown bases, symbol 4
    s = numpy.where(x.sum(0) > 0, x.argmax(0), 4)
    for start, end in [(0, 300), (17, 18), (17, 19), (100, 250)]:
        E, last = functional.dinucleotide_counts(jnp.asarray(x), start, end)
        brute = numpy.zeros((5, 5), int)
        for p in range(start + 1, end):
            brute[s[p - 1], s[p]] += 1
        numpy.testing.assert_array_equal(E, brute)
        assert int(last) == s[end - 1]
        # the CPU's scatter-add and the other backends' sum of one-hot codes, each
        code = jnp.asarray(s[:-1] * 5 + s[1:])
        inside = jnp.asarray((numpy.arange(1, 300) > start) & (numpy.arange(1, 300) < end))
        for counted in (dinucleotide._pair_counts_scattered, dinucleotide._pair_counts_summed):
            numpy.testing.assert_array_equal(counted(code, inside, 25).reshape(5, 5), brute)


@pytest.mark.parametrize("fn", [functional.shuffle, functional.dinucleotide_shuffle])
def test_a_window_gives_the_whole_sequences_shuffle(fn):
    x = one_hot(numpy.random.default_rng(4), 500)
    key = jax.random.key(9)
    compiled = jax.jit(fn, static_argnames="length")  # eagerly, every operation compiles
    whole = compiled(key, x, 200, 260)
    for lo, hi in [(200, 260), (150, 300), (0, 500)]:
        window = compiled(key, x[:, lo:hi], 200, 260, offset=lo, length=500)
        numpy.testing.assert_array_equal(window, whole[:, lo:hi])
    # batched, each window at its own offset (as the incremental engine cuts them)
    offsets = jnp.array([150, 180, 200])
    windows = jax.vmap(lambda o: jax.lax.dynamic_slice_in_dim(x, o, 110, axis=1))(offsets)
    got = jax.jit(jax.vmap(lambda w, o: fn(key, w, 200, 260, offset=o, length=500)))(
        windows, offsets)
    for g, o in zip(got, [150, 180, 200]):
        numpy.testing.assert_array_equal(g, whole[:, o:o + 110])


def test_the_mono_permutation_is_uniform_with_repeated_symbols():
    # AACG at [2, 6) of GTAACGTT: 4!/2! = 12 arrangements, each as likely
    x = jnp.eye(4, dtype=jnp.float32)[:, [2, 3, 0, 0, 1, 2, 3, 3]]
    keys = jax.random.split(jax.random.key(5), 6000)
    Y = jax.jit(jax.vmap(functional.shuffle, (0, None, None, None)))(keys, x, 2, 6)
    words = ["".join("ACGT"[i] for i in numpy.asarray(y).argmax(0)) for y in Y]
    expected = {"GT" + "".join(p) + "TT" for p in set(itertools.permutations("AACG"))}
    assert set(words) == expected and len(expected) == 12
    assert stats.chisquare([words.count(w) for w in expected]).pvalue > 1e-3


def test_the_permutation_keeps_the_flanks_and_is_a_permutation():
    key = jax.random.key(6)
    for start, end, offset in [(0, 2114, 0), (1000, 1100, 0), (1000, 1100, 900)]:
        src = numpy.asarray(functional.region_permutation(key, 2114 - offset, start, end,
                                                          offset))
        column = numpy.arange(src.size)
        inside = (column + offset >= start) & (column + offset < end)
        numpy.testing.assert_array_equal(src[~inside], column[~inside])
        assert sorted(src[inside]) == list(column[inside])
        assert (src[inside] != column[inside]).mean() > 0.9  # shuffled, not the identity


def test_deep_lift_shap_draws_references_a_block_at_a_time(monkeypatch):
    import jablate
    from jablate.attribution import deeplift

    W = jax.random.normal(jax.random.key(1), (3, 4, 5))

    def model(x):
        return jax.nn.relu(lax.conv(x, W, (1,), "SAME")).sum((1, 2))[:, None]

    X = jnp.stack([one_hot(numpy.random.default_rng(i), 40) for i in range(7)])
    kw = dict(n_shuffles=3, batch_size=6, random_state=jax.random.key(4))  # 2 sequences a step
    draws = []
    real = deeplift._draw_block

    def counting(key, X, rows, references_fn, n):
        draws.append(numpy.asarray(rows).tolist())
        return real(key, X, rows, references_fn, n)

    monkeypatch.setattr(deeplift, "_draw_block", counting)
    whole = jablate.deep_lift_shap(model, X, **kw)
    assert draws == [list(range(7)) + [6]]  # one block: every sequence, padded to 4 steps
    draws.clear()
    monkeypatch.setattr(deeplift, "REFERENCE_BLOCK_BYTES", 1)  # a block per step
    per_step = jablate.deep_lift_shap(model, X, **kw)
    assert draws == [[0, 1], [2, 3], [4, 5], [6, 6]]
    numpy.testing.assert_array_equal(per_step, whole)
    # the references are those return_references gives (drawn for all at once)
    attributions, references = jablate.deep_lift_shap(model, X, return_references=True, **kw)
    numpy.testing.assert_array_equal(attributions, whole)
    numpy.testing.assert_array_equal(
        references, deeplift._draw_all(kw["random_state"], X, functional.dinucleotide_shuffle, 3))


def test_the_mono_keys_are_a_bijection_of_the_positions():
    # no two positions share a key (the order has no ties), and the hash inverts exactly
    from jablate.functional.dinucleotide import _random_word, _random_word_inverse

    counter = jnp.arange(0, 1 << 20, dtype=jnp.uint32)
    for k in range(3):
        seed = jax.random.bits(jax.random.key(k), (2,), jnp.uint32)
        words = _random_word(counter, seed)
        assert numpy.unique(numpy.asarray(words)).size == counter.size
        numpy.testing.assert_array_equal(_random_word_inverse(words, seed), counter)


def test_small_batch_shuffles_share_a_program_for_a_power_of_two(monkeypatch):
    """``jablate.shuffle`` and ``dinucleotide_shuffle`` of a few sequences run padded to a
    power of two: the same shuffles as the program on ``X`` as it is (what larger calls
    run), for a key, an int seed and a seed per sequence; and 5, 6 and 7 sequences share
    the shuffling program (one of 8)."""
    import jablate
    from jablate.engine import stream

    rng = numpy.random.default_rng(9)
    X = numpy.eye(4, dtype=numpy.float32)[rng.integers(0, 4, (19, 60))].transpose(0, 2, 1)
    cases = [(jablate.shuffle, jax.random.key(3)), (jablate.shuffle, 4),
             (jablate.dinucleotide_shuffle, jax.random.key(3)),
             (jablate.dinucleotide_shuffle, 4), (jablate.dinucleotide_shuffle, list(range(19)))]
    padded = [numpy.asarray(fn(X, 10, 50, n=3, random_state=rs)) for fn, rs in cases]
    monkeypatch.setattr(stream, "SHUFFLE_BLOCK_BYTES", 1)  # every call "large": unpadded
    for (fn, rs), expected in zip(cases, padded):
        numpy.testing.assert_array_equal(numpy.asarray(fn(X, 10, 50, n=3, random_state=rs)),
                                         expected)
    monkeypatch.undo()
    key = jax.random.key(5)
    first = numpy.asarray(jablate.dinucleotide_shuffle(X[:5], n=3, random_state=key))
    compiled = stream._shuffle_block._cache_size()
    for N in (6, 7):
        Y = numpy.asarray(jablate.dinucleotide_shuffle(X[:N], n=3, random_state=key))
        numpy.testing.assert_array_equal(Y[:5], first)
    assert stream._shuffle_block._cache_size() == compiled


def sort_widths(jaxpr):
    """The length of the sorted axis of every sort in a closed jaxpr, sub-jaxprs included."""
    return [eqn.invars[0].aval.shape[eqn.params["dimension"]] for eqn in equations(jaxpr)
            if eqn.primitive.name == "sort"]


@pytest.mark.parametrize("fn", [functional.shuffle, functional.dinucleotide_shuffle])
def test_the_engine_shuffles_each_region_in_a_window_of_its_width(fn):
    from jablate.engine import stream

    rng = numpy.random.default_rng(11)
    L, B = 2114, 16
    x = jnp.stack([one_hot(rng, L) for _ in range(B)]).at[3, :, 10:20].set(0)  # unknowns
    starts = numpy.array([0, L - 90, L - 3, 1000] + list(rng.integers(0, L - 90, B - 4)))
    ends = numpy.minimum(starts + numpy.array([90, 90, 3, 3] + list(rng.integers(3, 91, B - 4))),
                         L)
    items = (jnp.arange(B), jnp.asarray(starts, jnp.int32), jnp.asarray(ends, jnp.int32),
             jnp.asarray(numpy.stack([numpy.zeros(B, int), numpy.arange(B),
                                      numpy.arange(B) % 3], 1), jnp.int32))
    table = jnp.stack([jax.random.key(7)])
    whole = stream.KeyShuffle(fn)
    fitted = whole.for_regions(int((ends - starts).max()), L)
    assert fitted.width == 128  # a power of two of positions holding the widest region
    expected, got = whole(x, table, items), fitted(x, table, items)
    numpy.testing.assert_array_equal(got, expected)  # the same values, every region
    assert (numpy.asarray(got) != numpy.asarray(x)).any(axis=(1, 2)).sum() >= B // 2
    if fn is functional.shuffle:  # the mono shuffle sorts the window's keys, not L of them
        assert sort_widths(jax.make_jaxpr(whole)(x, table, items).jaxpr) == [L]
        assert sort_widths(jax.make_jaxpr(fitted)(x, table, items).jaxpr) == [128]
    # narrow regions share one window; a window as long as the sequence is not cut
    assert whole.for_regions(5, L).width == stream.MIN_WINDOW == 64
    assert whole.for_regions(100, 128).width is None
    assert stream.PermutationShuffle().for_regions(100, L) == stream.PermutationShuffle()
    # a run's stream fits its draw to its plan's widest region
    plan = stream.Plan.build(numpy.arange(B), starts, ends)
    run = stream.Stream(stream.Model(None), x, (), plan, whole, table)
    assert run.draw == fitted and run.unshuffled([0]).draw is stream.UNCHANGED


def test_the_incremental_steps_do_not_compile_again_for_a_wider_plan(monkeypatch):
    import jablate
    from jablate.incremental import run

    filters = jax.random.normal(jax.random.key(3), (2, 4, 5))

    def model(x):  # a model of this test alone: its compiled steps are fresh
        return jax.nn.relu(lax.conv(x, filters, (1,), "SAME")).sum((1, 2))[:, None]

    traced = []
    real = run._step

    def tracing(inc, *args, draw):
        traced.append((inc.width, draw))  # once per compile of a bucket's step
        return real(inc, *args, draw=draw)

    monkeypatch.setattr(run, "_step", tracing)
    X = jnp.stack([one_hot(numpy.random.default_rng(i), 400) for i in range(3)])
    narrow = [[0, 10, 40], [1, 200, 230]]
    kw = dict(n=3, random_state=jax.random.key(1), incremental=True)
    first = jablate.ablate_annotations(model, X, jnp.array(narrow), **kw)
    counts = []
    for wide in (70, 140, 300):  # the plan's widest region moves to other powers of two
        again = jablate.ablate_annotations(model, X, jnp.array(narrow + [[2, 50, 50 + wide]]),
                                           **kw)
        if jax.default_backend() == "cpu":
            numpy.testing.assert_array_equal(again[1][:2], first[1])
        else:  # a GPU autotunes convolutions per batch shape: other last bits
            numpy.testing.assert_allclose(again[1][:2], first[1], rtol=1e-5, atol=1e-6)
        counts.append(sum(w == 30 for w, _ in traced))
    # the 30-bp bucket's step compiled again for three sequences' caches, not for a window
    assert counts[0] == counts[1] == counts[2]
    assert all(d.width is None for _, d in traced)
