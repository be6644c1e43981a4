"""jablate's attribution funcs inside ablate and ablate_annotations (issue 13).

``ablate(func=jablate.deep_lift_shap)`` streams: shuffles and references are drawn in
the compiled step. It must give exactly what calling the func on the materialised
shuffles gives (tangermeme's definition of ``ablate``), and, through that path, what
tangermeme's own ``ablate(func=deep_lift_shap)`` gives with the same references.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy
import pytest
from conftest import require

import jablate

A, L = 4, 80
rng = numpy.random.default_rng(0)
X = numpy.eye(A, dtype=numpy.float32)[:, rng.integers(0, A, (5, L))].transpose(1, 0, 2).copy()
X[3, :, 60:63] = 0  # unknown bases
W = jnp.asarray(rng.normal(size=(6, A, 7)).astype(numpy.float32))
V = jnp.asarray(rng.normal(size=(6, 2)).astype(numpy.float32))
KW = dict(n_shuffles=4, target=1)


def model(x):
    return jax.nn.relu(jax.lax.conv(x, W, (1,), "SAME")).mean(-1) @ V


def materialised(func, random_state, start, end, n, **kw):
    """tangermeme's definition: the func on X, then on the flattened shuffles."""
    shuffled = numpy.asarray(jablate.shuffle(X, start, end, n=n, random_state=random_state))
    before = func(model, X, random_state=random_state, **kw)
    after = func(model, shuffled.reshape(-1, A, L), random_state=random_state, **kw)
    after = numpy.asarray(after)
    return numpy.asarray(before), after.reshape(len(X), n, *after.shape[1:])


@pytest.mark.parametrize("random_state", [jax.random.key(3), 7])
def test_deep_lift_shap_in_ablate_equals_the_materialised_call(random_state):
    r = jablate.ablate(model, X, 20, 50, n=3, func=jablate.deep_lift_shap,
                       random_state=random_state, additional_func_kwargs=KW)
    before, after = materialised(jablate.deep_lift_shap, random_state, 20, 50, 3, **KW)
    assert numpy.asarray(r.y_before).shape == (5, A, L)
    assert numpy.asarray(r.y_after).shape == (5, 3, A, L)
    scale = numpy.abs(after).max()
    numpy.testing.assert_allclose(r.y_before, before, rtol=0, atol=1e-6 * scale)
    numpy.testing.assert_allclose(r.y_after, after, rtol=0, atol=1e-6 * scale)
    # results do not depend on batch_size (sequence-reference pairs per step)
    small = jablate.ablate(model, X, 20, 50, n=3, func=jablate.deep_lift_shap,
                           random_state=random_state, additional_func_kwargs=KW, batch_size=4)
    numpy.testing.assert_allclose(small.y_after, r.y_after, rtol=0, atol=1e-5 * scale)


def test_deep_lift_shap_references_are_drawn_ahead_in_blocks(monkeypatch):
    """The references of ablate(func=deep_lift_shap) are drawn a block of items at once
    (a whole-sequence dinucleotide shuffle walks over L: one walk per block, not per
    step); the steps then hold no loop, and blocks of any size give the same values."""
    from jablate.engine import per_sequence

    draws, walks, steps = [], [], []
    original, compiled = per_sequence._draw_ahead, per_sequence.compiled

    def counting(ahead, X, table, items, *rest, **kw):
        draws.append(items[0].shape[0])
        walks.append(str(original.trace(ahead, X, table, items, *rest, **kw).jaxpr))
        return original(ahead, X, table, items, *rest, **kw)

    recorded = []

    def recording(*a, **k):
        program = compiled(*a, **k)
        if program is None:
            return None
        recorded.append(program)

        def call(*args, **kwargs):
            steps.append(str(program.trace(*args, **kwargs).jaxpr))
            return program(*args, **kwargs)
        return call

    monkeypatch.setattr(per_sequence, "_draw_ahead", counting)
    monkeypatch.setattr(per_sequence, "compiled", recording)
    kw = dict(n=3, func=jablate.deep_lift_shap, random_state=jax.random.key(1),
              additional_func_kwargs=KW, batch_size=8)  # 2 sequences a step
    whole = jablate.ablate(model, X, 20, 50, **kw)
    # one block for the 5 sequences before (3 steps of 2, a block of 4 steps), one for
    # the 15 shuffles (8 steps)
    assert draws == [8, 16]
    # the walk is in the blocks' programs; the compiled steps take the references: no loop
    assert all("while" in p for p in walks)
    assert len(steps) == 3 + 8 and not any("while" in p or "scan" in p for p in steps)
    draws.clear()
    monkeypatch.setattr(per_sequence, "AHEAD_BLOCK_BYTES", 1)  # a block per step
    monkeypatch.setattr(per_sequence, "compiled", compiled)
    small = jablate.ablate(model, X, 20, 50, **kw)
    assert draws == [2] * 3 + [2] * 8
    numpy.testing.assert_array_equal(small.y_before, whole.y_before)
    numpy.testing.assert_array_equal(small.y_after, whole.y_after)
    # the steps' programs do not depend on how many items a run has: n=5 compiles nothing
    # new (blocks come in powers of two of the step, the steps take their own rows)
    monkeypatch.setattr(per_sequence, "AHEAD_BLOCK_BYTES", 64 * 2 ** 20)
    programs = {id(p): p for p in recorded}  # the first run's, cached on the model
    sizes = {k: p._cache_size() for k, p in programs.items()}
    jablate.ablate(model, X, 20, 50, **dict(kw, n=5))
    assert {k: p._cache_size() for k, p in programs.items()} == sizes


