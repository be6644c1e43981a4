"""jablate.deep_lift_shap: DeepLIFT/SHAP on the jaxpr, against tangermeme's deep_lift_shap."""

import gc
import warnings
import weakref
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import require

torch = require("torch")
tangermeme = require("tangermeme")
bpnetlite = require("bpnetlite")

import flax.linen as nn  # noqa: E402
from bpnetlite.bpnet import BPNet, CountWrapper, ProfileWrapper, _ProfileLogitScaling  # noqa: E402
from tangermeme.deep_lift_shap import _nonlinear  # noqa: E402
from tangermeme.deep_lift_shap import deep_lift_shap as tangermeme_dls  # noqa: E402
from tangermeme.ersatz import dinucleotide_shuffle as tangermeme_shuffle  # noqa: E402

import jablate  # noqa: E402
from jablate.attribution import deeplift  # noqa: E402
from jablate.attribution.deeplift import attribution_fn, rescale, rescale_first  # noqa: E402


def one_hot(n, length, seed=0):
    idx = np.random.RandomState(seed).randint(0, 4, size=(n, length))
    return torch.from_numpy(np.eye(4, dtype=np.float32)[idx].transpose(0, 2, 1).copy())


def close(got, want, tol=1e-4):
    """Within ``tol`` of ``want``'s largest absolute value."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= tol * scale, np.abs(got - want).max() / scale


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# --- models --------------------------------------------------------------------------------


class ConvMean(torch.nn.Module):
    """conv + ReLU + mean + dense."""

    def __init__(self, activation=None):
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 8, 5, padding=2)
        self.act = activation or torch.nn.ReLU()
        self.dense = torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.dense(self.act(self.conv(x)).mean(-1))


class DeepSEA(torch.nn.Module):
    """Two conv/ReLU/max-pool blocks, a dense layer and a sigmoid output."""

    def __init__(self, length=200):
        super().__init__()
        self.c1, self.p1 = torch.nn.Conv1d(4, 8, 8), torch.nn.MaxPool1d(4, 4)
        self.c2, self.p2 = torch.nn.Conv1d(8, 8, 8), torch.nn.MaxPool1d(4, 4)
        n = 8 * (((length - 7) // 4 - 7) // 4)
        self.l1, self.l2 = torch.nn.Linear(n, 16), torch.nn.Linear(16, 3)
        self.relu, self.sigmoid = torch.nn.ReLU(), torch.nn.Sigmoid()

    def forward(self, x):
        h = self.p1(self.relu(self.c1(x)))
        h = self.p2(self.relu(self.c2(h)))
        return self.sigmoid(self.l2(self.relu(self.l1(h.flatten(1)))))


class SoftmaxHead(torch.nn.Module):
    """conv, softmax over positions, a weighted sum: tangermeme's softmax rule."""

    def __init__(self, length):
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 2, 5, padding=2)
        self.softmax = torch.nn.Softmax(dim=-1)
        self.register_buffer("w", torch.randn(2 * length))

    def forward(self, x):
        return (self.softmax(self.conv(x).flatten(1)) * self.w).sum(-1, keepdims=True)


def _seeded(make):
    torch.manual_seed(0)
    return make().eval()


def _bpnet():
    torch.manual_seed(0)
    return BPNet(n_filters=8, n_layers=2, n_control_tracks=0, verbose=False).eval()


MODELS = {  # name: (model maker, length, jablate rules, tangermeme ops)
    "conv_mean": (lambda: _seeded(ConvMean), 60, None, None),
    "bpnet_count": (lambda: CountWrapper(_bpnet()), 300, None, None),
    "bpnet_profile": (lambda: ProfileWrapper(_bpnet()), 300, {"mul": rescale_first},
                      {_ProfileLogitScaling: _nonlinear}),
    "deepsea": (lambda: _seeded(DeepSEA), 200, None, None),
    "softmax": (lambda: _seeded(lambda: SoftmaxHead(60)), 60, None, None),
}


@pytest.fixture(scope="module")
def cases():
    built = {}
    for name, (make, length, rules, ops) in MODELS.items():
        X = one_hot(3, length, seed=1)
        refs = tangermeme_shuffle(X, n=4, random_state=2)
        built[name] = (make(), X, refs, rules, ops)
    return built


