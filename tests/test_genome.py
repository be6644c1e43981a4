"""Genome-scale motif ablation (issue 12): ``jablate.genome.hits`` and ``jablate hits``.

A synthetic genome made here (three chromosomes of 30-50 kb, random bases without GATA)
holds ``GATAAG`` planted at known positions near peak summits; the shipped demo model
learned that motif, so ablating a planted hit must drop its prediction and ablating a
control hit on random sequence must not. Hits are written as BED, Fi-NeMo and FIMO files.
"""

import gzip
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy
import pandas
import pytest
from conftest import signals_as_in_a_terminal

from jablate.cli import main
from jablate.demo import LENGTH
from jablate.genome import hits as jg

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # models named 'test_genome:...' on the command line
MOTIF = "GATAAG"
WIDTH = LENGTH  # the demo model's input length
CHROMS = {"chr1": 50_000, "chr2": 50_000, "chr3": 30_000}
MOTIF_OFFSET = 30  # the planted motif's start inside its window
CONTROL_OFFSET = 70
MODEL = "jablate.demo:load_model"


# --- the synthetic data set -------------------------------------------------------------


def _background(rs, length):
    bases = numpy.array(list("ACGT"))[rs.randint(4, size=length)]
    text = "".join(bases)
    while "GATA" in text:  # no accidental sites: the demo model's max-pool sees only ours
        text = text.replace("GATA", "CATA")
    return text


def make_dataset(root, seed=0):
    """Write genome.fa, peaks.narrowPeak, hits in three formats; return what was planted.

    Each chromosome gets peaks every 2,500 bp; around each summit s the window is
    [s - 50, s + 50), GATAAG is planted at s - 20 (window offset 30) and a control hit on
    random sequence lies at s + 20 (offset 70). Extra cases: a peak whose window runs off
    chr1's start, a pair of peaks 30 bp apart (overlapping windows), a hit in no window
    and a hit partly inside one. chr2 is soft-masked (lowercase) between 1,000 and 6,000.
    """

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rs = numpy.random.RandomState(seed)
    sequences = {name: list(_background(rs, length)) for name, length in CHROMS.items()}
    peaks, hits = [], []  # peaks: (chrom, start, end, name, summit offset)

    def add_peak(chrom, summit, plant=True):
        index = len(peaks)
        low = max(summit - 150, 0)
        peaks.append((chrom, low, summit + 150, f"peak{index}", summit - low))
        if plant:
            at = summit - WIDTH // 2 + MOTIF_OFFSET
            sequences[chrom][at:at + len(MOTIF)] = MOTIF
            hits.append(dict(chrom=chrom, start=at, end=at + 6, name="GATA", strand="+",
                peak=index))
            control = summit - WIDTH // 2 + CONTROL_OFFSET
            hits.append(dict(chrom=chrom, start=control, end=control + 6, name="control",
                strand="-", peak=index))
        return index

    for chrom, length in CHROMS.items():
        for summit in range(1_500, length - 1_000, 2_500):
            add_peak(chrom, summit)
    off = add_peak("chr1", 30, plant=False)  # window [-20, 80) runs off chr1
    hits.append(dict(chrom="chr1", start=40, end=46, name="control", strand="+", peak=off))
    first = add_peak("chr3", 28_700)  # two peaks 30 bp apart: windows overlap
    second = add_peak("chr3", 28_730, plant=False)
    hits[-2]["peak"] = first  # the planted GATA of `first` lies in both windows
    del second
    hits.append(dict(chrom="chr2", start=49_500, end=49_506, name="control", strand="+",
        peak=-1))  # in no window
    edge = 1_500 - WIDTH // 2 - 3
    hits.append(dict(chrom="chr1", start=edge, end=edge + 6, name="control", strand="+",
        peak=0))  # partly inside peak 0's window

    masked = sequences["chr2"]
    masked[1_000:6_000] = [b.lower() for b in masked[1_000:6_000]]
    with open(root / "genome.fa", "w") as handle:
        for chrom, bases in sequences.items():
            text = "".join(bases)
            handle.write(f">{chrom} synthetic\n")
            handle.writelines(text[i:i + 60] + "\n" for i in range(0, len(text), 60))
    with open(root / "peaks.narrowPeak", "w") as handle:
        for chrom, start, end, name, summit in peaks:
            handle.write(f"{chrom}\t{start}\t{end}\t{name}\t0\t.\t5.0\t-1\t-1\t{summit}\n")
    frame = pandas.DataFrame(hits)
    write_bed(frame, root / "hits.bed")
    write_finemo(frame, root / "hits.tsv", peaks)
    write_fimo(frame, root / "fimo.tsv")
    return frame


def write_bed(frame, path):
    with open(path, "w") as handle:
        handle.write("track name=hits\n")
        for row in frame.itertuples():
            handle.write(f"{row.chrom}\t{row.start}\t{row.end}\t{row.name}\t0\t{row.strand}\n")


def write_finemo(frame, path, peaks):
    columns = ["chr", "start", "end", "start_untrimmed", "end_untrimmed", "motif_name",
        "hit_coefficient", "hit_correlation", "hit_importance", "strand", "peak_name",
        "peak_id"]
    with open(path, "w") as handle:
        handle.write("\t".join(columns) + "\n")
        for row in frame.itertuples():
            name = peaks[row.peak][3] if row.peak >= 0 else "NA"
            handle.write(f"{row.chrom}\t{row.start}\t{row.end}\t{row.start - 1}\t"
                f"{row.end + 1}\t{row.name}\t0.5\t0.9\t1.5\t{row.strand}\t{name}\t"
                f"{row.peak}\n")


def write_fimo(frame, path):
    with open(path, "w") as handle:
        handle.write("motif_id\tmotif_alt_id\tsequence_name\tstart\tstop\tstrand\tscore\t"
            "p-value\tq-value\tmatched_sequence\n")
        for row in frame.itertuples():
            handle.write(f"MA0035.4\t{row.name}\t{row.chrom}\t{row.start + 1}\t{row.end}\t"
                f"{row.strand}\t12.5\t1e-05\t0.01\tNNNNNN\n")
        handle.write("\n# FIMO (Find Individual Motif Occurrences): Version 5.5.5\n")


def slow_model():
    """The demo model, pausing ``JABLATE_TEST_DELAY`` seconds per call (for the kill test).

    The pause is a host callback inside the compiled program, so it happens on every call;
    its value (0) is added to the output, so results equal the demo model's."""

    import jax
    import jax.numpy as jnp

    from jablate.demo import load_model

    model = load_model()
    delay = float(os.environ.get("JABLATE_TEST_DELAY", "0"))

    def pause():
        time.sleep(delay)
        return numpy.zeros((), numpy.float32)

    def slow(X):
        return model(X) + jax.pure_callback(pause, jax.ShapeDtypeStruct((), jnp.float32))

    return slow


def biased_torch_model():
    """models_for_cli's tiny torch module, its output bias raised by $JABLATE_TEST_BIAS
    (the same --model, other weights: a retrained model)."""

    import torch
    from models_for_cli import _torch_module

    module = _torch_module()
    with torch.no_grad():
        module.linear.bias += float(os.environ.get("JABLATE_TEST_BIAS", "0"))
    return module


def broken_model():
    """A model that fails while it runs (for the exit status 1 test)."""

    def broken(X):
        raise RuntimeError("out of cheese")

    return broken


# --- fixtures and helpers ---------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("genome")
    planted = make_dataset(root)
    return root, planted


def run(capsys, *args):
    """``jablate ARGS`` in this process; return (status, stdout, stderr)."""

    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def hits_args(root, out, hits="hits.tsv", *extra, model=MODEL, quiet=True):
    return ["hits", "--model", model, "--genome", root / "genome.fa", "--peaks",
        root / "peaks.narrowPeak", "--hits", root / hits, "--out", out, "--window", WIDTH,
        "--n", 8, *(["--quiet"] if quiet else []), *extra]


def decode(X, row, start, end):
    return "".join("ACGT"[i] if X[row, i, j] else "N" for j in range(start, end)
        for i in [int(X[row, :, j].argmax())])


# --- the Python API -----------------------------------------------------------------------


