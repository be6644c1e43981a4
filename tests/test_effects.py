"""The effect statistics (jablate.api.effects): drop, spread, z and their nan rules (issue 17)."""

import itertools
import sys
from pathlib import Path

import numpy
import pytest

import jablate
from jablate.api import effects

sys.path.insert(0, str(Path(__file__).resolve().parent))


def test_z_is_drop_over_the_sample_sd():
    rs = numpy.random.RandomState(0)
    before, after = rs.normal(size=6), rs.normal(size=(6, 5))
    drop, spread, z = effects.shuffle_effects(before, after)
    numpy.testing.assert_allclose(drop, before - after.mean(axis=1))
    numpy.testing.assert_allclose(spread, after.std(axis=1, ddof=1))
    numpy.testing.assert_allclose(z, drop / spread)


def test_no_spread_gives_nan_z_never_inf():
    # a control region whose shuffles all predict the same float32 value, and a before
    # that differs from it by rounding only: z was +inf
    after = numpy.full((3, 20), 0.7, dtype=numpy.float32)
    before = numpy.float32(0.7) + numpy.array([3e-8, 0.0, -6e-8], numpy.float32)
    drop, spread, z = effects.shuffle_effects(before, after)
    assert (spread == 0).all() and numpy.isnan(z).all()
    # a spread of one float32 ulp is still below resolution
    after[0, 0] = numpy.nextafter(after[0, 0], numpy.float32(1))
    assert numpy.isnan(effects.shuffle_effects(before, after).z[0])
    # a resolvable spread gives a finite z: 1e-4 of a scale of 0.7 is far above 16 ulps
    after[1, :10] += numpy.float32(1e-4)
    z = effects.shuffle_effects(before, after).z
    assert numpy.isfinite(z[1]) and z[1] < 0
    # in float64 the same relative spread of 1e-9 is resolvable
    after64 = numpy.full((1, 4), 0.7)
    after64[0, :2] += 1e-9
    assert numpy.isfinite(effects.shuffle_effects(numpy.array([0.71]), after64).z).all()


def test_regions_that_cannot_change_get_drop_0_and_nan_z():
    before = numpy.array([1.0, 2.0, 3.0])
    after = numpy.array([[1.0, 1.0], [2.0 - 1e-7, 2.0 + 1e-7], [1.0, 2.0]])
    drop, spread, z = effects.shuffle_effects(before, after, changes=[False, False, True])
    assert drop[:2].tolist() == [0.0, 0.0] and spread[:2].tolist() == [0.0, 0.0]
    assert numpy.isnan(z[:2]).all() and z[2] == pytest.approx(1.5 / numpy.sqrt(0.5))
    # n = 1: no spread to speak of
    assert numpy.isnan(effects.shuffle_effects(before, after[:, :1]).z).all()
    with pytest.raises(ValueError, match="changes"):
        effects.shuffle_effects(before, after, changes=[True])


def _brute_arrangements(seq):
    return len(set(itertools.permutations(seq)))


def _brute_dinucleotide(seq):
    pairs = sorted(zip(seq, seq[1:]))
    return len({p for p in itertools.permutations(seq) if p[0] == seq[0] and
        p[-1] == seq[-1] and sorted(zip(p, p[1:])) == pairs})


def test_arrangements_count_what_the_shuffles_can_make():
    seqs = ["AAAAAA", "ACACAC", "NNNNNN", "ACGTAC", "AACCGA", "GATTAC"]
    X = numpy.zeros((len(seqs), 4, 8), numpy.float32)
    for i, s in enumerate(seqs):
        for j, c in enumerate(s):
            if c != "N":
                X[i, "ACGT".index(c), j + 1] = 1
    ann = numpy.array([[i, 1, 7] for i in range(len(seqs))])
    mono = effects.arrangements(jablate.shuffle, X, ann)
    di = effects.arrangements(jablate.dinucleotide_shuffle, X, ann)
    assert mono.tolist() == [_brute_arrangements(s) for s in seqs]
    assert di.tolist() == [_brute_dinucleotide(s) for s in seqs]
    assert effects.changeable(jablate.shuffle, X, ann).tolist() == [False, True, False,
        True, True, True]
    with pytest.raises(ValueError, match="foreign shuffle"):
        effects.changeable(lambda X, **k: X, X, ann)
    # regions outside the sequence are refused (a negative start used to wrap around)
    for bad in ([[0, -3, 5]], [[0, 2, 9]], [[0, 5, 5]], [[6, 1, 7]]):
        with pytest.raises(ValueError, match="annotations"):
            effects.arrangements(jablate.dinucleotide_shuffle, X, bad)
    assert effects.arrangements(jablate.shuffle, X, numpy.zeros((0, 3), int)).shape == (0,)


