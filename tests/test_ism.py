"""saturation_mutagenesis: parity with tangermeme, brute force, the incremental engine, the
pure core ism_fn, one compile per batch shape, models freed, bad inputs."""

import gc
import weakref

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy
import pytest
from conftest import require

import jablate
from jablate.attribution import ism
from jablate.incremental.analysis import analyze
from jablate.incremental.rules import break_rule
from jablate.incremental.run import IncrementalMismatchWarning

torch = require("torch")
tangermeme_ism = require("tangermeme.saturation_mutagenesis")
bpnet = require("bpnetlite.bpnet")

A = 4
rng = numpy.random.default_rng(0)


def one_hot(n, length, unknown=True):
    X = numpy.eye(A, dtype=numpy.float32)[:, rng.integers(0, A, (n, length))]
    X = X.transpose(1, 0, 2).copy()
    if unknown:
        X[1, :, 5:8] = 0  # unknown bases: every character is a real substitution there
        X[-1, :, -1] = 0
    return X


def close(a, b, scale=None, tol=1e-5):
    """``a`` and ``b`` agree within ``tol`` of ``scale`` (default: ``b``'s largest value)."""
    a, b = numpy.asarray(a, numpy.float64), numpy.asarray(b, numpy.float64)
    assert a.shape == b.shape
    scale = numpy.abs(b).max() if scale is None else scale
    err = numpy.abs(a - b).max()
    assert err <= tol * max(scale, 1e-12), (err, scale)


# --- models -----------------------------------------------------------------------------------


