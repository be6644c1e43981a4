"""The incremental engine inside ablate / ablate_annotations: on and off agree."""

import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy
import pytest

import jablate
from jablate.incremental import run as incremental_engine
from jablate.incremental.rules import break_rule

A, L = 4, 96
rng = numpy.random.default_rng(0)
X = numpy.eye(A, dtype=numpy.float32)[:, rng.integers(0, A, (6, L))].transpose(1, 0, 2).copy()
X[1, :, 40:44] = 0  # unknown bases


class Tower(nn.Module):
    """Dilated convs, a profile head and a count head, with an extra input."""

    @nn.compact
    def __call__(self, x, bias):
        h = nn.relu(nn.Conv(8, (7,), padding="SAME")(x.transpose(0, 2, 1)))
        h = h + nn.relu(nn.Conv(8, (3,), kernel_dilation=(4,), padding="SAME")(h))
        profile = nn.Conv(2, (9,), padding="SAME")(h)[:, 8:-8, :]
        counts = nn.Dense(1)(h.mean(1)) + bias
        return profile, counts


@pytest.fixture(scope="module")
def tower():
    m = Tower()
    return m.bind(m.init(jax.random.key(0), X[:1], numpy.zeros((1, 1), numpy.float32)))


BIAS = (numpy.arange(6, dtype=numpy.float32)[:, None],)
ANN = numpy.array([[0, 0, 1], [1, 30, 50], [2, 95, 96], [3, 0, L], [4, 60, 96], [5, 10, 17],
                   [1, 0, 20], [0, 77, 93]])


def _agree(on, off):
    for a, b in zip(jax.tree.leaves(on), jax.tree.leaves(off)):
        a, b = numpy.asarray(a), numpy.asarray(b)
        numpy.testing.assert_allclose(a, b, atol=1e-5 * numpy.abs(b).max(), rtol=0)


@pytest.mark.parametrize("shuffle_fn, random_state", [
    (jablate.shuffle, 3), (jablate.shuffle, jax.random.key(3)),
    (jablate.dinucleotide_shuffle, jax.random.key(4))])
def test_annotations_with_mixed_widths_agree(tower, shuffle_fn, random_state):
    ann = ANN if shuffle_fn is jablate.shuffle else ANN[(ANN[:, 2] - ANN[:, 1]) >= 3]
    kw = dict(n=3, shuffle_fn=shuffle_fn, random_state=random_state, args=BIAS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jablate.api.ersatz.UnchangedRegionWarning)
        on = jablate.ablate_annotations(tower, X, ann, incremental=True, **kw)
        off = jablate.ablate_annotations(tower, X, ann, incremental=False, **kw)
    _agree(on, off)


def test_ablate_agrees_and_does_not_depend_on_batch_size(tower):
    kw = dict(n=4, random_state=jax.random.key(1), args=BIAS)
    on = jablate.ablate(tower, X, 20, 45, incremental=True, **kw)
    off = jablate.ablate(tower, X, 20, 45, incremental=False, **kw)
    _agree(on, off)
    small = jablate.ablate(tower, X, 20, 45, incremental=True, batch_size=2, **kw)
    _agree(small, on)


def test_auto_uses_the_engine_only_when_it_pays():
    mean_model = lambda x: jnp.cumsum(x[:, 0], -1)  # every output position depends on
    bound = jablate.engine.stream.Model(*jablate.models.runner.runner_for(mean_model))
    many = numpy.full(4096, 5)
    choice = incremental_engine.choose(bound, jnp.asarray(X), (), many, "auto", 6)
    assert not choice.use and "the full path's time on cpu" in choice.reason
    few = incremental_engine.choose(bound, jnp.asarray(X), (), many[:100], "auto", 6)
    assert not few.use and "too few" in few.reason
    conv = lambda x: jax.nn.relu(jax.lax.conv(x, jnp.ones((3, A, 5)), (1,), "SAME")).mean(-1)
    bound = jablate.engine.stream.Model(*jablate.models.runner.runner_for(conv))
    assert incremental_engine.choose(bound, jnp.asarray(X), (), many, "auto", 6).use


