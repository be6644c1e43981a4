"""Caches with one owner (issue 18, item 6): ``jablate._core.caches`` lists every cache and
``jablate.clear_caches()`` empties them all; results do not change, programs compile again.
The weakref guarantees (a dropped model is freed) are tested in test_models_and_regions."""

import gc
import subprocess
import sys
import weakref

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy
import pytest

import jablate
from jablate._core import caches

A, L = 4, 48
rng = numpy.random.default_rng(2)
X = numpy.eye(A, dtype=numpy.float32)[:, rng.integers(0, A, (3, L))].transpose(1, 0, 2).copy()
W = jnp.asarray(rng.normal(size=(3, A, 5)).astype(numpy.float32))
KEY = jax.random.key(1)
ANN = numpy.array([[0, 5, 15], [1, 20, 30], [2, 30, 40]])


class Conv(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.relu(nn.Conv(3, (5,))(x.transpose(0, 2, 1))).mean(1))


def _post(y):
    return y * 2.0


def _runs(model, linen):
    """One call of every path that caches something."""
    return dict(
        ablate=jablate.ablate(model, X, 10, 30, n=2, random_state=KEY),
        dinucleotide=jablate.ablate(model, X, 10, 30, n=2, random_state=KEY,
                                    shuffle_fn=jablate.dinucleotide_shuffle),
        post=jablate.predict(model, X, func=_post),
        incremental=jablate.ablate_annotations(model, X, ANN, n=2, random_state=KEY,
                                               incremental=True),
        deep_lift_shap=jablate.deep_lift_shap(model, X, n_shuffles=2, random_state=KEY),
        ism=jablate.saturation_mutagenesis(model, X, start=10, end=20, incremental=True),
        ism_post=jablate.saturation_mutagenesis(model, X, start=10, end=14, func=_post,
                                                raw_outputs=True, incremental=False),
        func=jablate.ablate(model, X, 10, 30, n=2, random_state=KEY,
                            func=jablate.deep_lift_shap,
                            additional_func_kwargs=dict(n_shuffles=2)),
        linen=jablate.ablate(linen, X, 10, 30, n=2, random_state=KEY),
    )


def test_clear_caches_empties_every_cache_and_results_do_not_change():
    traces = []

    def model(x):
        traces.append(x.shape)
        return jax.nn.relu(jax.lax.conv(x, W, (1,), "SAME")).mean(-1)

    module = Conv()
    linen = module.bind(module.init(jax.random.key(0), X[:1]))
    jablate.clear_caches()
    before = _runs(model, linen)
    sizes = caches.sizes()
    expected = ("runner.by_structure", "runner.by_id", "dinucleotide.arborescences",
                "runner:runner.step", "runner:runner.posts", "runner:per_sequence.steps",
                "runner:incremental_engine.evaluators", "runner:ism.programs",
                "runner:ism.posts", "runner:deeplift.steps", "runner:deeplift.graphs")
    for name in expected:
        assert sizes.get(name, 0) > 0, (name, sizes)
    assert "bridges.torch_export.translations" in sizes  # listed, whether loaded or not

    traced = len(traces)
    jablate.clear_caches()
    assert all(size == 0 for size in caches.sizes().values()), caches.sizes()
    after = _runs(model, linen)
    assert len(traces) >= 2 * traced  # every program was traced again
    for name in before:
        for a, b in zip(jax.tree.leaves(before[name]), jax.tree.leaves(after[name]),
                        strict=True):
            numpy.testing.assert_array_equal(numpy.asarray(a), numpy.asarray(b), err_msg=name)


def test_a_step_is_compiled_again_after_clearing():
    traces = []

    def model(x):
        traces.append(1)
        return x.sum((1, 2))[:, None]

    jablate.predict(model, X)
    jablate.predict(model, X)
    assert len(traces) == 1
    jablate.clear_caches()
    jablate.predict(model, X)
    assert len(traces) == 2


def test_per_runner_caches_die_with_their_model():
    def make():
        big = jnp.ones(1000)
        return lambda x: x.sum((1, 2))[:, None] * big[0]

    model = make()
    jablate.ablate(model, X, 10, 30, n=2, random_state=KEY)
    jablate.deep_lift_shap(model, X, n_shuffles=2, random_state=KEY)
    ref = weakref.ref(model)
    live = len(caches._RUNNERS)
    del model
    gc.collect()
    assert ref() is None
    assert len(caches._RUNNERS) < live


def test_registration_and_the_bridge_hook():
    assert caches.register("test.scratch", {1: 2}) == {1: 2}
    assert caches.sizes()["test.scratch"] == 1
    jablate.clear_caches()
    assert caches.sizes()["test.scratch"] == 0
    with pytest.raises(TypeError):
        caches.register("test.bad", object())
    caches._REGISTRY.pop("test.scratch")
    # clearing never imports the torch bridge (nor torch)
    code = ("import sys, jablate; jablate.clear_caches(); jablate._core.caches.sizes(); "
            "assert 'jablate.bridges.torch_export' not in sys.modules; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_torch_bridge_translations_are_cleared_when_it_is_loaded():
    torch = pytest.importorskip("torch")
    from jablate.bridges.torch_export import _CACHE

    net = torch.nn.Sequential(torch.nn.Conv1d(4, 2, 3, padding=1), torch.nn.Flatten()).eval()
    first = jablate.predict(net, X, backend="jax", func=_torch_post)
    assert len(_CACHE) and caches.sizes()["bridges.torch_export.translations"] > 0
    assert caches.sizes()["bridges.torch.funcs"] == 1  # the func's translations
    jablate.clear_caches()
    assert len(_CACHE) == 0 and caches.sizes()["bridges.torch.funcs"] == 0
    numpy.testing.assert_array_equal(jablate.predict(net, X, backend="jax", func=_torch_post),
                                     first)


def _torch_post(y):
    return y.softmax(-1)