def test_deep_lift_shap_mean_std_and_annotations():
    key = jax.random.key(5)
    kept = jablate.ablate(model, X, 10, 40, n=4, func=jablate.deep_lift_shap, random_state=key,
                          additional_func_kwargs=KW)
    summary = jablate.ablate(model, X, 10, 40, n=4, func=jablate.deep_lift_shap,
                             random_state=key, additional_func_kwargs=KW, reduce="mean_std")
    after = numpy.asarray(kept.y_after, numpy.float64)
    scale = numpy.abs(after).max()
    numpy.testing.assert_allclose(summary.y_before, kept.y_before, rtol=0, atol=1e-6 * scale)
    numpy.testing.assert_allclose(summary.y_after_mean, after.mean(1), rtol=0, atol=1e-5 * scale)
    numpy.testing.assert_allclose(summary.y_after_std, after.std(1), rtol=0, atol=1e-3 * scale)

    ann = numpy.array([[0, 3, 20], [2, 40, 60], [0, 60, 70]])
    r = jablate.ablate_annotations(model, X, ann, n=2, func=jablate.deep_lift_shap,
                                   random_state=key, additional_func_kwargs=KW)
    # tangermeme's loop: ablate(X[idx:idx+1]) each. The same shuffles and references; the
    # attributions of one sequence and of a batch of annotations run at other batch shapes,
    # which XLA may round differently (1 ulp on jax 0.11.2's CPU, none on 0.10.2's).
    for k, (j, s, e) in enumerate(ann):
        one = jablate.ablate(model, X[j:j + 1], s, e, n=2, func=jablate.deep_lift_shap,
                             random_state=key, additional_func_kwargs=KW)
        tol = 4 * numpy.finfo(numpy.float32).eps * numpy.abs(one.y_after).max()
        numpy.testing.assert_allclose(r.y_befores[k], one.y_before, rtol=0, atol=tol)
        numpy.testing.assert_allclose(r.y_afters[k], one.y_after, rtol=0, atol=tol)
        assert not numpy.allclose(r.y_afters[k][:, 0], r.y_befores[k], rtol=0, atol=100 * tol)


def test_deep_lift_shap_in_ablate_checks_its_keywords_and_convergence():
    with pytest.raises(ValueError, match="n_shuffles"):
        jablate.ablate(model, X, 20, 50, n=2, func=jablate.deep_lift_shap,
                       additional_func_kwargs=dict(n_shuffles=0))
    with pytest.raises(ValueError, match="target must index"):
        jablate.ablate(model, X, 20, 50, n=2, func=jablate.deep_lift_shap, random_state=0,
                       additional_func_kwargs=dict(target=5))
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        jablate.ablate(model, X, 20, 50, n=2, func=jablate.deep_lift_shap,
                       additional_func_kwargs=dict(bogus=1))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # warning_threshold=0: float32 rounding alone passes it, so the check must warn
        jablate.ablate(model, X, 20, 50, n=2, func=jablate.deep_lift_shap, random_state=0,
                       additional_func_kwargs=dict(n_shuffles=3, warning_threshold=0.0))
    high = [w for w in caught if "Convergence deltas too high" in str(w.message)]
    assert high and {w.filename for w in high} == {__file__}  # the user's line, however deep


def test_deep_lift_shap_in_ablate_equals_tangermeme():
    """Through the materialised path with tangermeme's own references (seeded the way
    tangermeme seeds them), jablate's ablate equals tangermeme's ablate."""
    torch = require("torch")
    require("tangermeme")
    from tangermeme.ablate import ablate as tm_ablate
    from tangermeme.deep_lift_shap import deep_lift_shap as tm_dls
    from tangermeme.ersatz import dinucleotide_shuffle as tm_dinucleotide

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv1d(4, 6, 7, padding=3), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(),
                              torch.nn.Linear(6, 2)).eval()
    Xt = torch.from_numpy(X[[0, 1, 2, 4]])
    kw = dict(n_shuffles=3, target=1, references=tm_dinucleotide)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = tm_ablate(net, Xt, 20, 50, n=2, func=tm_dls, random_state=0, device="cpu",
                         additional_func_kwargs=kw)
        got = jablate.ablate(net, Xt, 20, 50, n=2, func=jablate.deep_lift_shap,
                             random_state=0, additional_func_kwargs=kw)
    for g, w in zip(got, want):
        w = w.detach().numpy()
        numpy.testing.assert_allclose(numpy.asarray(g), w, rtol=0,
                                      atol=1e-4 * numpy.abs(w).max())