def test_windows_centre_on_summits_and_skip_those_off_the_chromosome(data):
    root, planted = data
    X, windows, skipped = jg.load_windows(root / "genome.fa", root / "peaks.narrowPeak",
        WIDTH, return_skipped=True)
    assert X.dtype == numpy.int8 and X.shape == (len(windows), 4, WIDTH)
    assert list(skipped["peak"]) == [49] and skipped["reason"][0].startswith("its window")
    peaks = pandas.read_csv(root / "peaks.narrowPeak", sep="\t", header=None)
    kept = peaks.drop(index=49)
    summits = (kept[1] + kept[9]).to_numpy()
    assert (windows["window_start"].to_numpy() == summits - WIDTH // 2).all()
    assert (windows["window_end"] - windows["window_start"] == WIDTH).all()
    assert list(windows["peak"]) == list(kept.index)
    # without a summit: the midpoint, as tangermeme's extract_loci
    bed = pandas.DataFrame({"chrom": ["chr1"], "start": [1000], "end": [1301]})
    _, middle = jg.load_windows(root / "genome.fa", bed, 10)
    assert (middle["window_start"][0], middle["window_end"][0]) == (1145, 1155)
    _, odd = jg.load_windows(root / "genome.fa", bed, 11)
    assert (odd["window_start"][0], odd["window_end"][0]) == (1145, 1156)


@pytest.mark.parametrize("hits", ["hits.tsv", "hits.bed", "fimo.tsv", "table", "frame",
                                  "table motif", "frame motif_name"])
def test_every_hit_format_finds_the_planted_motif(data, hits, tmp_path):
    root, planted = data
    X, windows = jg.load_windows(root / "genome.fa", root / "peaks.narrowPeak", WIDTH)
    if " " in hits:  # the motif's name in another column than "name"
        hits, column = hits.split()
        planted = planted.rename(columns={"name": column})
    if hits == "table":
        hits = tmp_path / "hits.txt"
        planted.to_csv(hits, sep="\t", index=False)
    elif hits == "frame":
        hits = planted
    else:
        hits = root / hits
    annotations, mapped, skipped = jg.hits_to_annotations(hits, windows,
        return_skipped=True)
    by_peak = not str(hits).endswith(("bed", "fimo.tsv"))
    assert len(mapped) == len(annotations) == (100 if by_peak else 102)
    gata = mapped["name"] == "GATA"
    assert gata.sum() == (50 if by_peak else 51)
    for window, start, end in annotations[gata.to_numpy()]:
        assert decode(X, window, start, end) == MOTIF
    own = mapped["peak"] != 51  # the second of the overlapping pair, planted 30 bp off
    assert (mapped["offset_start"][gata & own] == MOTIF_OFFSET).all()
    assert (mapped["offset_start"][~gata & own] == CONTROL_OFFSET).all()
    assert (mapped["start"] - mapped["window_start"] == mapped["offset_start"]).all()
    assert (mapped["peak"].to_numpy() == windows["peak"].to_numpy()[mapped["window"]]).all()
    assert list(skipped["hit"]) == [98, 101, 102]
    reasons = list(skipped["reason"])
    if by_peak:
        assert reasons == ["its peak's window runs off the chromosome", "in no window",
            "only partly inside its peak's window"]
    else:
        # hit 98 lies in the peak whose window runs off chr1: said so, not "in no window"
        assert reasons == ["in a peak whose window runs off the chromosome", "in no window",
            "only partly inside a window"]
        # the planted GATA of the overlapping pair maps to both windows
        assert sorted(mapped.loc[mapped["hit"] == 99, "peak"]) == [50, 51]


def test_fimo_names_of_extracted_sequences_become_genome_coordinates(data, tmp_path):
    root, planted = data
    _, windows = jg.load_windows(root / "genome.fa", root / "peaks.narrowPeak", WIDTH)
    path = tmp_path / "fimo.tsv"
    path.write_text("motif_id\tmotif_alt_id\tsequence_name\tstart\tstop\tstrand\n"
        "MA1\tGATA\tchr1:1450-1550\t31\t36\t+\n"      # bedtools getfasta names
        "MA1\tGATA\tpeak0::chr1:1450-1550(-)\t65\t70\t-\n")
    # nothing in the file tells bedtools' 0-based names from samtools' 1-based ones
    with pytest.raises(ValueError, match=r"fimo.tsv:2: sequence 'chr1:1450-1550' names an "
                       r"interval, and the file has no matched_sequence column.*"
                       r"--fimo-intervals bedtools"):
        jg.hits_to_annotations(path, windows)
    _, mapped = jg.hits_to_annotations(path, windows, interval_names="bedtools")
    assert list(mapped["start"]) == [1480, 1480] and list(mapped["end"]) == [1486, 1486]
    # FIMO's '-' on the reverse complement of a (-) interval is the genome's '+'
    assert list(mapped["strand"]) == ["+", "+"]


def test_planted_hits_drop_and_controls_do_not(data):
    import jablate

    root, _ = data
    X, windows = jg.load_windows(root / "genome.fa", root / "peaks.narrowPeak", WIDTH)
    annotations, hits = jg.hits_to_annotations(root / "hits.tsv", windows)
    result = jablate.ablate_annotations(slow_model(), X, annotations, n=8, random_state=0)
    effects = jg.hit_effects(result, hits)
    assert list(effects.columns[-5:]) == ["before", "after_mean", "after_sd", "drop", "z"]
    gata = effects[effects["name"] == "GATA"]
    control = effects[effects["name"] == "control"]
    assert gata["drop"].min() > 0.3 and gata["drop"].median() > 0.8
    assert (gata["z"] > 2).all()
    assert control["drop"].abs().max() < 0.1
    summary = jg.summarise_effects(effects)
    assert list(summary["name"]) == ["GATA", "control"]
    assert summary["frac_z_gt_2"][0] == 1.0 and summary["hits"][0] == 50

    # a chunk of the hits, alone (other windows, other batch positions), gives their
    # results: each hit's shuffles depend on the seed and its own window only
    rows = numpy.arange(17, 41)
    part = hits.iloc[rows].reset_index(drop=True)
    used, inverse = numpy.unique(part["window"], return_inverse=True)
    X_part = jg.fetch_windows(root / "genome.fa", windows, used, pad_to=32)
    assert X_part.shape == (32, 4, windows["window_end"][0] - windows["window_start"][0])
    numpy.testing.assert_array_equal(X_part[:len(used)], jg.fetch_windows(root / "genome.fa",
        windows, used))
    assert not X_part[len(used):].any()  # the padding: all-N windows
    ann = numpy.stack([inverse, part["offset_start"], part["offset_end"]], 1)
    alone = jg.hit_effects(jablate.ablate_annotations(slow_model(), X_part, ann, n=8,
        random_state=0), part)
    for column in ("before", "after_mean", "after_sd", "drop", "z"):  # float32 rounding
        numpy.testing.assert_allclose(alone[column], effects[column].to_numpy()[rows],
            rtol=1e-5, atol=1e-4 if column == "z" else 1e-6)


def test_soft_masked_bases_are_ordinary_and_N_is_all_zero(data, tmp_path):
    root, _ = data
    text = (root / "genome.fa").read_text()
    upper = tmp_path / "upper.fa"
    upper.write_text("\n".join(line if line.startswith(">") else line.upper()
        for line in text.splitlines()) + "\n")
    X, windows = jg.load_windows(root / "genome.fa", root / "peaks.narrowPeak", WIDTH)
    X_upper, _ = jg.load_windows(upper, root / "peaks.narrowPeak", WIDTH)
    masked = (windows["chrom"] == "chr2") & (windows["window_end"] < 6_000)
    assert masked.sum() == 2
    numpy.testing.assert_array_equal(X, X_upper)
    assert (X.sum(axis=1) == 1).all()
    # N (and any IUPAC code) becomes an all-zero column
    lines = upper.read_text().splitlines()
    lines[1] = "NNNNNR" + lines[1][6:]
    upper.write_text("\n".join(lines) + "\n")
    frame = pandas.DataFrame({"chrom": ["chr1"], "start": [0], "end": [20]})
    X_n, _ = jg.load_windows(upper, frame, 20)
    assert (X_n[0, :, :6] == 0).all() and (X_n[0, :, 6:].sum(axis=0) == 1).all()


def test_bgzip_genome_reads_like_the_plain_one_and_gzip_is_refused(data, tmp_path):
    from Bio import bgzf

    root, _ = data
    with bgzf.BgzfWriter(str(tmp_path / "genome.fa.gz"), "wb") as handle:
        handle.write((root / "genome.fa").read_bytes())
    X, _ = jg.load_windows(root / "genome.fa", root / "peaks.narrowPeak", WIDTH)
    X_bgzip, _ = jg.load_windows(tmp_path / "genome.fa.gz", root / "peaks.narrowPeak", WIDTH)
    numpy.testing.assert_array_equal(X, X_bgzip)
    with gzip.open(tmp_path / "plain.fa.gz", "wb") as handle:
        handle.write((root / "genome.fa").read_bytes())
    with pytest.raises(ValueError, match=r"not with bgzip.*recompress it with bgzip into "
                       r"a new file \('gunzip -c \S*plain.fa.gz \| bgzip > \S*plain.fa.bgz'"):
        jg.load_windows(tmp_path / "plain.fa.gz", root / "peaks.narrowPeak", WIDTH)


def test_short_hits_are_skipped_for_the_dinucleotide_shuffle(data):
    root, _ = data
    _, windows = jg.load_windows(root / "genome.fa", root / "peaks.narrowPeak", WIDTH)
    hits = pandas.DataFrame({"chrom": ["chr1", "chr1"], "start": [1460, 1470],
        "end": [1462, 1473], "name": ["short", "ok"], "score": [1, 2]})
    annotations, mapped, skipped = jg.hits_to_annotations(hits, windows, min_width=3,
        return_skipped=True)
    assert annotations.tolist() == [[0, 20, 23]] and list(mapped["score"]) == [2]
    assert skipped["reason"][0].startswith("shorter than 3 bases")


def test_profile_outputs_get_total_signal_and_jensen_shannon_distance(tmp_path):
    from scipy.spatial.distance import jensenshannon

    k, n, L = 3, 4, 10
    logits = numpy.zeros((k, 1, 2, L), numpy.float32)
    after = numpy.zeros((k, 1, n, 2, L), numpy.float32)
    after[1, 0, :, 0, 0] = 50.0  # all mass on one position after: far from uniform
    after[2] += 1.0  # a constant shift: the same softmax, more total
    counts = numpy.arange(k, dtype=numpy.float32).reshape(k, 1, 1)
    counts_after = numpy.repeat(counts[:, :, None], n, axis=2) - 1
    hits = pandas.DataFrame({"hit": range(k), "name": ["a", "b", "c"]})
    effects = jg.hit_effects(([logits, counts], [after, counts_after]), hits)
    assert list(effects.columns[2:]) == ["out0_sum_before", "out0_sum_drop", "out0_jsd",
        "out1_before", "out1_after_mean", "out1_after_sd", "out1_drop", "out1_z"]
    spike = numpy.exp(after[1, 0, 0].ravel() - 50)
    expected = jensenshannon(numpy.full(2 * L, 1 / (2 * L)), spike / spike.sum(), base=2)
    numpy.testing.assert_allclose(effects["out0_jsd"], [0, expected, 0], atol=1e-7)
    numpy.testing.assert_allclose(effects["out0_sum_drop"], [0, -50, -20])
    numpy.testing.assert_allclose(effects["out1_drop"], [1, 1, 1])
    assert numpy.isnan(effects["out1_z"]).all()  # a drop without spread: nan, never inf
    summary = jg.summarise_effects(effects)
    assert list(summary.columns) == ["name", "hits", "rows", "out1_median_drop",
        "out1_mean_drop", "out1_frac_z_gt_2", "out1_nan_z", "out0_median_jsd",
        "out0_mean_jsd", "out0_median_sum_drop", "out0_nan_jsd"]
    assert list(summary["name"]) == ["a", "b", "c"]  # by drop (all 1, ties by name), not jsd
    probs = jg.hit_effects((logits + 1, after + 1), hits, profile="probs")
    assert probs["jsd"][0] == 0 and 0 < probs["jsd"][1] < 1
    with pytest.raises(ValueError, match="negative values"):
        jg.hit_effects((logits - 1, after), hits, profile="probs")


def test_plot_is_readable_with_50_motif_names(tmp_path):
    rs = numpy.random.RandomState(0)
    names = [f"motif_{i:02d}_{'X' * (i % 12)}" for i in range(50)]
    effects = pandas.DataFrame({"hit": range(1000), "name": rs.choice(names, 1000),
        "drop": rs.normal(size=1000), "z": rs.normal(size=1000) * 3})
    summary = jg.summarise_effects(effects)
    assert len(summary) == 50 and summary["median_drop"].is_monotonic_decreasing
    jg.plot_effects(effects, tmp_path / "effects.svg")
    text = (tmp_path / "effects.svg").read_text()
    assert all(name in text for name in names)


# --- the command line ---------------------------------------------------------------------


def test_hits_command_writes_effects_summary_skipped_and_plot(data, tmp_path, capsys):
    root, _ = data
    out = tmp_path / "out"
    status, stdout, stderr = run(capsys, *hits_args(root, out, "hits.bed", "--plot", "svg",
        quiet=False))
    assert status == 0, stderr
    assert sorted(os.listdir(out)) == ["effects.svg", "effects.tsv", "parts", "skipped.tsv",
        "summary.tsv"]
    assert "3 skipped" in stderr and "wrote" in stderr
    effects = pandas.read_csv(out / "effects.tsv", sep="\t", keep_default_na=False)
    assert list(effects.columns) == ["hit", "line", "chrom", "start", "end", "name",
        "strand", "score", "window", "peak", "window_start", "window_end", "offset_start",
        "offset_end", "arrangements", "before", "after_mean", "after_sd", "drop", "z"]
    assert len(effects) == 102 and effects["line"][0] == 2
    summary = pandas.read_csv(out / "summary.tsv", sep="\t")
    assert list(summary.columns) == ["name", "hits", "rows", "median_drop", "mean_drop",
        "frac_z_gt_2", "nan_z"]
    assert summary["name"].tolist() == ["GATA", "control"]
    assert summary["median_drop"][0] > 0.8 and abs(summary["median_drop"][1]) < 0.05
    skipped = pandas.read_csv(out / "skipped.tsv", sep="\t")
    assert skipped["line"].tolist() == [100, 103, 104]
    # the same run again is refused (its parts exist) until --resume, which reassembles
    before = (out / "effects.tsv").read_bytes()
    status, _, stderr = run(capsys, *hits_args(root, out, "hits.bed"))
    assert status == 2 and "pass --resume" in stderr
    assert run(capsys, *hits_args(root, out, "hits.bed", "--resume", "--plot", "svg"))[0] == 0
    assert (out / "effects.tsv").read_bytes() == before


def test_duplicate_peaks_are_said_with_what_they_do_to_the_rows(data, tmp_path, capsys):
    """A peak file with a peak twice (or summits called twice) measures the hits in it once
    per copy: said in a warning, not silently counted twice in summary.tsv."""
    root, _ = data
    lines = (root / "peaks.narrowPeak").read_text().splitlines(keepends=True)
    (tmp_path / "genome.fa").symlink_to(root / "genome.fa")
    for name in ("genome.fa.fai", "hits.bed"):
        (tmp_path / name).symlink_to(root / name)
    (tmp_path / "peaks.narrowPeak").write_text("".join(lines + lines[1:2]))
    status, _, stderr = run(capsys, *hits_args(tmp_path, tmp_path / "out", "hits.bed"))
    assert status == 0, stderr
    assert "jablate: warning: 1 window of" in stderr and "repeats an earlier peak's " \
        "window exactly" in stderr
    effects = pandas.read_csv(tmp_path / "out" / "effects.tsv", sep="\t")
    copy = effects[effects["peak"] == len(lines)]  # the repeated line's rows
    first = effects[(effects["peak"] == 1)]
    assert len(copy) > 0 and copy["hit"].tolist() == first["hit"].tolist()
    assert copy["window_start"].tolist() == first["window_start"].tolist()


def test_shards_then_assembly_equal_one_run(data, tmp_path, capsys):
    root, _ = data
    chunked = ["--chunk-size", 16, "--model", "test_genome:slow_model"]
    single = tmp_path / "single"
    assert run(capsys, *hits_args(root, single, "hits.tsv", *chunked))[0] == 0
    sharded = tmp_path / "sharded"
    status, _, stderr = run(capsys, *hits_args(root, sharded, "hits.tsv", *chunked,
        "--shard", "1/2"))
    assert status == 0 and not (sharded / "effects.tsv").exists()
    assert sorted(os.listdir(sharded / "parts")) == sorted(
        [f"chunk-00000{c}.{kind}" for c in (1, 3, 5) for kind in ("tsv", "windows")]
        + ["settings.json"])
    # another run's settings are refused, with or without --resume; nothing changes
    for extra in ([], ["--resume"], ["--shard", "0/2"]):
        status, _, stderr = run(capsys, *hits_args(root, sharded, "hits.tsv", *chunked,
            "--seed", 5, *extra))
        assert status == 2 and "different settings (--seed: 0 there, 5 here)" in stderr
        assert len(stderr.strip().splitlines()) == 1
    assert len(os.listdir(sharded / "parts")) == 7
    status, _, stderr = run(capsys, *hits_args(root, sharded, "hits.tsv", *chunked))
    assert status == 2 and "holds 3 of 7 chunks of this run; pass --resume" in stderr
    assert run(capsys, *hits_args(root, sharded, "hits.tsv", *chunked, "--shard",
        "0/2"))[0] == 0
    assert run(capsys, *hits_args(root, sharded, "hits.tsv", *chunked, "--resume"))[0] == 0
    assert (sharded / "effects.tsv").read_bytes() == (single / "effects.tsv").read_bytes()
    assert (sharded / "summary.tsv").read_bytes() == (single / "summary.tsv").read_bytes()


def test_a_wrong_output_names_count_is_refused_before_any_part_is_written(data, tmp_path,
                                                                           capsys):
    root, _ = data
    out = tmp_path / "out"
    status, _, stderr = run(capsys, *hits_args(root, out, "hits.tsv", "--chunk-size", 16,
        "--output-names", "a,b,c"))
    assert status == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert "--output-names: output_names has 3 names" in stderr
    assert not out.exists()  # nothing written, nothing left to resume


def test_resume_refuses_parts_computed_with_other_weights(data, tmp_path, capsys,
                                                           monkeypatch):
    pytest.importorskip("torch")
    root, _ = data
    args = ["--chunk-size", 16, "--plot", "none"]
    out = tmp_path / "out"
    model = "test_genome:biased_torch_model"
    assert run(capsys, *hits_args(root, out, "hits.tsv", *args, model=model))[0] == 0
    (out / "effects.tsv").unlink()
    assert run(capsys, *hits_args(root, out, "hits.tsv", *args, "--resume",
        model=model))[0] == 0  # the same weights: reused
    monkeypatch.setenv("JABLATE_TEST_BIAS", "0.5")
    status, _, stderr = run(capsys, *hits_args(root, out, "hits.tsv", *args, "--resume",
        model=model))
    assert status == 2 and stderr == (f"jablate: error: --out '{out}' holds the parts of "
        "another run with different settings (--model (its weights) differs); refusing to "
        f"mix them: choose another --out, or delete '{out / 'parts'}' to start over\n")


def test_model_digest_reads_the_weights_and_leaves_random_state_out():
    torch = pytest.importorskip("torch")
    import jax
    from flax import nnx

    from jablate.api.loading import model_digest

    class Net(nnx.Module):
        def __init__(self, seed, shift=0.0):
            self.conv = nnx.Conv(4, 3, (5,), rngs=nnx.Rngs(0))
            self.conv.bias.value = self.conv.bias.value + shift
            self.drop = nnx.Dropout(0.1, rngs=nnx.Rngs(seed))  # holds a PRNG key
            self.out = nnx.Linear(3, 1, rngs=nnx.Rngs(1))

        def __call__(self, x):
            return self.out(self.drop(jax.nn.relu(self.conv(x.transpose(0, 2, 1)))).mean(1))

    assert model_digest(Net(0)) == model_digest(Net(5)) is not None  # seeds aside
    assert model_digest(Net(0, shift=1e-3)) != model_digest(Net(0))

    class Extra(torch.nn.Module):  # a state_dict entry that is not a tensor
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)

        def get_extra_state(self):
            return {"version": 1}

        def set_extra_state(self, state):
            pass

    assert model_digest(Extra()) is not None
    assert model_digest(lambda x: x.sum((1, 2))[:, None]) is None  # nothing to read