# --- parity with tangermeme ------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("hypothetical", [False, True])
def test_parity_with_tangermeme(cases, name, hypothetical):
    model, X, refs, rules, ops = cases[name]
    want = quiet(tangermeme_dls, model, X, references=refs, target=0, device="cpu",
                 hypothetical=hypothetical, additional_nonlinear_ops=ops)
    got = jablate.deep_lift_shap(model, X, references=refs, target=0, hypothetical=hypothetical,
                                 additional_nonlinear_rules=rules)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    # The profile's rescaled product z * softmax(z) divides by changes of the logits as
    # small as 7e-5: float32 rounding of the logits (torch's and XLA's differ) is amplified
    # to ~5e-4 of the attributions, in tangermeme itself (float32 against float64) too.
    # test_bpnet_profile_parity_in_float64 shows the rules agree.
    close(got, want, tol=2e-3 if name == "bpnet_profile" else 1e-4)


def test_bpnet_profile_parity_in_float64(cases):
    """The multipliers of every pair (which both projections are made of) agree."""
    model, X, refs, rules, ops = cases["bpnet_profile"]
    model64 = ProfileWrapper(BPNet(n_filters=8, n_layers=2, n_control_tracks=0, verbose=False))
    model64.load_state_dict(model.state_dict())
    model64 = model64.double().eval()
    want = tangermeme_dls(model64, X.double(), references=refs.double(), device="cpu",
                          dtype=torch.float64, raw_outputs=True, additional_nonlinear_ops=ops)
    from jablate.bridges.torch import translate

    translated = translate(model, X[:1])

    class Pure:  # the translation, with float64 parameters
        apply = staticmethod(translated.apply)

    with jax.enable_x64(True):
        Pure.params = jax.tree.map(lambda a: a.astype(jnp.float64), translated.params)
        got = jablate.deep_lift_shap(Pure(), jnp.asarray(X.double().numpy()),
                                     references=jnp.asarray(refs.double().numpy()),
                                     raw_outputs=True, additional_nonlinear_rules=rules)
        assert got.dtype == jnp.float64
    close(got, want, tol=1e-9)


@pytest.mark.parametrize("activation", ["GELU", "ELU", "Softplus", "SiLU", "Tanh", "Sigmoid",
                                        "LeakyReLU", "ReLU6", "Mish"])
def test_activations_are_rescaled_as_one_function(activation):
    """Each activation is several primitives in the jaxpr; rescaled as one, it gives
    tangermeme's numbers for the torch module."""
    torch.manual_seed(0)
    model = ConvMean(getattr(torch.nn, activation)()).eval()
    X = one_hot(2, 40)
    refs = tangermeme_shuffle(X, n=3, random_state=0)
    want = tangermeme_dls(model, X, references=refs, target=2, device="cpu", hypothetical=True)
    close(jablate.deep_lift_shap(model, X, references=refs, target=2, hypothetical=True), want)


def _jax_weights(model):
    return {k: jnp.asarray(v.detach().numpy()) for k, v in model.state_dict().items()}


class FlaxConvMean(nn.Module):
    @nn.compact
    def __call__(self, x):  # x (B, 4, L), as the torch model
        h = nn.Conv(8, (5,), padding=2)(x.transpose(0, 2, 1))
        return nn.Dense(3)(nn.relu(h).mean(1))


def _flax_variables(w):
    return {"params": {"Conv_0": {"kernel": w["conv.weight"].transpose(2, 1, 0),
                                  "bias": w["conv.bias"]},
                       "Dense_0": {"kernel": w["dense.weight"].T, "bias": w["dense.bias"]}}}


def _callable(w):
    def model(x):
        h = jax.lax.conv_general_dilated(x, w["conv.weight"], (1,), [(2, 2)],
                                         dimension_numbers=("NCH", "OIH", "NCH"))
        h = jax.nn.relu(h + w["conv.bias"][:, None])
        return h.mean(-1) @ w["dense.weight"].T + w["dense.bias"]
    return model