def test_arrangements_of_regions_anywhere_in_a_long_sequence_match_brute_force(monkeypatch):
    # counts read a window around each region (not the whole sequence): regions at the
    # start, the end and in between, of several widths, in one call
    rs = numpy.random.RandomState(5)
    L = 40
    seqs = ["".join(rs.choice(list("ACGTN"), p=[.3, .3, .15, .2, .05], size=L))
            for _ in range(6)]
    X = numpy.zeros((len(seqs), 4, L), numpy.float32)
    for i, s in enumerate(seqs):
        for j, c in enumerate(s):
            if c != "N":
                X[i, "ACGT".index(c), j] = 1
    rows = []
    for i in range(len(seqs)):
        for w in (2, 5, 7):
            for start in (0, int(rs.randint(1, L - w)), L - w):
                rows.append([i, start, start + w])
    ann = numpy.array(rows)
    regions = [seqs[i][a:b] for i, a, b in rows]
    mono = effects.arrangements(jablate.shuffle, X, ann)
    di = effects.arrangements(jablate.dinucleotide_shuffle, X, ann)
    assert mono.tolist() == [_brute_arrangements(r) for r in regions]
    assert di.tolist() == [_brute_dinucleotide(r) for r in regions]
    # a JAX array is counted where it lives: not copied to the host and put back
    import jax

    from jablate.api import ersatz
    on_host = jax.device_put(X, jax.devices("cpu")[0])
    monkeypatch.setattr(ersatz.jax, "device_put", None)  # any put fails
    assert effects.arrangements(jablate.shuffle, on_host, ann).tolist() == mono.tolist()
    assert effects.arrangements(jablate.dinucleotide_shuffle, on_host, ann).tolist() == di.tolist()


def test_counts_run_on_the_host_backend_and_copy_only_an_accelerators_array(monkeypatch):
    """Region counts never queue behind an accelerator: a JAX array on the CPU is counted
    as it is, a numpy array and a JAX array on an accelerator (a GPU simulated by the
    devices the array reports) are put on the host device, and the counts agree."""
    import jax
    from jax._src.array import ArrayImpl

    from jablate._core.placement import host_device
    from jablate.api import ersatz

    X = numpy.eye(4, dtype=numpy.float32)[numpy.random.RandomState(1).randint(4, size=(3,
        30))].transpose(0, 2, 1)
    ann = numpy.array([[0, 2, 9], [1, 10, 30], [2, 0, 5]])
    expected = effects.arrangements(jablate.dinucleotide_shuffle, X, ann)
    puts = []
    put = jax.device_put
    monkeypatch.setattr(ersatz.jax, "device_put",
                        lambda x, device=None, **kw: puts.append(device) or put(x, device, **kw))
    on_cpu = jax.numpy.asarray(X)
    assert ersatz.counted_on_host(on_cpu) is on_cpu and puts == []
    assert ersatz.counted_on_host(X).devices() == {host_device()} and puts == [host_device()]

    class Gpu:
        platform, id = "gpu", 0

    monkeypatch.setattr(ArrayImpl, "devices", lambda self: {Gpu()})
    counts = effects.arrangements(jablate.dinucleotide_shuffle, on_cpu, ann)
    assert puts == [host_device(), host_device()]  # the "GPU" array was copied once
    assert counts.tolist() == expected.tolist()