def test_a_failed_shard_removes_only_the_digests_it_wrote(tmp_path):
    from jablate.genome.run import _remove_if_no_parts

    parts = tmp_path / "parts"
    parts.mkdir()
    (parts / "settings.json").write_text("{}")
    (parts / "chunk-000000.windows").write_text("other shard's, its part on the way\n")
    (parts / "chunk-000001.windows").write_text("ours, its part never written\n")
    _remove_if_no_parts(str(parts), [], 7, {1})
    assert sorted(os.listdir(parts)) == ["chunk-000000.windows", "settings.json"]


def test_resume_refuses_parts_computed_from_other_bases(data, tmp_path, capsys):
    root, _ = data
    args = ["--chunk-size", 16, "--plot", "none"]
    out = tmp_path / "out"
    assert run(capsys, *hits_args(root, out, "hits.tsv", *args))[0] == 0
    (out / "effects.tsv").unlink()
    assert run(capsys, *hits_args(root, out, "hits.tsv", *args, "--resume"))[0] == 0

    # the same names and lengths, one base of a window masked to N (a masked copy)
    window = pandas.read_csv(out / "effects.tsv", sep="\t").iloc[0]

    def mask(names, sequences):
        chrom, at = names.index(window["chrom"]), int(window["window_start"]) + 5
        sequences[chrom] = sequences[chrom][:at] + "N" + sequences[chrom][at + 1:]

    masked = _genome_copy(root, tmp_path / "masked", mask)
    status, _, stderr = run(capsys, *hits_args(masked, out, "hits.tsv", *args, "--resume"))
    assert status == 2 and len(stderr.strip().splitlines()) == 1
    assert ("chunk-000000.tsv was computed from other bases than --genome" in stderr
            and "a masked or patched copy?" in stderr), stderr

    (out / "parts" / "chunk-000001.windows").unlink()
    status, _, stderr = run(capsys, *hits_args(root, out, "hits.tsv", *args, "--resume"))
    assert status == 2 and "chunk-000001.tsv has no chunk-000001.windows beside it" in stderr