@pytest.mark.parametrize("hypothetical", [False, True])
def test_jax_models_with_the_same_weights(cases, hypothetical):
    model, X, refs, _, _ = cases["conv_mean"]
    want = tangermeme_dls(model, X, references=refs, target=1, device="cpu",
                          hypothetical=hypothetical)
    w = _jax_weights(model)
    Xj, refs_j = jnp.asarray(X.numpy()), jnp.asarray(refs.numpy())
    for jax_model in (FlaxConvMean().bind(_flax_variables(w)), _callable(w)):
        got = jablate.deep_lift_shap(jax_model, Xj, references=refs_j, target=1,
                                     hypothetical=hypothetical)
        assert isinstance(got, jax.Array)
        close(got, want)
    got = jablate.deep_lift_shap(_callable(w), X.numpy(), references=refs.numpy(), target=1,
                                 hypothetical=hypothetical)
    assert isinstance(got, np.ndarray)
    close(got, want)


class ScaledConvMean(ConvMean):
    def forward(self, x, scale):
        return self.dense(self.act(self.conv(x) * scale[:, :, None]).mean(-1))


def test_args_are_shared_by_a_sequence_and_its_references():
    model = _seeded(ScaledConvMean)
    X, scale = one_hot(3, 40), torch.rand(3, 8) + 0.5
    refs = tangermeme_shuffle(X, n=4, random_state=0)
    want = tangermeme_dls(model, X, args=(scale,), references=refs, device="cpu")
    w = _jax_weights(model)

    def jax_model(x, s):
        h = jax.lax.conv_general_dilated(x, w["conv.weight"], (1,), [(2, 2)],
                                         dimension_numbers=("NCH", "OIH", "NCH"))
        h = jax.nn.relu((h + w["conv.bias"][:, None]) * s[:, :, None])
        return h.mean(-1) @ w["dense.weight"].T + w["dense.bias"]

    close(jablate.deep_lift_shap(jax_model, X.numpy(), args=(scale.numpy(),),
                                 references=refs.numpy(), batch_size=3), want)


def test_raw_outputs_and_references_as_tangermeme(cases):
    model, X, refs, _, _ = cases["deepsea"]
    want = tangermeme_dls(model, X, references=refs, target=2, device="cpu", raw_outputs=True,
                          return_references=True)
    got = jablate.deep_lift_shap(model, X, references=refs, target=2, raw_outputs=True,
                                 return_references=True)
    assert isinstance(got, jablate.attribution.deeplift.AttributionReferencesResult)
    assert got.attributions.shape == (3, 4, 4, 200)
    close(got.attributions, want.attributions)
    np.testing.assert_array_equal(got.references.numpy(), want.references.numpy())


def test_foreign_references_function_gives_tangermemes_numbers(cases):
    """tangermeme's own dinucleotide_shuffle is called as tangermeme calls it, so a seed
    gives tangermeme's references and attributions."""
    model, X, _, _, _ = cases["conv_mean"]
    want = tangermeme_dls(model, X, n_shuffles=5, random_state=7, device="cpu",
                          return_references=True)
    got = jablate.deep_lift_shap(model, X, n_shuffles=5, random_state=7,
                                 references=tangermeme_shuffle, return_references=True)
    np.testing.assert_array_equal(got.references.numpy(), want.references.numpy())
    close(got.attributions, want.attributions)


