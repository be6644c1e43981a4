"""End-to-end tests of the ``jablate`` command line.

What needs a fresh interpreter (``python -m jablate`` itself, the console script, exit
statuses and a clean stderr of a new process, Ctrl-C) runs as ``python -P -m jablate ...``
(``-P``: the current directory is not put on ``sys.path`` by Python, so the CLI's own
handling of it is what is tested) in a temporary directory, with the repository and
``tests/`` on ``PYTHONPATH`` so that the models of ``tests/models_for_cli.py`` can be named
as ``models_for_cli:...``. Everything else calls ``jablate.cli.main`` in this process (the
same code path; pytest's own ``sys.path`` does not hold the temporary directories either),
without paying for a fresh interpreter that imports JAX and torch each time.
"""

import concurrent.futures
import contextlib
import csv
import gzip
import importlib.metadata
import io
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy
import pytest
from conftest import require, signals_as_in_a_terminal

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))

N = 4
SEED = 3
PNG = b"\x89PNG\r\n\x1a\n"
PDF = b"%PDF-"

FASTA = """>s0 first record
ACGTGATAAGCTTACGGCTCAGTTCAGCATGCAAGTCGAT
>s1
acgtgataagcttacggatcaagttcagcaTGCAAGTCGG
>s2
TTGCAGATAAGGCTACNNNAAGTTCAGGATAAGCAAGTCC
;  a comment line
>s3
GGGATCGATAAGCTTACG
GATAAGTTCAGCATGCAAGTCA
"""

REGIONS = """# name start end
s0\t4\t10\tmotif_a\textra column
s1\t0\t6

s2\t30\t40\ttail
s3 10 20 mid
s0\t20\t28
"""

REGION_NAMES = ["motif_a", "s1:0-6", "tail", "mid", "s0:20-28"]


def run_cli(*args, cwd, env=None, timeout=180):
    """Run ``python -m jablate ARGS`` in ``cwd``; return the CompletedProcess."""

    return subprocess.run(_command(args), cwd=cwd, env=_env(env), capture_output=True,
        text=True, timeout=timeout)


def main_in_process(*args, cwd):
    """``jablate ARGS`` through ``jablate.cli.main`` in this process, in ``cwd``; a
    CompletedProcess as :func:`run_cli` returns (stderr: what went through sys.stderr)."""

    from jablate.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            status = main([str(a) for a in args])
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(args, status, stdout.getvalue(), stderr.getvalue())


def _command(args):
    isolate = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *isolate, "-m", "jablate", *map(str, args)]


def _env(extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(TESTS),
        env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def _ok(result):
    assert result.returncode == 0, result.stderr
    return result


def _error_line(result):
    """The single line a failed run wrote to stderr (log lines of JAX/absl aside)."""

    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()
        and not line.startswith(("WARNING", "W0", "I0", "E0"))]
    assert len(lines) == 1, result.stderr
    return lines[0]


def _read_table(path_or_text):
    text = Path(path_or_text).read_text() if isinstance(path_or_text, Path) else \
        path_or_text
    header, *rows = [line.split("\t") for line in text.splitlines()]
    assert all(len(row) == len(header) for row in rows)
    return header, rows


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("inputs")
    (directory / "seqs.fa").write_text(FASTA)
    (directory / "regions.tsv").write_text(REGIONS)
    return directory


def _python_result(model, inputs, shuffle="mono", n=N, seed=SEED, batch_size=64):
    import jablate
    from jablate._core.io import one_hot_encode, read_fasta, read_regions

    names, sequences = read_fasta(inputs / "seqs.fa")
    regions = read_regions(inputs / "regions.tsv", {a: len(s) for a, s in
        zip(names, sequences)})
    annotations = numpy.array([(names.index(r.sequence), r.start, r.end)
        for r in regions])
    shuffle_fn = jablate.dinucleotide_shuffle if shuffle == "dinucleotide" else \
        jablate.shuffle
    return jablate.ablate_annotations(model, one_hot_encode(sequences), annotations, n=n,
        shuffle_fn=shuffle_fn, random_state=seed, batch_size=batch_size)


@pytest.fixture(scope="module")
def torch_reference(inputs):
    """``jablate.ablate_annotations`` on the tiny torch model, from Python (n=N, SEED)."""

    pytest.importorskip("torch")
    import models_for_cli

    model = models_for_cli.torch_model()
    return model, _python_result(model, inputs)


def test_reading_inputs(inputs):
    from jablate._core.io import one_hot_encode, read_fasta, read_regions

    names, sequences = read_fasta(inputs / "seqs.fa")
    assert names == ["s0", "s1", "s2", "s3"]
    assert sequences[3] == "GGGATCGATAAGCTTACGGATAAGTTCAGCATGCAAGTCA"  # two lines joined
    X = one_hot_encode(sequences)
    assert X.shape == (4, 4, 40) and X.dtype == numpy.float32
    numpy.testing.assert_array_equal(X[1], one_hot_encode([sequences[1].upper()])[0])
    assert X[2].sum(axis=0).tolist() == [1] * 16 + [0] * 3 + [1] * 21  # NNN at 16-18
    assert X[0][:, :4].argmax(axis=0).tolist() == [0, 1, 2, 3]

    regions = read_regions(inputs / "regions.tsv", dict.fromkeys(names, 40))
    assert [r.name for r in regions] == REGION_NAMES
    assert [r.line for r in regions] == [2, 3, 5, 6, 7]
    assert (regions[0].sequence, regions[0].start, regions[0].end) == ("s0", 4, 10)


# --- the demo ---------------------------------------------------------------------------


def test_demo_without_arguments(tmp_path):
    # `python -m jablate` with no arguments runs `jablate demo`, plot in the current directory.
    started = time.perf_counter()
    result = _ok(subprocess.run(_command([]), cwd=tmp_path, env=_env(),
        capture_output=True, text=True, timeout=180))
    print(f"demo took {time.perf_counter() - started:.1f} s")

    rows = {}
    for line in result.stdout.splitlines():
        fields = line.split()
        if fields and fields[0] in ("motif", "control"):
            before, after, drop, z = map(float, fields[-4:])
            rows[fields[0]] = dict(before=before, after=after, drop=drop, z=z)
    assert set(rows) == {"motif", "control"}, result.stdout
    motif, control = rows["motif"], rows["control"]
    assert motif["before"] > 0.5
    assert motif["drop"] > 0.4
    assert motif["drop"] > 5 * abs(control["drop"]) + 0.2
    assert motif["z"] > 3 and abs(control["z"]) < motif["z"] / 3
    assert (tmp_path / "jablate-demo.png").read_bytes().startswith(PNG)