def test_the_cost_model_is_the_backends():
    # the incremental path: items windowed passes at the backend's efficiency, plus one
    # reference pass per sequence; the full path: items full passes
    fraction = incremental_engine.predicted_time_fraction
    assert fraction(100.0, 25.0, 2000, 100, "cpu") == pytest.approx(0.25 + 0.05)
    assert fraction(100.0, 25.0, 2000, 100, "gpu") == pytest.approx(6 * 0.25 + 0.05)
    assert fraction(100.0, 25.0, 2000, 100, "tpu") == fraction(100.0, 25.0, 2000, 100, "gpu")
    # a 100-bp BPNet ablation changes about half of its positions: the engine on the CPU,
    # the full path on a GPU (measured on an H200: 3x slower incrementally)
    assert fraction(1.0, 0.5, 10240, 512, "cpu") <= incremental_engine.AUTO_MAX_TIME_FRACTION
    assert fraction(1.0, 0.5, 10240, 512, "gpu") > incremental_engine.AUTO_MAX_TIME_FRACTION


def test_auto_on_a_gpu_chooses_by_the_gpus_cost_model(monkeypatch):
    conv = lambda x: jax.nn.relu(jax.lax.conv(x, jnp.ones((3, A, 5)), (1,), "SAME")).mean(-1)
    bound = jablate.engine.stream.Model(*jablate.models.runner.runner_for(conv))
    many = numpy.full(4096, 5)
    cpu = incremental_engine.choose(bound, jnp.asarray(X), (), many, "auto", sequences=6)
    summary = incremental_engine.evaluator(bound, jnp.asarray(X), (), 8)["inc"].summary
    gpu = incremental_engine.choose(bound, jnp.asarray(X), (), many, "auto", sequences=6,
                                    devices=[type("Device", (), {"platform": "gpu"})()])
    assert cpu.use and "on cpu" in cpu.reason and "on gpu" in gpu.reason
    expected = incremental_engine.predicted_time_fraction(
        summary.flops_full, summary.flops_incremental, 4096, 6, "gpu")
    assert gpu.use == (expected <= incremental_engine.AUTO_MAX_TIME_FRACTION)
    monkeypatch.setitem(incremental_engine.EFFICIENCY, "gpu", 1e-3)  # a hopeless GPU
    assert not incremental_engine.choose(bound, jnp.asarray(X), (), many, "auto", sequences=6,
                                         devices=[type("D", (), {"platform": "gpu"})()]).use


def test_a_small_job_gets_the_engine_when_it_is_warm(tower):
    kw = dict(n=3, random_state=jax.random.key(7), args=BIAS)
    ann = ANN[5:6]  # 3 items: far below AUTO_MIN_ITEMS
    widths = ann[:, 2] - ann[:, 1]
    bound = jablate.engine.stream.Model(*jablate.models.runner.runner_for(tower))
    Xj = jnp.asarray(X)
    args = tuple(jnp.asarray(a) for a in BIAS)
    cold = incremental_engine.choose(bound, Xj, args, numpy.repeat(widths, 3), "auto",
                                     sequences=1)
    assert not cold.use and "too few" in cold.reason
    jablate.ablate_annotations(tower, X, ann, incremental=True, **kw)  # compiles its programs
    warm = incremental_engine.choose(bound, Xj, args, numpy.repeat(widths, 3), "auto",
                                     sequences=1)
    summary = incremental_engine.evaluator(bound, Xj, args, int(widths[0]))["inc"].summary
    predicted = incremental_engine.predicted_time_fraction(
        summary.flops_full, summary.flops_incremental, 3, 1, "cpu")
    assert predicted <= incremental_engine.AUTO_MAX_TIME_FRACTION  # 0.55: it wins
    assert warm.use and f"predicted {predicted:.2f}x" in warm.reason


def test_a_broken_rule_is_caught_at_run_time_and_the_full_path_finishes(tower):
    kw = dict(n=3, random_state=jax.random.key(2), args=BIAS)
    off = jablate.ablate_annotations(tower, X, ANN[1:2], incremental=False, **kw)
    jablate.models.runner._by_structure.clear()  # analyse afresh, under the broken rule
    with break_rule("conv_general_dilated"):
        with pytest.warns(incremental_engine.IncrementalMismatchWarning,
                          match="broken rule for conv_general_dilated") as record:
            on = jablate.ablate_annotations(tower, X, ANN[1:2], incremental=True, **kw)
    jablate.models.runner._by_structure.clear()
    assert record[0].filename == __file__  # the warning names the user's call
    for a, b in zip(jax.tree.leaves(on), jax.tree.leaves(off)):
        numpy.testing.assert_array_equal(a, b)