def test_a_references_function_without_a_seed_is_called_as_tangermeme_calls_it(cases):
    """random_state=None: tangermeme asks for one reference of each sequence repeated
    n_shuffles times, ``references(X_repeated, n=1)[:, 0]``. A deterministic function
    whose n-th draw differs from its first gives tangermeme's references and
    attributions, and tangermeme's dinucleotide_shuffle, which refuses n > 1 on a
    sequence with one arrangement, runs on one as it does in tangermeme."""
    model, X, _, _, _ = cases["conv_mean"]
    calls = []

    def rolled(X, n=1, random_state=None):
        calls.append((tuple(X.shape), n, random_state))
        return torch.stack([torch.roll(X, k + 1, dims=-1) for k in range(n)], dim=1)

    want = tangermeme_dls(model, X, references=rolled, n_shuffles=3, device="cpu",
                          return_references=True)
    wanted_calls, calls[:] = list(calls), []
    got = jablate.deep_lift_shap(model, X, references=rolled, n_shuffles=3,
                                 return_references=True)
    assert {c[1:] for c in calls} == {c[1:] for c in wanted_calls} == {(1, None)}
    assert sum(c[0][0] for c in calls) == sum(c[0][0] for c in wanted_calls) == 3 * len(X)
    np.testing.assert_array_equal(got.references.numpy(), want.references.numpy())
    close(got.attributions, want.attributions)
    acac = torch.zeros(1, 4, X.shape[-1])
    acac[0, 0, 0::2], acac[0, 1, 1::2] = 1, 1
    refs = jablate.deep_lift_shap(model, acac, references=tangermeme_shuffle, n_shuffles=3,
                                  return_references=True).references
    np.testing.assert_array_equal(refs.numpy(), acac[:, None].expand(1, 3, -1, -1).numpy())
    with pytest.raises(ValueError, match=r"must return shape \(6, 1, A, L\)"):
        jablate.deep_lift_shap(model, X[:2], n_shuffles=3,
                               references=lambda X, n=1: X[:, None].expand(-1, 2, -1, -1))


def test_backend_torch_runs_tangermeme(cases):
    model, X, refs, _, _ = cases["conv_mean"]
    want = tangermeme_dls(model, X, references=refs, device="cpu")
    got = jablate.deep_lift_shap(model, X, references=refs, backend="torch", device="cpu")
    np.testing.assert_array_equal(got.numpy(), want.numpy())


# --- DeepLIFT's properties -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_summation_to_delta(cases, name):
    """sum((x - ref) * multipliers) = f(x) - f(ref) for every pair, with jablate's own rules
    (the midpoint rule for the profile's product)."""
    model, X, refs, _, _ = cases[name]
    m = jablate.deep_lift_shap(model, X, references=refs, raw_outputs=True)
    with torch.no_grad():
        y = model(X)[:, 0]
        y_ref = model(refs.flatten(0, 1))[:, 0].reshape(refs.shape[:2])
    total = ((X[:, None] - refs) * m).sum(dim=(2, 3))
    np.testing.assert_allclose(total.numpy(), (y[:, None] - y_ref).numpy(), atol=1e-3)


def test_results_do_not_depend_on_batch_size(cases):
    """Batches of 1 pair (references in chunks), 2 sequences and all of them (padded)
    agree to float32 rounding (XLA's convolutions round differently per batch shape, and
    the sigmoid's secant amplifies it)."""
    model, X, refs, _, _ = cases["deepsea"]
    results = [jablate.deep_lift_shap(model, X, references=refs, batch_size=b).numpy()
               for b in (1, 9, 64)]
    for r in results[1:]:
        close(r, results[0], tol=1e-4)


# --- references drawn in the step ------------------------------------------------------------


def test_references_drawn_in_step_follow_jablates_keys():
    """Reference i of sequence j from fold_in(fold_in(key, j), i): the references
    jablate.dinucleotide_shuffle draws, whatever the batch; an int seeds the key."""
    model = _callable(_jax_weights(_seeded(ConvMean)))
    X = jnp.asarray(one_hot(2, 30, seed=4).numpy())
    a = jablate.deep_lift_shap(model, X, n_shuffles=5, random_state=11)
    np.testing.assert_allclose(np.asarray(a).sum(axis=1)[:, :6], PINNED, rtol=1e-5, atol=1e-8)
    key = jax.random.key(11)
    b = jablate.deep_lift_shap(model, X, n_shuffles=5, random_state=key, return_references=True)
    expected = jablate.dinucleotide_shuffle(X, n=5, random_state=key)
    np.testing.assert_array_equal(np.asarray(b.references), np.asarray(expected))
    close(b.attributions, a, tol=1e-6)  # drawn in the step, or given
    first = jablate.deep_lift_shap(model, X[:1], n_shuffles=5, random_state=key)
    close(first, a[:1], tol=1e-6)  # a sequence's references are its own
    mono = jablate.deep_lift_shap(model, X, references=jablate.shuffle, n_shuffles=5,
                                  random_state=key, return_references=True)
    refs = np.asarray(mono.references)
    np.testing.assert_array_equal(refs.sum(axis=3), np.repeat(np.asarray(X).sum(2)[:, None], 5, 1))
    assert (refs != np.asarray(b.references)).any()