def test_console_script_help():
    script = shutil.which("jablate")
    if script is None:
        pytest.skip("the jablate console script is not installed (pip install -e .)")
    result = subprocess.run([script, "ablate", "--help"], capture_output=True, text=True,
        timeout=60)
    assert result.returncode == 0 and "--regions" in result.stdout


# --- ablations --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_run(inputs, tmp_path_factory):
    pytest.importorskip("torch")
    directory = tmp_path_factory.mktemp("torch_run")
    result = main_in_process("ablate", "--model", "models_for_cli:torch_model",
        "--fasta", inputs / "seqs.fa", "--regions", inputs / "regions.tsv",
        "--n", N, "--seed", SEED, "--device", "cpu",
        "--out", directory / "results.npz", "--table", directory / "effects.tsv",
        "--plot", directory / "effects.png", cwd=directory)
    return directory, _ok(result)


def test_torch_model_outputs(torch_run):
    directory, result = torch_run
    assert "wrote" in result.stderr and result.stdout == ""

    with numpy.load(directory / "results.npz") as npz:
        assert {"y_befores", "y_afters", "names", "sequences", "starts",
            "ends"} <= set(npz.files)
        assert npz["y_befores"].shape == (5, 1, 1)
        assert npz["y_afters"].shape == (5, 1, N, 1)
        assert list(npz["names"]) == REGION_NAMES
        assert list(npz["sequences"]) == ["s0", "s1", "s2", "s3", "s0"]
        assert list(npz["starts"]) == [4, 0, 30, 10, 20]
        assert list(npz["ends"]) == [10, 6, 40, 20, 28]
        before, after = npz["y_befores"][:, 0, 0], npz["y_afters"][:, 0, :, 0]

    header, rows = _read_table(directory / "effects.tsv")
    assert header == ["name", "sequence", "start", "end", "mean_before", "mean_after",
        "mean_drop", "z_score"]
    assert [row[0] for row in rows] == REGION_NAMES
    assert rows[3][:4] == ["mid", "s3", "10", "20"]
    values = numpy.array([[float(v) for v in row[4:]] for row in rows])
    drop = before - after.mean(axis=1)
    numpy.testing.assert_allclose(values[:, 0], before, rtol=1e-5, atol=1e-6)
    numpy.testing.assert_allclose(values[:, 1], after.mean(axis=1), rtol=1e-5, atol=1e-6)
    numpy.testing.assert_allclose(values[:, 2], drop, rtol=1e-5, atol=1e-5)
    with numpy.errstate(divide="ignore", invalid="ignore"):
        z = drop / after.std(axis=1, ddof=1)
    numpy.testing.assert_allclose(values[:, 3], z, rtol=1e-4, atol=1e-4)

    assert (directory / "effects.png").read_bytes().startswith(PNG)
    assert sorted(os.listdir(directory)) == ["effects.png", "effects.tsv", "results.npz"]


def test_torch_model_matches_python(torch_run, torch_reference):
    directory, _ = torch_run
    _, (y_befores, y_afters) = torch_reference
    with numpy.load(directory / "results.npz") as npz:
        numpy.testing.assert_allclose(npz["y_befores"], y_befores, rtol=1e-6, atol=1e-6)
        numpy.testing.assert_allclose(npz["y_afters"], y_afters, rtol=1e-6, atol=1e-6)


def test_jax_function_matches_python(inputs, tmp_path):
    import models_for_cli

    result = _ok(run_cli("ablate", "--model", "models_for_cli:jax_model",
        "--fasta", inputs / "seqs.fa", "--regions", inputs / "regions.tsv", "--n", N,
        "--seed", SEED, "--shuffle", "mono", "--batch-size", 7, "--quiet",
        "--device", "cpu", "--out", tmp_path / "jax.npz", cwd=tmp_path))
    header, rows = _read_table(result.stdout)  # no --table: the table goes to stdout
    assert header[4:] == ["mean_before", "mean_after", "mean_drop", "z_score"]
    assert len(rows) == 5 and result.stderr == ""

    y_befores, y_afters = _python_result(models_for_cli.jax_model, inputs, batch_size=7)
    with numpy.load(tmp_path / "jax.npz") as npz:
        numpy.testing.assert_allclose(npz["y_befores"], y_befores, rtol=1e-6, atol=1e-6)
        numpy.testing.assert_allclose(npz["y_afters"], y_afters, rtol=1e-6, atol=1e-6)
        assert not numpy.allclose(npz["y_afters"][:, 0, :, 0], npz["y_befores"][:, 0, :1])


def test_inputs_from_standard_input(inputs, tmp_path, monkeypatch):
    """``--fasta -`` or ``--regions -`` (gzip-compressed too) read standard input and give
    the table the files give; errors name the input ``<stdin>``."""

    def ablate(fasta, regions, stdin=None):
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        return main_in_process("ablate", "--model", "models_for_cli:jax_model", "--fasta",
            fasta, "--regions", regions, "--n", 3, "--quiet", cwd=tmp_path)

    fasta, regions = inputs / "seqs.fa", inputs / "regions.tsv"
    expected = _ok(ablate(fasta, regions)).stdout
    assert len(_read_table(expected)[1]) == 5
    assert _ok(ablate("-", regions, fasta.read_bytes())).stdout == expected
    assert _ok(ablate(fasta, "-", gzip.compress(regions.read_bytes()))).stdout == expected

    result = ablate("-", regions, b">a\nACGT\n>b\nACG\n")
    assert result.returncode == 2
    assert _error_line(result) == ("jablate: error: <stdin>:3: sequence 'b' has length 3, "
        "but 'a' has length 4; all sequences must have one length")


