"""Models as callers pass them (leaks, shared programs, clear errors), devices, and
regions that a shuffle cannot change."""

import gc
import itertools
import warnings
import weakref

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy
import psutil
import pytest
from flax import nnx

import jablate
from jablate.api import ersatz
from jablate.models.frontdoor import resolve_device

A, L = 4, 40
X = numpy.eye(A, dtype=numpy.float32)[:, numpy.random.default_rng(0).integers(0, A, (5, L))]
X = numpy.ascontiguousarray(X.transpose(1, 0, 2))  # (5, 4, 40)
BIG = 4_000_000  # 16 MB of float32


class Conv(nn.Module):
    width: int = 3

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(4, (self.width,))(x.transpose(0, 2, 1))
        return nn.Dense(1)(nn.relu(h).mean(1))


class BigLinen(nn.Module):
    @nn.compact
    def __call__(self, x):
        w = self.param("w", nn.initializers.ones, (BIG,))
        return (x[:, 0].sum(-1) * w[0] + x[:, 1, :5].sum(-1))[:, None]


class BigNNX(nnx.Module):
    def __init__(self, seed):
        self.w = nnx.Param(jnp.full(BIG, float(seed)))

    def __call__(self, x):
        return (x[:, 0].sum(-1) * self.w[0] + x[:, 1, :5].sum(-1))[:, None]


def _bound_big_linen(seed):
    m = BigLinen()
    return m.bind(m.init(jax.random.key(seed), X[:1]))


def _closure(seed):
    big = jnp.full(BIG, float(seed))
    return lambda x: (x[:, 0].sum(-1) * big[0] + x[:, 1, :5].sum(-1) + big[-1])[:, None]


MAKERS = {"linen": _bound_big_linen, "nnx": BigNNX, "closure": _closure}


def _ablate(model):
    return jablate.ablate(model, X, 5, 25, n=2, random_state=jax.random.key(0), batch_size=8)


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_a_dropped_model_is_freed(kind):
    refs = []
    for seed in range(3):
        model = MAKERS[kind](seed)
        _ablate(model)
        jablate.predict(model, X, batch_size=8)
        refs.append(weakref.ref(model))
        del model
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


def test_memory_stays_flat_over_many_models():
    """Models with a 16 MB array each: 0.1.0 kept every one (RSS grew ~23 MB a model)."""
    process = psutil.Process()
    for kind in ("linen", "closure"):
        _ablate(MAKERS[kind](0))  # warm up: compile and allocate once
        gc.collect()
        before = process.memory_info().rss
        for seed in range(1, 9):
            _ablate(MAKERS[kind](seed))
            gc.collect()
        grown = (process.memory_info().rss - before) / 1e6
        assert grown < 64, f"{kind}: RSS grew {grown:.0f} MB over 8 models of 16 MB"


@pytest.mark.parametrize("backend", [None, "jax"])
def test_a_torch_module_is_freed(backend):
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(A * L, 2))
    jablate.ablate(module, torch.from_numpy(X), 5, 25, n=2, random_state=0, backend=backend)
    ref = weakref.ref(module)
    del module
    gc.collect()
    assert ref() is None


def test_folds_of_one_architecture_share_compiled_programs():
    traces = []

    class Counted(nn.Module):
        @nn.compact
        def __call__(self, x):
            traces.append(x.shape)
            return nn.Dense(2)(x.reshape(x.shape[0], -1))

    folds = []
    for seed in range(3):
        m = Counted()
        folds.append(m.bind(m.init(jax.random.key(seed), X[:1])))
    traces.clear()
    ys = [jablate.predict(fold, X, batch_size=8) for fold in folds]
    assert len(traces) == 1  # one trace for all three folds: params are arguments
    for fold, y in zip(folds, ys):  # and each fold still uses its own weights
        numpy.testing.assert_allclose(y, fold(jnp.asarray(X)), rtol=1e-6)
    assert not numpy.allclose(ys[0], ys[1])