# jablate 0.1.0, jax 0.10.2 on CPU: the first 6 positions' attributions (summed over A).
PINNED = [[0.0, 0.0012979929, -0.0042251400, -0.00051935314, -0.0022694936, 0.0038058900],
          [0.0, -0.00090352382, 0.0010091122, -0.0042514731, 0.0024497774, 0.0015387938]]


# --- rules -----------------------------------------------------------------------------------


def _sine_model(x):
    weights = jnp.linspace(-1, 1, x.shape[-1])
    return jnp.sin(x[:, 0] @ weights)[:, None] + jax.nn.relu(x[:, 1] @ weights)[:, None]


def test_a_dilated_max_pool_is_refused_before_the_model_runs():
    """JAX has no derivative of a dilated max pool to route its windows by: a NoRuleError
    naming it (and backend='torch' for a torch module), not JAX's own NotImplementedError
    from inside the attribution."""
    X = jnp.asarray(one_hot(2, 20).numpy())

    def pooled(x, dilation):
        y = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 3), (1, 1, 2), "VALID",
                                  window_dilation=(1, 1, dilation))
        return y.sum(axis=(1, 2))[:, None]

    with pytest.raises(NotImplementedError, match=r"dilated max pool.*backend='torch'"):
        jablate.deep_lift_shap(lambda x: pooled(x, 2), X, n_shuffles=2, random_state=0)
    assert jablate.deep_lift_shap(lambda x: pooled(x, 1), X, n_shuffles=2,
                                  random_state=0).shape == X.shape


def test_unknown_primitive_is_named_and_a_rule_adds_it():
    X = jnp.asarray(one_hot(2, 20).numpy())
    with pytest.raises(NotImplementedError, match=r"sin.*additional_nonlinear_rules"):
        jablate.deep_lift_shap(_sine_model, X, n_shuffles=3, random_state=0)

    def cosine_times_sine(x):
        return (jnp.sin(x) * jnp.cos(x)).sum(axis=(1, 2))[:, None]

    with pytest.raises(NotImplementedError, match=r"cos, sin"):  # all of them at once
        jablate.deep_lift_shap(cosine_times_sine, X, n_shuffles=3, random_state=0)
    m = jablate.deep_lift_shap(_sine_model, X, n_shuffles=3, random_state=0, raw_outputs=True,
                               additional_nonlinear_rules={"sin": rescale},
                               return_references=True)
    y = _sine_model(X)[:, 0]
    y_ref = _sine_model(m.references.reshape(-1, 4, 20))[:, 0].reshape(2, 3)
    total = jnp.sum((X[:, None] - m.references) * m.attributions, axis=(2, 3))
    assert np.abs(y[:, None] - y_ref).min() > 1e-3
    np.testing.assert_allclose(total, y[:, None] - y_ref, atol=1e-5)


def _gated_recurrence(x, unrolled):
    """A GRU-like recurrence over the positions of x, forwards and backwards: lax.scans (as
    translated LSTMs and GRUs are) or the same steps written out."""
    w = jnp.asarray(np.random.RandomState(1).normal(size=(3, 4, 3)), x.dtype)
    u = jnp.asarray(np.random.RandomState(2).normal(size=(2, 3, 3)), x.dtype)

    def step(h, x_t):
        z = jax.nn.sigmoid(x_t @ w[0] + h @ u[0])
        n = jnp.tanh(x_t @ w[1] + (h @ u[1]) * jax.nn.relu(x_t @ w[2]))
        h = (1 - z) * n + z * h
        return h, h.sum(-1)

    xs = jnp.moveaxis(x, 2, 0)
    outputs = []
    for reverse in (False, True):
        h = jnp.zeros((x.shape[0], 3), x.dtype)
        if not unrolled:
            h, ys = jax.lax.scan(step, h, xs, reverse=reverse)
        else:
            ys = [None] * xs.shape[0]
            for t in reversed(range(xs.shape[0])) if reverse else range(xs.shape[0]):
                h, ys[t] = step(h, xs[t])
            ys = jnp.stack(ys)
        outputs += [h.sum(-1), ys[0] - ys[-1]]
    return jnp.stack(outputs, -1).sum(-1, keepdims=True)