def test_a_mean_std_result_gives_the_tables_statistics():
    import models_for_cli

    X = numpy.eye(4, dtype=numpy.float32)[numpy.random.RandomState(3).randint(4, size=(5,
        40))].transpose(0, 2, 1)
    kwargs = dict(start=10, end=30, n=6, random_state=0, batch_size=8)
    before, after = jablate.ablate(models_for_cli.jax_model, X, **kwargs)
    summary = jablate.ablate(models_for_cli.jax_model, X, reduce="mean_std", **kwargs)
    full = effects.shuffle_effects(before[:, 0], after[:, :, 0])
    reduced = effects.from_mean_std(summary[0][:, 0], summary[1][:, 0], summary[2][:, 0], 6)
    for a, b in zip(full, reduced):
        numpy.testing.assert_allclose(a, b, rtol=1e-5)
    # the population sd is not the tables' spread
    assert not numpy.allclose(summary[2][:, 0], full.spread)
    with pytest.raises(ValueError, match="n must be"):
        effects.from_mean_std(before[:, 0], before[:, 0], before[:, 0], 0)


@pytest.mark.parametrize("incremental", [False, True])
def test_ablate_annotations_mean_std_equals_the_full_result(incremental):
    import models_for_cli

    X = numpy.eye(4, dtype=numpy.float32)[numpy.random.RandomState(4).randint(4, size=(3,
        60))].transpose(0, 2, 1)
    ann = numpy.array([[0, 5, 15], [2, 20, 44], [1, 0, 8], [2, 50, 60]])
    kwargs = dict(n=5, random_state=1, batch_size=8, incremental=incremental)
    for model in (models_for_cli.jax_model, models_for_cli.jax_two_heads):
        befores, afters = jablate.ablate_annotations(model, X, ann, **kwargs)
        summary = jablate.ablate_annotations(model, X, ann, reduce="mean_std", **kwargs)
        assert isinstance(summary, jablate.PerturbationAnnotationsSummaryResult)
        heads = zip(*(v if isinstance(v, list) else [v] for v in (befores, afters,
            *summary)))
        for before, after, b, mean, std in heads:
            assert b.shape == mean.shape == std.shape == before.shape
            numpy.testing.assert_array_equal(b, before)
            numpy.testing.assert_allclose(mean, numpy.asarray(after).mean(axis=2),
                rtol=1e-5, atol=1e-5)
            numpy.testing.assert_allclose(std, numpy.asarray(after).std(axis=2),
                rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="reduce must be one of"):
        jablate.ablate_annotations(models_for_cli.jax_model, X, ann, reduce="median")
    with pytest.raises(ValueError, match="reduce='mean_std' needs"):
        jablate.ablate_annotations(models_for_cli.jax_model, X, ann, reduce="mean_std",
            shuffle_fn=lambda X, start, end, n, random_state: numpy.repeat(X[:, None], n, 1))


def _hits_model(positive):
    """A model with a profile output (2 strands x 40 positions), a count and 3 tasks."""
    import jax
    import jax.numpy as jnp

    rs = numpy.random.RandomState(4)
    W = jnp.asarray(rs.normal(size=(2, 4, 5)).astype(numpy.float32))
    V = jnp.asarray(rs.normal(size=(4, 3)).astype(numpy.float32))

    def model(x):
        h = jax.lax.conv(x, W, (1,), "SAME")[:, :, 20:60]
        profile = jax.nn.softplus(h) if positive else h
        return profile, jnp.log1p(jnp.exp(h).sum((1, 2)))[:, None], x.mean(-1) @ V
    return model


