"""Friction a second newcomer met (2026-12-07, attributions and torch models): errors that
blamed the wrong thing, a README example deep_lift_shap refused, tangermeme's references
function with a JAX ``X``, 0-d integer regions, ``jablate.translate``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import require

import jablate
from jablate.models.frontdoor import check_int

torch = require("torch")

rng = np.random.RandomState(0)
X = np.eye(4, dtype=np.float32)[rng.randint(0, 4, (3, 50))].transpose(0, 2, 1).copy()
W = jnp.asarray(rng.normal(size=(4, 50)).astype(np.float32))


def model(x):
    return jnp.tanh(jnp.einsum("nal,al->n", x, W))[:, None]


def flattening_cnn(length):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv1d(4, 3, 5), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(3 * (length - 4), 2)).eval()


def test_a_model_that_fails_in_torch_itself_is_not_blamed_on_torch_export():
    m = flattening_cnn(50)
    with pytest.raises(RuntimeError, match=r"(?s)Sequential fails in torch itself on inputs of "
                       r"shape \(batch, 4, 60\): mat1 and mat2.*the alphabet and length"):
        jablate.translate(m, torch.zeros(2, 4, 60))
    with pytest.raises(RuntimeError, match="fails in torch itself"):
        jablate.deep_lift_shap(m, np.zeros((2, 4, 60), np.float32), n_shuffles=2,
                               random_state=0)


def test_a_module_run_in_torch_says_how_to_attribute_it():
    from jablate.bridges import torch as bridge

    with pytest.raises(NotImplementedError, match="pass the torch module itself.*"
                       "backend='torch'"):
        jablate.deep_lift_shap(bridge.wrap(flattening_cnn(50)), X, n_shuffles=2,
                               random_state=0)


def test_one_value_per_example_is_explained():
    with pytest.raises(ValueError, match=r"shape \(batch,\): attribute lambda x: "
                       r"model\(x\)\[:, None\]"):
        jablate.deep_lift_shap(lambda x: model(x)[:, 0], jnp.asarray(X), n_shuffles=2)


def test_tangermemes_references_function_takes_any_family():
    ersatz = require("tangermeme.ersatz")
    got = [jablate.deep_lift_shap(model, x, references=ersatz.dinucleotide_shuffle,
                                  n_shuffles=3, random_state=0, return_references=True)
           for x in (jnp.asarray(X), X, torch.from_numpy(X))]
    assert [type(g.attributions).__name__ for g in got] == ["ArrayImpl", "ndarray", "Tensor"]
    for g in got:  # tangermeme's own references and attributions, whatever X's family
        np.testing.assert_array_equal(np.asarray(g.references), got[2].references.numpy())
        np.testing.assert_array_equal(np.asarray(g.attributions), got[2].attributions.numpy())
    expected = ersatz.dinucleotide_shuffle(torch.from_numpy(X[1:2]), n=1, random_state=2)
    np.testing.assert_array_equal(got[0].references[1, 2], expected[0, 0].numpy())


def test_zero_dimensional_integer_arrays_are_integers():
    for value in (torch.tensor(10), jnp.int32(10), np.array(10), np.uint8(10)):
        assert check_int(value, "start") == 10
    for value in (torch.tensor(1.0), jnp.float32(2), np.array([1]), torch.tensor(True),
                  np.bool_(True)):
        with pytest.raises(ValueError, match="start must be an integer"):
            check_int(value, "start")
    by_int = jablate.ablate(model, X, 10, 20, n=2, random_state=0)
    by_tensor = jablate.ablate(model, X, torch.tensor(10), jnp.int32(20), n=2, random_state=0)
    np.testing.assert_array_equal(by_int[1], by_tensor[1])


def test_translate_is_at_the_top_and_takes_torch_tensors():
    import subprocess
    import sys

    m = torch.nn.Sequential(torch.nn.Conv1d(4, 2, 3), torch.nn.ReLU()).eval()
    tm = jablate.translate(m, torch.zeros(1, 4, 50))
    xt = torch.from_numpy(X)
    y = tm(xt)
    assert isinstance(y, jax.Array)
    np.testing.assert_allclose(np.asarray(y), m(xt).detach().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(AttributeError, match="no attribute 'translat'"):
        jablate.translat  # noqa: B018
    # importing jablate (and not asking for translate) still does not import torch
    # nor, running a plain JAX function, flax (half a second of every CLI run)
    code = ("import sys, numpy, jablate; jablate.ablate(lambda x: x.sum(axis=(1, 2)), "
            "numpy.eye(4, dtype='float32')[None].repeat(2, 0), 0, 3, n=2, random_state=0); "
            "assert 'torch' not in sys.modules; assert 'flax' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_another_target_or_hypothetical_compiles_nothing_new(monkeypatch):
    from jablate.attribution import deeplift

    filters = jnp.asarray(rng.normal(size=(3, 4, 7)).astype(np.float32))

    def conv(x):  # three outputs
        return jax.nn.relu(jax.lax.conv(x, filters, (1,), "SAME")).mean(2)

    steps = []
    real = deeplift._step_for

    def recording(*a):
        steps.append(real(*a))
        return steps[-1]

    monkeypatch.setattr(deeplift, "_step_for", recording)
    kw = dict(n_shuffles=4, random_state=0)
    Xj = jnp.asarray(X)
    first = jablate.deep_lift_shap(conv, Xj, target=0, **kw)
    last = jablate.deep_lift_shap(conv, Xj, target=2, **kw)
    hypothetical = jablate.deep_lift_shap(conv, Xj, target=2, hypothetical=True, **kw)
    np.testing.assert_array_equal(jablate.deep_lift_shap(conv, Xj, target=-1, **kw), last)
    assert len({id(s) for s in steps}) == 1 and steps[0]._cache_size() == 1
    # the observed symbols' share of the hypothetical contributions, exactly
    np.testing.assert_array_equal(hypothetical * Xj, last)
    assert not np.allclose(first, last)


def test_a_module_torch_runs_but_cannot_export_still_says_so():
    class Branching(torch.nn.Module):  # data-dependent control flow: torch.export refuses
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(4, 3, 5)

        def forward(self, x):
            h = self.conv(x).mean(-1).squeeze()  # (B, 3); (3,) at batch 1
            if h.sum() > 0:
                h = h * 2
            return torch.cat([h, -h], dim=1)

    module = Branching().eval()
    module(torch.zeros(4, 4, 50))  # torch runs it at the example's batch
    with pytest.raises(RuntimeError, match="torch.export could not capture Branching"):
        jablate.translate(module, torch.zeros(4, 4, 50))


def test_a_references_function_without_a_module_name_and_a_partial_of_tangermemes():
    import functools

    namespace = {}
    exec("def refs(X, n):\n    import numpy\n    return numpy.zeros((len(X), n) + X.shape[1:],"
         " numpy.float32)", namespace)  # all-zero references; __module__ is None
    assert namespace["refs"].__module__ is None
    got = jablate.deep_lift_shap(model, X, references=namespace["refs"], n_shuffles=2)
    # tanh(z) of a linear z from a zero reference: each term's share of tanh(z) - tanh(0)
    z = np.einsum("nal,al->n", X, np.asarray(W))
    expected = X * np.asarray(W) * (np.tanh(z) / z)[:, None, None]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    ersatz = require("tangermeme.ersatz")
    wrapped = functools.partial(ersatz.dinucleotide_shuffle)
    got = jablate.deep_lift_shap(model, jnp.asarray(X), references=wrapped, n_shuffles=2,
                                 random_state=0, return_references=True)
    direct = jablate.deep_lift_shap(model, torch.from_numpy(X), references=wrapped,
                                    n_shuffles=2, random_state=0, return_references=True)
    np.testing.assert_array_equal(np.asarray(got.references), direct.references.numpy())


def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path):
    """Files an editor saved with a UTF-8 byte-order mark read as without it (a FASTA
    had been refused as 'sequence data before the first header', a BED's first sequence
    name had held the invisible mark)."""
    from jablate._core.io import read_fasta, read_regions

    fasta, bed = ">s0\nACGTACGTAC\n>s1\nTTTTACGTAC\n", "s1\t2\t6\tr\n"
    for name, text in (("plain", ""), ("bom", "\ufeff")):
        (tmp_path / f"{name}.fa").write_text(text + fasta, encoding="utf-8")
        (tmp_path / f"{name}.bed").write_text(text + bed, encoding="utf-8")
    assert read_fasta(tmp_path / "bom.fa") == read_fasta(tmp_path / "plain.fa")
    names, sequences = read_fasta(tmp_path / "plain.fa")
    lengths = dict(zip(names, map(len, sequences)))
    assert [tuple(r) for r in read_regions(tmp_path / "bom.bed", lengths)] == \
        [tuple(r) for r in read_regions(tmp_path / "plain.bed", lengths)] == \
        [("r", "s1", 2, 6, 1)]


def test_jablate_effects_imports_by_name():
    from jablate.effects import arrangements

    assert arrangements is jablate.effects.arrangements