def test_a_scan_gets_the_rules_of_its_steps_written_out():
    """deep_lift_shap keeps a lax.scan (a reversed one too) a scan, its body's rules inside
    it, on pairs of the input's and the reference's values: the attributions of the loop
    written out, and they sum to each output's difference from its reference."""
    X = jnp.asarray(one_hot(2, 5).numpy())
    got, want = (jablate.deep_lift_shap(
        partial(_gated_recurrence, unrolled=unrolled), X, n_shuffles=3, random_state=0,
        raw_outputs=True, return_references=True) for unrolled in (False, True))
    np.testing.assert_allclose(got.attributions, want.attributions, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(got.references, want.references)
    y = _gated_recurrence(X, False)[:, 0]
    y_ref = _gated_recurrence(got.references.reshape(-1, 4, 5), False)[:, 0].reshape(2, 3)
    total = jnp.sum((X[:, None] - got.references) * got.attributions, axis=(2, 3))
    assert np.abs(y[:, None] - y_ref).max() > 1e-2
    np.testing.assert_allclose(total, y[:, None] - y_ref, atol=1e-5)
    # the scans stay scans: DeepLIFT's graph (and so its compile) does not grow with L
    sizes = []
    for length in (5, 9):
        graph = deeplift._trace(lambda params, x: _gated_recurrence(x, False), {}, {},
                                jnp.zeros((4, length)), ())
        assert sorted(graph.kind.values()).count("scan") == 2
        sizes.append(len(graph.nodes) + sum(len(b.nodes) for b, _ in graph.body.values()))
    assert sizes[0] == sizes[1]


def _assert_sums_to_delta(module, X, got, atol):
    """A torch module's raw attributions (with their references) times ``X - reference``
    sum to the change of output 0 from each reference, which is not tiny."""
    refs = torch.as_tensor(np.asarray(got.references))
    n, r = refs.shape[:2]
    with torch.no_grad():
        delta = module(X)[:, None, 0] - module(refs.reshape(n * r, *X.shape[1:]))[:, 0].reshape(
            n, r)
    total = ((X[:, None] - refs) * torch.as_tensor(np.asarray(got.attributions))).sum((2, 3))
    assert delta.abs().max() > 1e-3
    torch.testing.assert_close(total, delta, rtol=0, atol=atol)


def test_a_torch_lstm_is_attributed_through_its_scan():
    """A torch module with a bidirectional LSTM, translated (one scan per direction): its
    attributions sum to each output's difference from its reference."""

    class Recurrent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.LSTM(4, 3, batch_first=True, bidirectional=True)
            self.head = torch.nn.Linear(6, 1)

        def forward(self, x):
            return self.head(self.rnn(x.transpose(1, 2))[0].mean(1))

    torch.manual_seed(0)
    module = Recurrent().eval()
    X = one_hot(2, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no convergence warning
        got = jablate.deep_lift_shap(module, X, n_shuffles=3, random_state=0,
                                     raw_outputs=True, return_references=True)
    _assert_sums_to_delta(module, X, got, atol=1e-6)


def test_a_shift_after_a_relu_costs_no_precision():
    """Conv -> ReLU -> BatchNorm (eval, running mean about 10): the ReLU is rescaled alone,
    as tangermeme's module is, and the batch norm's shift applied after. Folded into the
    ReLU's quotient, the shift cost 3e-3 of the multipliers in float32 (tangermeme 3e-7
    from float64); an archtrial found it."""

    class ReluNorm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.bn = torch.nn.Conv1d(4, 8, 7, padding=3), torch.nn.BatchNorm1d(8)
            self.relu, self.c2 = torch.nn.ReLU(), torch.nn.Conv1d(8, 2, 3)  # tangermeme's rule

        def forward(self, x):
            return self.c2(self.bn(self.relu(self.c1(x)))).sum(-1)

    torch.manual_seed(0)
    module = ReluNorm()
    with torch.no_grad():
        module.bn.running_mean.uniform_(9, 11)
        module.bn.running_var.uniform_(0.5, 2)
    module.eval()
    X = one_hot(2, 100, seed=1)
    kw = dict(n_shuffles=3, random_state=0, target=1, raw_outputs=True)
    ours = jablate.deep_lift_shap(module, X, references=tangermeme_shuffle, **kw)
    theirs = tangermeme_dls(module, X, device="cpu", **kw)
    scale = float(theirs.abs().max())
    assert float((ours - theirs).abs().max()) < 3e-6 * scale


def test_attention_with_a_float_mask_is_attributed():
    """scaled_dot_product_attention with an additive float mask (a relative position bias):
    the translation tells fully masked rows from the mask, not from the scores, so
    deep_lift_shap has a rule everywhere (it refused select_n and reduce_and), and the
    attributions sum to each output's difference from its reference."""

    class Biased(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.qkv = torch.nn.Conv1d(4, 8, 5, padding=2), torch.nn.Linear(8, 24)
            self.bias = torch.nn.Parameter(torch.randn(2, 16, 16) * 0.5)

        def forward(self, x):
            h = torch.relu(self.conv(x)).transpose(1, 2)
            q, k, v = (t.reshape(-1, 16, 2, 4).transpose(1, 2) for t in
                       self.qkv(h).chunk(3, -1))
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=self.bias)
            return a.sum((1, 2))

    torch.manual_seed(0)
    module = Biased().eval()
    X = one_hot(2, 16)
    got = jablate.deep_lift_shap(module, X, n_shuffles=3, random_state=0, raw_outputs=True,
                                 return_references=True)
    _assert_sums_to_delta(module, X, got, atol=1e-5)


def test_an_inexact_rule_warns_of_convergence_deltas():
    X = jnp.asarray(one_hot(2, 20).numpy())

    def gradient(fn, primals, references, output, reference_output, cotangent):
        return jax.vjp(fn, *primals)[1](cotangent)

    with pytest.warns(RuntimeWarning, match="Convergence deltas") as seen:
        jablate.deep_lift_shap(_sine_model, X, n_shuffles=3, random_state=0,
                               additional_nonlinear_rules={"sin": gradient})
    assert {w.filename for w in seen if "Convergence" in str(w.message)} == {__file__}


def test_attribution_fn_is_pure_and_composes(cases):
    model, X, refs, _, _ = cases["conv_mean"]
    w = _jax_weights(model)

    def apply(params, x):
        return _callable(params)(x)

    f = attribution_fn(apply, target=0, hypothetical=True, n_shuffles=4,
                       references_fn_or_None=jablate.functional.dinucleotide_shuffle)
    Xj, refs_j = jnp.asarray(X.numpy()), jnp.asarray(refs.numpy())
    keys = jax.vmap(lambda j: jax.random.fold_in(jax.random.key(0), j))(jnp.arange(3))
    attributions, deltas = jax.jit(jax.vmap(f, in_axes=(None, 0, 0, 0)))(w, Xj, keys, refs_j)
    assert attributions.shape == (3, 4, 60) and deltas.shape == (3, 4)
    close(attributions, jablate.deep_lift_shap(model, X, references=refs, hypothetical=True))


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, name", [
    (dict(target=3), "target"),
    (dict(target=1.5), "target"),
    (dict(n_shuffles=0), "n_shuffles"),
    (dict(batch_size=0), "batch_size"),
    (dict(references=np.zeros((2, 3, 4, 20), np.float32)), "references"),
    (dict(references=np.full((3, 2, 4, 20), 0.25, np.float32)), "references"),
    (dict(references="dinucleotide"), "references"),
    (dict(random_state="seed"), "random_state"),
    (dict(additional_nonlinear_rules={"sin": 1}), "additional_nonlinear_rules"),
    (dict(warning_threshold=-1), "warning_threshold"),
    (dict(args=(np.zeros((2, 1)),)), "args"),
])
def test_bad_input_names_the_parameter(kwargs, name):
    w = _jax_weights(_seeded(ConvMean))
    X = jnp.asarray(one_hot(3, 20).numpy())
    with pytest.raises(ValueError, match=name):
        jablate.deep_lift_shap(_callable(w), X, **kwargs)


