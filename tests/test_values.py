"""Behaviour as values (issue 18, item 3).

jablate's shuffles and funcs carry, from their definition, a value saying how the engine
runs them (``jablate._core.behaviour``); the engine finds it through one lookup per kind
(``ersatz.method_of``, ``ersatz.key_shuffle_of``, ``per_sequence.spec_of``), which also
looks through ``functools.partial``. A partial binding what the fast path honours runs
there and gives what the function itself gives; one binding anything else is called as
it is, with a warning, or refused, never silently run differently.
"""

import functools
import pathlib
import re
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy
import pytest

import jablate
from jablate import functional
from jablate._core import behaviour
from jablate._core.behaviour import PartialFallbackWarning
from jablate.api import ersatz
from jablate.engine import per_sequence
from jablate.incremental.run import check_mode

ablate_module = sys.modules["jablate.api.ablate"]

A, L = 4, 60
rng = numpy.random.default_rng(1)
X = numpy.eye(A, dtype=numpy.float32)[:, rng.integers(0, A, (4, L))].transpose(1, 0, 2).copy()
W = jnp.asarray(rng.normal(size=(3, A, 5)).astype(numpy.float32))
KEY = jax.random.key(4)


def model(x):
    return jax.nn.relu(jax.lax.conv(x, W, (1,), "SAME")).mean(-1)


@pytest.fixture
def no_materialised(monkeypatch):
    """Fail if ablate (or ablate_annotations) takes the materialised path."""
    def boom(*args, **kwargs):
        raise AssertionError("the materialised path ran")
    monkeypatch.setattr(ablate_module, "_materialised", boom)
    monkeypatch.setattr(ablate_module, "_annotation_loop", boom)


def _equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        numpy.testing.assert_array_equal(numpy.asarray(x), numpy.asarray(y))


