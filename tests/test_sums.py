"""Sums of the outputs on the device (``jablate.api.sums``) and ``jablate ablate``'s table
from them: compensated summation against ``math.fsum``, the layout, refusals, and the table
against the one summed in float64 from every kept shuffle."""

import csv
import io
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy
import pytest

import jablate
from jablate._core.errors import InputError
from jablate.api.ersatz import UnchangedRegionWarning
from jablate.api.sums import DEVICE_SUMS, compensated_sum, compensation_holds

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models_for_cli  # noqa: E402

EPS = float(numpy.finfo(numpy.float32).eps)


def _hard_rows(width, rows=4, seed=0):
    """float32 rows over ten orders of magnitude, with large values that cancel."""
    rs = numpy.random.RandomState(seed)
    x = rs.standard_normal((rows, width)) * 10.0 ** rs.uniform(-3, 6, (rows, width))
    if width >= 4:
        x[:, 1], x[:, width - 2] = 3e8, -3e8
    return x.astype(numpy.float32)


def _exact(x):
    return numpy.array([math.fsum(row) for row in x.astype(numpy.float64)])


@pytest.mark.parametrize("width", [1, 2, 3, 7, 64, 1000, 2114, 4097])
def test_compensated_sums_are_exact_to_float64(width):
    x = _hard_rows(width)
    exact = _exact(x)
    bound = 16 * EPS ** 2 * numpy.abs(x).sum(axis=1, dtype=numpy.float64)
    hi, lo = jax.jit(compensated_sum)(x)
    assert hi.shape == lo.shape == (4, 1) and hi.dtype == jnp.float32
    got = numpy.asarray(hi, numpy.float64)[:, 0] + numpy.asarray(lo, numpy.float64)[:, 0]
    assert (numpy.abs(got - exact) <= bound).all()
    if width >= 64:  # what a float32 sum loses: the bound has teeth
        plain = numpy.asarray(jnp.sum(jnp.asarray(x), axis=1), numpy.float64)
        assert (numpy.abs(plain - exact) > bound).any()


def test_compensated_sums_in_torch_and_float64():
    torch = pytest.importorskip("torch")
    x = _hard_rows(2114)
    hi, lo = compensated_sum(torch.from_numpy(x))
    got = hi.double().numpy()[:, 0] + lo.double().numpy()[:, 0]
    bound = 16 * EPS ** 2 * numpy.abs(x).sum(axis=1, dtype=numpy.float64)
    assert (numpy.abs(got - _exact(x)) <= bound).all()
    wide = numpy.random.RandomState(1).standard_normal((3, 999))  # float64 stays float64
    hi, lo = compensated_sum(torch.from_numpy(wide))
    assert hi.dtype == torch.float64
    numpy.testing.assert_allclose(hi.numpy()[:, 0] + lo.numpy()[:, 0], _exact(wide),
        rtol=0, atol=1e-28 * 999)


def test_no_loop_and_depth_grows_with_log_width():
    def equations(width):
        jaxpr = jax.make_jaxpr(DEVICE_SUMS)(jnp.ones((2, width), jnp.float32)).jaxpr
        names = {e.primitive.name for e in jaxpr.eqns}
        assert not names & {"while", "scan", "fori_loop"}
        return len(jaxpr.eqns)

    # 2048 -> 4096 positions: one more level of the tree, a few equations, not thousands.
    assert 0 < equations(4096) - equations(2048) <= 16


def test_compensation_holds_here():
    assert compensation_holds()
    assert compensation_holds(jax.devices("cpu")[0])
    pytest.importorskip("torch")
    assert compensation_holds(None, "torch")


