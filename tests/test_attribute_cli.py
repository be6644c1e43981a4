"""``jablate attribute``: attributions of FASTA sequences on the command line, equal to
``jablate.deep_lift_shap`` and ``jablate.saturation_mutagenesis`` from Python, written as
TF-MoDISco reads them."""

import numpy
import pytest
from conftest import require
from test_cli import main_in_process

import jablate
from jablate._core.io import one_hot_encode

SEQUENCES = ["".join(s) for s in numpy.random.default_rng(5).choice(list("ACGTN"), (5, 60),
             p=[0.24, 0.24, 0.24, 0.24, 0.04])]
NAMES = [f"peak{i}" for i in range(5)]


@pytest.fixture
def inputs(tmp_path):
    (tmp_path / "seqs.fa").write_text("".join(f">{n} some description\n{s}\n"
                                              for n, s in zip(NAMES, SEQUENCES)))
    return tmp_path


def _attribute(inputs, *args):
    return main_in_process("attribute", "--fasta", "seqs.fa", "--quiet", *args, cwd=inputs)


def _ok(result):
    assert result.returncode == 0, result.stderr
    return result


def _error(result, status=2):
    assert result.returncode == status, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jablate: error: "), result.stderr
    return lines[0]


def test_deep_lift_shap_writes_what_modisco_reads_and_equals_python(inputs):
    import models_for_cli

    result = main_in_process("attribute", "--model", "models_for_cli:jax_model", "--fasta",
        "seqs.fa", "--out", "shap.npz", "--sequences", "ohe.npz", "--plot", "logos.png",
        "--n-shuffles", "6", "--seed", "11", "--batch-size", "12", cwd=inputs)
    _ok(result)
    assert [line for line in result.stderr.splitlines() if line.startswith("jablate:")] == [
        "jablate: wrote shap.npz", "jablate: wrote ohe.npz", "jablate: wrote logos.png"]
    X = one_hot_encode(SEQUENCES)
    want = numpy.asarray(jablate.deep_lift_shap(models_for_cli.jax_model, X, n_shuffles=6,
                                                random_state=11, hypothetical=True,
                                                batch_size=12))
    with numpy.load(inputs / "shap.npz") as shap, numpy.load(inputs / "ohe.npz") as ohe:
        assert sorted(shap.files) == ["arr_0", "attributions", "names"]
        assert shap["arr_0"].shape == (5, 4, 60) and shap["arr_0"].dtype == numpy.float32
        numpy.testing.assert_array_equal(shap["arr_0"], want)
        numpy.testing.assert_array_equal(shap["attributions"], want * X)
        numpy.testing.assert_array_equal(ohe["arr_0"], X)
        assert list(shap["names"]) == list(ohe["names"]) == NAMES
    assert (inputs / "logos.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ism_equals_python_and_a_tuple_output_is_chosen_with_output(inputs):
    import models_for_cli

    X = one_hot_encode(SEQUENCES)
    _ok(_attribute(inputs, "--model", "models_for_cli:jax_conv_heads", "--output", "0",
                   "--method", "ism", "--out", "ism.npz"))
    want = numpy.asarray(jablate.saturation_mutagenesis(
        lambda x: models_for_cli.jax_conv_heads(x)[0], X, target=0, hypothetical=True))
    with numpy.load(inputs / "ism.npz") as ism:
        numpy.testing.assert_allclose(ism["arr_0"], want, rtol=1e-6, atol=1e-6)
        assert numpy.abs(want).max() > 0.1

    # a (batch,) output is one task; --target picks a column
    _ok(_attribute(inputs, "--model", "models_for_cli:jax_flat_heads", "--output", "0",
                   "--out", "flat.npz", "--n-shuffles", "3"))
    want = numpy.asarray(jablate.deep_lift_shap(models_for_cli.jax_model, X, n_shuffles=3,
                                                random_state=0, hypothetical=True))
    with numpy.load(inputs / "flat.npz") as flat:
        numpy.testing.assert_array_equal(flat["arr_0"], want)
    _ok(_attribute(inputs, "--model", "models_for_cli:jax_three_tasks", "--target", "2",
                   "--out", "task.npz", "--method", "ism"))
    with numpy.load(inputs / "task.npz") as task:
        numpy.testing.assert_allclose(task["arr_0"], 0.5 * numpy.asarray(
            jablate.saturation_mutagenesis(models_for_cli.jax_model, X, hypothetical=True)),
            rtol=1e-5, atol=1e-6)


def test_which_output_is_asked_before_anything_is_written(inputs):
    line = _error(_attribute(inputs, "--model", "models_for_cli:jax_conv_heads", "--out",
                             "x.npz"))
    assert line.endswith("the model returns 2 outputs (per sequence: (1,), (2, 60)); "
                         "choose the one to explain with --output I")
    line = _error(_attribute(inputs, "--model", "models_for_cli:jax_conv_heads",
                             "--output", "1", "--out", "x.npz"))
    assert "2 axes per sequence (2, 60) (a profile?)" in line and "--profile" in line
    assert _error(_attribute(inputs, "--model", "models_for_cli:jax_conv_heads", "--output",
        "0", "--profile", "--out", "x.npz")).endswith("--profile explains a profile, two or "
        "more axes per sequence (BPNet's (strands, positions)); the output explained has "
        "per sequence (1,)")
    line = _error(_attribute(inputs, "--model", "models_for_cli:jax_conv_heads",
                             "--output", "2", "--out", "x.npz"))
    assert line.endswith("--output 2 is not an output of the model: it returns 2 (0 to 1)")
    line = _error(_attribute(inputs, "--model", "models_for_cli:jax_model", "--output", "1",
                             "--out", "x.npz"))
    assert "the model returns one output" in line
    assert _error(_attribute(inputs, "--model", "models_for_cli:jax_model", "--target", "1",
        "--out", "x.npz")).endswith("--target 1: the output explained has one column; "
                                    "leave --target out")
    assert _error(_attribute(inputs, "--model", "models_for_cli:jax_three_tasks", "--target",
        "3", "--out", "x.npz")).endswith("--target 3 is not a column of the output "
                                         "explained: it has 3 (0 to 2)")
    assert _error(_attribute(inputs, "--model", "models_for_cli:jax_model", "--method", "ism",
        "--seed", "3", "--out", "x.npz")).endswith("--seed is for --method deep_lift_shap's "
                                                   "references; --method ism draws none")
    line = _error(_attribute(inputs, "--model", "models_for_cli:jax_sine", "--out", "x.npz"))
    assert line.endswith("deep_lift_shap has no DeepLIFT rule for these operations of the "
        "model on input-dependent values: sin; --method ism attributes any model (in Python, "
        "deep_lift_shap takes rules of your own: additional_nonlinear_rules)")
    assert "ending in .npz" in _error(_attribute(inputs, "--model",
        "models_for_cli:jax_model", "--out", "x.tsv"))
    assert "--out and --sequences name the same file" in _error(_attribute(inputs,
        "--model", "models_for_cli:jax_model", "--out", "x.npz", "--sequences", "x.npz"))
    assert "raising_model rejects" in _error(_attribute(inputs, "--model",
        "models_for_cli:raising_model", "--out", "x.npz"), status=1)
    assert sorted(p.name for p in inputs.iterdir()) == ["seqs.fa"]  # nothing half-written


def test_a_torch_module_s_output_is_chosen_in_torch_and_translated(inputs):
    torch = require("torch")
    import models_for_cli

    _ok(_attribute(inputs, "--model", "models_for_cli:torch_two_heads", "--output", "0",
                   "--out", "torch.npz", "--n-shuffles", "4"))
    X = one_hot_encode(SEQUENCES)
    want = jablate.deep_lift_shap(models_for_cli.torch_model(), torch.from_numpy(X),
                                  n_shuffles=4, random_state=0, hypothetical=True)
    with numpy.load(inputs / "torch.npz") as got:
        numpy.testing.assert_array_equal(got["arr_0"], want.numpy())


@pytest.mark.parametrize("command", ["attribute", "ablate"])
def test_an_interrupt_python_swallowed_still_stops_the_run(inputs, command):
    (inputs / "regions.bed").write_text("peak0\t10\t30\n")
    more = ("--regions", "regions.bed", "--table", "x.tsv") if command == "ablate" else \
        ("--out", "x.npz")
    result = main_in_process(command, "--model", "models_for_cli:jax_swallowed_interrupt",
                             "--fasta", "seqs.fa", "--quiet", *more, cwd=inputs)
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "jablate: interrupted; no output written"
    assert sorted(p.name for p in inputs.iterdir()) == ["regions.bed", "seqs.fa"]
    from jablate._core import interrupts

    interrupts.note()  # a signal noted before a command is not that command's
    ok = main_in_process(command, "--model", "models_for_cli:jax_model", "--fasta",
                         "seqs.fa", "--quiet", *more, cwd=inputs)
    assert ok.returncode == 0, ok.stderr
    assert not interrupts.pending()


def test_outputs_that_are_not_finite_give_nan_and_say_so(inputs):
    import warnings

    import models_for_cli

    X = one_hot_encode(SEQUENCES)
    starts_with_a = X[:, 0, 0] == 1
    assert 0 < starts_with_a.sum() < len(X)
    for attribute, kw in ((jablate.deep_lift_shap, dict(n_shuffles=3, random_state=0)),
                          (jablate.saturation_mutagenesis, {})):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = numpy.asarray(attribute(models_for_cli.jax_inf_after_a, X, **kw))
        said = [str(w.message) for w in caught if "not finite" in str(w.message)]
        assert len(said) == 1, said
        if attribute is jablate.deep_lift_shap:  # per sequence; the others as before
            assert said[0].startswith("The model's output is not finite (NaN or inf) for "
                                      f"{3 * starts_with_a.sum()} of 15 sequence-reference "
                                      f"pairs ({starts_with_a.sum()} of 5 sequences")
            assert numpy.isnan(got[starts_with_a]).all()
            numpy.testing.assert_array_equal(got[~starts_with_a], numpy.asarray(
                attribute(models_for_cli.jax_model, X, **kw))[~starts_with_a])
        else:  # substituting A at the first position makes every sequence's output inf
            assert said[0].startswith("The model's output is not finite (NaN or inf) for 5 "
                                      "of 5 sequences or their substitutions")
            assert not numpy.isfinite(got[:, :, 0]).any()
            assert numpy.isfinite(got[~starts_with_a, :, 1:]).all()

    # inside ablate too, where ISM runs on each shuffled sequence
    with pytest.warns(RuntimeWarning, match="not finite .* for 5 of 5 items"):
        jablate.ablate(models_for_cli.jax_inf_after_a, X, 20, 30, n=1, random_state=0,
                       func=jablate.saturation_mutagenesis,
                       additional_func_kwargs=dict(start=0, end=3))

    # a NaN made of a constant has zero multipliers: NaN, not "no base matters"
    with pytest.warns(RuntimeWarning, match="not finite .* for 15 of 15"):
        got = numpy.asarray(jablate.deep_lift_shap(models_for_cli.jax_constant_nan, X,
                                                   n_shuffles=3, random_state=0))
    assert numpy.isnan(got).all()
    # the command line refuses to write that, and says so
    line = _error(_attribute(inputs, "--model", "models_for_cli:jax_constant_nan", "--out",
                             "x.npz"), status=1)
    assert line.endswith("its output is not finite (NaN or inf) for every sequence, so no "
                         "attribution means anything (are sequences of 60 bp the input "
                         "length the model expects?)")
    result = _ok(_attribute(inputs, "--model", "models_for_cli:jax_inf_after_a", "--out",
                            "y.npz", "--n-shuffles", "3"))
    assert result.stderr.strip() == (
        f"jablate: warning: the model's output is not finite (NaN or inf) for "
        f"{starts_with_a.sum()} of 5 sequences (or their references or substitutions): "
        "their attributions hold NaN or inf")
    with numpy.load(inputs / "y.npz") as y:
        assert numpy.isnan(y["arr_0"][starts_with_a]).all()
    # ISM: inf at the first position of every sequence, finite elsewhere: written (with
    # logos, the NaN drawn as 0), not refused
    result = _ok(_attribute(inputs, "--model", "models_for_cli:jax_inf_after_a", "--method",
                            "ism", "--out", "z.npz", "--plot", "z.png"))
    assert "not finite (NaN or inf) for 5 of 5 sequences" in result.stderr
    with numpy.load(inputs / "z.npz") as z:
        assert numpy.isfinite(z["arr_0"][~starts_with_a, :, 1:]).all()
    assert sorted(p.name for p in inputs.iterdir()) == ["seqs.fa", "y.npz", "z.npz", "z.png"]


def test_letters_other_than_acgtn_are_said_once(tmp_path):
    (tmp_path / "rna.fa").write_text(">r1\nACGUUNacgu\n>r2\nRYACGTACGT\n")
    result = _ok(main_in_process("attribute", "--model", "models_for_cli:jax_model",
        "--fasta", "rna.fa", "--out", "x.npz", "--quiet", "--method", "ism", cwd=tmp_path))
    assert result.stderr.strip() == ("jablate: warning: rna.fa: 5 of 20 bases are not A, C, "
        "G, T or N (3 'U', 1 'R', 1 'Y'): each is read as an unknown base, as N is (an "
        "all-zero column)")


def test_a_profile_is_explained_as_bpnet_lite_s_profile_wrapper_does(inputs):
    torch = require("torch")
    require("bpnetlite")
    import models_for_cli
    from bpnetlite.bpnet import ProfileWrapper

    from jablate.attribution.deeplift import rescale_first

    long = ["".join(s) for s in numpy.random.default_rng(6).choice(list("ACGT"), (3, 200))]
    (inputs / "long.fa").write_text("".join(f">l{i}\n{s}\n" for i, s in enumerate(long)))
    X = one_hot_encode(long)  # BPNet crops 53 positions at each end
    rules = {"mul": rescale_first}  # bpnet-lite's treatment of the wrapper's product
    _ok(main_in_process("attribute", "--fasta", "long.fa", "--quiet", "--model",
                        "models_for_cli:torch_bpnet", "--output", "0", "--profile", "--out",
                        "p.npz", "--n-shuffles", "4", cwd=inputs))
    want = jablate.deep_lift_shap(ProfileWrapper(models_for_cli.torch_bpnet()),
                                  torch.from_numpy(X), n_shuffles=4, random_state=0,
                                  hypothetical=True, additional_nonlinear_rules=rules)
    with numpy.load(inputs / "p.npz") as got:
        numpy.testing.assert_array_equal(got["arr_0"], want.numpy())
        assert numpy.abs(got["arr_0"]).max() > 0
    # sequences no longer than the cropping: an empty profile, and the length question
    assert _error(_attribute(inputs, "--model", "models_for_cli:torch_bpnet", "--output", "0",
        "--profile", "--out", "e.npz"), status=1).endswith("failed: ValueError: its output 0 "
        "is empty: per sequence (1, 0) (are sequences of 60 bp the input length the model "
        "expects?)")

    # a JAX model's profile, the same reduction written in JAX
    def wrapped(x):
        logits = models_for_cli.jax_conv_heads(x)[1].reshape(x.shape[0], -1)
        logits = logits - logits.mean(axis=-1, keepdims=True)
        return (logits * jax.nn.softmax(logits, axis=-1)).sum(axis=-1, keepdims=True)

    import jax

    _ok(main_in_process("attribute", "--fasta", "long.fa", "--quiet", "--model",
                        "models_for_cli:jax_conv_heads", "--output", "1", "--profile",
                        "--out", "j.npz", "--n-shuffles", "4", cwd=inputs))
    want = numpy.asarray(jablate.deep_lift_shap(wrapped, X, n_shuffles=4, random_state=0,
                                                hypothetical=True,
                                                additional_nonlinear_rules=rules))
    with numpy.load(inputs / "j.npz") as got:
        numpy.testing.assert_array_equal(got["arr_0"], want)