def _blind(y):
    """A ``func`` that hides every difference: zeros of the outputs' shapes."""
    return jax.tree.map(lambda v: v * 0, y)


def test_the_check_compares_the_model_outputs_not_what_func_makes_of_them(tower):
    kw = dict(n=3, random_state=jax.random.key(2), args=BIAS,
              additional_func_kwargs=dict(func=_blind))
    jablate.models.runner._by_structure.clear()  # analyse afresh, under the broken rule
    with break_rule("conv_general_dilated"):
        with pytest.warns(incremental_engine.IncrementalMismatchWarning,
                          match="broken rule for conv_general_dilated"):
            jablate.ablate_annotations(tower, X, ANN[1:2], incremental=True, **kw)
    jablate.models.runner._by_structure.clear()
    with warnings.catch_warnings():  # the rule as it is: no warning, the same zeros
        warnings.simplefilter("error", incremental_engine.IncrementalMismatchWarning)
        on = jablate.ablate_annotations(tower, X, ANN[1:2], incremental=True, **kw)
    for leaf in jax.tree.leaves(on):
        assert not numpy.asarray(leaf).any()


def test_one_analysis_and_program_per_width_bucket():
    traces = []

    def model(x):
        traces.append(x.shape)
        return jax.nn.relu(jax.lax.conv(x, jnp.ones((3, A, 5)), (1,), "SAME")).mean(-1)

    ann = numpy.array([[0, 5, 10], [1, 20, 27], [2, 50, 58]])  # widths 5, 7, 8: bucket 8
    for seed in range(2):
        jablate.ablate_annotations(model, X, ann, n=2, random_state=seed, incremental=True)
        if seed == 0:
            first = len(traces)
    assert len(traces) == first  # the second call (same shapes, other seed) traces nothing


def test_bad_switches_are_value_errors():
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(A * L, 1))
    with pytest.raises(ValueError, match="runs in torch; translate it"):
        jablate.ablate(module, X, 0, 5, n=2, random_state=0, incremental=True)
    foreign = lambda X, **kw: numpy.repeat(X[:, None], kw["n"], axis=1)
    with pytest.raises(ValueError, match="incremental=True needs jablate's own predict"):
        jablate.ablate(lambda x: x.sum((1, 2)), X, 0, 5, n=2, shuffle_fn=foreign,
                       incremental=True)
    with pytest.raises(ValueError, match="incremental=True needs jablate's own predict"):
        jablate.ablate_annotations(lambda x: x.sum((1, 2)), X, ANN[:1], n=2,
                                   shuffle_fn=foreign, incremental=True)
    for bad in ("yes", 1, None):
        with pytest.raises(ValueError, match="incremental must be 'auto', True or False"):
            jablate.ablate(lambda x: x.sum((1, 2)), X, 0, 5, incremental=bad)


def test_report_names_the_layers_and_the_saving(tower):
    conv = lambda x: jax.nn.relu(jax.lax.conv(x, jnp.ones((3, A, 5)), (1,), "SAME")).mean(-1)
    table = jablate.incremental_report(conv, X, 8)
    assert "conv_general_dilated" in table and "incremental" in table and "cache" in table
    with pytest.raises(ValueError, match="width must be at most"):
        jablate.incremental_report(conv, X, L + 1)