def test_multi_output_model(inputs, tmp_path):
    _ok(main_in_process("ablate", "--model", "models_for_cli:jax_two_heads", "--fasta",
        inputs / "seqs.fa", "--regions", inputs / "regions.tsv", "--n", 3, "--quiet",
        "--shuffle", "dinucleotide",
        "--out", tmp_path / "two.npz", "--table", tmp_path / "two.tsv",
        "--plot", tmp_path / "two.png", cwd=tmp_path))
    with numpy.load(tmp_path / "two.npz") as npz:
        assert {"y_befores_0", "y_afters_0", "y_befores_1", "y_afters_1"} <= set(npz.files)
        assert "y_befores" not in npz.files
        assert npz["y_befores_1"].shape == (5, 1, 40)
        assert npz["y_afters_1"].shape == (5, 1, 3, 40)
        profile_before = npz["y_befores_1"][:, 0].sum(axis=-1)

    header, rows = _read_table(tmp_path / "two.tsv")
    assert header[4:] == ["out0_mean_before", "out0_mean_after", "out0_mean_drop",
        "out0_z_score", "out1_sum_mean_before", "out1_sum_mean_after",
        "out1_sum_mean_drop", "out1_sum_z_score"]
    numpy.testing.assert_allclose([float(row[8]) for row in rows], profile_before,
        rtol=1e-5)
    assert (tmp_path / "two.png").read_bytes().startswith(PNG)


def test_per_task_columns(inputs, tmp_path):
    run = lambda *extra: _read_table(_ok(main_in_process("ablate", "--model",
        f"models_for_cli:{extra[0]}", "--fasta", inputs / "seqs.fa", "--regions",
        inputs / "regions.tsv", "--n", 4, "--quiet", *extra[1:], cwd=tmp_path)).stdout)
    header, rows = run("jax_three_tasks", "--per-task", "--plot", tmp_path / "tasks.png")
    columns = ["mean_before", "mean_after", "mean_drop", "z_score"]
    assert header[4:] == [f"task{t}_{c}" for t in range(3) for c in columns]
    values = numpy.array([[float(v) for v in row[4:]] for row in rows]).reshape(5, 3, 4)
    _, single = run("jax_model")  # task 0 is jax_model itself; the others scale it
    numpy.testing.assert_array_equal(values[:, 0], [[float(v) for v in row[4:]] for row in
        single])
    numpy.testing.assert_allclose(values[:, 1, :3], -values[:, 0, :3], rtol=1e-5)
    numpy.testing.assert_allclose(values[:, 2, :3], 0.5 * values[:, 0, :3], rtol=1e-5)
    numpy.testing.assert_allclose(values[:, 1, 3], -values[:, 0, 3], rtol=1e-4)
    assert (tmp_path / "tasks.png").read_bytes().startswith(PNG)
    header, rows = run("jax_three_tasks")  # without it: the tasks' sum, 0.5 of task 0
    assert header[4:] == [f"sum_{c}" for c in columns]
    numpy.testing.assert_allclose([float(r[6]) for r in rows], 0.5 * values[:, 0, 2],
        rtol=1e-4, atol=1e-6)


def test_a_plot_of_many_tasks_draws_those_with_the_largest_drops(tmp_path):
    from jablate import cli
    from jablate._core.io import Region

    rng = numpy.random.RandomState(0)
    before = rng.normal(size=(4, 1, 20))
    after = before[:, :, None] + 0.01 * rng.normal(size=(4, 1, 3, 20))
    after[..., [3, 17]] -= 5.0  # two tasks lose much more than the others
    heads = cli.summarise(before, after, 4, 3, per_task=True)
    assert [h["label"] for h in heads] == [f"task{t}_" for t in range(20)]
    names = [h["name"] for h in cli._panels(heads)]
    assert len(names) == 12 and {"task 3", "task 17"} <= set(names)
    assert names == sorted(names, key=lambda s: int(s.split()[1]))  # in task order
    with open(tmp_path / "many.svg", "wb") as handle:
        cli._plot_drops(handle, [Region(f"r{i}", "s", 0, 5, i + 1) for i in range(4)], heads,
            3, "svg")
    drawn = (tmp_path / "many.svg").read_text()
    assert "12 of 20 panels" in drawn and drawn.count("drop in task") == 12


def test_dinucleotide_regions_with_unknown_bases_are_noted(tmp_path):
    rng = numpy.random.RandomState(1)
    bases = ["".join("ACGT"[i] for i in rng.randint(0, 4, 40)) for _ in range(3)]
    bases[1] = bases[1][:12] + "NN" + bases[1][14:]
    (tmp_path / "n.fa").write_text("".join(f">s{i}\n{b}\n" for i, b in enumerate(bases)))
    (tmp_path / "n.bed").write_text("s0\t5\t25\ns1\t5\t25\ts1_gap\ns2\t5\t25\n")
    common = ["ablate", "--model", "models_for_cli:jax_model", "--fasta", "n.fa", "--regions",
        "n.bed", "--n", 3, "--quiet"]
    noted = _ok(main_in_process(*common, "--shuffle", "dinucleotide", cwd=tmp_path))
    assert [line for line in noted.stderr.splitlines() if "unknown bases" in line] == [
        "jablate: warning: 1 region of 3 (s1_gap) holds unknown bases (N): --shuffle "
        "dinucleotide moves each as a symbol of its own (tangermeme's dinucleotide_shuffle "
        "refuses them)"]
    _, rows = _read_table(noted.stdout)
    assert len(rows) == 3 and float(rows[1][6]) != 0  # the region was shuffled, N and all
    assert "unknown bases" not in _ok(main_in_process(*common, cwd=tmp_path)).stderr


def test_flax_module_from_factory(inputs, tmp_path):
    # jablate.demo:load_model is a function returning a bound flax module.
    result = _ok(main_in_process("ablate", "--model", "jablate.demo:load_model", "--fasta",
        inputs / "seqs.fa", "--regions", inputs / "regions.tsv", "--n", 3, "--quiet",
        cwd=tmp_path))
    header, rows = _read_table(result.stdout)
    assert len(rows) == 5
    # GATAAG at 4-10 of s0: shuffling it lowers the prediction.
    assert float(rows[0][6]) > 0.2