def test_device_sums_layout_and_dtypes():
    v = jnp.arange(12.0, dtype=jnp.float32).reshape(2, 6)
    half = jnp.ones((2, 3, 2), jnp.bfloat16)
    ints = jnp.ones((2, 1), jnp.int32)
    out = DEVICE_SUMS((v, half, ints))
    assert len(out) == 3 + 1 and all(o.shape == (2, 3) for o in out[:-1])
    numpy.testing.assert_array_equal(numpy.asarray(out[0]), [[15, 0, 15], [51, 0, 51]])
    assert out[1].dtype == jnp.float32 and float(out[1][0, 0]) == 6.0  # bfloat16 in float32
    numpy.testing.assert_array_equal(numpy.asarray(out[-1]),
        [[6, EPS, 6, 2 ** -7, 1, EPS]] * 2)
    assert DEVICE_SUMS(v)[-1].shape == (2, 2)
    # the host tables' resolution is the same function: bfloat16 included, integers aside
    from jablate.api.effects import float_resolution
    assert float_resolution(numpy.asarray(half)) == 2 ** -7 == float(out[-1][0, 3])
    assert float_resolution(numpy.zeros(2), numpy.zeros(2, int)) == numpy.finfo(float).eps
    assert float_resolution(numpy.zeros(2, int)) == EPS


@pytest.mark.parametrize("bad, message", [
    (lambda: jnp.ones((2, 3), jnp.complex64), "holds complex64 values, not real numbers"),
    (lambda: {"a": jnp.ones((2, 3))}, "it is a dict, not an array"),
    (lambda: jnp.ones((2, 2, 0)), r"it has no values per sequence \(shape \(2, 0\) each; "
     "a model that trims its input"),
])
def test_device_sums_refuse_what_cannot_be_summed(bad, message):
    with pytest.raises(InputError, match=message):
        DEVICE_SUMS(bad())


def _two_heads_data(k=24, length=300):
    rs = numpy.random.RandomState(4)
    X = numpy.eye(4, dtype=numpy.float32)[rs.randint(0, 4, (6, length))].transpose(0, 2, 1)
    X[5] = 0.0
    X[5, 0] = 1.0  # all A: no region of it can change
    starts = rs.randint(0, length - 20, k)
    ann = numpy.stack([rs.randint(0, 6, k), starts, starts + 20], axis=1)
    ann[0, 0] = 5
    return X, ann


# jax_conv_heads' profile ends in a convolution, as a BPNet's does: the sums on the device
# are those of the very values kept, to float64 rounding. jax_two_heads' profile ends in an
# elementwise product, which XLA contracts with the sum's first additions into fused
# multiply-adds: the sums are then those of the values before their last rounding, which
# moves them by at most eps * sum|values| (the float32 rounding of each value).
@pytest.mark.parametrize("model, exact", [("jax_conv_heads", True), ("jax_two_heads", False)])
def test_table_from_device_sums_equals_the_float64_sums_of_every_shuffle(model, exact):
    from jablate.api.effects import changeable
    from jablate.cli import summarise, summarise_sums

    model = getattr(models_for_cli, model)
    X, ann = _two_heads_data()
    k, n = len(ann), 6
    kwargs = dict(n=n, random_state=2, incremental=False)
    with pytest.warns(UnchangedRegionWarning):
        y_before, y_after = jablate.ablate_annotations(model, X, ann, **kwargs)
        sums = jablate.ablate_annotations(model, X, ann,
            additional_func_kwargs=dict(func=DEVICE_SUMS), **kwargs)
    changes = changeable(jablate.shuffle, X, ann)
    raw = summarise(y_before, y_after, k, n, changes)
    device = summarise_sums(*sums, k, n, changes)
    assert [h["label"] for h in device] == [h["label"] for h in raw] == ["out0_", "out1_sum_"]
    assert [h["summed"] for h in device] == [False, True]

    # DeviceSums of the very outputs that were kept: the table to float64 rounding.
    def sums_of(ys, shape):
        flat = [jnp.asarray(y).reshape(math.prod(shape), -1) for y in ys]
        return [numpy.asarray(s).reshape(*shape, -1) for s in jax.jit(DEVICE_SUMS)(flat)]

    again = summarise_sums(sums_of(y_before, (k, 1)), sums_of(y_after, (k, 1, n)), k, n,
        changes)
    kept = numpy.asarray(y_after[1], numpy.float64).reshape(k, n, -1)
    scale = numpy.abs(kept).sum(axis=2).max(axis=1)
    plain = numpy.asarray(jnp.sum(jnp.asarray(y_after[1]).reshape(k, n, -1), axis=2),
        numpy.float64)  # what a plain float32 sum on the device would have given
    fine = 1e-12 * scale
    assert (numpy.abs(plain - raw[1]["after"]) > fine[:, None]).any()  # the bound has teeth
    for tables, tolerance in ((again, fine), (device, fine if exact else EPS * scale)):
        for r, d in zip(raw, tables):
            if not r["summed"]:  # a single value: nothing to sum
                numpy.testing.assert_array_equal(d["after"], r["after"])
                numpy.testing.assert_array_equal(d["drop"], r["drop"])
                continue
            for key in ("before", "drop", "spread"):
                assert (numpy.abs(d[key] - r[key]) <= tolerance).all(), key
            assert (numpy.abs(d["after"] - r["after"]) <= tolerance[:, None]).all()
            numpy.testing.assert_array_equal(numpy.isnan(d["z"]), numpy.isnan(r["z"]))
            assert d["drop"][0] == d["spread"][0] == 0.0 and numpy.isnan(d["z"][0])
            defined = ~numpy.isnan(r["z"])
            numpy.testing.assert_allclose(d["z"][defined], r["z"][defined],
                rtol=1e-9 if tolerance is fine else 1e-3)