def test_a_run_killed_by_sigkill_resumes_to_the_same_bytes(data, tmp_path, capsys):
    root, _ = data
    args = ["--chunk-size", 8, "--model", "test_genome:slow_model", "--plot", "none"]
    reference = tmp_path / "reference"
    assert run(capsys, *hits_args(root, reference, "hits.tsv", *args))[0] == 0

    killed = tmp_path / "killed"
    env = dict(os.environ, JABLATE_TEST_DELAY="0.4", PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), str(TESTS), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "jablate", *map(str, hits_args(root, killed,
        "hits.tsv", *args))]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not list((killed / "parts").glob("chunk-*.tsv")):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no chunk finished in time"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stderr.close()
    finished = list((killed / "parts").glob("chunk-*.tsv"))
    assert 1 <= len(finished) < 13 and not (killed / "effects.tsv").exists()

    status, _, stderr = run(capsys, *hits_args(root, killed, "hits.tsv", *args, "--resume"))
    assert status == 0, stderr
    assert (killed / "effects.tsv").read_bytes() == (reference / "effects.tsv").read_bytes()
    assert not [p for p in os.listdir(killed / "parts") if p.startswith(".")]


def _bad_inputs(root, tmp):
    """(name, files to write, extra CLI arguments, expected message) per bad input."""

    genome = (root / "genome.fa").read_text()
    return [
        ("missing chromosome in hits", {"hits.bed": "chr1\t10\t20\nchrX\t5\t9\n"}, {},
         "hits.bed:2: chromosome 'chrX' is not in the genome"),
        ("Ensembl names against UCSC's", {"hits.bed": "chr1\t10\t20\n1\t5\t9\n"}, {},
         "hits.bed:2: chromosome '1' is not in the genome '" + str(root / "genome.fa")
         + "' (it has 'chr1': the files name chromosomes differently, UCSC's 'chr1' "
         "against Ensembl's '1'; rename one of them)"),
        ("missing chromosome in peaks", {"peaks.bed": "chr1\t100\t300\nchr9\t1\t50\n"},
         {"--peaks": "peaks.bed"}, "peaks.bed:2: chromosome 'chr9' is not in the genome"),
        ("non-numeric start", {"hits.bed": "chr1\t10\t20\nchr1\tx\t30\n"}, {},
         "hits.bed:2: start 'x' is not an integer"),
        ("non-numeric end on a BED file's first line", {"hits.bed": "chr1\t1040\tx\tGATA\n"},
         {}, "hits.bed:1: cannot recognise the hit format: as a BED line its end 'x' is not an "
         "integer"),
        ("non-numeric end", {"hits.tsv": "chr\tstart\tend\tmotif_name\nchr1\t10\t2x\tA\n"},
         {"--hits": "hits.tsv"}, "hits.tsv:2: end '2x' is not an integer"),
        ("malformed peak", {"peaks.bed": "# peaks\nchr1\t100\n"}, {"--peaks": "peaks.bed"},
         "peaks.bed:2: expected at least 3 tab-separated columns"),
        ("end before start", {"hits.bed": "chr1\t10\t20\nchr1\t30\t30\n"}, {},
         "hits.bed:2: end 30 is not after start 30"),
        ("end before start in FIMO", {"fimo.tsv": "motif_id\tsequence_name\tstart\tstop\n"
         "M\tchr1\t10\t5\n"}, {"--hits": "fimo.tsv"}, "fimo.tsv:2: stop 5 is before start 10"),
        ("empty peaks", {"peaks.bed": "\n# nothing\n"}, {"--peaks": "peaks.bed"},
         "peaks.bed: no peaks"),
        ("empty hits", {"hits.bed": ""}, {}, "hits.bed: no hits"),
        ("header only", {"hits.tsv": "chr\tstart\tend\tmotif_name\n"}, {"--hits": "hits.tsv"},
         "hits.tsv: no hits (a finemo header, but no hits)"),
        ("unrecognised format", {"hits.bed": "\nmotif\tposition\nGATA\t12\n"}, {},
         "hits.bed:2: cannot recognise the hit format"),
        ("window longer than a chromosome",
         {"genome.fa": genome + ">chrS\n" + "ACGT" * 20 + "\n",
          "peaks.bed": "chr1\t100\t300\nchrS\t10\t30\n"},
         {"--genome": "genome.fa", "--peaks": "peaks.bed"},
         "peaks.bed:2: the window of 100 bases is longer than chromosome 'chrS' (80 bases)"),
        ("peak id beyond the peaks", {"hits.tsv": "chr\tstart\tend\tmotif_name\tpeak_id\n"
         "chr1\t1480\t1486\tGATA\t0\nchr1\t1480\t1486\tGATA\t52\n"}, {"--hits": "hits.tsv"},
         "hits.tsv:3: peak 52 does not exist"),
        ("plain gzip genome", {"genome.fa.gz": gzip.compress(genome.encode())},
         {"--genome": "genome.fa.gz"}, "it is gzip-compressed, but not with bgzip"),
        ("no window", {}, {"--window": None}, "--window is required"),
    ]


def test_bad_input_is_one_line_with_file_and_line_and_nothing_is_written(data, tmp_path,
        capsys):
    root, _ = data
    for case, files, options, expected in _bad_inputs(root, tmp_path):
        folder = tmp_path / case.replace(" ", "_")
        folder.mkdir()
        for name, content in files.items():
            mode = "wb" if isinstance(content, bytes) else "w"
            with open(folder / name, mode) as handle:
                handle.write(content)
        arguments = {"--model": MODEL, "--genome": root / "genome.fa",
            "--peaks": root / "peaks.narrowPeak", "--hits": folder / "hits.bed",
            "--out": folder / "out", "--window": WIDTH}
        if "hits.bed" not in files:
            (folder / "hits.bed").write_text("chr1\t1480\t1486\tGATA\n")
        for option, value in options.items():
            if value is None:
                del arguments[option]
            else:
                arguments[option] = folder / value
        argv = ["hits", *[str(x) for pair in arguments.items() for x in pair], "--quiet"]
        status, stdout, stderr = run(capsys, *argv)
        assert status == 2, (case, stderr)
        assert stderr.count("\n") == 1 and expected in stderr, (case, stderr)
        assert not (folder / "out").exists(), case


def test_a_resumable_run_refuses_standard_input(data, tmp_path, capsys):
    root, _ = data
    for option in ("--genome", "--peaks", "--hits"):
        arguments = {"--model": MODEL, "--genome": root / "genome.fa",
            "--peaks": root / "peaks.narrowPeak", "--hits": root / "hits.bed",
            "--out": tmp_path / "out", "--window": WIDTH}
        arguments[option] = "-"
        status, _, stderr = run(capsys, "hits", *[str(x) for pair in arguments.items()
            for x in pair], "--quiet")
        assert status == 2
        assert stderr == (f"jablate: error: {option} cannot be standard input ('-'): a "
            "resumable run reads its inputs again, and records their digests; name a file\n")
        assert not (tmp_path / "out").exists()