def _ism(model, X, **kw):
    kw.pop("random_state", None)  # ISM draws nothing
    return jablate.saturation_mutagenesis(model, X, start=10, end=70, target=1, **kw)


@pytest.mark.parametrize("incremental", [True, False])
def test_saturation_mutagenesis_in_ablate_equals_the_materialised_call(incremental):
    key = jax.random.key(9)
    kw = dict(start=10, end=70, target=1, incremental=incremental)
    r = jablate.ablate(model, X, 20, 50, n=2, func=jablate.saturation_mutagenesis,
                       random_state=key, additional_func_kwargs=kw)
    before, after = materialised(_ism, key, 20, 50, 2)
    assert numpy.asarray(r.y_after).shape == (5, 2, A, 60)
    # an attribution is a difference of outputs: compare at the outputs' scale
    scale = float(numpy.abs(numpy.asarray(model(jnp.asarray(X)))).max())
    numpy.testing.assert_allclose(r.y_before, before, rtol=0, atol=1e-5 * scale)
    numpy.testing.assert_allclose(r.y_after, after, rtol=0, atol=1e-5 * scale)


def test_saturation_mutagenesis_in_ablate_checks_the_incremental_engine():
    from jablate.incremental.rules import break_rule
    from jablate.incremental.run import IncrementalMismatchWarning

    def other(x):  # a model of its own: its analysis is made under the broken rule
        return jax.nn.relu(jax.lax.conv(x, W * 2, (1,), "SAME")).mean(-1) @ V

    kw = dict(start=0, end=30, target=0, incremental=True)
    exact = jablate.ablate(other, X, 5, 25, n=2, func=jablate.saturation_mutagenesis,
                           random_state=0, additional_func_kwargs=dict(kw, incremental=False))
    with break_rule("conv_general_dilated"):
        with pytest.warns(IncrementalMismatchWarning, match="saturation_mutagenesis") as record:
            got = jablate.ablate(other, X, 5, 25, n=2, func=jablate.saturation_mutagenesis,
                                 random_state=0, additional_func_kwargs=kw)
    assert {r.filename for r in record} == {__file__}  # the warnings name the user's call
    for g, e in zip(got, exact):
        numpy.testing.assert_array_equal(g, e)
    with pytest.raises(ValueError, match="hypothetical"):
        jablate.ablate(model, X, 5, 25, n=2, func=jablate.saturation_mutagenesis,
                       additional_func_kwargs=dict(hypothetical="yes"))


def test_the_funcs_own_keywords_win_as_in_the_materialised_call():
    """The func's own random_state (from additional_func_kwargs) draws its references;
    ablate's incremental reaches saturation_mutagenesis; backend='torch' is the func's
    torch path, called on the materialised shuffles."""
    key = jax.random.key(1)
    kw = dict(KW, random_state=jax.random.key(2))
    r = jablate.ablate(model, X, 20, 50, n=2, func=jablate.deep_lift_shap, random_state=key,
                       additional_func_kwargs=kw)
    shuffled = numpy.asarray(jablate.shuffle(X, 20, 50, n=2, random_state=key))
    before = jablate.deep_lift_shap(model, X, **kw)
    after = jablate.deep_lift_shap(model, shuffled.reshape(-1, A, L), **kw)
    numpy.testing.assert_array_equal(r.y_before, before)
    numpy.testing.assert_array_equal(numpy.asarray(r.y_after).reshape(-1, A, L), after)

    calls = []
    real = jablate.attribution.ism._ablate_build
    def spy(apply, params, x, args, options, exact):
        calls.append((options[-1], exact))
        return real(apply, params, x, args, options, exact)
    spec = jablate.saturation_mutagenesis.__jablate__
    import dataclasses
    jablate.saturation_mutagenesis.__jablate__ = dataclasses.replace(spec, build=spy)
    try:
        jablate.ablate(lambda x: model(x) * 1.0, X, 20, 50, n=2,
                       func=jablate.saturation_mutagenesis, incremental=False,
                       additional_func_kwargs=dict(start=0, end=10))
    finally:
        jablate.saturation_mutagenesis.__jablate__ = spec
    assert calls and all(mode is False for mode, _ in calls)

    torch = require("torch")
    require("tangermeme")
    net = torch.nn.Sequential(torch.nn.Conv1d(4, 3, 5, padding=2), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten()).eval()
    Xt = torch.from_numpy(X[:2])
    kw = dict(start=30, end=40, backend="torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = jablate.ablate(net, Xt, 0, 20, n=2, func=jablate.saturation_mutagenesis,
                             random_state=0, additional_func_kwargs=kw)
    shuffled = jablate.shuffle(Xt, 0, 20, n=2, random_state=0).reshape(-1, A, L)
    want = jablate.saturation_mutagenesis(net, shuffled, **kw)
    numpy.testing.assert_allclose(got.y_after.reshape(-1, A, 10), want, rtol=1e-6, atol=1e-7)