def test_summarise_sums_refuses_another_layout():
    from jablate.cli import summarise_sums

    with pytest.raises(InputError, match="DeviceSums' layout"):
        summarise_sums([numpy.zeros((3, 1, 3))], [numpy.zeros((3, 1, 2, 3))], 3, 2)


def _table(text):
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    return {row["name"]: row for row in rows}


def _run(tmp_path, monkeypatch, capsys, model, *more):
    from jablate.cli import main

    rs = numpy.random.RandomState(7)
    (tmp_path / "seqs.fa").write_text("".join(
        f">s{i}\n{''.join(rs.choice(list('ACGT'), 300))}\n" for i in range(5)))
    (tmp_path / "regions.tsv").write_text("".join(
        f"s{i}\t{11 * i + 3}\t{11 * i + 40}\n" for i in range(5)) + "s0\t0\t1\n")
    monkeypatch.chdir(tmp_path)
    assert main(["ablate", "--model", f"models_for_cli:{model}", "--fasta", "seqs.fa",
        "--regions", "regions.tsv", "--n", "5", "--quiet", *more]) == 0
    captured = capsys.readouterr()
    return _table(captured.out), captured.err


def _run_both(tmp_path, monkeypatch, capsys, model, *more):
    kept, _ = _run(tmp_path, monkeypatch, capsys, model, "--out", "all.npz", *more)
    summed, err = _run(tmp_path, monkeypatch, capsys, model, *more)
    return kept, summed, err


# Models whose outputs end in a convolution (or a linear layer), and torch in eager mode:
# the table without --out is the same text. jax_two_heads' profile ends in a product that
# XLA may contract into the sums (see above): the same columns, values to 1e-3.
@pytest.mark.parametrize("model", ["jax_conv_heads", "torch_model", "torch_two_heads",
                                   "jax_bfloat16", "jax_two_heads"])
def test_cli_table_without_out_equals_the_table_with_it(tmp_path, monkeypatch, capsys,
                                                        model):
    if model.startswith("torch"):
        pytest.importorskip("torch")
    kept, summed, err = _run_both(tmp_path, monkeypatch, capsys, model)
    assert "warning" not in err
    assert len(kept) == 6 and kept.keys() == summed.keys()
    if model != "jax_two_heads":
        assert summed == kept
        return
    for name, row in kept.items():
        assert row.keys() == summed[name].keys()
        for column, value in row.items():
            if column.endswith(("before", "after", "drop", "score")):
                numpy.testing.assert_allclose(float(summed[name][column]), float(value),
                    rtol=1e-3, atol=1e-5, err_msg=f"{name} {column}")
            else:
                assert summed[name][column] == value


