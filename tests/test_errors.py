"""jablate's one input error (issue 18, item 5): every input check raises jablate.InputError,
a ValueError; the command line tells bad input (exit 2) from a failing model (exit 1) by
its type alone."""

import numpy
import pytest

import jablate
from jablate._core.errors import InputError
from jablate._core.io import InputError as io_input_error
from jablate.api import effects

X = numpy.eye(4, dtype=numpy.float32)[numpy.random.RandomState(0).randint(4, size=(2,
    16))].transpose(0, 2, 1)


def model(x):
    return x.sum(axis=(1, 2))[:, None]


CHECKS = {
    "ablate n": lambda: jablate.ablate(model, X, 2, 6, n=0),
    "ablate region": lambda: jablate.ablate(model, X, 9, 3),
    "ablate reduce": lambda: jablate.ablate(model, X, 2, 6, reduce="median"),
    "annotations": lambda: jablate.ablate_annotations(model, X, [[5, 0, 3]]),
    "predict batch_size": lambda: jablate.predict(model, X, batch_size=0),
    "predict device": lambda: jablate.predict(model, X, device="tpu:7"),
    "predict dtype": lambda: jablate.predict(model, X, dtype="float128x"),
    "X not one-hot": lambda: jablate.ablate(model, X * 2, 2, 6),
    "predict X not 3-D": lambda: jablate.predict(model, X[0]),
    "args that int32 would wrap": lambda: jablate.predict(
        lambda x, a: model(x) + a, X, args=(numpy.full((len(X), 1), 2 ** 40),)),
    "shuffle region": lambda: jablate.shuffle(X, 10, 3),
    "dinucleotide width": lambda: jablate.dinucleotide_shuffle(X, 3, 4),
    "ism region": lambda: jablate.saturation_mutagenesis(model, X, start=12, end=4),
    "deep_lift_shap n_shuffles": lambda: jablate.deep_lift_shap(model, X, n_shuffles=0),
    "from_mean_std n": lambda: effects.from_mean_std([0.0], [0.0], [0.0], 0),
    "effects shapes": lambda: effects.shuffle_effects([0.0, 1.0], [[0.0]]),
}


@pytest.mark.parametrize("case", list(CHECKS))
def test_every_input_check_raises_jablates_input_error(case):
    with pytest.raises(InputError) as error:
        CHECKS[case]()
    assert isinstance(error.value, ValueError)


def test_one_input_error_everywhere():
    assert jablate.InputError is InputError is io_input_error
    import jablate.cli as cli
    assert not hasattr(cli, "_raised_by_jablate") and not hasattr(cli, "CommandError")


def test_a_model_raising_value_error_is_the_models_failure(tmp_path, capsys):
    """Told apart by type: the model's own ValueError is exit 1, jablate's InputError 2."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from jablate.cli import main

    (tmp_path / "s.fa").write_text(">s\nACGTACGTACGTACGTACGT\n")
    (tmp_path / "r.bed").write_text("s\t2\t8\n")
    common = ["ablate", "--fasta", tmp_path / "s.fa", "--regions", tmp_path / "r.bed",
        "--n", "2", "--quiet"]
    assert main([*map(str, common), "--model", "models_for_cli:raising_model"]) == 1
    assert "failed: ValueError" in capsys.readouterr().err
    assert main([*map(str, common), "--model", "models_for_cli:jax_model", "--device",
        "tpu:9"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_float_annotations_name_the_value_that_is_not_whole():
    ok = jablate.ablate_annotations(model, X, numpy.array([[1.0, 2.0, 9.0]]), n=2,
                                    random_state=0)
    same = jablate.ablate_annotations(model, X, [[1, 2, 9]], n=2, random_state=0)
    for a, b in zip(ok, same):
        numpy.testing.assert_array_equal(a, b)
    for bad, shown in ((2.5, "2.5"), (float("nan"), "nan")):
        with pytest.raises(InputError, match=rf"integers.*annotations\[0, 1\] is {shown}\."):
            jablate.ablate_annotations(model, X, numpy.array([[1.0, bad, 9.0]]), n=2)
    for bad, cell in ((numpy.array([1.0, 2.5, 9.0]), r"annotations\[1\]"),
                      (numpy.float64(2.5), "annotations")):
        with pytest.raises(InputError, match=rf"integers.*; {cell} is 2.5\."):
            jablate.ablate_annotations(model, X, bad, n=2)


def test_messages_count_in_the_singular_for_one():
    from jablate._core.errors import counted

    assert [counted(k, "chunk") for k in (0, 1, 2)] == ["0 chunks", "1 chunk", "2 chunks"]