def test_torch_export_program(inputs, tmp_path, torch_reference):
    torch = pytest.importorskip("torch")

    model, (y_befores, y_afters) = torch_reference
    program = torch.export.export(model, (torch.zeros(2, 4, 40),),
        dynamic_shapes={"X": {0: torch.export.Dim("batch")}})
    torch.export.save(program, tmp_path / "tiny.pt2")

    result = _ok(main_in_process("ablate", "--model", "tiny.pt2", "--fasta", inputs / "seqs.fa",
        "--regions", inputs / "regions.tsv", "--n", N, "--seed", SEED, "--quiet",
        "--out", tmp_path / "pt2.npz", cwd=tmp_path))
    assert result.stdout.startswith("name\t")
    with numpy.load(tmp_path / "pt2.npz") as npz:
        numpy.testing.assert_allclose(npz["y_befores"], y_befores, rtol=1e-5, atol=1e-6)
        numpy.testing.assert_allclose(npz["y_afters"], y_afters, rtol=1e-5, atol=1e-6)


def test_translate(inputs, tmp_path, torch_reference):

    result = main_in_process("ablate", "--model", "models_for_cli:torch_model", "--translate",
        "--fasta", inputs / "seqs.fa", "--regions", inputs / "regions.tsv", "--n", N,
        "--seed", SEED, "--quiet", "--out", tmp_path / "t.npz", cwd=tmp_path)
    if "unexpected keyword argument 'backend'" in result.stderr:
        pytest.skip("jablate.ablate_annotations does not take backend= yet, so "
            "--translate (backend='jax') cannot run")
    assert _ok(result).stdout.startswith("name\t")
    _, (y_befores, y_afters) = torch_reference
    with numpy.load(tmp_path / "t.npz") as npz:
        numpy.testing.assert_allclose(npz["y_befores"], y_befores, rtol=1e-4, atol=1e-5)
        numpy.testing.assert_allclose(npz["y_afters"], y_afters, rtol=1e-4, atol=1e-5)


# --- bad input --------------------------------------------------------------------------

GOOD = {"seqs.fa": FASTA, "regions.tsv": REGIONS}


def _regions(text):
    return {"seqs.fa": FASTA, "regions.tsv": text}


def _cuda_for_jax():
    try:
        import jax
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


# id: (files to write, options replacing the defaults or added, expected fragment).
# Each runs in its own subprocess: exit status 2 and one stderr line from a fresh
# interpreter, for an input error found before anything is imported, a user module that
# raises on import, torch loading a damaged program, and a model that ran under JAX (its
# log lines must not reach stderr either).
BAD = {
    "missing fasta": ({"regions.tsv": REGIONS}, {"--fasta": "nope.fa"},
        "cannot read 'nope.fa': No such file"),
    "module fails on import": (dict(GOOD, **{"broken_model.py":
        "raise RuntimeError('broken on purpose')\n"}), {"--model": "broken_model:f"},
        "RuntimeError: broken on purpose"),
    "corrupt pt2": (dict(GOOD, **{"junk.pt2": "not a program"}), {"--model": "junk.pt2"},
        "cannot load it as a torch.export program"),
    "output not summarisable": (GOOD, {"--model": "models_for_cli:complex_model"},
        "cannot summarise the model's output"),
}

# More bad input, checked by calling jablate.cli.main in this process (same code path,
# without paying for a fresh interpreter each).
BAD_IN_PROCESS = {
    "unreadable fasta (a directory)": ({"regions.tsv": REGIONS, "adir/x": ""},
        {"--fasta": "adir"}, "cannot read 'adir'"),
    "empty fasta": ({"seqs.fa": "", "regions.tsv": REGIONS}, {}, "seqs.fa: no sequences"),
    "unequal lengths": ({"seqs.fa": ">a\nACGT\n>b\nACGTA\n", "regions.tsv": "a\t0\t2\n"},
        {}, "seqs.fa:3: sequence 'b' has length 5, but 'a' has length 4"),
    "unknown sequence": (_regions("s0\t1\t5\n# c\nchrZ\t1\t5\n"), {},
        "regions.tsv:3: unknown sequence 'chrZ'"),
    "region outside": (_regions("s2\t30\t50\tx\n"), {},
        "regions.tsv:1: region 30-50 lies outside sequence 's2' of length 40"),
    "end before start": (_regions("\ns1\t10\t10\n"), {},
        "regions.tsv:2: end 10 is not after start 10"),
    "malformed line": (_regions("s0\t1\t5\n\ns0\tfive\t10\n"), {},
        "regions.tsv:3: start 'five' is not an integer"),
    "module not found": (GOOD, {"--model": "no_such_module_xyz:f"},
        "cannot import 'no_such_module_xyz'"),
    "plot format unknown": (GOOD, {"--plot": "out.jpg", "--model":
        "models_for_cli:raising_model"}, "must be .png, .pdf or .svg (found '.jpg')"),
    "missing regions": ({"seqs.fa": FASTA}, {}, "cannot read 'regions.tsv'"),
    "negative start": (_regions("s2\t-1\t5\n"), {}, "regions.tsv:1: start -1 is negative"),
    "end not an integer": (_regions("s2\t1\t5.5\n"), {},
        "regions.tsv:1: end '5.5' is not an integer"),
    "too few columns": (_regions("s0\t5\n"), {}, "regions.tsv:1: expected at least 3"),
    "no regions": (_regions("# nothing\n"), {}, "regions.tsv: no regions"),
    "data before header": ({"seqs.fa": "ACGT\n>a\nACGT\n", "regions.tsv": "a\t0\t2\n"},
        {}, "seqs.fa:1: sequence data before the first '>' header"),
    "duplicate name": ({"seqs.fa": ">a\nACGT\n>a\nACGT\n", "regions.tsv": "a\t0\t2\n"},
        {}, "seqs.fa:3: duplicate sequence name 'a' (first on line 1)"),
    "attribute not found": (GOOD, {"--model": "models_for_cli:nope"},
        "has no attribute 'nope'"),
    "not a model": (GOOD, {"--model": "models_for_cli:NOT_A_MODEL"}, "not a model"),
    "spec without colon": (GOOD, {"--model": "models_for_cli"}, "neither"),
    "missing pt2": (GOOD, {"--model": "gone.pt2"}, "cannot read 'gone.pt2'"),
    "translate a JAX model": (GOOD, {"--translate": None}, "--translate"),
    "unavailable JAX device": (GOOD, {"--device": "cuda"}, "not available to JAX"),
    "output directory missing": (GOOD, {"--out": "nodir/x.npz"},
        "cannot write 'nodir/x.npz'"),
    "bad option value": (GOOD, {"--n": "0"}, "--n: must be at least 1"),
    "unknown option": (GOOD, {"--bogus": None},
        "jablate ablate: error: unrecognized arguments: --bogus (see 'jablate ablate --help')"),
    "npz under another name": (GOOD, {"--out": "all.npy"},
        "--out 'all.npy' would hold a NumPy .npz archive; give it a name ending in .npz"),
    "one file for two outputs": (GOOD, {"--plot": "out.tsv"},
        "--table and --plot name the same file"),
    "an output over an input": (GOOD, {"--table": "seqs.fa"},
        "--table 'seqs.fa' names the file --fasta reads; writing it would replace the input"),
    "an output over the regions": (GOOD, {"--table": "./regions.tsv"},
        "--table './regions.tsv' names the file --regions reads"),
    "bad device name": (GOOD, {"--device": "cuda:x"}, "not a device name"),
    "a class (torch)": (GOOD, {"--model": "models_for_cli:TorchTinyConv"},
        "is a class"),
    "a class (flax)": (GOOD, {"--model": "jablate.demo:DemoModel"}, "is a class"),
    "a class (callable)": (GOOD, {"--model": "models_for_cli:JaxModelClass"},
        "is a class"),
    "seed out of range": (GOOD, {"--seed": "-1"}, "--seed: must be between 0 and"),
    "dinucleotide region too short": (_regions("s0\t4\t10\ns1\t7\t9\n"),
        {"--shuffle": "dinucleotide"}, "regions.tsv:2: region 7-9 is 2 long; --shuffle "
        "dinucleotide needs at least 3 bases"),
    "both inputs from standard input": (GOOD, {"--fasta": "-", "--regions": "-"},
        "--fasta and --regions cannot both be standard input ('-')"),
    "damaged gzip fasta": ({"seqs.fa": gzip.compress(FASTA.encode())[:40],
        "regions.tsv": REGIONS}, {},
        "cannot read 'seqs.fa': damaged gzip data"),
}