def test_incremental_switch_is_passed_through(data, tmp_path,
        capsys, monkeypatch):
    import jablate

    root, _ = data
    real, seen = jablate.api.loading.annotations_ablation, []

    def annotations_ablation(model, X, annotations, incremental, *args):
        seen.append(incremental)
        return real(model, X, annotations, incremental, *args)

    monkeypatch.setattr(jablate.api.loading, "annotations_ablation", annotations_ablation)
    for mode, value in (("on", True), ("off", False), ("auto", "auto")):
        status, _, stderr = run(capsys, *hits_args(root, tmp_path / mode, "hits.tsv",
            "--incremental", mode, "--plot", "none"))
        assert status == 0, stderr
        assert set(seen) == {value}
        seen.clear()


def test_window_comes_from_a_static_pt2(tmp_path, data, capsys):
    torch = pytest.importorskip("torch")
    from jablate.cli import load_model
    from jablate.genome.run import static_input_length

    root, _ = data
    module = torch.nn.Sequential(torch.nn.Conv1d(4, 2, 5, padding=2), torch.nn.Flatten(),
        torch.nn.Linear(2 * WIDTH, 1))
    program = torch.export.export(module.eval(), (torch.zeros(2, 4, WIDTH),))
    torch.export.save(program, tmp_path / "model.pt2")
    assert static_input_length(load_model(str(tmp_path / "model.pt2"))) == WIDTH
    few = tmp_path / "few.bed"  # the exported batch is 2: each model call runs 2 rows
    few.write_text("".join((root / "hits.bed").read_text().splitlines(True)[1:5]))
    argv = hits_args(root, tmp_path / "out", few, model=tmp_path / "model.pt2")
    argv[argv.index("--window") + 1] = 64
    status, _, stderr = run(capsys, *argv)
    assert status == 2 and "--window 64 differs from the input length 100" in stderr
    argv = [a for a in argv if a not in ("--window", 64)]
    status, _, stderr = run(capsys, *argv, "--plot", "none")
    assert status == 0, stderr
    assert len((tmp_path / "out" / "effects.tsv").read_text().splitlines()) == 5


def test_a_model_failure_exits_1_with_one_line(data, tmp_path, capsys):
    root, _ = data
    status, _, stderr = run(capsys, *hits_args(root, tmp_path / "out", "hits.tsv",
        model="test_genome:broken_model"))
    assert status == 1
    assert stderr == ("jablate: error: model 'test_genome:broken_model' failed: "
        "RuntimeError: out of cheese\n")
    assert not (tmp_path / "out" / "effects.tsv").exists()


def test_out_of_memory_mid_run_says_what_is_kept_and_a_smaller_batch_resumes(
        data, tmp_path, capsys, monkeypatch):
    """Memory runs out on the third chunk (XLA's own RESOURCE_EXHAUSTED error): one
    line naming the batch size and the two chunks kept; the same command with --resume and
    a smaller --batch-size finishes the table of an uninterrupted run, byte for byte."""
    import jax

    from jablate._core.errors import ModelFailure
    from jablate.genome import run as hits_run

    try:
        jax.jit(lambda: jax.numpy.ones((2**26, 2**20)))()
    except Exception as error:
        exhausted = error
    root, _ = data
    args = ("--chunk-size", 16, "--plot", "none", "--seed", 3)
    plain = tmp_path / "plain"
    assert run(capsys, *hits_args(root, plain, "hits.tsv", *args))[0] == 0
    run_chunk = hits_run._Run.run_chunk

    def spy_run(self, inputs):
        if inputs.chunk == 2:
            raise ModelFailure(self.args.model, exhausted)
        return run_chunk(self, inputs)

    monkeypatch.setattr(hits_run._Run, "run_chunk", spy_run)
    out = tmp_path / "out"
    status, _, stderr = run(capsys, *hits_args(root, out, "hits.tsv", *args))
    assert status == 1 and len(stderr.splitlines()) == 1, stderr
    assert "RESOURCE_EXHAUSTED" in stderr
    assert "; out of host memory at --batch-size 64: a smaller --batch-size" in stderr
    assert stderr.endswith(f"; 2 finished chunks are kept in {out / 'parts'}: run the same "
        "command with --resume to continue\n")
    monkeypatch.undo()
    assert run(capsys, *hits_args(root, out, "hits.tsv", *args, "--resume", "--batch-size",
                                  8))[0] == 0
    assert (out / "effects.tsv").read_bytes() == (plain / "effects.tsv").read_bytes()


@pytest.mark.parametrize("model", ["models_for_cli:jax_wrong_shape",
                                   "models_for_cli:torch_wrong_length"])
def test_a_shape_failure_on_the_first_chunk_asks_about_window(data, tmp_path, capsys,
                                                              model):
    if "torch" in model:
        pytest.importorskip("torch")
    root, _ = data
    status, _, stderr = run(capsys, *hits_args(root, tmp_path / "out", "hits.tsv",
        "--window", WIDTH + 20, model=model))  # both models take WIDTH bases
    assert status == 1 and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith(f"jablate: error: model '{model}' failed: ")
    assert stderr.endswith(f"(on the first chunk: is --window {WIDTH + 20} the input length "
        "the model expects?)\n")


# --- hits that cannot change (issue 17) -------------------------------------------------


def _unchangeable_dataset(root):
    """One chromosome, a peak every 400 bp; in each window a poly-A (10 bp), an ACAC
    repeat (10 bp), an all-N stretch (6 bp) and an ordinary random hit (20 bp).

    Returns the hits' kinds in file order."""

    root.mkdir(parents=True, exist_ok=True)
    rs = numpy.random.RandomState(7)
    bases = list(_background(rs, 4_000))
    peaks, hits, kinds = [], [], []
    plants = {"polyA": (10, "A" * 10), "ACAC": (25, "AC" * 5), "N": (40, "N" * 6),
        "ordinary": (55, None)}
    for summit in range(200, 3_800, 400):
        low = summit - WIDTH // 2
        peaks.append(f"chr1\t{summit - 100}\t{summit + 100}\tp{len(peaks)}\t0\t.\t1\t-1\t-1\t100\n")
        for kind, (offset, text) in plants.items():
            start = low + offset
            if text is not None:
                bases[start:start + len(text)] = text
            end = start + (len(text) if text is not None else 20)
            hits.append(f"chr1\t{start}\t{end}\t{kind}\n")
            kinds.append(kind)
    (root / "genome.fa").write_text(">chr1\n" + "".join(bases) + "\n")
    (root / "peaks.narrowPeak").write_text("".join(peaks))
    (root / "hits.bed").write_text("".join(hits))
    return kinds


def test_hits_that_cannot_change_get_nan_z_and_the_run_finishes_and_resumes(tmp_path,
        capsys):
    root = tmp_path / "data"
    kinds = numpy.array(_unchangeable_dataset(root))
    stuck = {"mono": {"polyA", "N"}, "dinucleotide": {"polyA", "ACAC", "N"}}
    for shuffle, n in (("mono", 8), ("dinucleotide", 8), ("mono", 1)):
        out = tmp_path / f"{shuffle}-{n}"
        argv = ["hits", "--model", MODEL, "--genome", root / "genome.fa", "--peaks",
            root / "peaks.narrowPeak", "--hits", root / "hits.bed", "--out", out,
            "--window", WIDTH, "--n", n, "--shuffle", shuffle, "--chunk-size", 16]
        status, _, stderr = run(capsys, *argv, "--shard", "0/2")
        assert status == 0, stderr
        status, _, stderr = run(capsys, *argv, "--resume")
        assert status == 0, stderr
        cannot = numpy.isin(kinds, list(stuck[shuffle]))
        assert f"{cannot.sum()} hits cannot be changed" in stderr
        effects = pandas.read_csv(out / "effects.tsv", sep="\t", keep_default_na=False,
            na_values={"z": ["nan"], "after_sd": ["nan"]})
        assert effects["name"].tolist() == kinds.tolist()
        assert (effects["drop"][cannot] == 0).all()
        assert effects["z"][cannot].isna().all()
        if n > 1:
            assert (effects["after_sd"][cannot] == 0).all()
            assert numpy.isfinite(effects["z"][~cannot]).all()
        else:
            assert effects["z"].isna().all()
        assert not numpy.isinf(effects["z"]).any()
        summary = pandas.read_csv(out / "summary.tsv", sep="\t").set_index("name")
        for kind in set(kinds):
            expected = (kinds == kind).sum() if (kind in stuck[shuffle] or n == 1) else 0
            assert summary.loc[kind, "nan_z"] == expected, (shuffle, n, kind)
        if n > 1:
            assert numpy.isnan(summary.loc["polyA", "frac_z_gt_2"])
            assert 0 <= summary.loc["ordinary", "frac_z_gt_2"] <= 1
        # one uninterrupted run gives the same bytes
        single = tmp_path / f"{shuffle}-{n}-single"
        assert run(capsys, *argv[:argv.index("--out") + 1], single,
            *argv[argv.index("--out") + 2:])[0] == 0
        assert (single / "effects.tsv").read_bytes() == (out / "effects.tsv").read_bytes()