class ConvMeanDense(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(A, 8, 7, padding=3)
        self.dense = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.dense(torch.relu(self.conv(x)).mean(-1))


class DeepSEALike(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv1d(A, 8, 8), torch.nn.ReLU(), torch.nn.MaxPool1d(4, 4),
            torch.nn.Conv1d(8, 8, 8), torch.nn.ReLU(), torch.nn.MaxPool1d(4, 4),
            torch.nn.Flatten(), torch.nn.Linear(32, 16), torch.nn.ReLU(),
            torch.nn.Linear(16, 3), torch.nn.Sigmoid())

    def forward(self, x):
        return self.body(x)


class Logits(torch.nn.Module):
    """BPNet's profile logits, (N, 2, L'): ``target`` picks a strand, positions averaged."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)[0]


def small_bpnet():
    torch.manual_seed(0)
    return bpnet.BPNet(n_filters=8, n_layers=3, n_control_tracks=0, verbose=False).eval()


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    net = small_bpnet()
    return {"conv": (ConvMeanDense().eval(), 60),
            "deepsea": (DeepSEALike().eval(), 100),
            "bpnet_counts": (bpnet.CountWrapper(net).eval(), 140),
            "bpnet_profile": (bpnet.ProfileWrapper(net).eval(), 140),
            "bpnet_logits": (Logits(net).eval(), 140)}


# --- parity with tangermeme -------------------------------------------------------------------


def close_attr(a, b, y0):
    """Attributions are differences of outputs: float32 rounds them on the outputs' scale."""
    close(a, b, scale=max(float(numpy.abs(numpy.asarray(y0)).max()),
                          float(numpy.abs(numpy.asarray(b)).max())))


@pytest.mark.parametrize("name", ["conv", "deepsea", "bpnet_counts", "bpnet_profile",
                                  "bpnet_logits"])
def test_matches_tangermeme(models, name):
    model, length = models[name]
    X = torch.tensor(one_hot(2, length))
    raw = tangermeme_ism.saturation_mutagenesis(model, X, raw_outputs=True, fast=False)
    target = 0 if raw.y0.shape[1] == 1 else 1
    span = dict(start=length - 25, end=-4, target=target, hypothetical=True)  # N at the end
    direct = tangermeme_ism.saturation_mutagenesis(model, X, fast=False, **span)
    for incremental in (False, True):
        got = jablate.saturation_mutagenesis(model, X, raw_outputs=True, incremental=incremental)
        assert isinstance(got, jablate.SaturationMutagenesisRawResult)
        close(got.y0, raw.y0)
        close(got.y_hat, raw.y_hat)
        got = jablate.saturation_mutagenesis(model, X, incremental=incremental, **span)
        assert isinstance(got, torch.Tensor)
        close_attr(got, direct, raw.y0)
        # tangermeme's attribution of other spans and targets, from its raw outputs
        for kw in (dict(), dict(target=target), dict(hypothetical=True),
                   dict(start=4, end=37, target=slice(0, 2))):
            start, end = kw.get("start", 0), kw.get("end", length)
            expected = tangermeme_ism._attribution_score(raw.y0, raw.y_hat[:, :, start:end],
                                                         kw.get("target"))
            if not kw.get("hypothetical"):
                expected = X[:, :, start:end] * expected
            got = jablate.saturation_mutagenesis(model, X, incremental=incremental, **kw)
            close_attr(got, expected, raw.y0)


def test_bpnet_several_outputs(models):
    net = models["bpnet_counts"][0].model
    X = torch.tensor(one_hot(2, 140))
    expected = tangermeme_ism.saturation_mutagenesis(net, X, raw_outputs=True, fast=False)
    got = jablate.saturation_mutagenesis(net, X, raw_outputs=True, incremental=True)
    assert isinstance(got.y0, list) and isinstance(got.y_hat, list)
    for a, b in zip(got.y0 + got.y_hat, expected.y0 + expected.y_hat):
        close(a, b)
    with pytest.raises(ValueError, match="raw_outputs=True"):
        jablate.saturation_mutagenesis(net, X)


def test_backend_torch_is_tangermeme(models):
    model, length = models["conv"]
    X = one_hot(2, length)
    got = jablate.saturation_mutagenesis(model, X, backend="torch", incremental=False)
    expected = tangermeme_ism.saturation_mutagenesis(model, torch.tensor(X), fast=False)
    assert isinstance(got, numpy.ndarray)
    numpy.testing.assert_array_equal(got, expected.numpy())
    with pytest.raises(ValueError, match="backend='torch' needs a torch.nn.Module"):
        jablate.saturation_mutagenesis(lambda x: x.sum((1, 2)), X, backend="torch")


# --- JAX models: brute force, engine on/off, the pure core -----------------------------------

K1 = jnp.asarray(rng.normal(size=(6, A, 5)).astype(numpy.float32))
K2 = jnp.asarray(rng.normal(size=(6, 2)).astype(numpy.float32))


def conv_model(x):
    h = jax.nn.relu(jax.lax.conv_general_dilated(x, K1, (1,), "SAME"))
    return h.mean(-1) @ K2


def test_brute_force():
    X = one_hot(2, 12)
    got = jablate.saturation_mutagenesis(conv_model, X, raw_outputs=True, start=1, end=11)
    attr = jablate.saturation_mutagenesis(conv_model, X, start=1, end=11, target=1)
    hyp = jablate.saturation_mutagenesis(conv_model, X, start=1, end=11, hypothetical=True)
    y0 = numpy.asarray(conv_model(X))
    y_hat = numpy.zeros((2, A, 10, 2), numpy.float32)
    for i in range(2):
        for c in range(A):
            for p in range(1, 11):
                x = X[i].copy()
                x[:, p] = 0
                x[c, p] = 1
                y_hat[i, c, p - 1] = numpy.asarray(conv_model(x[None]))[0]
    close(got.y0, y0)
    close(got.y_hat, y_hat)
    d = y_hat - y0[:, None, None]
    d1 = d[..., 1] - d[..., 1].mean(1, keepdims=True)
    close_attr(attr, d1 * X[:, :, 1:11], y0)
    close_attr(hyp, (d - d.mean(1, keepdims=True)).mean(-1), y0)


class Tower(nn.Module):
    """Dilated convs and a count head, with an extra input."""

    @nn.compact
    def __call__(self, x, bias):
        h = nn.relu(nn.Conv(8, (7,), padding="SAME")(x.transpose(0, 2, 1)))
        h = h + nn.relu(nn.Conv(8, (3,), kernel_dilation=(4,), padding="SAME")(h))
        return nn.Dense(2)(h.mean(1)) + bias


@pytest.fixture(scope="module")
def tower():
    m = Tower()
    return m.bind(m.init(jax.random.key(0), one_hot(1, 64, False), numpy.zeros((1, 2),
                                                                                 numpy.float32)))


def test_incremental_agrees_and_batch_size_does_not_matter(tower):
    X = one_hot(5, 64)
    bias = (numpy.arange(10, dtype=numpy.float32).reshape(5, 2),)
    for kw in (dict(), dict(raw_outputs=True), dict(start=20, end=50, hypothetical=True)):
        off = jablate.saturation_mutagenesis(tower, X, args=bias, incremental=False, **kw)
        on = jablate.saturation_mutagenesis(tower, X, args=bias, incremental=True, **kw)
        small = jablate.saturation_mutagenesis(tower, X, args=bias, incremental=False,
                                               batch_size=7, **kw)
        y0 = tower(X, *bias)
        for a, b, c in zip(jax.tree.leaves(on), jax.tree.leaves(small), jax.tree.leaves(off)):
            close_attr(a, c, y0)
            close_attr(b, c, y0)


def test_auto_uses_the_engine_on_large_runs(tower, monkeypatch):
    X = one_hot(4, 64)
    bias = (numpy.zeros((4, 2), numpy.float32),)
    chosen = []
    real = ism._run_incremental
    monkeypatch.setattr(ism, "_run_incremental", lambda *a: chosen.append(1) or real(*a))
    model = lambda x, b: tower(x, b)  # a fresh callable: cold, its programs never ran
    jablate.saturation_mutagenesis(model, X, args=bias)  # under 2,048 substitutions, cold
    assert not chosen
    with monkeypatch.context() as m:
        m.setattr(ism, "AUTO_MIN_ITEMS", 100)
        jablate.saturation_mutagenesis(model, X, args=bias)
    assert chosen == [1]
    # warm now (analysed and compiled): the same small run gets the engine, which wins
    jablate.saturation_mutagenesis(model, X, args=bias)
    assert chosen == [1, 1]


@pytest.mark.parametrize("kw", [dict(), dict(target=0, start=3, end=-4),
                                dict(hypothetical=True), dict(raw_outputs=True)])
def test_ism_fn_is_the_same_computation(tower, kw):
    X = one_hot(3, 64)
    bias = numpy.arange(6, dtype=numpy.float32).reshape(3, 2)
    apply = lambda params, x, b: Tower().apply(params, x, b)
    params = tower.variables
    expected = jablate.saturation_mutagenesis(tower, X, args=(bias,), **kw)
    full = jax.jit(jax.vmap(ism.ism_fn(apply, batch_size=9, **kw), (None, 0, 0)))
    inc = analyze(apply, params, X[0], 1, (bias[0],))
    fast = jax.jit(jax.vmap(ism.ism_fn(apply, incremental=inc, **kw), (None, 0, 0)))
    y0 = tower(X, bias)
    for got in (full(params, X, bias), fast(params, X, bias)):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
            close_attr(a, b, y0)


def test_mismatch_warns_and_finishes_on_the_full_path():
    X = one_hot(2, 40)
    model = lambda x: conv_model(x) * 1.0  # a fresh callable: analysed afresh
    off = jablate.saturation_mutagenesis(model, X, incremental=False)
    with break_rule("conv_general_dilated"):
        with pytest.warns(IncrementalMismatchWarning, match="broken rule") as record:
            on = jablate.saturation_mutagenesis(model, X, incremental=True)
    numpy.testing.assert_array_equal(on, off)
    assert record[0].filename == __file__  # the warning names the user's call


# --- compile once, free the model, answer in X's family ---------------------------------------


def test_one_trace_per_batch_shape():
    traces = []

    def model(x):
        traces.append(x.shape)
        return conv_model(x)

    X = one_hot(3, 40)
    for incremental in (False, True):
        jablate.saturation_mutagenesis(model, X, incremental=incremental, batch_size=16)
        first = len(traces)
        jablate.saturation_mutagenesis(model, X[::-1].copy(), incremental=incremental,
                                       batch_size=16, target=1)
        jablate.saturation_mutagenesis(model, one_hot(5, 40), incremental=incremental,
                                       batch_size=16, hypothetical=True)
        assert len(traces) == first
    assert len(traces) == 2  # one full step, one analysis
    assert all(s == (16, A, 40) for s in traces[:1])


def test_models_are_freed():
    class Model:
        def __call__(self, x):
            return conv_model(x)

    X = one_hot(2, 40)
    m = Model()
    ref = weakref.ref(m)
    jablate.saturation_mutagenesis(m, X, incremental=True)
    del m
    gc.collect()
    assert ref() is None

    module = Tower()
    variables = module.init(jax.random.key(1), X[:1], numpy.zeros((1, 2), numpy.float32))
    bound = module.bind(variables)
    ref = weakref.ref(bound)
    jablate.saturation_mutagenesis(bound, X, args=(numpy.zeros((2, 2), numpy.float32),),
                                   incremental=True)
    del bound
    gc.collect()
    assert ref() is None


def test_answers_in_the_family_of_X():
    X = one_hot(2, 20)
    assert isinstance(jablate.saturation_mutagenesis(conv_model, X), numpy.ndarray)
    assert isinstance(jablate.saturation_mutagenesis(conv_model, jnp.asarray(X)), jax.Array)
    out = jablate.saturation_mutagenesis(conv_model, torch.tensor(X).to(torch.int8),
                                         raw_outputs=True)
    assert isinstance(out.y0, torch.Tensor) and out.y_hat.shape == (2, A, 20, 2)


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("kw, name", [
    (dict(batch_size=0), "batch_size"), (dict(batch_size=2.5), "batch_size"),
    (dict(start=-1), "start"), (dict(end=21), "end"), (dict(start=5, end=5), "end"),
    (dict(start=1.5), "start"), (dict(target="a"), "target"), (dict(target=True), "target"),
    (dict(hypothetical=2), "hypothetical"), (dict(raw_outputs="yes"), "raw_outputs"),
    (dict(incremental="always"), "incremental"), (dict(backend="tf"), "backend"),
    (dict(args=(numpy.zeros((3, 1)),)), "args"), (dict(device="tpu:7"), "device"),
    (dict(dtype="float77"), "dtype"), (dict(X=numpy.full((2, A, 20), 0.5)), "X")])
def test_bad_inputs_are_value_errors_before_any_model_call(kw, name):
    calls = []

    def model(x):
        calls.append(1)
        return conv_model(x)

    kw = dict(dict(X=one_hot(2, 20)), **kw)
    with pytest.raises(ValueError, match=name):
        jablate.saturation_mutagenesis(model, **kw)
    assert not calls


def test_bad_target_and_ism_fn_arguments():
    # checked against the output's shape, which needs the model traced (not run)
    with pytest.raises(ValueError, match="target 7 does not index"):
        jablate.saturation_mutagenesis(conv_model, one_hot(2, 20), target=7)
    for kw, name in [(dict(start=None), "start"), (dict(end=2.0), "end"),
                     (dict(target=[0.5]), "target"), (dict(batch_size=0), "batch_size"),
                     (dict(hypothetical=3), "hypothetical"), (dict(incremental=1),
                                                                 "incremental")]:
        with pytest.raises(ValueError, match=name):
            ism.ism_fn(conv_model, **kw)
    f = ism.ism_fn(lambda p, x: conv_model(x), end=30)
    with pytest.raises(ValueError, match="end"):
        f(None, jnp.asarray(one_hot(1, 20, False)[0]))


# --- the runtime check on accelerators (issue 19, item 2) ---------------------------------
# As in test_incremental_engine: pretend to be where float32 matmuls are not exact, and
# stand for TF32's rounding by perturbing the run's own incremental step by 1e-3.


def _perturbing(monkeypatch, perturbation):
    from jablate.incremental import run as incremental_engine
    monkeypatch.setattr(ism, "exact_float32", lambda devices: False)
    seen = []
    real = ism._evaluator

    def spying(model, X, args):
        ev = dict(real(model, X, args))
        step = ev["step"]

        def spy(*a, **k):
            precision = jax.config.jax_default_matmul_precision
            seen.append(precision)
            out = step(*a, **k)
            if precision == "highest":
                assert "precision HIGHEST" in step.lower(*a, **k).as_text()
                return out
            return jax.tree.map(lambda y: y * (1 + perturbation), out)

        ev["step"] = spy
        return ev

    monkeypatch.setattr(ism, "_evaluator", spying)
    assert incremental_engine.check_precision is ism.check_precision
    return seen


def test_on_an_accelerator_the_ism_check_runs_at_full_precision(monkeypatch):
    X = one_hot(2, 40)
    model = lambda x: conv_model(x) * 1.0  # a fresh callable: analysed afresh
    off = jablate.saturation_mutagenesis(model, X, raw_outputs=True, incremental=False)
    seen = _perturbing(monkeypatch, 1e-3)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", IncrementalMismatchWarning)
        on = jablate.saturation_mutagenesis(model, X, raw_outputs=True, incremental=True)
    assert "highest" in seen and any(p != "highest" for p in seen)
    # the incremental results were kept: every substitution (3 of the 4 bases at each
    # position; the observed base's row is the unedited prediction) carries the stand-in
    # for TF32's rounding
    on, off = numpy.asarray(on[1][0]), numpy.asarray(off[1][0])
    edited = ~numpy.isclose(on, off, rtol=1e-6, atol=0)
    assert edited.mean() == 0.75
    numpy.testing.assert_allclose(on[edited], off[edited] * 1.001, rtol=1e-5)


def test_on_an_accelerator_a_broken_ism_rule_is_still_caught(monkeypatch):
    X = one_hot(2, 40)
    model = lambda x: conv_model(x) * 1.0
    off = jablate.saturation_mutagenesis(model, X, incremental=False)
    _perturbing(monkeypatch, 0.0)
    with break_rule("conv_general_dilated"):
        with pytest.warns(IncrementalMismatchWarning, match="broken rule") as record:
            on = jablate.saturation_mutagenesis(model, X, incremental=True)
    numpy.testing.assert_array_equal(on, off)
    assert record[0].filename == __file__  # the warning names the user's call