def _arguments(directory, files, options):
    for name, content in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            (directory / name).write_bytes(content)
        else:
            (directory / name).write_text(content)
    arguments = {"--model": "models_for_cli:jax_model", "--fasta": "seqs.fa",
        "--regions": "regions.tsv", "--n": "2", "--out": "out.npz", "--table": "out.tsv",
        "--plot": "out.png", "--quiet": None}
    arguments.update(options)
    return ["ablate"] + [a for pair in arguments.items() for a in pair if a is not None]


def _run_bad(directory, case):
    files, options, _ = BAD[case]
    args = _arguments(directory, files, options)
    before = sorted(os.listdir(directory))
    result = run_cli(*args, cwd=directory)
    return result, before, sorted(os.listdir(directory))


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory):
    # The runs are independent; two at a time keeps the 2-core budget.
    root = tmp_path_factory.mktemp("bad")
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {}
        for i, case in enumerate(BAD):
            directory = root / f"case{i}"
            directory.mkdir()
            futures[case] = pool.submit(_run_bad, directory, case)
        return {case: future.result() for case, future in futures.items()}


def _check_bad(case, returncode, stdout, stderr, before, after, expected):
    assert returncode == 2, (stdout, stderr)
    line = _error_line(subprocess.CompletedProcess([], returncode, stdout, stderr))
    assert line.startswith("jablate"), line
    assert expected in line, line
    assert after == before, "output files were left behind"
    assert stdout == ""


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case, bad_runs):
    if case == "corrupt pt2":
        pytest.importorskip("torch")
    result, before, after = bad_runs[case]
    _check_bad(case, result.returncode, result.stdout, result.stderr, before, after,
        BAD[case][2])


@pytest.mark.parametrize("case", list(BAD_IN_PROCESS))
def test_bad_input_in_process(case, tmp_path, monkeypatch, capsys):
    from jablate.cli import main

    if case == "unavailable JAX device" and _cuda_for_jax():
        pytest.skip("JAX has a GPU here")
    if "torch" in case:
        pytest.importorskip("torch")
    files, options, expected = BAD_IN_PROCESS[case]
    args = _arguments(tmp_path, files, options)
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    returncode = main(args)
    captured = capsys.readouterr()
    _check_bad(case, returncode, captured.out, captured.err, before,
        sorted(os.listdir(tmp_path)), expected)


@pytest.mark.parametrize("number, ignore_sigint", [(signal.SIGINT, False),
    (signal.SIGTERM, False), (signal.SIGTERM, True)])
def test_interrupt_leaves_no_outputs(inputs, tmp_path, number, ignore_sigint):
    """Ctrl-C, and SIGTERM (a batch system's time limit), leave nothing half-written; SIGTERM
    too in a run that ignores SIGINT (started with ``&`` from a script: SIGTERM had then
    killed it, leaving its temporaries)."""
    pytest.importorskip("torch")
    marker = tmp_path / "model-called"
    process = subprocess.Popen(_command(["ablate", "--model",
        "models_for_cli:slow_torch_model", "--fasta", inputs / "seqs.fa", "--regions",
        inputs / "regions.tsv", "--n", 50, "--batch-size", 4, "--quiet", "--out",
        "r.npz", "--table", "r.tsv", "--plot", "r.png"]), cwd=tmp_path,
        env=_env({"JABLATE_TEST_MARKER": str(marker)}), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        preexec_fn=signals_as_in_a_terminal(ignore_sigint))
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and process.poll() is None:
            assert time.monotonic() < deadline, "the model was never called"
            time.sleep(0.05)
        process.send_signal(number)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + number, (stderr, marker.read_text())
    assert _error_line(subprocess.CompletedProcess([], 130, stdout, stderr)).startswith(
        "jablate: interrupted" + ("" if number == signal.SIGINT else " (SIGTERM)") + "; ")
    assert sorted(os.listdir(tmp_path)) == ["model-called"]