@pytest.mark.parametrize("model", ["jax_big_integers", "jax_with_inf"])
def test_cli_keeps_every_shuffle_where_the_sums_cannot_be_trusted(tmp_path, monkeypatch,
                                                                  capsys, model):
    kept, summed, err = _run_both(tmp_path, monkeypatch, capsys, model)
    assert summed == kept
    assert ("jablate: warning: some of the model's outputs are not finite, or too large to "
            "sum in their dtype, or integers of 2**24 or more") in err


def test_device_sums_flag_what_they_cannot_sum():
    from jablate.api.sums import trusted

    big = DEVICE_SUMS(jnp.array([[2 ** 24 + 1, 1], [3, 4]], jnp.int32))
    assert numpy.isinf(big[0][0, 2]) and float(big[0][1, 2]) == 7.0
    assert not trusted([big[0], big[1]]) and trusted([big[0][1:], big[1]])
    infinite = DEVICE_SUMS(jnp.array([[1.0, jnp.inf], [1.0, 2.0]]))
    assert not trusted([infinite[0], infinite[1]])
    overflow = DEVICE_SUMS(jnp.full((1, 4), 3e38, jnp.float32))
    assert not trusted([overflow[0], overflow[1]])


@pytest.mark.parametrize("model, message", [
    ("jax_scalar", "the model must return arrays with a batch axis; its output is "
                   "0-dimensional."),
    ("jax_empty", "the model must return an array or a tuple/list of arrays; it returned "
                  "an empty tuple."),
])
@pytest.mark.parametrize("out", [True, False])
def test_cli_refuses_outputs_it_cannot_summarise_with_exit_2(tmp_path, monkeypatch, capsys,
                                                            model, message, out):
    from jablate.cli import main

    _run(tmp_path, monkeypatch, capsys, "jax_model")  # writes the inputs
    code = main(["ablate", "--model", f"models_for_cli:{model}", "--fasta", "seqs.fa",
        "--regions", "regions.tsv", "--n", "2", "--quiet"] + (["--out", "x.npz"] if out
        else []))
    err = capsys.readouterr().err
    assert code == 2 and err == f"jablate: error: {message}\n"
    assert not (tmp_path / "x.npz").exists()


def test_cli_keeps_every_shuffle_where_compensation_fails(tmp_path, monkeypatch, capsys):
    import jablate.cli

    kept, _ = _run(tmp_path, monkeypatch, capsys, "jax_two_heads", "--out", "all.npz")
    monkeypatch.setattr(jablate.cli, "compensation_holds", lambda *args: False)
    monkeypatch.setattr(jablate.cli, "DEVICE_SUMS", None)  # must not be used
    fallback, err = _run(tmp_path, monkeypatch, capsys, "jax_two_heads")
    assert fallback == kept
    assert "compensated sums are not exact where the model runs" in err


def test_incremental_engine_checks_device_sums_and_agrees_with_the_full_path():
    import warnings

    from jablate.api.effects import changeable
    from jablate.cli import summarise_sums
    from jablate.engine.executor import IncrementalMismatchWarning

    X, ann = _two_heads_data()
    k, n = len(ann), 6
    heads = {}
    for incremental in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnchangedRegionWarning)
            warnings.simplefilter("error", IncrementalMismatchWarning)
            sums = jablate.ablate_annotations(models_for_cli.jax_two_heads, X, ann, n=n,
                random_state=2, incremental=incremental,
                additional_func_kwargs=dict(func=DEVICE_SUMS))
        heads[incremental] = summarise_sums(*sums, k, n, changeable(jablate.shuffle, X, ann))
    for full, windowed in zip(heads[False], heads[True]):
        tolerance = 4 * EPS * numpy.abs(full["after"]).max()
        for key in ("before", "drop"):
            assert (numpy.abs(windowed[key] - full[key]) <= tolerance).all(), key
