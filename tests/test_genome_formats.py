"""The files of the field as people have them: peak, hit and genome files that had been read
silently wrong (found by a trial with real-world formats, 2026-12-08), read right or refused."""

import os
import warnings

import numpy
import pandas
import pytest

from jablate.genome import hits as jg
from jablate.genome.files import open_genome, read_hits, read_peaks

CHROMS = {"chr1": 600, "chr2": 250}


def _genome(tmp_path, wrap=60, name="genome.fa"):
    """A small genome with known bases; returns (path, {chrom: sequence})."""

    rs = numpy.random.RandomState(1)
    sequences = {c: "".join(numpy.array(list("ACGT"))[rs.randint(4, size=n)])
                 for c, n in CHROMS.items()}
    path = tmp_path / name
    with open(path, "w") as handle:
        for chrom, text in sequences.items():
            handle.write(f">{chrom} assembled\n")
            for i in range(0, len(text), wrap):
                handle.write(text[i:i + wrap] + "\n")
    return path, sequences


def _write(path, lines):
    path.write_text("".join("\t".join(map(str, fields)) + "\n" for fields in lines))
    return path


# --- peaks ----------------------------------------------------------------------------------


def test_bed12_and_gapped_peaks_have_no_summit_and_narrowpeak_ones_do(tmp_path):
    """BED12's and gappedPeak's column 10 is blockCount: it had been read as the summit,
    moving each window to the peak's start. narrowPeak's summit, also with IDR's extra
    columns, is still read."""

    bed12 = ["chr1", 100, 400, "p", 0, "+", 100, 400, "0", 2, "50,60,", "0,240,"]
    gapped = bed12 + [12.5, 8.1, 6.2]  # MACS2 --broad: BED12 + signal, p, q
    narrow = ["chr1", 100, 400, "p", 0, ".", 12.5, 8.1, 6.2, 37]
    idr = narrow + [1.2, 1.5, 100, 400, 12.0, 37, 110, 390, 11.0, 40]
    counts = narrow[:9] + [1, 2, 3]  # narrowPeak with two counts after it (bedtools -c)
    lines = [bed12, gapped, narrow, idr, counts]
    peaks = read_peaks(_write(tmp_path / "peaks.bed", lines), CHROMS)
    assert peaks["summit"].tolist() == [-1, -1, 37, 37, 1]
    windows = jg.peak_windows(peaks, CHROMS, 100)
    # the midpoint 250 for BED12 and gappedPeak, the summit for the others
    assert windows["window_start"].tolist() == [200, 200, 87, 87, 51]


def test_a_first_peak_line_in_scientific_notation_is_refused_not_skipped(tmp_path):
    """R writes 1000 as 1e+03: that line had been taken for a header and dropped, shifting
    every peak index that Fi-NeMo's peak_id points at."""

    path = _write(tmp_path / "peaks.narrowPeak", [["chr1", "1e+02", "4e+02", "p"],
                                                  ["chr1", 200, 300, "q"]])
    with pytest.raises(ValueError, match=r"peaks.narrowPeak:1: start '1e\+02' is not an "
                       r"integer"):
        read_peaks(path, CHROMS)
    header = _write(tmp_path / "named.bed", [["chrom", "start", "end"], ["chr1", 200, 300]])
    assert read_peaks(header, CHROMS)["start"].tolist() == [200]


# --- hits headers -----------------------------------------------------------------------------


@pytest.mark.parametrize("header", [
    ["#chrom", "start", "end", "strand", "motif"],   # bedtools -header, UCSC
    ["#", "chrom", "start", "end", "strand", "motif"],  # the mark a field of its own
    ["chr", "start", "end", "strand", "motif"],
    ["#chrom", "chromStart", "chromEnd", "strand", "motif"],  # UCSC's names
])
def test_a_header_naming_the_columns_is_read_by_name(tmp_path, header):
    """A '#'-marked header had been skipped as a comment and the lines read as BED by
    position (the strand became the motif's name); ``chr`` was not recognised."""

    path = _write(tmp_path / "hits.tsv", [header, ["chr1", 120, 130, "-", "GATA"],
                                          ["chr2", 10, 18, "+", "CTCF"]])
    hits = read_hits(path, CHROMS)
    assert hits.attrs["format"] == "table"
    assert hits["name"].tolist() == ["GATA", "CTCF"]
    assert hits["strand"].tolist() == ["-", "+"]
    assert hits[["chrom", "start", "end"]].values.tolist() == [["chr1", 120, 130],
                                                              ["chr2", 10, 18]]