def test_outputs_that_are_never_finite_fail_and_some_are_said(tmp_path, monkeypatch, capsys):
    """A model whose output is NaN for every sequence (a BPNet trimmed past a short input)
    is a failure (exit 1, nothing written), not a table of NaN; regions whose output is
    not finite are counted in a warning."""
    from jablate.cli import main

    monkeypatch.chdir(tmp_path)
    args = _arguments(tmp_path, GOOD, {"--model": "models_for_cli:jax_constant_nan"})
    before = sorted(os.listdir(tmp_path))
    assert main(args) == 1
    err = capsys.readouterr().err
    assert ("jablate: error: model 'models_for_cli:jax_constant_nan' failed: "
            "FloatingPointError: its output is not finite (NaN or inf) for every region, so "
            "no drop means anything (are sequences of 40 bp the input length the model "
            "expects?)") in err
    assert sorted(os.listdir(tmp_path)) == before
    # +inf for the sequences that start with A: s0 (two regions) and s1 (one)
    args = _arguments(tmp_path, GOOD, {"--model": "models_for_cli:jax_inf_after_a"})
    assert main(args) == 0
    assert ("the model's output is not finite (NaN or inf) for 3 of 5 regions: their rows "
            "hold NaN or inf") in capsys.readouterr().err


# --- a model that fails while it runs -----------------------------------------------------


def _stderr_lines(text):
    return [line for line in text.splitlines() if line.strip()
        and not line.startswith(("WARNING", "W0", "I0", "E0"))]


def test_model_failure_is_one_line(tmp_path):
    # The example: a Linear layer that expects another length (here 100, not 40).
    pytest.importorskip("torch")
    args = _arguments(tmp_path, GOOD, {"--model": "models_for_cli:torch_wrong_length"})
    before = sorted(os.listdir(tmp_path))
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert _error_line(result).startswith("jablate: error: model "
        "'models_for_cli:torch_wrong_length' failed: RuntimeError: mat1 and mat2 shapes "
        "cannot be multiplied")
    assert _error_line(result).endswith("(are sequences of 40 bp the input length the model "
        "expects?)")
    assert result.stdout == "" and sorted(os.listdir(tmp_path)) == before


# model: the line that follows "jablate: error: model 'models_for_cli:MODEL' failed: "
FAILING = {
    "raising_model": "ValueError: raising_model rejects every input",
    "jax_wrong_shape": "TypeError: dot_general requires contracting dimensions",
    "jax_out_of_memory": "JaxRuntimeError: RESOURCE_EXHAUSTED: Out of memory",
}


@pytest.mark.parametrize("model", list(FAILING))
@pytest.mark.parametrize("debug", [None, "--debug", "ablate --debug"])
def test_model_failure_in_process(model, debug, tmp_path, monkeypatch, capsys):
    from jablate.cli import main

    args = _arguments(tmp_path, GOOD, {"--model": f"models_for_cli:{model}"})
    if debug == "--debug":
        args = ["--debug"] + args  # before the subcommand
    elif debug:
        args = args + ["--debug"]  # after it
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    assert main(args) == 1
    captured = capsys.readouterr()
    lines = _stderr_lines(captured.err)
    expected = f"jablate: error: model 'models_for_cli:{model}' failed: {FAILING[model]}"
    assert lines[-1].startswith(expected), captured.err
    if debug:
        assert "Traceback (most recent call last)" in captured.err
    else:
        assert len(lines) == 1, captured.err
    assert captured.out == "" and sorted(os.listdir(tmp_path)) == before


def test_a_model_out_of_memory_is_told_what_to_change(tmp_path, monkeypatch, capsys):
    """XLA's RESOURCE_EXHAUSTED (here a real one, on the CPU: the host's memory) ends the
    run with one line that names the batch size; where the JAX work ran on a GPU, the line
    also says how much of it JAX takes, naming the variable the environment already uses."""
    from jablate import cli
    from jablate.cli import main

    args = _arguments(tmp_path, GOOD, {"--model": "models_for_cli:jax_out_of_memory",
                                       "--batch-size": "16"})
    monkeypatch.chdir(tmp_path)
    assert main(args) == 1
    [line] = _stderr_lines(capsys.readouterr().err)
    assert "RESOURCE_EXHAUSTED: Out of memory allocating" in line
    assert line.endswith(" bytes.; out of host memory at --batch-size 16: a smaller "
        "--batch-size needs less and draws the same shuffles, its results equal to float32 "
        "rounding"), line
    monkeypatch.setattr(cli, "_platform", lambda args: "gpu")  # the error as a GPU raises it
    for variable in ("XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_CLIENT_MEM_FRACTION"):
        if variable == "XLA_CLIENT_MEM_FRACTION":
            monkeypatch.setenv(variable, "0.75")
        assert main(args) == 1
        [line] = _stderr_lines(capsys.readouterr().err)
        assert line.endswith("; out of device memory at --batch-size 16: a smaller "
            "--batch-size needs less and draws the same shuffles, its results equal to "
            "float32 rounding (JAX takes 75% of a GPU's "
            f"memory when it starts; with a torch model on the same GPU, {variable}=0.5 or "
            "XLA_PYTHON_CLIENT_PREALLOCATE=false leaves torch more)"), line


def test_out_of_memory_is_recognised_from_torch_xla_and_numpy():
    import jax
    import numpy

    from jablate._core.errors import out_of_memory

    try:
        jax.jit(lambda: jax.numpy.ones((2**26, 2**20)))()  # 256 TiB: refused everywhere
    except Exception as error:
        xla = error
    try:
        numpy.empty(2**50)
    except MemoryError as error:
        host = error
    try:
        raise RuntimeError("the step failed") from xla
    except RuntimeError as error:
        caused = error
    try:
        try:
            raise host
        except MemoryError:
            raise ValueError("bad input")  # noqa: B904 (raised while handling, not caused by it)
    except ValueError as error:
        during = error
    allocator = RuntimeError("RESOURCE_EXHAUSTED: Failed to allocate request for 256.00MiB "
                             "(268435456B) on device ordinal 0")
    torch_cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
                             "can't allocate memory: you tried to allocate 1024 bytes.")
    assert [out_of_memory(e) for e in (xla, host, caused, during, allocator, torch_cpu,
                                       RuntimeError("RESOURCE_EXHAUSTED: too many open files"),
                                       ValueError("memory"))] == [
        "xla", "host", "xla", "", "xla", "host", "", ""]
    torch = pytest.importorskip("torch")
    assert out_of_memory(torch.OutOfMemoryError("CUDA out of memory.")) == "device"