@pytest.mark.parametrize("kind", ["bpnet", "chrombpnet"])
def test_translated_bpnet_lite_models_agree(kind):
    from conftest import require

    torch = require("torch")
    bpnetlite = require("bpnetlite")
    torch.manual_seed(0)
    if kind == "bpnet":
        model = bpnetlite.BPNet(n_filters=4, n_layers=1, n_control_tracks=0, verbose=False)
    else:
        bias = bpnetlite.BPNet(n_filters=4, n_layers=1, n_outputs=1, n_control_tracks=0,
                               verbose=False)
        acc = bpnetlite.BPNet(n_filters=4, n_layers=1, n_outputs=1, n_control_tracks=0,
                              verbose=False)
        model = bpnetlite.chrombpnet.ChromBPNet(bias, acc)
    model = model.eval()
    Xb = numpy.eye(A, dtype=numpy.float32)[:, rng.integers(0, A, (3, 250))].transpose(1, 0, 2)
    Xb = torch.from_numpy(Xb.copy())
    ann = numpy.array([[0, 0, 16], [1, 115, 127], [2, 234, 250], [1, 100, 116]])  # bucket 16
    kw = dict(n=2, random_state=jax.random.key(5), backend="jax")
    on = jablate.ablate_annotations(model, Xb, ann, incremental=True, **kw)
    off = jablate.ablate_annotations(model, Xb, ann, incremental=False, **kw)
    _agree(on, off)
    table = jablate.incremental_report(model, Xb, 32)  # convolutions, not their lowering
    assert "conv_general_dilated" in table


def test_results_do_not_depend_on_the_chunking_of_the_cache(tower, monkeypatch):
    kw = dict(n=2, random_state=jax.random.key(6), args=BIAS, incremental=True)
    whole = jablate.ablate_annotations(tower, X, ANN, **kw)
    monkeypatch.setattr(incremental_engine, "MEMORY_BUDGET", 1)  # one sequence per chunk
    chunked = jablate.ablate_annotations(tower, X, ANN, **kw)
    # The reference passes run at the chunk's batch shape, which XLA may compile with
    # another summation order: equal to float32 rounding, not bit for bit.
    for a, b in zip(jax.tree.leaves(chunked), jax.tree.leaves(whole)):
        numpy.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * numpy.abs(b).max())


def test_mean_std_runs_incrementally_and_agrees(tower, monkeypatch):
    """reduce='mean_std' on the engine: the same statistics as the full path, also when
    the caches are chunked, and the same as the statistics of the kept shuffles."""
    kw = dict(n=5, random_state=jax.random.key(7), args=BIAS, reduce="mean_std")
    calls = []
    real = incremental_engine.run
    monkeypatch.setattr(incremental_engine, "run", lambda *a, **k: calls.append(1) or real(*a, **k))
    on = jablate.ablate(tower, X, 30, 52, incremental=True, **kw)
    assert calls, "the incremental engine did not run"
    off = jablate.ablate(tower, X, 30, 52, incremental=False, **kw)
    _agree_summary(on, off)
    kept = jablate.ablate(tower, X, 30, 52, incremental=True,
                          **{k: v for k, v in kw.items() if k != "reduce"})
    for after, mean, std in zip(kept.y_after, on.y_after_mean, on.y_after_std):
        after = numpy.asarray(after, numpy.float64)
        numpy.testing.assert_allclose(mean, after.mean(1), rtol=0,
                                      atol=1e-5 * numpy.abs(after).max())
        numpy.testing.assert_allclose(std, after.std(1), rtol=0,
                                      atol=1e-4 * numpy.abs(after).max())
    monkeypatch.setattr(incremental_engine, "MEMORY_BUDGET", 1)  # one sequence per chunk
    _agree_summary(jablate.ablate(tower, X, 30, 52, incremental=True, **kw), on)


def _spy_on_reads(monkeypatch, modules, note):
    """Every ``numpy.asarray``, ``numpy.array`` (as ``modules`` call them) and
    ``jax.device_get`` of JAX arrays is passed to ``note(frame)``, ``frame`` the caller's;
    returns the list of what ``note`` returned other than None, filled as the calls come."""
    import sys
    import types

    reads = []

    def spy(convert):
        def spied(x, *args, **kwargs):
            if any(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(x)):
                seen = note(sys._getframe(1))
                if seen is not None:
                    reads.append(seen)
            return convert(x, *args, **kwargs)
        return spied

    spying = types.SimpleNamespace(**vars(numpy))
    spying.asarray, spying.array = spy(numpy.asarray), spy(numpy.array)
    for module in modules:
        monkeypatch.setattr(module, "numpy", spying)
    monkeypatch.setattr(jax, "device_get", spy(jax.device_get))
    return reads