def test_plot_of_small_effects_has_readable_ticks_and_names_the_outputs(tmp_path,
        monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = numpy.random.RandomState(1)
    k = 300
    effects = pandas.DataFrame({"hit": range(k), "name": rs.choice(["GATA", "CTCF",
        "control"], k), "out0_sum_drop": rs.normal(size=k) * 1e-3,
        "out0_jsd": rs.uniform(size=k) * 1e-3, "out1_drop": rs.normal(size=k) * 1e-3 + 5e-4,
        "out1_z": rs.normal(size=k)})
    figures = []
    monkeypatch.setattr(plt, "close", lambda figure=None: figures.append(figure))
    jg.plot_effects(effects, tmp_path / "effects.png", output_names=["profile",
        "log counts"])
    (figure,) = figures
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    labels = [axis.get_xlabel() for axis in figure.axes]
    assert labels == ["log counts drop", "profile JSD"]
    for axis in figure.axes:
        boxes = [t.get_window_extent(renderer) for t in axis.get_xticklabels()
            if t.get_text()]
        assert len(boxes) >= 2
        for a, b in zip(boxes, boxes[1:]):
            assert a.x1 < b.x0, [t.get_text() for t in axis.get_xticklabels()]
        # small values share one power of ten instead of long labels
        assert axis.xaxis.get_offset_text().get_text()
        assert max(len(t.get_text()) for t in axis.get_xticklabels()) <= 20
    plt.close(figure)
    assert jg.measure_labels(effects.columns) == [("out1_drop", "output 1 drop"),
        ("out0_jsd", "profile (output 0) JSD")]
    with pytest.raises(ValueError, match="output_names has 1 names"):
        jg.measure_labels(effects.columns, ["counts"])


def test_a_fimo_matched_sequence_that_the_genome_lacks_is_refused(data, tmp_path, capsys):
    """FIMO's matched_sequence is compared with the genome at each hit's position (either
    strand): interval names read in the wrong convention shift every hit by one base,
    which is refused (exit 2, nothing written) instead of measured."""
    from jablate.genome.files import check_matched_sequences, open_genome, read_hits

    root, _ = data
    fasta = open_genome(root / "genome.fa")
    plus = str(fasta["chr1"][1480:1486]).upper()
    minus = plus.translate(str.maketrans("ACGT", "TGCA"))[::-1]
    path = tmp_path / "fimo.tsv"
    path.write_text("motif_id\tmotif_alt_id\tsequence_name\tstart\tstop\tstrand\t"
        "matched_sequence\n"
        f"MA1\tGATA\tchr1:1451-1550\t31\t36\t+\t{plus.lower()}\n"
        f"MA1\tGATA\tchr1:1451-1550(-)\t65\t70\t-\t{minus}\n")
    lengths = {name: len(fasta[name]) for name in fasta.keys()}
    check_matched_sequences(read_hits(path, lengths, interval_names="samtools"), fasta,
                            "fimo.tsv", "samtools")
    # an IUPAC ambiguity code (R) on either side matches anything, as N does
    ambiguous = path.with_name("ambiguous.tsv")
    ambiguous.write_text(path.read_text().replace(minus, "R" + minus[1:]))
    check_matched_sequences(read_hits(ambiguous, lengths, interval_names="samtools"), fasta,
                            "ambiguous.tsv", "samtools")
    out = tmp_path / "out"
    status, _, stderr = run(capsys, *hits_args(root, out, path))
    assert status == 2, stderr
    assert re.search(r"'.*fimo.tsv': 1 of 2 hits checked have a matched_sequence that is not "
                     r"the genome's bases at their position; the first \(line 2\): "
                     f"'{plus.lower()}' at chr1:1481-1487, where the genome has "
                     r"'[ACGT]{6}'\. Are the positions read in the right convention", stderr)
    assert not out.exists()


def test_outputs_never_finite_or_empty_fail_with_what_to_check(data, tmp_path, capsys):
    """A model whose output is NaN for every window is a failure (exit 1, no table; the
    finished chunks are kept), not a table of NaN; one whose profile is empty is told to
    check --window (exit 2), where jablate's own effects code had raised an IndexError."""
    root, _ = data
    out = tmp_path / "out"
    status, _, stderr = run(capsys, *hits_args(root, out, "hits.tsv",
                                               model="models_for_cli:jax_constant_nan"))
    assert status == 1, stderr
    assert (f"its output is not finite (NaN or inf) for every window, so no effect means "
            f"anything (are windows of {WIDTH} bp the input "
            "length the model expects?)") in stderr
    assert not (out / "effects.tsv").exists() and list((out / "parts").glob("chunk-*.tsv"))
    assert not [p for p in os.listdir(out) if p.endswith(".part")]
    # a profile trimmed to nothing: bad input (exit 2) said as such, not a model failure
    status, _, stderr = run(capsys, *hits_args(root, tmp_path / "trimmed", "hits.tsv",
                                               model="models_for_cli:jax_trimmed_profile"))
    assert status == 2, stderr
    assert ("jablate: error: cannot measure output 1: it has no values per window (shape "
            "(2, 0) each; a model that trims its input, as BPNet does, returns nothing for "
            "windows shorter than it expects: is --window the model's input length?)") in stderr


def test_samtools_interval_names_are_one_based(data, tmp_path):
    root, _ = data
    _, windows = jg.load_windows(root / "genome.fa", root / "peaks.narrowPeak", WIDTH)
    path = tmp_path / "fimo.tsv"
    # the same bases, chr1:1450-1550 in bedtools' 0-based half-open form, are
    # chr1:1451-1550 in samtools faidx's 1-based inclusive form
    path.write_text("motif_id\tmotif_alt_id\tsequence_name\tstart\tstop\tstrand\n"
        "MA1\tGATA\tchr1:1451-1550\t31\t36\t+\n"
        "MA1\tGATA\tchr1:1451-1550(-)\t65\t70\t-\n")
    _, mapped = jg.hits_to_annotations(path, windows, interval_names="samtools")
    assert list(mapped["start"]) == [1480, 1480] and list(mapped["end"]) == [1486, 1486]
    _, default = jg.hits_to_annotations(path, windows, interval_names="bedtools")  # one on
    assert list(default["start"]) == [1481, 1480]  # (-) counts from the same end
    with pytest.raises(ValueError, match="interval_names"):
        jg.hits_to_annotations(path, windows, interval_names="ucsc")


def test_cli_nits_of_a_new_user(data, tmp_path, capsys, monkeypatch):
    root, _ = data
    few = tmp_path / "few.bed"
    few.write_text("".join((root / "hits.bed").read_text().splitlines(True)[1:9]))
    # a peak file with a header line, as hits files may have one
    peaks = tmp_path / "peaks.tsv"
    peaks.write_text("chrom\tstart\tend\tname\tscore\tstrand\tsignal\tp\tq\tsummit\n" +
        (root / "peaks.narrowPeak").read_text())
    argv = ["hits", "--model", MODEL, "--genome", root / "genome.fa", "--peaks", peaks,
        "--hits", few, "--window", WIDTH, "--n", 4, "--plot", "none", "--chunk-size", 2]
    out = tmp_path / "plain"
    status, _, stderr = run(capsys, *argv, "--out", out, "--quiet")
    assert status == 0, stderr
    # every output and part has one mode: what open() gives a new file
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in [*out.iterdir(),
        *(out / "parts").iterdir()] if p.is_file()}
    assert set(modes.values()) == {0o666 & ~umask}, modes

    # --shard slurm: task 7 of --array=3-11:4 (tasks 3, 7, 11) is shard 1 of 3
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_STEP", "4")
    sharded = tmp_path / "slurm"
    assert run(capsys, *argv, "--out", sharded, "--quiet", "--shard", "slurm")[0] == 0
    assert sorted(p.name for p in (sharded / "parts").glob("chunk-*.tsv")) == [
        "chunk-000001.tsv"]
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "8")
    status, _, stderr = run(capsys, *argv, "--out", sharded, "--quiet", "--shard", "slurm")
    assert status == 2 and "task 8 is not one of the 3 tasks 3, 7, ..." in stderr
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    status, _, stderr = run(capsys, *argv, "--out", sharded, "--shard", "slurm")
    assert status == 2 and "SLURM_ARRAY_TASK_ID is not set" in stderr

    # a run that fails before any chunk is finished leaves nothing behind
    broken = tmp_path / "broken"
    status, _, stderr = run(capsys, *argv[:2], "test_genome:broken_model", *argv[3:],
        "--out", broken)
    assert status == 1 and not broken.exists()

    # a homopolymer region: one jablate: line without --quiet, nothing with it
    (tmp_path / "seqs.fa").write_text(">s\n" + "ACGTGATAAG" * 6 + "AAAAAAAAAA" * 4 + "\n")
    (tmp_path / "regions.bed").write_text("s\t70\t90\n")
    ablate = ["ablate", "--model", MODEL, "--fasta", tmp_path / "seqs.fa", "--regions",
        tmp_path / "regions.bed", "--n", 3]
    status, stdout, stderr = run(capsys, *ablate)
    assert status == 0
    assert stderr.startswith("jablate: warning: 1 of 1 regions cannot be changed")
    assert "warnings.warn" not in stderr and "UnchangedRegionWarning" not in stderr
    row = stdout.splitlines()[1].split("\t")
    assert row[-2:] == ["0", "nan"]  # mean_drop exactly 0, z_score nan
    status, stdout, stderr = run(capsys, *ablate, "--quiet")
    assert status == 0 and stderr == ""