def _close(a, b):
    """Across the fast and the materialised paths: equal to float32 rounding."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        numpy.testing.assert_allclose(numpy.asarray(x), numpy.asarray(y), rtol=1e-6,
                                      atol=1e-6)


# --- the values and their one lookup ------------------------------------------------------


def test_each_function_carries_its_value_from_definition():
    assert ersatz.method_of(jablate.shuffle) is ersatz.MONO
    assert ersatz.method_of(jablate.dinucleotide_shuffle) is ersatz.DINUCLEOTIDE
    assert ersatz.MONO.key_fn is functional.shuffle
    assert ersatz.DINUCLEOTIDE.key_fn is functional.dinucleotide_shuffle
    assert ersatz.key_shuffle_of(functional.shuffle).key_fn is functional.shuffle
    assert ersatz.key_shuffle_of(functional.dinucleotide_shuffle).min_width == 3
    assert ersatz.key_shuffle_of(jablate.dinucleotide_shuffle).key_fn is \
        functional.dinucleotide_shuffle
    assert isinstance(per_sequence.spec_of(jablate.predict).spec, behaviour.PredictFunc)
    assert per_sequence.spec_of(jablate.deep_lift_shap).spec.name == "deep_lift_shap"
    assert per_sequence.spec_of(jablate.saturation_mutagenesis).spec.takes_incremental
    # a key-first shuffle is not a batch shuffle, nor a func a shuffle
    assert ersatz.method_of(functional.shuffle) is None
    assert ersatz.method_of(jablate.predict) is None
    assert per_sequence.spec_of(jablate.shuffle) is None


def test_foreign_functions_and_wraps_wrappers_carry_nothing():
    @functools.wraps(jablate.shuffle)
    def wrapper(X, start=0, end=-1, n=1, random_state=None):
        return jablate.shuffle(X, start, end, n, random_state)

    assert behaviour.find(wrapper) is None  # it copied __jablate__, but may do anything
    assert ersatz.method_of(wrapper) is None
    assert ersatz.method_of(lambda X, **kw: X) is None
    assert per_sequence.spec_of(print) is None
    assert behaviour.find(functools.partial(wrapper)) is None


def test_the_lookup_sees_through_nested_partials():
    inner = functools.partial(jablate.dinucleotide_shuffle, verbose=True)
    found = behaviour.find(functools.partial(inner, verbose=False))
    assert found.function is jablate.dinucleotide_shuffle
    assert found.keywords == {"verbose": False} and found.partial
    assert ersatz.method_of(functools.partial(inner)) is ersatz.DINUCLEOTIDE


# --- partials of shuffles --------------------------------------------------------------


@pytest.mark.parametrize("shuffle_fn", [jablate.shuffle, jablate.dinucleotide_shuffle])
@pytest.mark.parametrize("random_state", [KEY, 3])
def test_a_partial_shuffle_runs_the_fast_path_bit_for_bit(shuffle_fn, random_state,
                                                          no_materialised):
    plain = jablate.ablate(model, X, 10, 40, n=3, shuffle_fn=shuffle_fn,
                           random_state=random_state, batch_size=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PartialFallbackWarning)
        bound = jablate.ablate(model, X, 10, 40, n=3, shuffle_fn=functools.partial(shuffle_fn),
                               random_state=random_state, batch_size=5)
    _equal(bound, plain)


def test_a_partial_shuffle_with_keywords_it_honours(no_materialised):
    plain = jablate.ablate(model, X, 10, 40, n=3, shuffle_fn=jablate.dinucleotide_shuffle,
                           random_state=KEY, reduce="mean_std")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PartialFallbackWarning)
        bound = jablate.ablate(model, X, 10, 40, n=3, random_state=KEY, reduce="mean_std",
                               shuffle_fn=functools.partial(jablate.dinucleotide_shuffle,
                                                            verbose=True))
        ann = numpy.array([[0, 5, 20], [2, 30, 50]])
        _equal(jablate.ablate_annotations(model, X, ann, n=2, random_state=KEY,
                                          shuffle_fn=functools.partial(jablate.shuffle)),
               jablate.ablate_annotations(model, X, ann, n=2, random_state=KEY))
    _equal(bound, plain)


def test_a_partial_shuffle_binding_ablates_own_keyword_is_called_as_it_is():
    """n is ablate's: the call's n=3 overrides the bound n=5, on either path."""
    partial = functools.partial(jablate.shuffle, n=5)
    with pytest.warns(PartialFallbackWarning, match=r"binds n\b.*materialised path") as seen:
        r = jablate.ablate(model, X, 10, 40, n=3, shuffle_fn=partial, random_state=7)
    assert {w.filename for w in seen} == {__file__}  # the warning names the user's line
    _close(r, jablate.ablate(model, X, 10, 40, n=3, random_state=7))


def test_a_partial_shuffle_with_a_positional_argument_warns_and_is_called_as_it_is():
    calls = []

    def shuffle_twice(extra, X, **kw):  # not jablate's: the bound argument reaches it
        calls.append(extra)
        return jablate.shuffle(X, **kw)

    r = jablate.ablate(model, X, 10, 40, n=2, random_state=7,
                       shuffle_fn=functools.partial(shuffle_twice, "x"))
    assert calls == ["x"]
    with pytest.warns(PartialFallbackWarning, match="positional argument 1"):
        with pytest.raises(TypeError):  # exactly what calling the partial does
            jablate.ablate(model, X, 10, 40, n=2, random_state=7,
                           shuffle_fn=functools.partial(jablate.shuffle, X))
    _close(r, jablate.ablate(model, X, 10, 40, n=2, random_state=7))


def test_unsupported_bound_arguments_are_refused_where_no_other_path_exists():
    with pytest.raises(jablate.InputError, match="binds n"):
        jablate.api.effects.arrangements(functools.partial(jablate.shuffle, n=2), X,
                                     [[0, 0, 10]])
    numpy.testing.assert_array_equal(
        jablate.api.effects.arrangements(functools.partial(jablate.shuffle), X, [[0, 0, 10]]),
        jablate.api.effects.arrangements(jablate.shuffle, X, [[0, 0, 10]]))
    with pytest.raises(jablate.InputError, match="binds offset"):
        jablate.deep_lift_shap(model, X, n_shuffles=2, random_state=KEY,
                               references=functools.partial(functional.shuffle, offset=2))


# --- partials of funcs -------------------------------------------------------------------


def test_a_partial_of_deep_lift_shap_runs_fast_as_additional_func_kwargs(no_materialised):
    kw = dict(target=1, random_state=jax.random.key(2))
    through_kwargs = jablate.ablate(model, X, 10, 40, n=2, random_state=KEY,
                                    func=jablate.deep_lift_shap,
                                    additional_func_kwargs=dict(kw, n_shuffles=5))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PartialFallbackWarning)
        bound = jablate.ablate(model, X, 10, 40, n=2, random_state=KEY,
                               func=functools.partial(jablate.deep_lift_shap, n_shuffles=5),
                               additional_func_kwargs=kw)
    _equal(bound, through_kwargs)
    # the call's keywords win over the bound ones, as in a call of the partial
    again = jablate.ablate(model, X, 10, 40, n=2, random_state=KEY,
                           func=functools.partial(jablate.deep_lift_shap, n_shuffles=3),
                           additional_func_kwargs=dict(kw, n_shuffles=5))
    _equal(again, through_kwargs)


def test_a_partial_of_deep_lift_shap_with_references_drawn_by_a_partial(no_materialised):
    kw = dict(n_shuffles=3, random_state=jax.random.key(2))
    plain = jablate.deep_lift_shap(model, X, **kw)
    _equal(jablate.deep_lift_shap(model, X, references=functools.partial(
        jablate.dinucleotide_shuffle), **kw), plain)
    _equal(jablate.deep_lift_shap(model, X, references=functional.dinucleotide_shuffle, **kw),
           plain)
    r = jablate.ablate(model, X, 10, 40, n=2, random_state=KEY, func=jablate.deep_lift_shap,
                       additional_func_kwargs=kw)
    fast = jablate.ablate(model, X, 10, 40, n=2, random_state=KEY, func=jablate.deep_lift_shap,
                          additional_func_kwargs=dict(
                              kw, references=functools.partial(jablate.dinucleotide_shuffle)))
    _equal(fast, r)


def test_a_partial_of_predict_and_of_saturation_mutagenesis(no_materialised):
    post = lambda y: y * 2.0  # noqa: E731
    _equal(jablate.ablate(model, X, 10, 40, n=2, random_state=KEY,
                          func=functools.partial(jablate.predict, func=post, batch_size=3)),
           jablate.ablate(model, X, 10, 40, n=2, random_state=KEY, func=jablate.predict,
                          batch_size=3, additional_func_kwargs=dict(func=post)))
    kw = dict(start=0, end=10, target=0)
    _equal(jablate.ablate(model, X, 20, 30, n=2, random_state=KEY,
                          func=functools.partial(jablate.saturation_mutagenesis, **kw)),
           jablate.ablate(model, X, 20, 30, n=2, random_state=KEY,
                          func=jablate.saturation_mutagenesis, additional_func_kwargs=kw))
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        jablate.ablate(model, X, 20, 30, n=2, func=functools.partial(jablate.predict,
                                                                      colour=1))


def test_a_partial_func_the_fast_path_cannot_honour_is_called_as_it_is():
    kw = dict(n_shuffles=2, target=0, random_state=jax.random.key(2))
    with pytest.warns(PartialFallbackWarning, match="raw_outputs") as seen:
        raw = jablate.ablate(model, X[:2], 10, 40, n=2, random_state=3,
                             func=functools.partial(jablate.deep_lift_shap, raw_outputs=True),
                             additional_func_kwargs=kw)
    assert {w.filename for w in seen} == {__file__}  # the warning names the user's line
    assert numpy.asarray(raw.y_after).shape == (2, 2, 2, A, L)  # multipliers per reference
    with pytest.warns(PartialFallbackWarning, match="args") as seen:
        jablate.ablate(model, X[:2], 10, 40, n=2, random_state=3,
                       func=functools.partial(jablate.predict, args=None))
    assert {w.filename for w in seen} == {__file__}
    with pytest.warns(PartialFallbackWarning, match="positional argument 1"):
        with pytest.raises(TypeError):
            jablate.ablate(model, X[:2], 10, 40, n=2, random_state=3,
                           func=functools.partial(jablate.predict, model))


# --- options as typed values ---------------------------------------------------------------


def test_incremental_is_checked_in_one_place():
    for good in ("auto", True, False):
        assert check_mode(good) is good or check_mode(good) == good
    for bad in ("yes", 1, None, numpy.bool_(True)):
        with pytest.raises(jablate.InputError, match="incremental must be 'auto', True or "
                                                     "False"):
            check_mode(bad)
    for call in (lambda: jablate.ablate(model, X, incremental="yes"),
                 lambda: jablate.ablate_annotations(model, X, [[0, 0, 5]], incremental=1),
                 lambda: jablate.saturation_mutagenesis(model, X, incremental="on")):
        with pytest.raises(jablate.InputError, match="incremental must be"):
            call()
    import typing
    hints = typing.get_type_hints(jablate.ablate)
    assert typing.get_args(hints["incremental"]) == ("auto", True, False)
    assert typing.get_type_hints(jablate.saturation_mutagenesis)["incremental"] == \
        hints["incremental"]


def test_no_identity_tables_or_patched_attributes_remain():
    """A supplement to the behavioural tests above."""
    root = pathlib.Path(jablate.__file__).parent
    source = "\n".join(p.read_text() for p in root.glob("*.py"))
    assert not re.search(r"\bMETHODS\b", source)
    assert not re.search(r"\bis predict\b", source)
    assert "sequence_func" not in source
    assert not re.search(r"__dict__\.setdefault", source)