@pytest.mark.parametrize("comment", [
    "# made by a motif scanner",
    "# chrom start end are 0-based, half-open",   # names the columns, in prose
    "#chrom\tstart\tend",                          # names three of six columns
    "# columns: chrom start end name score strand",
])
def test_a_bed_file_with_a_comment_line_is_still_bed(tmp_path, comment):
    """A '#' line is a header only where the data lines have as many columns (a review
    found comments naming chrom, start and end taken for one: names and strands lost)."""
    path = tmp_path / "hits.bed"
    path.write_text(comment + "\nchr1\t120\t130\tGATA\t5\t-\n")
    hits = read_hits(path, CHROMS)
    assert hits.attrs["format"] == "bed" and hits["name"].tolist() == ["GATA"]
    assert hits["strand"].tolist() == ["-"]


# --- FIMO interval names --------------------------------------------------------------------


FIMO_HEADER = ["motif_id", "motif_alt_id", "sequence_name", "start", "stop", "strand",
               "score", "p-value", "q-value", "matched_sequence"]


def _revcomp(text):
    return text.translate(str.maketrans("ACGT", "TGCA"))[::-1]


def test_fimo_reverse_complemented_intervals_give_the_genomes_strand(tmp_path):
    """On a sequence extracted reverse complemented (bedtools getfasta -s names '(-)',
    samtools faidx -i names '/rc'), FIMO's '+' is the genome's '-': the strand had been
    kept as FIMO wrote it."""

    genome, bases = _genome(tmp_path)
    # chr1:100-200 (bedtools), reverse complemented: FIMO position p (1-based) of a motif
    # of length 6 is genome [200 - (p + 5), 200 - p + 1)
    low, high = 100, 200
    site = bases["chr1"][170:176]
    extracted = _revcomp(bases["chr1"][low:high])
    p = extracted.index(_revcomp(site)) + 1
    lines = [FIMO_HEADER,
             ["M1", "GATA", f"chr1:{low}-{high}(-)", p, p + 5, "+", 9, 1e-5, 0.1,
              _revcomp(site)],
             ["M1", "GATA", f"chr1:{low + 1}-{high}/rc", p, p + 5, "-", 9, 1e-5, 0.1, site]]
    path = _write(tmp_path / "fimo.tsv", lines)
    bedtools = read_hits(path, CHROMS, interval_names="bedtools")
    assert bedtools[["start", "end"]].values.tolist()[0] == [170, 176]
    assert bedtools["strand"].tolist()[0] == "-"
    samtools = read_hits(path, CHROMS, interval_names="samtools")
    assert samtools[["start", "end"]].values.tolist()[1] == [170, 176]
    assert samtools["strand"].tolist()[1] == "+"


def test_fimo_interval_names_need_a_convention_that_can_be_checked(tmp_path):
    """Without matched_sequence nothing tells bedtools' 0-based names from samtools' and
    R's 1-based ones (every hit one base off, exit 0): the convention must be said. With
    it, bedtools is assumed and checked against the genome, here through the windows
    that load_windows made (hits_to_annotations had checked nothing)."""

    genome, bases = _genome(tmp_path)
    peaks = _write(tmp_path / "peaks.bed", [["chr1", 100, 300]])
    X, windows = jg.load_windows(genome, peaks, 100)
    site = bases["chr1"][190:196]
    samtools = [FIMO_HEADER, ["M1", "GATA", "chr1:151-250", 41, 46, "+", 9, 1e-5, 0.1, site]]
    path = _write(tmp_path / "fimo.tsv", samtools)
    with pytest.raises(ValueError, match="matched_sequence that is not the genome's bases"):
        jg.hits_to_annotations(path, windows)  # read as bedtools: one base off
    _, mapped = jg.hits_to_annotations(path, windows, interval_names="samtools")
    assert mapped[["start", "end"]].values.tolist() == [[190, 196]]
    bedtools = [FIMO_HEADER, ["M1", "GATA", "chr1:150-250", 41, 46, "+", 9, 1e-5, 0.1, site]]
    _, mapped = jg.hits_to_annotations(_write(tmp_path / "b.tsv", bedtools), windows)
    assert mapped[["start", "end"]].values.tolist() == [[190, 196]]
    # nor can matched sequences that are all empty
    empty = [FIMO_HEADER, ["M1", "GATA", "chr1:150-250", 41, 46, "+", 9, 1e-5, 0.1, "."]]
    with pytest.raises(ValueError, match="no sampled hit has one to compare"):
        jg.hits_to_annotations(_write(tmp_path / "e.tsv", empty), windows)
    # windows that do not know their genome cannot check the assumption
    bare = jg.peak_windows(read_peaks(peaks, CHROMS), CHROMS, 100)
    with pytest.raises(ValueError, match="cannot be checked here"):
        jg.hits_to_annotations(_write(tmp_path / "b.tsv", bedtools), bare)