def test_each_chunk_is_dispatched_before_the_one_before_is_read_back(data, tmp_path, capsys,
                                                                   monkeypatch):
    """issue 19: the chunk loop runs one chunk ahead, so the host reads and writes chunks
    while the device computes the next; the table is the one of a run without the spies,
    and a failure dispatching a chunk still writes the chunk finished before it."""
    from jablate._core.errors import ModelFailure
    from jablate.genome import run as hits_run

    root, _ = data
    args = ("--chunk-size", 16, "--plot", "none", "--seed", 5)
    plain = tmp_path / "plain"
    assert run(capsys, *hits_args(root, plain, "hits.tsv", *args))[0] == 0
    events, fail_at = [], [None]
    run_chunk, write_chunk = hits_run._Run.run_chunk, hits_run._Run.write_chunk

    def spy_run(self, inputs):
        if inputs.chunk == fail_at[0]:
            raise ModelFailure("spy", RuntimeError("out of cheese"))
        events.append(("run", inputs.chunk))
        return run_chunk(self, inputs)

    def spy_write(self, inputs, result):
        events.append(("write", inputs.chunk))
        return write_chunk(self, inputs, result)

    monkeypatch.setattr(hits_run._Run, "run_chunk", spy_run)
    monkeypatch.setattr(hits_run._Run, "write_chunk", spy_write)
    ahead = tmp_path / "ahead"
    assert run(capsys, *hits_args(root, ahead, "hits.tsv", *args))[0] == 0
    chunks = len(list((ahead / "parts").glob("chunk-*.tsv")))
    assert chunks == 7
    assert events == [("run", 0)] + [e for c in range(1, chunks) for e in
        (("run", c), ("write", c - 1))] + [("write", chunks - 1)]
    assert (ahead / "effects.tsv").read_bytes() == (plain / "effects.tsv").read_bytes()
    fail_at[0] = 3
    failed = tmp_path / "failed"
    status, _, stderr = run(capsys, *hits_args(root, failed, "hits.tsv", *args))
    assert status == 1 and "out of cheese" in stderr
    assert sorted(p.name for p in (failed / "parts").glob("chunk-*.tsv")) == [
        f"chunk-{c:06d}.tsv" for c in range(3)]


def test_an_interrupted_hits_run_says_that_resume_continues(data, tmp_path):
    root, _ = data
    out = tmp_path / "out"
    env = dict(os.environ, JABLATE_TEST_DELAY="0.4", PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), str(TESTS), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "jablate", *map(str, hits_args(root, out, "hits.tsv",
        "--chunk-size", 8, "--model", "test_genome:slow_model", "--plot", "none"))]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, preexec_fn=signals_as_in_a_terminal())
    deadline = time.monotonic() + 120
    try:
        while not list((out / "parts").glob("chunk-*.tsv")):
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "no chunk finished in time"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert re.search(r"[0-9]+ finished chunks? (is|are) kept in", stderr), stderr
    assert "--resume to continue" in stderr
    assert "no output written" not in stderr


def _genome_copy(root, directory, edit):
    """A copy of the dataset in ``directory`` (links), its genome's sequences changed in
    place by ``edit(names, sequences)``: the same names and lengths, other bases."""
    names, sequences = [], []
    for record in (root / "genome.fa").read_text().split(">")[1:]:
        name, *lines = record.splitlines()
        names.append(name.split()[0])
        sequences.append("".join(lines))
    edit(names, sequences)
    directory.mkdir()
    for name in os.listdir(root):
        if name != "genome.fa" and not name.startswith("genome.fa."):
            (directory / name).symlink_to(root / name)
    (directory / "genome.fa").write_text("".join(f">{n}\n{q}\n" for n, q in
        zip(names, sequences)))
    return directory