def test_bad_models_and_sequences():
    X = jnp.asarray(one_hot(2, 20).numpy())
    with pytest.raises(ValueError, match="one array"):
        jablate.deep_lift_shap(lambda x: (x.sum((1, 2))[:, None],) * 2, X)
    with pytest.raises(ValueError, match="n_outputs"):
        jablate.deep_lift_shap(lambda x: x, X)
    with pytest.raises(ValueError, match="one-hot"):
        jablate.deep_lift_shap(lambda x: x.sum((1, 2))[:, None], X * 2)
    with pytest.raises(ValueError, match="references"):
        jablate.deep_lift_shap(lambda x: x.sum((1, 2))[:, None], X[:, :, :2])


# --- memory ----------------------------------------------------------------------------------


def test_models_are_not_kept_alive():
    w = _jax_weights(_seeded(ConvMean))
    X = jnp.asarray(one_hot(2, 20).numpy())
    flax_model = FlaxConvMean().bind(_flax_variables(w))
    func = _callable(w)
    alive = [weakref.ref(flax_model), weakref.ref(func)]
    refs = jablate.dinucleotide_shuffle(X, n=2, random_state=0)
    for model in (flax_model, func):
        jablate.deep_lift_shap(model, X, references=refs)
    del flax_model, func, model
    gc.collect()
    assert all(r() is None for r in alive)


