"""jablate on torch modules, compared with tangermeme 1.6 on the same modules and inputs.

Every comparison runs both libraries on the CPU (``device='cpu'``) with the same
``random_state``; an int or a ``numpy.random.RandomState`` makes jablate draw exactly
tangermeme's permutations, so predictions must agree to float tolerance.
"""

import functools

import jax
import jax.numpy as jnp
import numpy
import pytest
from conftest import require

torch = require("torch")
import jablate  # noqa: E402
from jablate.bridges.torch import from_torch, to_torch, wrap  # noqa: E402

require("tangermeme")
import tangermeme.ablate  # noqa: E402
import tangermeme.deep_lift_shap  # noqa: E402
import tangermeme.ersatz  # noqa: E402
import tangermeme.predict  # noqa: E402
import tangermeme.saturation_mutagenesis  # noqa: E402
from tangermeme.utils import random_one_hot  # noqa: E402

# tangermeme's shuffle calls numpy.arange on the 0-d tensors of an annotations row
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

N_SHUFFLES = 5
START, END = 10, 30


# ----------------------------------------------------------------------------- models


class LinearAlpha(torch.nn.Module):
    """A Linear on the flattened input; ``alpha`` (B, 1) adds ``alpha * scale``."""

    def __init__(self, A=4, L=100, out=3):
        super().__init__()
        self.linear = torch.nn.Linear(A * L, out)
        self.scale = torch.nn.Parameter(torch.arange(1.0, out + 1.0))

    def forward(self, X, alpha=None):
        y = self.linear(X.reshape(X.shape[0], -1))
        if alpha is not None:
            y = y + alpha * self.scale
        return y


class ConvModel(torch.nn.Module):
    """Conv1d + ReLU + Linear, one (B, 2) output; DeepLIFT/SHAP supports it."""

    def __init__(self, L=100):
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 8, kernel_size=7)
        self.relu = torch.nn.ReLU()
        self.linear = torch.nn.Linear(8 * (L - 6), 2)

    def forward(self, X):
        h = self.relu(self.conv(X))
        return self.linear(h.reshape(h.shape[0], -1))