def _frames(frame):
    while frame is not None:
        yield frame
        frame = frame.f_back


def test_a_mean_std_run_reads_nothing_back_until_every_batch_is_dispatched(tower, monkeypatch):
    """With reduce='mean_std' the engine never waits for the device while it dispatches:
    the predictions before shuffling stay there, and each bucket's check is read when
    every bucket's batches are queued. Every conversion of a JAX array to numpy by the
    engine's modules inside the dispatch loop (``_bucket``) is recorded; there must be
    none, over several chunks and width buckets. The results agree with the full path."""
    from jablate.engine import executor

    dispatching = incremental_engine._bucket.__code__
    reads = _spy_on_reads(monkeypatch, (incremental_engine, executor), lambda frame: (
        True if any(f.f_code is dispatching for f in _frames(frame)) else None))
    monkeypatch.setattr(incremental_engine, "MEMORY_BUDGET", 1)  # one sequence per chunk
    kw = dict(n=3, random_state=jax.random.key(8), args=BIAS, reduce="mean_std")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jablate.api.ersatz.UnchangedRegionWarning)
        on = jablate.ablate_annotations(tower, X, ANN, incremental=True, **kw)
        assert reads == []
        monkeypatch.undo()
        off = jablate.ablate_annotations(tower, X, ANN, incremental=False, **kw)
    _agree_summary(on, off)


@pytest.mark.parametrize("incremental", [False, True])
def test_mean_std_with_a_jax_input_reads_back_only_counts_and_checks(tower, monkeypatch,
                                                                     incremental):
    """``reduce='mean_std'`` with JAX inputs returns device arrays and waits for nothing
    but what it must read: the regions' arrangement counts (computed on the host backend,
    ``ersatz._chunked``), a host ``X`` for its one-hot check and, on the engine, each
    bucket's check (``agree``), whose batch is the first of its bucket. Every numpy
    conversion and ``device_get`` of a JAX array by jablate's modules during the call is
    recorded with the jablate functions on its stack."""
    import importlib
    import pkgutil

    def module(name):  # the torch bridge's modules need torch, which may be missing here
        try:
            return importlib.import_module(name)
        except ImportError:
            return None

    modules = [m for m in (module(info.name) for info in
                           pkgutil.walk_packages(jablate.__path__, "jablate."))
               if getattr(m, "numpy", None) is numpy]
    reads = _spy_on_reads(monkeypatch, modules, lambda frame: {
        f.f_code.co_name for f in _frames(frame)
        if f.f_globals.get("__name__", "").startswith("jablate")})
    kw = dict(n=4, random_state=jax.random.key(9), args=(jnp.asarray(BIAS[0]),),
              reduce="mean_std")
    on = jablate.ablate(tower, jnp.asarray(X), 30, 52, incremental=incremental, **kw)
    monkeypatch.undo()
    assert reads, "nothing was counted"
    # X is on the host here: the one-hot check reads it in place (numpy, no program per N);
    # an accelerator's X is checked where it is
    allowed = {"_chunked", "_one_hot_flags"} | ({"agree"} if incremental else set())
    assert all(names & allowed for names in reads), [sorted(n) for n in reads]
    assert incremental == any("agree" in names for names in reads)  # the engine ran
    assert all(isinstance(a, jax.Array) for a in jax.tree.leaves(tuple(on)))
    _agree_summary(on, jablate.ablate(tower, X, 30, 52, incremental=False, **kw))


def _agree_summary(on, off):
    """Means and standard deviations agree within 1e-5 of each output's scale (a standard
    deviation much smaller than its output carries the output's rounding)."""
    for parts in zip(on[0], off[0], on[1], off[1], on[2], off[2]):  # before, mean, std
        scale = numpy.abs(numpy.asarray(parts[1])).max()
        for a, b in zip(parts[::2], parts[1::2]):
            numpy.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * scale)


def _counts_only(y):
    """predict's ``func``: keep the count head, squared (a non-linear post-processing)."""
    return y[1] ** 2