def test_runs_of_other_sizes_reuse_the_compiled_step(monkeypatch):
    """The step's shapes do not depend on N (rows are gathered by a small program of their
    own, and a run smaller than a batch is padded to a power of two), so calls on 5, 6 and
    7 sequences trace one step; the references of each sequence stay those of its index."""
    from jablate.attribution import deeplift

    W = jnp.asarray(np.random.default_rng(3).normal(size=(4, 4, 5)), jnp.float32)
    traced, evaluate = [], deeplift._evaluate

    def counted(graph, leaves, x, r):  # called when a step is traced
        traced.append(x.shape)
        return evaluate(graph, leaves, x, r)

    monkeypatch.setattr(deeplift, "_evaluate", counted)

    def model(x):
        return jax.nn.relu(jax.lax.conv(x, W, (1,), "SAME")).mean((1, 2))[:, None]

    X = np.asarray(one_hot(7, 50, seed=4))
    key = jax.random.key(2)
    first = jablate.deep_lift_shap(model, X[:5], n_shuffles=3, random_state=key)
    before = len(traced)
    rest = [jablate.deep_lift_shap(model, X[:n], n_shuffles=3, random_state=key) for n in (6, 7)]
    assert len(traced) == before, traced[before:]
    np.testing.assert_array_equal(rest[0][:5], first)
    np.testing.assert_array_equal(rest[1][:6], rest[0])
    refs = np.asarray(jablate.dinucleotide_shuffle(X, n=3, random_state=key))
    close(rest[1], jablate.deep_lift_shap(model, X, references=refs), 1e-6)


def test_the_convergence_warning_names_half_precision_rounding():
    from jablate.attribution.deeplift import _warn_summary

    for name, said in (("bfloat16", True), ("float16", True), ("float32", False)):
        with pytest.warns(RuntimeWarning, match="2.0% of the output differences") as record:
            _warn_summary(0, 10, 0.0, 0.02, 1.0, 1e-3, name)
        assert (f"model's {name} arithmetic" in str(record[0].message)) is said


def test_deltas_within_the_outputs_rounding_do_not_warn():
    from jablate.attribution.deeplift import _warn_summary

    W = jnp.asarray(np.random.RandomState(3).normal(size=(4, 30)).astype(np.float32))

    def model(x):
        return jnp.tanh(jnp.einsum("nal,al->n", x, W))[:, None]

    X = np.asarray(one_hot(4, 30, seed=5))
    same = np.repeat(X[:, None], 3, axis=1)  # references equal to X: differences are rounding
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attributions = jablate.deep_lift_shap(model, X, references=same)
    np.testing.assert_array_equal(attributions, np.zeros_like(X))
    # deltas 2% of the differences: above the outputs' rounding, a warning; within, none
    with pytest.warns(RuntimeWarning, match="2.0% of the output differences"):
        _warn_summary(0, 10, 0.0, 2e-4, 1e-2, 1e-3, "float32", mean_scale=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_summary(0, 10, 0.0, 2e-7, 1e-5, 1e-3, "float32", mean_scale=1.0)