class TwoHeads(torch.nn.Module):
    """A BPNet-like model: a profile (B, 2, L') and a count (B, 1)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 8, kernel_size=5)
        self.relu = torch.nn.ReLU()
        self.profile = torch.nn.Conv1d(8, 2, kernel_size=3)
        self.count = torch.nn.Linear(8, 1)

    def forward(self, X):
        h = self.relu(self.conv(X))
        return self.profile(h), self.count(h.mean(dim=-1))


class Permute(torch.nn.Module):
    """Returns its input as (B, L, A): y_after are the shuffled sequences themselves."""

    def forward(self, X):
        return X.permute(0, 2, 1)


def _seeded(module, seed):
    torch.manual_seed(seed)
    m = module()
    m.eval()
    return m


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def X():
    return random_one_hot((4, 4, 100), random_state=0)


@pytest.fixture(scope="module")
def Xf(X):
    return X.float()


@pytest.fixture(scope="module")
def alpha():
    return torch.linspace(-1.0, 2.0, 4).reshape(4, 1)


@pytest.fixture(scope="module")
def linear_model():
    return _seeded(LinearAlpha, 0)


@pytest.fixture(scope="module")
def conv_model():
    return _seeded(ConvModel, 1)


@pytest.fixture(scope="module")
def two_heads():
    return _seeded(TwoHeads, 2)


@pytest.fixture(scope="module")
def permute_model():
    return Permute().eval()


# ----------------------------------------------------------------------------- helpers


def assert_close(a, b, dtype=None):
    """Same type (torch.Tensor on the CPU), shape and dtype; allclose(atol=1e-6, rtol=1e-5)."""
    if isinstance(b, (list, tuple)):
        assert isinstance(a, (list, tuple)), type(a)
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_close(x, y, dtype)
        return
    assert isinstance(a, torch.Tensor), type(a)
    assert a.device.type == "cpu"
    assert a.shape == b.shape
    assert a.dtype == b.dtype
    if dtype is not None:
        assert a.dtype == dtype
    assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), (a - b).abs().max()


def both_ablate(model, X, **kwargs):
    """(jablate, tangermeme) results of ``ablate`` with the same arguments.

    A RandomState is copied so both libraries start from the same state.
    """
    rs = kwargs.get("random_state")
    kw_j, kw_t = dict(kwargs), dict(kwargs)
    if isinstance(rs, numpy.random.RandomState):
        kw_j["random_state"] = _copy_rs(rs)
        kw_t["random_state"] = _copy_rs(rs)
    j = jablate.ablate(model, X, **kw_j)
    t = tangermeme.ablate.ablate(model, X, **kw_t)
    return j, t


def _copy_rs(rs):
    out = numpy.random.RandomState()
    out.set_state(rs.get_state())
    return out


def assert_results_equal(j, t, dtype=torch.float32):
    assert_close(j.y_before, t.y_before, dtype)
    assert_close(j.y_after, t.y_after, dtype)


# ----------------------------------------------------------------------------- shuffle


@pytest.mark.parametrize("dtype", [torch.int8, torch.float32, torch.float64])
def test_shuffle_equals_tangermeme(X, dtype):
    x = X.to(dtype)
    j = jablate.shuffle(x, START, END, n=5, random_state=0)
    t = tangermeme.ersatz.shuffle(x, START, END, n=5, random_state=0)
    assert isinstance(j, torch.Tensor)
    assert j.dtype == x.dtype == t.dtype
    assert j.shape == t.shape == (4, 5, 4, 100)
    assert torch.equal(j, t)


def test_shuffle_random_state_object_advances_identically(X):
    rs_j, rs_t = numpy.random.RandomState(3), numpy.random.RandomState(3)
    j = jablate.shuffle(X, START, END, n=5, random_state=rs_j)
    t = tangermeme.ersatz.shuffle(X, START, END, n=5, random_state=rs_t)
    assert j.dtype == torch.int8
    assert torch.equal(j, t)
    numpy.testing.assert_array_equal(rs_j.randint(0, 2**31 - 1, size=8),
                                     rs_t.randint(0, 2**31 - 1, size=8))
    # and a second call from the advanced states still agrees
    assert torch.equal(jablate.shuffle(X, 0, -1, n=2, random_state=rs_j),
                       tangermeme.ersatz.shuffle(X, 0, -1, n=2, random_state=rs_t))


# ----------------------------------------------------------------------------- ablate


@pytest.mark.parametrize("rs", [0, "RandomState"], ids=["int", "RandomState"])
@pytest.mark.parametrize("model_name", ["linear_model", "conv_model"])
@pytest.mark.parametrize("as_float", [False, True], ids=["int8", "float32"])
def test_ablate_single_output(request, X, Xf, model_name, rs, as_float):
    model = request.getfixturevalue(model_name)
    rs = numpy.random.RandomState(5) if rs == "RandomState" else rs
    j, t = both_ablate(model, Xf if as_float else X, start=START, end=END, n=N_SHUFFLES,
                       random_state=rs, device="cpu")
    assert t.y_after.shape[:2] == (4, N_SHUFFLES)
    assert_results_equal(j, t)


def test_ablate_multi_output(X, two_heads):
    j, t = both_ablate(two_heads, X, start=START, end=END, n=N_SHUFFLES, random_state=0,
                       device="cpu")
    assert isinstance(j.y_before, list) and isinstance(j.y_after, list)
    assert [y.shape for y in j.y_before] == [(4, 2, 94), (4, 1)]
    assert [y.shape for y in j.y_after] == [(4, N_SHUFFLES, 2, 94), (4, N_SHUFFLES, 1)]
    assert_results_equal(j, t)


def test_ablate_with_args(X, linear_model, alpha):
    j, t = both_ablate(linear_model, X, start=START, end=END, n=N_SHUFFLES,
                       args=(alpha,), random_state=0, device="cpu")
    assert_results_equal(j, t)
    # alpha really reaches the model
    plain = jablate.ablate(linear_model, X, START, END, n=N_SHUFFLES, random_state=0,
                           device="cpu")
    assert not torch.allclose(plain.y_before, j.y_before)


def test_ablate_permute_model_returns_tangermeme_shuffles(X, permute_model):
    j, t = both_ablate(permute_model, X, start=START, end=END, n=N_SHUFFLES, random_state=0,
                       device="cpu")
    assert_results_equal(j, t)
    shuffled = tangermeme.ersatz.shuffle(X, START, END, n=N_SHUFFLES, random_state=0)
    assert torch.equal(j.y_after, shuffled.float().permute(0, 1, 3, 2))
    assert torch.equal(j.y_before, X.float().permute(0, 2, 1))


@pytest.mark.parametrize("model_name", ["conv_model", "two_heads"])
def test_ablate_batch_size_does_not_matter(request, X, model_name):
    model = request.getfixturevalue(model_name)
    small = jablate.ablate(model, X, START, END, n=N_SHUFFLES, random_state=0, device="cpu",
                           batch_size=3)
    large = jablate.ablate(model, X, START, END, n=N_SHUFFLES, random_state=0, device="cpu",
                           batch_size=32)
    assert_results_equal(small, large)
    t = tangermeme.ablate.ablate(model, X, START, END, n=N_SHUFFLES, random_state=0,
                                 device="cpu", batch_size=3)
    assert_results_equal(small, t)


def test_ablate_float64_X_float32_model(X, conv_model):
    X64 = X.double()
    j, t = both_ablate(conv_model, X64, start=START, end=END, n=N_SHUFFLES, random_state=0,
                       device="cpu")
    assert_results_equal(j, t, dtype=torch.float32)


# ----------------------------------------------------------------------- foreign func / shuffle_fn
# jablate.ablate against tangermeme.ablate.ablate with the same func. Each side draws its
# shuffles with its own shuffle function: with an int seed, jablate.shuffle against
# tangermeme's shuffle (the same permutations by design); with a JAX key, jablate's
# dinucleotide_shuffle, which tangermeme's ablate is handed as its shuffle_fn (jablate's
# sampler has no tangermeme twin). A recording func checks what jablate fed it.

SHUFFLES = {
    "shuffle-int": dict(jablate=dict(random_state=0), tangermeme=dict(random_state=0)),
    "dinucleotide-key": dict(
        jablate=dict(random_state=jax.random.key(3), shuffle_fn=jablate.dinucleotide_shuffle),
        tangermeme=dict(random_state=jax.random.key(3),
                        shuffle_fn=jablate.dinucleotide_shuffle)),
}


def recording(func):
    """``func``, keeping a copy of every X it is called on (its signature is kept)."""
    @functools.wraps(func)
    def wrapper(model, X, **kwargs):
        wrapper.calls.append(X.clone())
        return func(model, X, **kwargs)
    wrapper.calls = []
    return wrapper


def check_foreign_func(model, X, func, shuffles, n, **kwargs):
    """jablate's ablation with a foreign ``func`` equals tangermeme's, and ``func``
    saw X and then X's shuffles, drawn by jablate."""
    spy = recording(func)
    j = jablate.ablate(model, X, START, END, n=n, func=spy, device="cpu",
                       **shuffles["jablate"], **kwargs)
    t = tangermeme.ablate.ablate(model, X, START, END, n=n, func=func, device="cpu",
                                 **shuffles["tangermeme"], **kwargs)
    assert_results_equal(j, t)

    shuffle_fn = shuffles["jablate"].get("shuffle_fn", jablate.shuffle)
    drawn = shuffle_fn(X, START, END, n=n, random_state=shuffles["jablate"]["random_state"])
    assert len(spy.calls) == 2
    assert torch.equal(spy.calls[0], X)
    assert torch.equal(spy.calls[1], drawn.reshape(-1, *X.shape[1:]))
    assert not torch.equal(spy.calls[1][:, :, START:END],
                           X.repeat_interleave(n, 0)[:, :, START:END])
    # the shuffles change the attributions
    assert not torch.allclose(j.y_after, j.y_before[:, None].expand_as(j.y_after))
    return j