def test_predicts_func_runs_on_the_engine(tower, monkeypatch):
    calls = []
    real = incremental_engine.run
    monkeypatch.setattr(incremental_engine, "run", lambda *a, **k: calls.append(1) or real(*a, **k))
    kw = dict(n=3, random_state=jax.random.key(8), args=BIAS,
              additional_func_kwargs=dict(func=_counts_only))
    on = jablate.ablate_annotations(tower, X, ANN[1:6], incremental=True, **kw)
    assert calls, "the incremental engine did not run"
    off = jablate.ablate_annotations(tower, X, ANN[1:6], incremental=False, **kw)
    assert numpy.asarray(on.y_afters).shape == (5, 1, 3, 1)
    _agree(on, off)
    whole = jablate.ablate_annotations(tower, X, ANN[1:6], incremental=False,
                                       **{k: v for k, v in kw.items()
                                          if k != "additional_func_kwargs"})
    numpy.testing.assert_allclose(numpy.asarray(off.y_afters),
                                  numpy.asarray(whole.y_afters[1]) ** 2, rtol=1e-6)


# --- the runtime check on accelerators (issue 19, item 2) ---------------------------------
# XLA's default float32 precision on a GPU (TF32) makes the full and windowed paths differ by
# about 1e-3 of the output's scale, so there the check runs programs of its own at full
# float32 precision. The CPU computes float32 exactly whatever the setting, so these tests
# pretend to be on an accelerator (exact_float32 -> False) and stand for TF32 by perturbing
# what the run's own (default-precision) incremental programs return by 1e-3.


def _spy_on_the_incremental_programs(monkeypatch, perturbation=0.0):
    """Record the matmul precision every incremental program runs under; assert that the
    ones under 'highest' lower with HIGHEST precision; perturb the outputs of the others."""
    seen = []
    real = incremental_engine.evaluator

    def spying(model, X, args, width):
        ev = dict(real(model, X, args, width))
        for name in ("reference", "step"):
            def spy(*a, _program=ev[name], _name=name, **k):
                precision = jax.config.jax_default_matmul_precision
                seen.append((_name, precision))
                out = _program(*a, **k)
                if precision == "highest":
                    text = _program.lower(*a, **k).as_text()
                    assert "precision HIGHEST" in text and "precision DEFAULT" not in text
                elif _name == "step" and perturbation:
                    out = jax.tree.map(lambda y: y * (1 + perturbation), out)
                return out
            ev[name] = spy
        return ev

    monkeypatch.setattr(incremental_engine, "evaluator", spying)
    return seen