def test_bound_methods_share_one_runner():
    traces = []

    class Holder:
        def __init__(self):
            self.w = jnp.arange(A * L, dtype=jnp.float32).reshape(A, L)

        def predict(self, x):
            traces.append(1)
            return jnp.einsum("bal,al->b", x, self.w)[:, None]

    holder = Holder()
    for _ in range(3):
        jablate.predict(holder.predict, X, batch_size=8)  # a new bound method each time
    assert len(traces) == 1
    ref = weakref.ref(holder)
    del holder
    gc.collect()
    assert ref() is None


# --- models jablate cannot run: a clear ValueError before anything runs -----------------

def _unbound_apply():
    return Conv().apply


@pytest.mark.parametrize("make, message", [
    (lambda: Conv, "class .*Conv, not a model; pass an instance"),
    (lambda: BigNNX, "class .*BigNNX, not a model; pass an instance"),
    (lambda: Conv(), "unbound flax.linen Module"),
    (lambda: Conv().bind({}), "bound without the variables it needs"),
    (_unbound_apply, "unbound method Conv.apply"),
    (lambda: (lambda x: {"y": x.sum((1, 2))}), "must return an array or a tuple/list of arrays"),
    (lambda: 3, "model must be a flax module, a callable"),
])
def test_models_that_cannot_run_raise_clear_value_errors(make, message):
    with pytest.raises(ValueError, match=message):
        jablate.ablate(make(), X, 5, 25, n=2, random_state=0)


def test_a_torch_class_is_an_error():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="class torch.nn.modules.linear.Linear, not a model"):
        jablate.predict(torch.nn.Linear, X)


# --- one device resolver -------------------------------------------------------------------

def test_devices_resolve_in_one_place():
    cpu = jax.devices("cpu")[0]
    assert resolve_device("cpu") == cpu and resolve_device("CPU:0") == cpu
    assert resolve_device(cpu) is cpu and resolve_device(None) is None
    for bad, message in [("cuda:x", "not a device name"),
                         ("tpu", "not available to JAX: it sees no tpu device"),
                         ("cpu:9", "JAX sees only 1 cpu device")]:
        with pytest.raises(ValueError, match=f"device '{bad}'.*{message}|{message}"):
            resolve_device(bad)
    with pytest.raises(ValueError, match="device 'tpu' is not available to JAX"):
        jablate.predict(lambda x: x.sum((1, 2)), X, device="tpu")
    torch = pytest.importorskip("torch")
    assert resolve_device("cpu", "torch") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            resolve_device("cuda:0", "torch")


# --- regions a shuffle cannot change ------------------------------------------------------

def _one_hot(word, alphabet="ACGT"):
    x = numpy.zeros((len(alphabet), len(word)), numpy.float32)
    for i, c in enumerate(word):
        if c in alphabet:
            x[alphabet.index(c), i] = 1
    return x


def _brute_force_dinucleotide(word):
    pairs = sorted(zip(word, word[1:]))
    return len({p for p in set(itertools.permutations(word))
                if p[0] == word[0] and p[-1] == word[-1] and sorted(zip(p, p[1:])) == pairs})


def test_arrangement_counts_match_brute_force():
    rng = numpy.random.default_rng(3)
    words = ["A", "AA", "AC", "AATA", "ACAC", "ACGT", "AAAAAA", "ACCCACGATGATG"[:8], "NNAN",
             "ACNNAC", "TTATTA"] + ["".join(rng.choice(list("ACGTN"), size=rng.integers(3, 9)))
                                   for _ in range(25)]
    Xw = numpy.stack([numpy.pad(_one_hot(w), ((0, 0), (2, 12 - len(w)))) for w in words])
    idx, starts, ends = numpy.arange(len(words)), numpy.full(len(words), 2), \
        numpy.array([2 + len(w) for w in words])
    Xj = jnp.asarray(Xw)
    mono = ersatz.count_mono_arrangements(Xj, idx, starts, ends)
    dinuc = ersatz.count_dinucleotide_arrangements(Xj, idx, starts, ends)
    for w, m, d in zip(words, mono, dinuc):
        assert m == len(set(itertools.permutations(w))), w
        assert d == _brute_force_dinucleotide(w), w