@pytest.mark.parametrize("shuffles", SHUFFLES.values(), ids=SHUFFLES.keys())
def test_ablate_deep_lift_shap(X, conv_model, shuffles):
    kwargs = dict(n_shuffles=3, target=0)
    if "shuffle_fn" in shuffles["jablate"]:  # deep_lift_shap seeds numpy, not a JAX key
        kwargs["additional_func_kwargs"] = {"random_state": 0}
    j = check_foreign_func(conv_model, X, tangermeme.deep_lift_shap.deep_lift_shap, shuffles,
                           n=2, **kwargs)
    assert j.y_before.shape == (4, 4, 100)
    assert j.y_after.shape == (4, 2, 4, 100)


@pytest.mark.parametrize("shuffles", SHUFFLES.values(), ids=SHUFFLES.keys())
def test_ablate_saturation_mutagenesis(X, conv_model, shuffles):
    # the mutagenesis window goes through additional_func_kwargs (ablate's own start/end
    # are the shuffled region); a narrow window that overlaps it keeps the test fast
    j = check_foreign_func(conv_model, X,
                           tangermeme.saturation_mutagenesis.saturation_mutagenesis,
                           shuffles, n=2, additional_func_kwargs={"start": 20, "end": 40})
    assert j.y_before.shape == (4, 4, 20)
    assert j.y_after.shape == (4, 2, 4, 20)