def test_on_an_accelerator_the_check_runs_at_full_precision_and_ignores_rounding(
        tower, monkeypatch):
    kw = dict(n=3, random_state=jax.random.key(2), args=BIAS)
    off = jablate.ablate_annotations(tower, X, ANN[1:3], incremental=False, **kw)
    monkeypatch.setattr(incremental_engine, "exact_float32", lambda devices: False)
    seen = _spy_on_the_incremental_programs(monkeypatch, perturbation=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", incremental_engine.IncrementalMismatchWarning)
        on = jablate.ablate_annotations(tower, X, ANN[1:3], incremental=True, **kw)
    # the check ran its own reference pass and step at full precision, the run its own
    assert ("reference", "highest") in seen and ("step", "highest") in seen
    assert any(name == "step" and p != "highest" for name, p in seen)
    # the run kept the incremental results (the stand-in for TF32's rounding is in them)
    y_after_on, y_after_off = numpy.asarray(on[1][1]), numpy.asarray(off[1][1])
    numpy.testing.assert_allclose(y_after_on, y_after_off * (1 + 1e-3), rtol=1e-5, atol=1e-6)


def test_on_the_cpu_the_check_compares_the_runs_own_programs(tower, monkeypatch):
    # the same 1e-3 deviation with the CPU's rule: the check sees it and the run falls back
    kw = dict(n=3, random_state=jax.random.key(2), args=BIAS)
    seen = _spy_on_the_incremental_programs(monkeypatch, perturbation=1e-3)
    with pytest.warns(incremental_engine.IncrementalMismatchWarning):
        jablate.ablate_annotations(tower, X, ANN[1:3], incremental=True, **kw)
    assert seen and all(p != "highest" for _, p in seen)


def test_on_an_accelerator_a_broken_rule_is_still_caught(tower, monkeypatch):
    kw = dict(n=3, random_state=jax.random.key(2), args=BIAS)
    off = jablate.ablate_annotations(tower, X, ANN[1:2], incremental=False, **kw)
    monkeypatch.setattr(incremental_engine, "exact_float32", lambda devices: False)
    jablate.models.runner._by_structure.clear()  # analyse afresh, under the broken rule
    try:
        with break_rule("conv_general_dilated"):
            with pytest.warns(incremental_engine.IncrementalMismatchWarning,
                              match="broken rule for conv_general_dilated"):
                on = jablate.ablate_annotations(tower, X, ANN[1:2], incremental=True, **kw)
    finally:
        jablate.models.runner._by_structure.clear()
    for a, b in zip(jax.tree.leaves(on), jax.tree.leaves(off)):
        numpy.testing.assert_array_equal(a, b)


# --- half precision: the check's tolerance follows the outputs' dtype ----------------------

_R16 = numpy.random.default_rng(5)
W16, B16, D16 = (jnp.asarray(_R16.normal(size=shape) * scale, jnp.bfloat16)
                 for shape, scale in (((8, A, 7), 0.3), ((8, 1), 0.1), ((8, 1), 0.3)))
X400 = numpy.eye(A, dtype=numpy.float32)[:, _R16.integers(0, A, (8, 400))].transpose(1, 0, 2)


def bfloat16_model(x):
    """A conv with a bias, ReLU, max over positions and a dense layer, all in bfloat16."""
    h = jax.lax.conv_general_dilated(x.astype(jnp.bfloat16), W16, (1,), [(3, 3)]) + B16
    return jax.nn.relu(h).max(-1) @ D16


def test_check_tolerance_follows_the_dtype():
    from jablate.engine import executor

    assert executor.check_tolerance("float32") == executor.CHECK_TOLERANCE == 1e-4
    assert executor.check_tolerance("float64") == 1e-4 and executor.check_tolerance("int32") == 1e-4
    assert executor.check_tolerance("float16") == 4 * 2.0 ** -10
    assert executor.check_tolerance("bfloat16") == 4 * 2.0 ** -7
    f = numpy.array([1.0, -0.5], dtype=jnp.bfloat16)
    assert executor.agree([f + numpy.array([2.0 ** -7, 0], jnp.bfloat16)], [f])   # one ulp
    assert not executor.agree([f * numpy.array(1.1, jnp.bfloat16)], [f])          # 10%
    assert not executor.agree([f.astype(numpy.float32) + 1e-3], [f.astype(numpy.float32)])


def test_in_bfloat16_the_check_passes_rounding_and_catches_a_broken_rule(monkeypatch):
    kw = dict(n=4, random_state=jax.random.key(3))
    off = jablate.ablate(bfloat16_model, X400, 150, 250, incremental=False, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", incremental_engine.IncrementalMismatchWarning)
        on = jablate.ablate(bfloat16_model, X400, 150, 250, incremental=True, **kw)
    for a, b in zip(on, off):
        a, b = numpy.asarray(a, numpy.float64), numpy.asarray(b, numpy.float64)
        numpy.testing.assert_allclose(a, b, rtol=0, atol=4 * 2.0 ** -7 * numpy.abs(b).max())
    # the premise: the windowed and whole programs round differently in bfloat16, beyond
    # float32's tolerance (which sent such runs to the full path)
    from jablate.engine import executor
    monkeypatch.setattr(executor, "check_tolerance", lambda name: executor.CHECK_TOLERANCE)
    with pytest.warns(incremental_engine.IncrementalMismatchWarning):
        jablate.ablate(bfloat16_model, X400, 150, 250, incremental=True, **kw)
    monkeypatch.undo()
    with break_rule("conv_general_dilated"):  # a new callable: analysed afresh
        with pytest.warns(incremental_engine.IncrementalMismatchWarning,
                          match="broken rule for conv_general_dilated"):
            broken = jablate.ablate(lambda x: bfloat16_model(x), X400, 150, 250,
                                    incremental=True, **kw)
    for a, b in zip(broken, off):
        numpy.testing.assert_array_equal(a, b)  # finished on the full path