@pytest.mark.parametrize("profile", ["logits", "probs"])
def test_effects_reduced_on_the_device_equal_the_materialised_ones(profile):
    """jablate hits keeps only means (DeviceEffects computes the distributions and totals
    where the model runs): its table equals hit_effects on every shuffle kept, to float32
    rounding, hits that cannot change included."""
    import pandas

    from jablate.genome.hits import DEVICE_EFFECTS, hit_effects, hit_effects_from_summary

    rs = numpy.random.RandomState(1)
    X = numpy.eye(4, dtype=numpy.float32)[:, rs.randint(0, 4, (3, 80))].transpose(1, 0, 2)
    X = numpy.ascontiguousarray(X)
    X[1, :, 30:40] = numpy.eye(4, dtype=numpy.float32)[:, [2] * 10]  # a homopolymer hit
    ann = numpy.array([[0, 10, 30], [1, 30, 40], [2, 35, 50], [0, 50, 62]])
    hits = pandas.DataFrame({"hit": range(4), "name": list("abcd")})
    counts = effects.arrangements(jablate.shuffle, X, ann)
    assert counts[1] == 1 and (numpy.delete(counts, 1) > 1).all()
    model = _hits_model(positive=profile == "probs")
    kw = dict(n=6, random_state=0, batch_size=8)
    kept = jablate.ablate_annotations(model, X, ann, **kw)
    want = hit_effects(kept, hits, profile, counts)
    summary = jablate.ablate_annotations(model, X, ann, reduce="mean_std",
                                         additional_func_kwargs=dict(func=DEVICE_EFFECTS[profile]),
                                         **kw)
    got = hit_effects_from_summary(summary, hits, 6, profile, counts)
    assert list(got.columns) == list(want.columns)
    assert "out0_jsd" in got.columns and "out2_task2_z" in got.columns
    for column in want.columns[2:]:  # a drop to the rounding of what it is a drop of
        scale = numpy.abs(want[column.replace("sum_drop", "sum_before")]).max()
        numpy.testing.assert_allclose(got[column], want[column], rtol=2e-5,
                                      atol=2e-6 * max(1.0, scale), err_msg=column)
    assert got.loc[1, "out0_jsd"] == 0 and numpy.isnan(got.loc[1, "out1_z"])
    if profile == "probs":  # negative values are no probabilities, on either path
        with pytest.raises(ValueError, match="negative values"):
            hit_effects_from_summary(jablate.ablate_annotations(
                _hits_model(positive=False), X, ann, reduce="mean_std",
                additional_func_kwargs=dict(func=DEVICE_EFFECTS["probs"]), **kw), hits, 6,
                "probs", counts)
    other = "logits" if profile == "probs" else "probs"
    with pytest.raises(ValueError, match=f"not as profile='{other}'"):
        hit_effects_from_summary(summary, hits, 6, other, counts)
    with pytest.raises(ValueError, match="profile must be one of"):
        hit_effects_from_summary(summary, hits, 6, "logit", counts)
    with pytest.raises(ValueError, match="expected \\(3, 1"):
        hit_effects_from_summary(summary, hits[:3], 6, profile, counts[:3])
    with pytest.raises(ValueError, match="layout"):
        hit_effects_from_summary(jablate.ablate_annotations(model, X, ann, reduce="mean_std",
                                                            **kw), hits, 6, profile, counts)


def test_effects_reduced_on_the_device_of_a_torch_model():
    """DeviceEffects runs on torch tensors for a model bridged from torch, and one output
    (not a tuple) gives unprefixed columns."""
    torch = pytest.importorskip("torch")
    import pandas

    from jablate.genome.hits import DEVICE_EFFECTS, hit_effects, hit_effects_from_summary

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv1d(4, 2, 5, padding=2)).eval()
    rs = numpy.random.RandomState(2)
    X = numpy.ascontiguousarray(numpy.eye(4, dtype=numpy.float32)[:, rs.randint(0, 4, (2, 60))]
                                .transpose(1, 0, 2))
    ann = numpy.array([[0, 10, 25], [1, 20, 40]])
    hits = pandas.DataFrame({"hit": [0, 1]})
    kw = dict(n=5, random_state=3, batch_size=4)
    want = hit_effects(jablate.ablate_annotations(net, X, ann, **kw), hits)
    got = hit_effects_from_summary(jablate.ablate_annotations(
        net, X, ann, reduce="mean_std", additional_func_kwargs=dict(func=DEVICE_EFFECTS["logits"]),
        **kw), hits, 5)
    assert list(got.columns) == ["hit", "sum_before", "sum_drop", "jsd"]
    for column in got.columns[1:]:
        scale = numpy.abs(want[column.replace("sum_drop", "sum_before")]).max()
        numpy.testing.assert_allclose(got[column], want[column], rtol=2e-5,
                                      atol=2e-6 * max(1.0, scale), err_msg=column)