def test_ablate_foreign_dinucleotide_shuffle(X, conv_model):
    # tangermeme's dinucleotide_shuffle on both sides: jablate's predict on its shuffles
    # against tangermeme's predict on them
    j, t = both_ablate(conv_model, X, start=START, end=END, n=N_SHUFFLES, random_state=0,
                       device="cpu", shuffle_fn=tangermeme.ersatz.dinucleotide_shuffle)
    assert_results_equal(j, t)
    shuffled = tangermeme.ersatz.dinucleotide_shuffle(X, START, END, n=N_SHUFFLES,
                                                      random_state=0)
    with torch.no_grad():
        expected = conv_model(shuffled.reshape(-1, 4, 100).float())
    assert torch.allclose(j.y_after, expected.reshape(4, N_SHUFFLES, 2), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("model_name", ["conv_model", "two_heads"])
def test_ablate_own_dinucleotide_shuffle_equals_tangermeme_on_its_shuffles(request, X,
                                                                          model_name):
    # jablate's own path draws the dinucleotide shuffles inside its compiled steps;
    # tangermeme's ablate, handed jablate.dinucleotide_shuffle, materialises the same ones
    model = request.getfixturevalue(model_name)
    key = jax.random.key(11)
    j = jablate.ablate(model, X, START, END, n=N_SHUFFLES, random_state=key, device="cpu",
                       shuffle_fn=jablate.dinucleotide_shuffle, batch_size=3)
    t = tangermeme.ablate.ablate(model, X, START, END, n=N_SHUFFLES, random_state=key,
                                 device="cpu", shuffle_fn=jablate.dinucleotide_shuffle)
    assert_results_equal(j, t)


# ----------------------------------------------------------------------------- ablate_annotations


# negative ends count back from the end (-1: the end itself), as tangermeme's ablate reads them
ANNOTATIONS = torch.tensor([[0, 10, 30], [0, 40, 45], [2, 5, 60], [3, 0, 100], [1, 50, 53],
                            [1, 80, -1], [2, 30, -21]])


@pytest.mark.parametrize("rs", [0, "RandomState"], ids=["int", "RandomState"])
@pytest.mark.parametrize("model_name", ["conv_model", "two_heads"])
def test_ablate_annotations(request, X, model_name, rs):
    model = request.getfixturevalue(model_name)
    rs_j = numpy.random.RandomState(7) if rs == "RandomState" else rs
    rs_t = numpy.random.RandomState(7) if rs == "RandomState" else rs
    j = jablate.ablate_annotations(model, X, ANNOTATIONS, n=N_SHUFFLES, random_state=rs_j,
                                   device="cpu")
    t = tangermeme.ablate.ablate_annotations(model, X, ANNOTATIONS, n=N_SHUFFLES,
                                             random_state=rs_t, device="cpu")
    assert_close(j.y_befores, t.y_befores, torch.float32)
    assert_close(j.y_afters, t.y_afters, torch.float32)
    if rs == "RandomState":
        assert rs_j.randint(2**31 - 1) == rs_t.randint(2**31 - 1)


def _slicing_shuffle(X, start, end, n, random_state):
    """A user's own shuffle_fn that reads ``end`` as a Python slice (``-1``: all but the last
    position), to see that it gets ``start``/``end`` as given, as tangermeme hands them."""
    rs = numpy.random.RandomState(random_state)
    Y = X[:, None].repeat(1, n, 1, 1).clone()
    for i in range(n):
        p = torch.from_numpy(rs.permutation(X[..., start:end].shape[-1]))
        Y[:, i, :, start:end] = X[..., start:end][..., p]
    return Y


def test_a_foreign_shuffle_gets_start_and_end_as_given(X, conv_model):
    j = jablate.ablate(conv_model, X, 70, -2, n=3, shuffle_fn=_slicing_shuffle,
                       random_state=0, device="cpu")
    t = tangermeme.ablate.ablate(conv_model, X, 70, -2, n=3, shuffle_fn=_slicing_shuffle,
                                 random_state=0, device="cpu")
    assert_results_equal(j, t)
    ann = torch.tensor([[0, 60, -1], [2, 10, 40], [3, 90, -3]])
    j = jablate.ablate_annotations(conv_model, X, ann, n=3, shuffle_fn=_slicing_shuffle,
                                   random_state=0, device="cpu")
    t = tangermeme.ablate.ablate_annotations(conv_model, X, ann, n=3,
                                             shuffle_fn=_slicing_shuffle, random_state=0,
                                             device="cpu")
    assert_close(j.y_befores, t.y_befores, torch.float32)
    assert_close(j.y_afters, t.y_afters, torch.float32)


def test_a_negative_end_before_the_start_names_the_row_as_given(X, conv_model):
    with pytest.raises(ValueError, match=r"annotations\[1\] has region \[10, -95\) \(end 6\)"):
        jablate.ablate_annotations(conv_model, X, [[0, 10, -1], [0, 10, -95]], n=2)


# ----------------------------------------------------------------------------- module state


def test_training_mode_and_device_restored(X):
    model = _seeded(ConvModel, 1)
    model.train()
    jablate.ablate(model, X, START, END, n=N_SHUFFLES, random_state=0, device="cpu")
    assert model.training
    assert all(m.training for m in model.modules())
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_training_mode_irrelevant_to_results(X):
    """Dropout is off during ablate even if the module was training."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5),
                                torch.nn.Linear(400, 2))
    model.train()
    j = jablate.ablate(model, X, START, END, n=N_SHUFFLES, random_state=0, device="cpu")
    assert model.training
    model.eval()
    t = tangermeme.ablate.ablate(model, X, START, END, n=N_SHUFFLES, random_state=0,
                                 device="cpu")
    assert_results_equal(j, t)


# ----------------------------------------------------------------------------- DLPack


def _jax_ptr(a):
    return a.unsafe_buffer_pointer()


def test_from_torch_zero_copy():
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    a = from_torch(t)
    assert isinstance(a, jax.Array)
    assert _jax_ptr(a) == t.data_ptr()
    numpy.testing.assert_array_equal(numpy.asarray(a), t.numpy())


def test_to_torch_zero_copy():
    a = jnp.arange(12, dtype=jnp.float32).reshape(3, 4)
    t = to_torch(a)
    assert isinstance(t, torch.Tensor)
    assert t.device.type == "cpu"
    assert t.data_ptr() == _jax_ptr(a)
    numpy.testing.assert_array_equal(t.numpy(), numpy.asarray(a))


def test_round_trip_keeps_the_buffer():
    t = torch.ones(2, 4, 8, dtype=torch.int8)
    assert to_torch(from_torch(t)).data_ptr() == t.data_ptr()


# ----------------------------------------------------------------------------- wrap



def _expected(module, *inputs):
    with torch.no_grad():
        return module(*inputs)


def _assert_np_close(got, expected):
    numpy.testing.assert_allclose(numpy.asarray(got), expected.numpy(), atol=1e-6, rtol=1e-5)


def test_wrap_eager(Xf, conv_model, two_heads):
    x = jnp.asarray(Xf.numpy())
    got = wrap(conv_model, device="cpu")(x)
    assert isinstance(got, jax.Array)
    _assert_np_close(got, _expected(conv_model, Xf))

    heads = wrap(two_heads, device="cpu")(x)
    assert isinstance(heads, tuple) and len(heads) == 2
    for g, e in zip(heads, _expected(two_heads, Xf)):
        _assert_np_close(g, e)


def test_wrap_eager_with_args_restores_training_mode(Xf, alpha):
    model = _seeded(LinearAlpha, 0)
    model.train()
    got = wrap(model, device="cpu")(jnp.asarray(Xf.numpy()), jnp.asarray(alpha.numpy()))
    assert model.training
    model.eval()
    _assert_np_close(got, _expected(model, Xf, alpha))


def test_wrap_inside_jit(Xf, conv_model):
    fn = wrap(conv_model, device="cpu")
    got = jax.jit(lambda v: fn(v) * 2.0)(jnp.asarray(Xf.numpy()))
    _assert_np_close(got, 2 * _expected(conv_model, Xf))


def test_wrap_inside_jit_multi_output(Xf, two_heads):
    got = jax.jit(wrap(two_heads, device="cpu"))(jnp.asarray(Xf.numpy()))
    assert isinstance(got, tuple) and len(got) == 2
    for g, e in zip(got, _expected(two_heads, Xf)):
        _assert_np_close(g, e)


def test_wrap_inside_jit_with_args_restores_training_mode(Xf, alpha):
    model = _seeded(LinearAlpha, 0)
    model.train()
    fn = wrap(model, device="cpu")
    try:
        got = jax.jit(fn)(jnp.asarray(Xf.numpy()), jnp.asarray(alpha.numpy()))
    finally:
        assert model.training
    model.eval()
    _assert_np_close(got, _expected(model, Xf, alpha))


# ---------------------------------------------------------------------- bad input / mixed families


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_shuffles_of_a_cuda_tensor_stay_on_its_device_as_tangermemes(X):
    Xc = X.cuda()
    for fn in (jablate.shuffle, jablate.dinucleotide_shuffle):
        Y = fn(Xc, n=2, random_state=0)
        assert Y.device == Xc.device and Y.dtype == Xc.dtype
    want = tangermeme.ersatz.shuffle(Xc, n=2, random_state=0)
    assert want.device == Xc.device
    assert torch.equal(jablate.shuffle(Xc, n=2, random_state=0), want)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda_is_value_error(X, conv_model):
    with pytest.raises(ValueError, match="cuda"):
        jablate.ablate(conv_model, X, START, END, n=N_SHUFFLES, random_state=0, device="cuda")


@pytest.mark.parametrize("dtype", [torch.complex64, torch.uint64])
def test_bad_X_dtype_is_value_error(X, conv_model, dtype):
    # integer tensors run, as in tangermeme (test_api_friction); torch's uint64 cannot
    with pytest.raises(ValueError, match="X"):
        jablate.ablate(conv_model, X.to(dtype), START, END, n=N_SHUFFLES, random_state=0,
                       device="cpu")


def test_torch_model_with_jax_X(X, Xf, conv_model):
    xj = jnp.asarray(X.numpy())
    j = jablate.ablate(conv_model, xj, START, END, n=N_SHUFFLES, random_state=0, device="cpu")
    assert isinstance(j.y_before, jax.Array) and isinstance(j.y_after, jax.Array)
    t = tangermeme.ablate.ablate(conv_model, X, START, END, n=N_SHUFFLES, random_state=0,
                                 device="cpu")
    numpy.testing.assert_allclose(numpy.asarray(j.y_before), t.y_before.numpy(), atol=1e-6,
                                  rtol=1e-5)
    numpy.testing.assert_allclose(numpy.asarray(j.y_after), t.y_after.numpy(), atol=1e-6,
                                  rtol=1e-5)


def test_jax_callable_with_torch_X(X, Xf, conv_model):
    W = numpy.random.RandomState(0).normal(size=(4, 100)).astype("float32")

    def jax_model(x):
        return jnp.einsum("nal,al->n", x, jnp.asarray(W))[:, None]

    j = jablate.ablate(jax_model, X, START, END, n=N_SHUFFLES, random_state=0)
    assert isinstance(j.y_before, torch.Tensor) and isinstance(j.y_after, torch.Tensor)
    assert j.y_before.shape == (4, 1) and j.y_after.shape == (4, N_SHUFFLES, 1)
    assert j.y_before.device.type == "cpu"
    Wt = torch.from_numpy(W)
    assert torch.allclose(j.y_before[:, 0], torch.einsum("nal,al->n", X.float(), Wt),
                          atol=1e-5, rtol=1e-5)
    shuffled = tangermeme.ersatz.shuffle(X, START, END, n=N_SHUFFLES, random_state=0).float()
    assert torch.allclose(j.y_after[..., 0], torch.einsum("nkal,al->nk", shuffled, Wt),
                          atol=1e-5, rtol=1e-5)


def test_unknown_keyword_is_type_error(X, conv_model):
    with pytest.raises(TypeError):
        jablate.ablate(conv_model, X, START, END, n=N_SHUFFLES, random_state=0, device="cpu",
                       not_a_keyword=1)
    with pytest.raises(TypeError):
        jablate.ablate(conv_model, X, START, END, n=2, random_state=0, device="cpu",
                       func=tangermeme.saturation_mutagenesis.saturation_mutagenesis,
                       not_a_keyword=1)
    with pytest.raises(TypeError):
        jablate.ablate_annotations(conv_model, X, ANNOTATIONS, n=2, random_state=0,
                                   device="cpu", not_a_keyword=1)


# ------------------------------------------------------- a torch module's func, translated

# torch code whose meaning differs in JAX (std and var are unbiased in torch) or that JAX
# arrays cannot run at all (softmax, .values, keepdim=)
TORCH_FUNCS = {
    "std": lambda y: y.std(-1),
    "var": lambda y: y.var(-1, keepdim=True),
    "softmax": lambda y: y.softmax(-1)[:, :1],
    "max values": lambda y: torch.sigmoid(y).max(-1).values,
}


@pytest.mark.parametrize("name", TORCH_FUNCS)
def test_a_translated_modules_func_keeps_torchs_meaning(X, conv_model, name):
    """A torch module that runs translated (saturation_mutagenesis's default, backend='jax'
    elsewhere) gets its func translated with it: tangermeme's numbers, not JAX's meaning of
    the same method names (y.std() was the population sd: 18 % off for 3 outputs)."""
    func = TORCH_FUNCS[name]
    Xs, window = X[:2], dict(start=40, end=60)
    want = tangermeme.saturation_mutagenesis.saturation_mutagenesis(
        conv_model, Xs, func=func, raw_outputs=True, device="cpu", **window)
    got = jablate.saturation_mutagenesis(conv_model, Xs, func=func, raw_outputs=True, **window)
    assert_close(got.y0, want.y0)
    assert_close(got.y_hat, want.y_hat)
    attributions = tangermeme.saturation_mutagenesis.saturation_mutagenesis(
        conv_model, Xs, func=func, device="cpu", **window)
    assert_close(jablate.saturation_mutagenesis(conv_model, Xs, func=func, **window),
                 attributions)
    assert float(attributions.abs().max()) > 1e-4
    predicted = tangermeme.predict.predict(conv_model, X, func=func, device="cpu")
    assert_close(jablate.predict(conv_model, X, func=func, backend="jax"), predicted)
    y_before, _ = jablate.ablate(conv_model, X, 20, 40, n=2, random_state=0, backend="jax",
                                 additional_func_kwargs=dict(func=func))
    assert_close(y_before, predicted)


def _first_sd(ys):
    return ys[0].std(-1)


def test_a_translated_modules_func_is_translated_once_and_refused_clearly(X, conv_model,
                                                                          monkeypatch):
    from jablate.api.sums import DEVICE_SUMS
    from jablate.bridges import torch as bridge

    def sd(y):
        return y.std(-1)

    Xj = jnp.asarray(X.numpy())
    outputs = jax.ShapeDtypeStruct((1, 2), jnp.float32)
    assert bridge.translate_func(sd, outputs) is bridge.translate_func(sd, outputs)
    # with a symbolic batch (a fixed one would run every batch in chunks of it)
    assert bridge.translate_func(_first_sd, (outputs, outputs))._translated.dynamic_batch
    assert bridge.translate_func(sd, outputs)._translated.dynamic_batch
    calls = []
    real = bridge.translate_func
    monkeypatch.setattr(bridge, "translate_func", lambda *a: calls.append(a) or real(*a))
    jablate.predict(conv_model, Xj, func=sd, backend="jax")
    assert len(calls) == 1
    # jablate's own funcs mean the same in both frameworks: applied as they are
    jablate.predict(conv_model, Xj, func=DEVICE_SUMS, backend="jax")
    assert len(calls) == 1
    # a func that is not per row: said so, before a run
    with pytest.raises(ValueError, match=r"func must return arrays with a batch axis"):
        jablate.predict(conv_model, Xj, func=lambda y: y.sum(), backend="jax")
    # torch code torch.export cannot capture: a ValueError saying what to do, before a run
    with pytest.raises(ValueError, match=r"func could not be translated.*backend='torch'"):
        jablate.saturation_mutagenesis(conv_model, Xj, start=40, end=50,
                                       func=lambda y: torch.from_numpy(y.detach().numpy()))


class _Scaled(ConvModel):
    """A module whose output head is a method: ``func=model.head``."""

    def __init__(self, scale):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor([scale, -scale]))

    def head(self, y):
        return (y * self.scale).softmax(-1)


def test_a_bound_methods_translation_is_kept_on_its_object(X):
    """``model.head`` is a new object at each attribute access: its translation (and the
    compiled programs that hang on it) is found again on the model, per method, and dies
    with the model; two models of one class keep their own numbers."""
    import gc
    import weakref

    from jablate.bridges import torch as bridge

    torch.manual_seed(3)
    models = [_Scaled(0.5).eval(), _Scaled(2.0).eval()]
    outputs = jax.ShapeDtypeStruct((1, 2), jnp.float32)
    for m in models:
        first = bridge.translate_func(m.head, outputs)
        gc.collect()  # the first access's method object is gone
        assert bridge.translate_func(m.head, outputs) is first
        want = tangermeme.predict.predict(m, X, func=m.head, device="cpu")
        assert_close(jablate.predict(m, X, func=m.head, backend="jax"), want)
    assert (bridge.translate_func(models[0].head, outputs)
            is not bridge.translate_func(models[1].head, outputs))
    gone = weakref.ref(models[0])
    del models[0], m
    gc.collect()
    assert gone() is None


_TASK = 0


def _chosen_task(y):
    return y[:, _TASK:_TASK + 1]


def test_a_translated_func_reads_what_it_captures_at_each_call(X, conv_model):
    """A func's translation is not reused once what it captured changed: a closed-over
    layer's weights changed in place, a global it reads. tangermeme's torch call reads
    them at each call; so does jablate (the func is exported again, milliseconds)."""
    global _TASK
    torch.manual_seed(1)
    head = torch.nn.Linear(2, 1)

    def through_head(y):
        return head(y)

    Xs, window = X[:2], dict(start=40, end=50)
    for _ in range(2):
        want = tangermeme.saturation_mutagenesis.saturation_mutagenesis(
            conv_model, Xs, func=through_head, device="cpu", **window)
        assert_close(jablate.saturation_mutagenesis(conv_model, Xs, func=through_head,
                                                    **window), want)
        with torch.no_grad():
            head.weight.mul_(-2.0)
    try:
        for _TASK in (0, 1):
            want = tangermeme.predict.predict(conv_model, X, func=_chosen_task, device="cpu")
            assert_close(jablate.predict(conv_model, X, func=_chosen_task, backend="jax"), want)
    finally:
        _TASK = 0