def test_count_windows_are_cut_on_the_host_as_on_a_device():
    """Region counts read windows around each region: cut by numpy from a host ``X`` (no
    program compiled per number of sequences), gathered by a program elsewhere; both are
    the slices themselves, the last ones clipped to the sequence's end."""
    from jablate.engine import stream as engine

    rng = numpy.random.default_rng(8)
    X = jnp.asarray(rng.integers(0, 2, (5, 4, 30)).astype(numpy.float32))
    seq = numpy.array([4, 0, 2, 2, 1], numpy.int32)
    starts = numpy.array([0, 7, 26, 13, 29], numpy.int32)
    width = 8
    offsets = numpy.minimum(starts, 30 - width)
    host = ersatz._windows(X, seq, offsets, width)
    gathered = engine.batch_windows(X, (seq, starts), width)
    brute = numpy.stack([numpy.asarray(X)[j, :, o:o + width] for j, o in zip(seq, offsets)])
    numpy.testing.assert_array_equal(numpy.asarray(host), brute)
    numpy.testing.assert_array_equal(numpy.asarray(gathered), brute)


def test_unchangeable_regions_are_counted_in_a_warning():
    words = ["GGGGGGGGAAAAACCCC", "ACACACACTTTTTGGGG", "ACGTACGATGCAGTCAT"]
    Xw = numpy.stack([_one_hot(w) for w in words])
    model = lambda x: jnp.cumsum(x[:, 0], -1)[:, -3:]
    with pytest.warns(ersatz.UnchangedRegionWarning, match=r"1 of 3 regions cannot be changed "
                      r"by shuffle \(0-based, in the order given: 0\)") as caught:
        jablate.ablate(model, Xw, 0, 8, n=2, random_state=0)  # GGGGGGGG only
    assert caught[0].filename == __file__
    with pytest.warns(ersatz.UnchangedRegionWarning, match=r"2 of 3 regions cannot be changed "
                      r"by dinucleotide_shuffle \(0-based, in the order given: 0, 1\)"):
        jablate.ablate(model, Xw, 0, 8, n=2, shuffle_fn=jablate.dinucleotide_shuffle,
                       random_state=0)  # GGGGGGGG and ACACACAC
    ann = numpy.array([[0, 8, 13], [1, 8, 13], [2, 0, 17], [2, 3, 5]])
    with pytest.warns(ersatz.UnchangedRegionWarning, match=r"2 of 4 regions .*given: 0, 1\)"
                      ) as caught:
        jablate.ablate_annotations(model, Xw, ann, n=2, random_state=0)
    assert caught[0].filename == __file__  # the caller's line, not jablate's
    with pytest.warns(ersatz.UnchangedRegionWarning, match="2 of 3 regions") as caught:
        jablate.shuffle(Xw, 13, 17, n=2, random_state=0)  # CCCC and GGGG
    assert caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jablate.ablate(model, Xw, 6, 12, n=2, random_state=0)  # every region can change


# --- the runner cache matches models by identity, and compiles once per model ------------

def test_models_that_compare_equal_keep_their_own_weights():
    from dataclasses import dataclass, field

    @dataclass(frozen=True)
    class Scaled:
        name: str
        w: jax.Array = field(compare=False, hash=False)

        def __call__(self, x):
            return (x[:, 0] * self.w).sum(-1)

        def other(self, x):
            return (x[:, 1] * self.w).sum(-1)

    one, five = Scaled("cnn", jnp.ones(L)), Scaled("cnn", 5 * jnp.ones(L))
    assert one == five
    numpy.testing.assert_allclose(jablate.predict(one, X), one(jnp.asarray(X)))
    numpy.testing.assert_allclose(jablate.predict(five, X), five(jnp.asarray(X)))
    # the object and one of its bound methods are different models
    numpy.testing.assert_allclose(jablate.predict(one.other, X), one.other(jnp.asarray(X)))
    numpy.testing.assert_allclose(jablate.predict(one, X), one(jnp.asarray(X)))