def _distributed_job(roots, out, args):
    """``jablate hits`` as one job of ``len(roots)`` CPU processes under jax.distributed,
    process ``i`` reading the dataset in ``roots[i]``; [(returncode, stderr)]."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), str(TESTS), os.environ.get("PYTHONPATH")])))
    processes = [subprocess.Popen(
        [sys.executable, "-m", "jablate", *map(str, hits_args(
            root, out, "hits.tsv", *args, "--distributed",
            f"127.0.0.1:{port},{len(roots)},{i}", quiet=False))],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i, root in enumerate(roots)]
    return [(p.returncode, err) for p, (_, err) in
            zip(processes, [p.communicate(timeout=240) for p in processes])]


def test_one_job_of_two_jax_distributed_processes_gives_the_single_process_table(
        data, tmp_path, capsys):
    # issue 19, item 4: two CPU processes under jax.distributed split the chunks as --shard
    # does, each on its own devices, and process 0 assembles the table
    root, _ = data
    args = ["--chunk-size", 16, "--plot", "none", "--seed", 3]
    single = tmp_path / "single"
    assert run(capsys, *hits_args(root, single, "hits.tsv", *args))[0] == 0
    out = tmp_path / "job"
    results = _distributed_job([root, root], out, args)
    for status, err in results:
        assert status == 0, err[-3000:]
    assert "process 1 of 2 done; process 0 assembles" in results[1][1]
    parts = sorted(p.name for p in (out / "parts").glob("chunk-*.tsv"))
    assert parts == sorted(p.name for p in (single / "parts").glob("chunk-*.tsv"))
    for name in ("effects.tsv", "summary.tsv", "skipped.tsv"):
        assert (out / name).read_bytes() == (single / name).read_bytes(), name
    # processes on hosts with different copies of the genome (the same names and lengths):
    # each checks the next one's chunks against its own, and none writes a table
    def swap(names, sequences):
        sequences[:] = [q.translate(str.maketrans("ACac", "CAca")) for q in sequences]

    other = _genome_copy(root, tmp_path / "other", swap)
    mixed = tmp_path / "mixed"
    results = _distributed_job([root, other], mixed, args)
    for status, err in results:
        assert status == 2, err[-3000:]
    assert "process 1's chunks: --out" in results[0][1], results[0][1][-3000:]
    assert "was computed from other bases than --genome" in results[0][1]
    assert "process 0's chunks: --out" in results[1][1], results[1][1][-3000:]
    # (a process whose own check passed would say "process K's check ... failed")
    assert not (mixed / "effects.tsv").exists()
    # --distributed with --shard is bad usage (refused before joining any job)
    status, _, err = run(capsys, *hits_args(root, tmp_path / "both", "hits.tsv", *args,
                                            "--shard", "0/2", "--distributed",
                                            "127.0.0.1:1,2,0"))
    assert status == 2 and "drop --shard" in err


def test_the_host_work_benchmark_runs(capsys):
    """benchmarks.hits_host (issue 19's host work per hit, and its GPU script
    benchmarks/gpu_hits.sh) at a tiny size, so that it never rots: it times jablate hits'
    chunk phases by name. It asserts what it printed, nothing about time."""
    from jax._src import monitoring

    from benchmarks import hits_host
    from jablate.genome import run

    phases = (run._Run.compute, run._Run.read_chunk, run._Run.run_chunk, run._Run.write_chunk)
    listeners = len(monitoring.get_event_duration_listeners())
    hits_host.main(["--chroms", "2", "--chrom-length", "20000", "--peaks", "4",
                    "--hits-per-peak", "3", "--repeats", "1"])
    assert len(monitoring.get_event_duration_listeners()) == listeners  # its listener went
    out = capsys.readouterr().out
    assert "12 hits in 1 chunks" in out and "XLA compiles in the timed runs: 0" in out
    assert re.search(r"read_chunk [0-9.]+ ms, run_chunk [0-9.]+ ms, write_chunk", out)
    assert (run._Run.compute, run._Run.read_chunk, run._Run.run_chunk,
            run._Run.write_chunk) == phases  # put back


def test_each_chunk_counts_its_arrangements_once(data, tmp_path, capsys, monkeypatch):
    """The table's arrangements column is counted once per chunk: the ablation inside is
    told so (``unchangeable``) instead of counting again for a warning hits would drop."""
    from jablate.api import ersatz

    root, _ = data
    counted, real = [], ersatz._chunked

    def spy(fn, X, seq_idx, *rest, **kwargs):
        counted.append(len(seq_idx))
        return real(fn, X, seq_idx, *rest, **kwargs)

    monkeypatch.setattr(ersatz, "_chunked", spy)
    out = tmp_path / "out"
    assert run(capsys, *hits_args(root, out, "hits.tsv", "--chunk-size", 16, "--plot", "none",
        "--shuffle", "dinucleotide"))[0] == 0
    rows = len(pandas.read_csv(out / "effects.tsv", sep="\t"))
    assert len(counted) == -(-rows // 16) and sum(counted) == rows


def test_skip_missing_chromosomes_skips_their_peaks_and_hits(data, tmp_path, capsys):
    """A peak and a hit on a chromosome the genome lacks (chrM, an alt contig) stop the run
    with a hint; --skip-missing-chromosomes skips them, lists the hit in skipped.tsv, and
    leaves every other row as the run without them gives it."""
    root, _ = data
    plain = tmp_path / "plain"
    assert run(capsys, *hits_args(root, plain, "hits.bed"))[0] == 0
    shutil.copy(root / "genome.fa", tmp_path / "genome.fa")
    (tmp_path / "peaks.narrowPeak").write_text((root / "peaks.narrowPeak").read_text()
        + "chrEBV\t100\t300\t.\t0\t.\t0\t0\t0\t100\n")
    hits = (root / "hits.bed").read_text()
    (tmp_path / "hits.bed").write_text(hits + "chrEBV\t150\t160\tGATA\n")
    lines = len(hits.splitlines()) + 1
    out = tmp_path / "out"
    status, _, stderr = run(capsys, *hits_args(tmp_path, out, "hits.bed"))
    assert status == 2 and "chromosome 'chrEBV' is not in the genome" in stderr
    assert "--skip-missing-chromosomes" in stderr and not out.exists()
    status, _, stderr = run(capsys, *hits_args(tmp_path, out, "hits.bed",
        "--skip-missing-chromosomes", quiet=False))
    assert status == 0, stderr
    assert "1 on chromosomes the genome lacks are skipped" in stderr
    assert (out / "effects.tsv").read_bytes() == (plain / "effects.tsv").read_bytes()
    skipped = pandas.read_csv(out / "skipped.tsv", sep="\t")
    before = pandas.read_csv(plain / "skipped.tsv", sep="\t")
    assert len(skipped) == len(before) + 1
    last = skipped[skipped["line"] == lines].iloc[0]
    assert last["chrom"] == "chrEBV" and last["reason"] == "its chromosome is not in the genome"
    # the Python API, the same way
    with pytest.raises(ValueError, match="skip_missing_chromosomes=True"):
        jg.load_windows(tmp_path / "genome.fa", tmp_path / "peaks.narrowPeak", WIDTH)
    X, windows, off = jg.load_windows(tmp_path / "genome.fa", tmp_path / "peaks.narrowPeak",
        WIDTH, return_skipped=True, skip_missing_chromosomes=True)
    assert off[off["chrom"] == "chrEBV"]["reason"].tolist() == [jg.MISSING]
    annotations, _, lost = jg.hits_to_annotations(tmp_path / "hits.bed", windows,
        return_skipped=True, skip_missing_chromosomes=True)
    assert lost[lost["chrom"] == "chrEBV"]["reason"].tolist() == [jg.MISSING]
    assert len(annotations) == len(pandas.read_csv(plain / "effects.tsv", sep="\t"))


def test_skip_missing_chromosomes_reasons_and_naming_mismatches(data, tmp_path):
    """A hit naming its peak, on a chromosome the genome lacks, gets its own reason; a
    chromosome the genome names the other way is never skipped."""
    root, _ = data
    from jablate.genome.files import genome_lengths, open_genome, read_hits, read_peaks
    lengths = genome_lengths(open_genome(root / "genome.fa"))
    peaks = pandas.DataFrame({"chrom": ["chr1", "chrEBV"], "start": [1000, 100],
                              "end": [1200, 300]})
    windows = jg.peak_windows(read_peaks(peaks, lengths, WIDTH, skip_missing_chromosomes=True),
                              lengths, WIDTH)
    assert windows.attrs["absent_peaks"] == [1] and len(windows) == 1
    hits = read_hits(pandas.DataFrame({"chrom": ["chr1", "chrEBV"], "start": [1090, 150],
                                       "end": [1100, 160], "peak": [0, 1]}), lengths, 2,
                     skip_missing_chromosomes=True)
    mapped, skipped = jg.map_hits(hits, windows)
    assert len(mapped) == 1 and skipped["reason"].tolist() == [jg.MISSING]
    hits = read_hits(pandas.DataFrame({"chrom": ["chr1"], "start": [1090], "end": [1100],
                                       "peak": [1]}), lengths, 2)
    assert jg.map_hits(hits, windows)[1]["reason"].tolist() == [
        "its peak's chromosome is not in the genome"]
    with pytest.raises(ValueError, match="it has 'chr1'"):
        read_peaks(peaks.assign(chrom=["chr1", "1"]), lengths, WIDTH,
                   skip_missing_chromosomes=True)
    # a FIMO interval name on a missing chromosome: named as that chromosome, in genome
    # coordinates (skipped with the option)
    fimo = tmp_path / "fimo_missing.tsv"
    fimo.write_text("motif_id\tmotif_alt_id\tsequence_name\tstart\tstop\tstrand\n"
                    "M1\tGATA\tchrEBV:100-300\t51\t60\t+\n")
    with pytest.raises(ValueError, match=r"fimo_missing.tsv:2: chromosome 'chrEBV' is not"):
        read_hits(fimo, lengths)
    hits = read_hits(fimo, lengths, skip_missing_chromosomes=True)
    assert hits[["chrom", "start", "end"]].values.tolist() == [["chrEBV", 150, 160]]
    assert jg.map_hits(hits, windows)[1]["reason"].tolist() == [jg.MISSING]


def test_every_process_reaches_the_collective_when_its_genome_check_fails(monkeypatch):
    """A process whose check of its neighbour's chunks fails with any error (an unreadable
    genome, say) still takes part in the job's allgather before it raises, so the others
    learn of it and fail at once instead of waiting for it until the job times out."""
    from types import SimpleNamespace

    from jax.experimental import multihost_utils

    from jablate._core.errors import InputError
    from jablate.genome import run as hits_run

    calls = []
    monkeypatch.setattr(multihost_utils, "sync_global_devices", lambda name: calls.append(name))
    monkeypatch.setattr(multihost_utils, "process_allgather", lambda x: calls.append(
        "allgather") or numpy.array([0, int(x)]))

    def unreadable(chunks):
        raise OSError(5, "Input/output error")

    run_ = SimpleNamespace(chunks=4, check_windows=unreadable, say=lambda m: None)
    with pytest.raises(OSError, match="Input/output"):
        hits_run._assemble_when_all_finished(run_, SimpleNamespace(shard=(1, 2), out="o"))
    assert calls == ["jablate hits: every chunk written", "allgather"]
    # the process whose own check passed learns of the other's failure
    calls.clear()
    monkeypatch.setattr(multihost_utils, "process_allgather", lambda x: calls.append(
        "allgather") or numpy.array([int(x), 1]))
    run_.check_windows = lambda chunks: None
    with pytest.raises(InputError, match="process 1's check of the next process's chunks"):
        hits_run._assemble_when_all_finished(run_, SimpleNamespace(shard=(0, 2), out="o"))


def test_a_hit_in_the_window_of_a_peak_whose_window_runs_off_is_told_so():
    """A window wider than its peak, running off the chromosome's start: a hit inside the
    peak, a hit inside the window but not the peak, and a hit in neither, each get their
    own reason (the second was 'in no window')."""
    peaks = pandas.DataFrame(dict(peak=[0, 1], chrom=["c", "c"], start=[10, 500],
        end=[30, 520], summit=[10, 10], name=["p0", "p1"]))
    windows = jg.peak_windows(peaks, {"c": 1_000}, 100)  # p0's would be [-30, 70)
    assert list(windows["peak"]) == [1] and windows.attrs["skipped_peaks"] == [0]
    hits = pandas.DataFrame(dict(chrom=["c"] * 4, start=[12, 50, 200, 505],
        end=[18, 56, 206, 511], name=["in the peak", "in its window", "nowhere", "kept"]))
    _, mapped, skipped = jg.hits_to_annotations(hits, windows, return_skipped=True)
    assert list(mapped["name"]) == ["kept"]
    assert list(skipped["reason"]) == ["in a peak whose window runs off the chromosome",
        "in the window of a peak, which runs off the chromosome", "in no window"]
    # two such peaks overlapping: a hit inside the first is inside a peak, whatever the order
    peaks = pandas.DataFrame(dict(peak=[0, 1], chrom=["c", "c"], start=[880, 900],
        end=[960, 990], summit=[-1, -1], name=["p0", "p1"]))
    windows = jg.peak_windows(peaks, {"c": 1_000}, 200)
    hits = pandas.DataFrame(dict(chrom=["c"], start=[885], end=[895], name=["h"]))
    _, _, skipped = jg.hits_to_annotations(hits, windows, return_skipped=True)
    assert list(skipped["reason"]) == ["in a peak whose window runs off the chromosome"]


def test_the_effects_table_writes_integral_floats_in_full_and_many_columns_at_once():
    from jablate.genome.hits import _effects_table, _Values, effects_tsv

    k, tasks = 2, 150
    before = numpy.arange(k * tasks, dtype=numpy.float64).reshape(k, tasks) / 7
    values = _Values(before, before + 1, lambda t, can: (before[:, t] * 0 - 1,
                     numpy.ones(k), -numpy.ones(k)))
    hits = pandas.DataFrame(dict(hit=[0, 1], task0_before=["a", "b"]))  # a clashing column
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pandas' PerformanceWarning of a fragmented frame
        table = _effects_table(hits, [values], False, [2444321280.0, 3.0])
    assert list(table.columns[:4]) == ["hit", "hit_task0_before", "arrangements",
                                       "task0_before"]
    assert len(table.columns) == 3 + 5 * tasks
    text = effects_tsv(table).splitlines()
    assert text[1].split("\t")[:5] == ["0", "a", "2444321280", "0", "1"]
    assert text[2].split("\t")[3] == f"{150 / 7:.6g}"
    from jablate.genome.hits import _float_cells
    assert _float_cells(numpy.array([-0.0, 0.0, 2.0 ** 53, -3.0, -2444321280.0, numpy.nan,
                                     numpy.inf, 1.5e6])) == [
        "-0", "0", "9.0072e+15", "-3", "-2444321280", "nan", "inf", "1500000"]