def test_debug_keeps_the_status_of_input_errors(tmp_path, monkeypatch, capsys):
    from jablate.cli import main

    args = _arguments(tmp_path, {"regions.tsv": REGIONS}, {"--fasta": "nope.fa"})
    monkeypatch.chdir(tmp_path)
    assert main(["--debug"] + args) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert _stderr_lines(err)[-1].startswith("jablate: error: cannot read 'nope.fa'")


def test_jablate_input_errors_keep_status_2(tmp_path, monkeypatch, capsys):
    # Without the command line's own check, jablate's validation rejects a region too short
    # for a dinucleotide shuffle: still bad input (2), not a failure of the model (1).
    import jablate.cli
    from jablate.cli import main

    monkeypatch.setattr(jablate.cli, "_check_dinucleotide_widths", lambda *args: None)
    args = _arguments(tmp_path, _regions("s0\t4\t10\ns1\t7\t9\n"),
        {"--shuffle": "dinucleotide"})
    monkeypatch.chdir(tmp_path)
    before = sorted(os.listdir(tmp_path))
    assert main(args) == 2
    captured = capsys.readouterr()
    line = _error_line(subprocess.CompletedProcess([], 2, captured.out, captured.err))
    assert line.startswith("jablate: error: ") and "failed" not in line
    assert sorted(os.listdir(tmp_path)) == before


# --- formats, compressed inputs, version, documentation -------------------------------------