def test_linen_fields_of_other_types_get_their_own_program():
    class Scale(nn.Module):
        scale: float

        @nn.compact
        def __call__(self, x):
            return x[:, 0, :3] * self.scale

    outs = []
    for scale in (0.5, numpy.float32(0.5)):  # equal, but 0.5 * bf16 stays bf16
        m = Scale(scale).bind({})
        y = jablate.predict(m, X, dtype="bfloat16")
        assert y.dtype == m(jnp.asarray(X, jnp.bfloat16)).dtype
        outs.append(y.dtype)
    assert outs[0] != outs[1]


def test_a_parameter_free_linen_module_runs():
    class Counts(nn.Module):
        @nn.compact
        def __call__(self, x):
            return x.sum(-1)

    m = Counts()
    numpy.testing.assert_array_equal(jablate.predict(m.bind({}), X), X.sum(-1))


def test_unhashable_and_array_holding_models_compile_once():
    from dataclasses import dataclass

    traces = []

    @dataclass  # not frozen: unhashable
    class Plain:
        w: jax.Array

        def __call__(self, x):
            traces.append(1)
            return (x[:, 2] * self.w).sum(-1)

    class Field(nn.Module):
        table: jax.Array

        @nn.compact
        def __call__(self, x):
            traces.append(1)
            return (x[:, 0] * self.table).sum(-1) + self.param("b", nn.initializers.zeros, ())

    plain = Plain(jnp.ones(L))
    field_model = Field(jnp.ones(L))
    field_model = field_model.bind(field_model.init(jax.random.key(0), X[:1]))
    for model in (plain, field_model):
        traces.clear()
        for _ in range(3):
            jablate.predict(model, X, batch_size=8)
        assert len(traces) == 1


def test_func_is_compiled_once_and_freed_with_the_caller():
    traces = []

    def make_post():
        big = jnp.ones(BIG)

        def post(y):
            traces.append(1)
            return y * big[0]
        return post

    post = make_post()
    model = _bound_big_linen(0)
    for _ in range(2):
        jablate.predict(model, X, func=post, batch_size=8)
    assert len(traces) == 1
    ref = weakref.ref(post)
    del post
    gc.collect()
    assert ref() is None


def test_foreign_func_annotations_pass_args_through_as_tangermeme():
    seen = []

    def func(model, X, args=None, **kwargs):
        seen.append(None if args is None else args[0].shape)
        return jablate.predict(model, X, args=args)

    model = lambda x, a: x[:, 0].sum(-1) + a[:, 0]
    args = (numpy.ones((1, 1), numpy.float32),)  # one row, used by every annotation
    ann = numpy.array([[2, 5, 10], [4, 0, 3]])
    jablate.ablate_annotations(model, X, ann, n=2, func=func, args=args, random_state=0)
    assert seen == [(1, 1), (2, 1), (1, 1), (2, 1)]  # before (1 row), after (n rows)


def test_numpy_and_object_inputs_give_value_errors():
    with pytest.raises(ValueError, match="X must hold numbers"):
        jablate.predict(lambda x: x, numpy.array([[["A"]]]))
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(A * L, 1))
    y = jablate.predict(module, torch.from_numpy(X), dtype=numpy.float32)
    torch.testing.assert_close(y, module(torch.from_numpy(X)).detach())
    with pytest.raises(ValueError, match="dtype"):
        jablate.predict(module, torch.from_numpy(X), dtype="bogus")