# --- hits that cannot be measured ---------------------------------------------------------


def test_a_hit_longer_than_the_windows_says_so(tmp_path):
    windows = jg.peak_windows(read_peaks(_write(tmp_path / "p.bed", [["chr1", 100, 300]]),
                                         CHROMS), CHROMS, 50)
    hits = read_hits(_write(tmp_path / "h.bed", [["chr1", 170, 230], ["chr1", 190, 200]]),
                     CHROMS)
    mapped, skipped = jg.map_hits(hits, windows, 1)
    assert mapped["hit"].tolist() == [1]
    assert skipped["reason"].tolist() == ["longer than the windows (50 bases)"]


def test_a_summary_of_many_tasks_is_one_frame(tmp_path):
    """Adding its columns one at a time made pandas warn 'highly fragmented' five times
    for an output of 25 tasks or more (shown to the user even with --quiet)."""

    rs = numpy.random.RandomState(0)
    columns = {"hit": numpy.arange(40), "name": numpy.repeat(["A", "B"], 20)}
    for t in range(40):
        for stat in ("before", "after_mean", "after_sd", "drop", "z"):
            columns[f"task{t}_{stat}"] = rs.normal(size=40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = jg.summarise_effects(pandas.DataFrame(columns))
    assert summary.shape == (2, 3 + 40 * 4)
    a = columns["task3_drop"][:20]
    assert summary.set_index("name").loc["A", "task3_median_drop"] == pytest.approx(
        numpy.median(a))


# --- the genome -----------------------------------------------------------------------------


def test_a_stale_index_is_refused(tmp_path):
    """pyfaidx trusts a .fai newer than its FASTA: a genome rewrapped (or decompressed
    again, keeping its old date) beside an old index gave shifted bases and header text
    ('>chr2' as sequence) without a word."""

    genome, bases = _genome(tmp_path, wrap=60)
    fasta = open_genome(genome)
    assert str(fasta["chr2"][0:30]) == bases["chr2"][:30]
    fai = (tmp_path / "genome.fa.fai").read_bytes()
    _genome(tmp_path, wrap=50)  # the same sequences, wrapped at 50
    (tmp_path / "genome.fa.fai").write_bytes(fai)
    os.utime(tmp_path / "genome.fa", (1, 1))  # older than the index: pyfaidx keeps it
    with pytest.raises(ValueError, match=r"its index '.*genome.fa.fai' does not describe "
                       r"the file.*delete the .fai"):
        open_genome(genome)
    (tmp_path / "genome.fa.fai").unlink()
    assert str(open_genome(genome)["chr2"][0:30]) == bases["chr2"][:30]
    # truncated since it was indexed
    text = (tmp_path / "genome.fa").read_bytes()
    open_genome(genome)
    (tmp_path / "genome.fa").write_bytes(text[:-40])
    os.utime(tmp_path / "genome.fa", (1, 1))
    with pytest.raises(ValueError, match="does not describe the file"):
        open_genome(genome)


def test_a_window_holding_what_is_no_base_is_refused(tmp_path):
    path = tmp_path / "odd.fa"
    path.write_text(">chr1\n" + "ACGT" * 20 + "\n" + "ACG1" + "ACGT" * 19 + "\n")
    peaks = _write(tmp_path / "p.bed", [["chr1", 0, 160]])
    with pytest.raises(ValueError, match=r"the window chr1:30-130 holds '1', which is no "
                       "base"):
        jg.load_windows(path, peaks, 100)
    ok = tmp_path / "iupac.fa"
    ok.write_text(">chr1\n" + "ACGTRYKMSWBDHVNacgtn-X*." * 10 + "\n")
    X, _ = jg.load_windows(ok, _write(tmp_path / "q.bed", [["chr1", 0, 240]]), 100)
    assert X.shape == (1, 4, 100)


def test_a_compressed_genome_named_as_text_says_so(tmp_path):
    import gzip

    path = tmp_path / "genome.fa"
    path.write_bytes(gzip.compress(b">chr1\nACGT\n"))
    with pytest.raises(ValueError, match="gzip-compressed, but its name does not end in "
                       ".gz"):
        open_genome(path)