def test_output_formats_follow_extension(tmp_path, monkeypatch, capsys):
    from jablate.cli import main

    files = _regions(REGIONS + 's1\t12\t18\tname, with "quotes"\n')
    monkeypatch.chdir(tmp_path)
    assert main(_arguments(tmp_path, files, {"--table": "t.csv", "--plot": "p.pdf",
        "--out": "a.npz"})) == 0
    assert main(_arguments(tmp_path, files, {"--table": "t.tsv", "--plot": "p.svg",
        "--out": "b.npz"})) == 0
    capsys.readouterr()

    assert (tmp_path / "p.pdf").read_bytes().startswith(PDF)
    svg = (tmp_path / "p.svg").read_bytes()
    assert svg.startswith(b"<?xml") and b"<svg" in svg[:2000]
    with open(tmp_path / "t.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    header, tsv_rows = _read_table(tmp_path / "t.tsv")
    assert rows == [header] + tsv_rows
    assert rows[-1][0] == 'name, with "quotes"'
    assert '"name, with ""quotes"""' in (tmp_path / "t.csv").read_text()


@pytest.mark.parametrize("name, magic", [("demo.pdf", PDF), ("demo.svg", b"<?xml"),
    ("demo.PNG", PNG)])
def test_demo_plot_formats(name, magic, tmp_path, monkeypatch, capsys):
    from jablate.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--plot", name, "--n", "2"]) == 0
    assert (tmp_path / name).read_bytes().startswith(magic)


def test_demo_unknown_plot_format(tmp_path, monkeypatch, capsys):
    from jablate.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--plot", "demo.jpg"]) == 2
    captured = capsys.readouterr()
    assert _error_line(subprocess.CompletedProcess([], 2, captured.out, captured.err)) == (
        "jablate: error: cannot write a plot to 'demo.jpg': its extension must be .png, "
        ".pdf or .svg (found '.jpg')")
    assert captured.out == "" and os.listdir(tmp_path) == []


def _bgzf(data, block=50):
    """``data`` as bgzip writes it: small gzip members with a 'BC' extra field, then the
    empty end-of-file block."""

    members = []
    for chunk in [data[i:i + block] for i in range(0, len(data), block)] + [b""]:
        deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        compressed = deflate.compress(chunk) + deflate.flush()
        header = b"\x1f\x8b\x08\x04" + bytes(4) + b"\x00\xff" + struct.pack("<H", 6) + \
            b"BC" + struct.pack("<HH", 2, 25 + len(compressed))
        members.append(header + compressed + struct.pack("<II", zlib.crc32(chunk),
            len(chunk)))
    return b"".join(members)


def test_gzip_inputs(tmp_path, monkeypatch, capsys):
    from jablate._core.io import read_fasta, read_regions
    from jablate.cli import main

    (tmp_path / "seqs.fa").write_text(FASTA)
    (tmp_path / "regions.tsv").write_text(REGIONS)
    (tmp_path / "seqs.fa.gz").write_bytes(gzip.compress(FASTA.encode()))
    (tmp_path / "seqs.bgz.fa").write_bytes(_bgzf(FASTA.encode()))  # known by its bytes
    (tmp_path / "regions.bed.gz").write_bytes(gzip.compress(REGIONS.encode()))
    assert _bgzf(FASTA.encode()).endswith(bytes.fromhex(
        "1f8b08040000000000ff0600424302001b0003000000000000000000"))  # bgzip's EOF block

    plain = read_fasta(tmp_path / "seqs.fa")
    assert read_fasta(tmp_path / "seqs.fa.gz") == plain
    assert read_fasta(tmp_path / "seqs.bgz.fa") == plain
    lengths = {name: len(s) for name, s in zip(*plain)}
    assert read_regions(tmp_path / "regions.bed.gz", lengths) == \
        read_regions(tmp_path / "regions.tsv", lengths)
    # a header line naming the columns, as the peak and hit files may have, is skipped
    (tmp_path / "header.tsv").write_text("chrom\tstart\tend\tname\n" + REGIONS)
    assert [r[:-1] for r in read_regions(tmp_path / "header.tsv", lengths)] == \
        [r[:-1] for r in read_regions(tmp_path / "regions.tsv", lengths)]  # but the line
    signed = "s0\t+4\t+10\n"  # int() reads these: a region, not a header
    (tmp_path / "signed.tsv").write_text(signed)
    assert [r[:4] for r in read_regions(tmp_path / "signed.tsv", lengths)] == [
        ("s0:4-10", "s0", 4, 10)]
    (tmp_path / "late.tsv").write_text(REGIONS + "chrom\tstart\tend\n")  # not a header
    with pytest.raises(ValueError, match="late.tsv:8: start 'start' is not an integer"):
        read_regions(tmp_path / "late.tsv", lengths)

    monkeypatch.chdir(tmp_path)
    common = ["ablate", "--model", "models_for_cli:jax_model", "--n", "2", "--quiet"]
    assert main(common + ["--fasta", "seqs.fa", "--regions", "regions.tsv"]) == 0
    expected = capsys.readouterr().out
    assert main(common + ["--fasta", "seqs.fa.gz", "--regions", "regions.bed.gz"]) == 0
    assert capsys.readouterr().out == expected


def test_version(capsys):
    import jablate
    from jablate.cli import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"jablate {jablate.__version__}\n"
    assert jablate.__version__ == importlib.metadata.version("jablate")


def test_factory_returning_a_jax_function(tmp_path, monkeypatch, capsys):
    from jablate.cli import main

    _arguments(tmp_path, GOOD, {})
    monkeypatch.chdir(tmp_path)
    tables = []
    for model in ("models_for_cli:jax_model", "models_for_cli:jax_model_factory"):
        assert main(["ablate", "--model", model, "--fasta", "seqs.fa", "--regions",
            "regions.tsv", "--n", "2", "--quiet"]) == 0
        tables.append(capsys.readouterr().out)
    assert tables[0] == tables[1]


def test_demo_and_ablate_share_the_z_score():
    from jablate.api.effects import shuffle_effects
    from jablate.cli import summarise
    from jablate.demo import region_summary

    rs = numpy.random.RandomState(0)
    before, after = rs.normal(size=6), rs.normal(size=(6, 5))
    after[0] = before[0]  # no shuffle changed anything: 0/0
    drop, spread, z = shuffle_effects(before, after)
    numpy.testing.assert_allclose(drop, before - after.mean(axis=1))
    numpy.testing.assert_allclose(spread, after.std(axis=1, ddof=1))
    assert numpy.isnan(z[0])
    numpy.testing.assert_allclose(z[1:], drop[1:] / spread[1:])

    heads = summarise(before[:, None, None], after[:, None, :, None], 6, 5)
    numpy.testing.assert_array_equal(heads[0]["z"], z)
    summary = region_summary(before, after)
    numpy.testing.assert_array_equal(summary["z_each"], z)
    assert summary["z"] == numpy.median(z[1:])
    assert numpy.isnan(shuffle_effects(before, after[:, :1])[2]).all()  # n = 1


def _documented(name, text):
    """Whether ``text`` documents a column or npz key, output numbers written as H."""

    generic = re.sub(r"^out\d+_", "outH_", re.sub(r"_\d+$", "_H", name))
    if re.search(rf"(?<![\w]){re.escape(generic)}(?![\w])", text):
        return True
    prefix, summed, base = re.fullmatch(r"(outH_)?(sum_)?(\w+)", generic).groups()
    return (all(part is None or f"'{part}'" in text for part in (prefix, summed))
        and re.search(rf"(?<![\w]){base}(?![\w])", text) is not None)


def test_help_and_readme_document_every_output(tmp_path, monkeypatch, capsys):
    from jablate.cli import main

    _arguments(tmp_path, GOOD, {})
    monkeypatch.chdir(tmp_path)
    columns, keys = set(), set()
    for model in ("jax_model", "jax_two_heads"):
        assert main(["ablate", "--model", f"models_for_cli:{model}", "--fasta", "seqs.fa",
            "--regions", "regions.tsv", "--n", "2", "--quiet", "--table", f"{model}.tsv",
            "--out", f"{model}.npz"]) == 0
        columns |= set(_read_table(tmp_path / f"{model}.tsv")[0])
        with numpy.load(tmp_path / f"{model}.npz") as npz:
            keys |= set(npz.files)
    assert {"out1_sum_z_score", "y_afters_1", "annotations"} <= columns | keys
    capsys.readouterr()

    assert main(["ablate", "--help"]) == 0
    texts = {"ablate --help": capsys.readouterr().out,
        "README.md": (REPO / "README.md").read_text()}
    for where, text in texts.items():
        missing = sorted(name for name in columns | keys if not _documented(name, text))
        assert not missing, f"{where} does not document {missing}"
        for words in ("ddof=1", ".csv", ".pdf", ".svg", "--debug"):
            assert words in text, f"{where} does not mention {words}"


def test_incremental_engine_on_the_command_line(inputs, tmp_path):
    import models_for_cli
    require("torch")  # its last part asks for the engine with a torch model

    result = _ok(main_in_process("ablate", "--model", "models_for_cli:jax_model",
        "--fasta", inputs / "seqs.fa", "--regions", inputs / "regions.tsv", "--n", N,
        "--seed", SEED, "--quiet", "--incremental", "on", "--verbose",
        "--out", tmp_path / "inc.npz", cwd=tmp_path))
    assert "incremental analysis at width" in result.stderr and "cache" in result.stderr
    y_befores, y_afters = _python_result(models_for_cli.jax_model, inputs)
    with numpy.load(tmp_path / "inc.npz") as npz:
        scale = numpy.abs(y_afters).max()
        numpy.testing.assert_allclose(npz["y_afters"], y_afters, rtol=0, atol=1e-5 * scale)
    torch_run = main_in_process("ablate", "--model", "models_for_cli:torch_model",
        "--fasta", inputs / "seqs.fa", "--regions", inputs / "regions.tsv", "--quiet",
        "--incremental", "on", cwd=tmp_path)
    assert torch_run.returncode == 2 and torch_run.stderr == (
        "jablate: error: --incremental on needs a JAX model, or --translate for a torch "
        "model: the incremental engine runs in JAX\n")
