"""Genome-scale motif ablation: windows around peaks, motif hits in them, their effects.

From files to a sorted table of effects::

    import jablate, jablate.genome.hits as jg
    X, windows = jg.load_windows("hg38.fa", "peaks.narrowPeak", width=2114)
    annotations, hits = jg.hits_to_annotations("hits.tsv", windows)
    result = jablate.ablate_annotations(model, X, annotations, n=20, random_state=0)
    effects = jg.hit_effects(result, hits)
    effects.sort_values("out1_drop", ascending=False)

Windows follow tangermeme's ``extract_loci``: centred on the narrowPeak summit (else the
midpoint), ``[mid - w//2, mid + w//2 + w%2)``, skipped when they run off the chromosome.
Coordinates everywhere are 0-based and half-open. ``jablate hits`` on the command line runs
the same steps in resumable chunks (:mod:`jablate.genome.run`).
"""

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional, Sequence

import numpy
import pandas

from jablate._core.behaviour import OutputFunc, mark
from jablate._core.errors import InputError
from jablate._core.io import one_hot_encode
from jablate.api.effects import float_resolution, from_mean_std, shuffle_effects
from jablate.api.sums import array_ops
from jablate.genome.files import (
    check_matched_sequences,
    genome_lengths,
    open_genome,
    read_hits,
    read_peaks,
)

__all__ = [
    "load_windows",
    "hits_to_annotations",
    "hit_effects",
    "summarise_effects",
    "plot_effects",
    "peak_windows",
    "fetch_windows",
    "map_hits",
    "effects_tsv",
    "measure_columns",
    "measure_labels",
    "EFFECTS_HELP",
    "PROFILE_MODES",
]

PROFILE_MODES = ("logits", "probs")

EFFECTS_HELP = """\
effects.tsv: one row per (hit, window); coordinates 0-based, end exclusive.
 the hit:
  hit             0-based index of the hit in --hits (its data lines, in order)
  line            its 1-based line number in --hits
  chrom, start, end
                  the hit on the genome (FIMO's 1-based inclusive start/stop
                  converted: start = FIMO start - 1, end = FIMO stop)
  name            the motif name: BED column 4, Fi-NeMo motif_name, FIMO
                  motif_alt_id (motif_id when empty); '.' when absent
  strand          the hit's strand; '.' when absent
  ...             every other column of --hits under its own name (BED: score,
                  bed7, bed8, ...); one named like a column here gets 'hit_'
 the window:
  window          0-based index of the window among the peaks' windows that
                  fit on their chromosome (the row of X in the Python API)
  peak            0-based index of its peak in --peaks (Fi-NeMo's peak_id)
  window_start, window_end
                  the window on the genome
  offset_start, offset_end
                  the hit inside the window (the shuffled region)
  arrangements    how many distinct sequences the --shuffle can make of the
                  hit (1: it cannot change it, e.g. a homopolymer, an all-N
                  stretch, ACAC under --shuffle dinucleotide); inf when huge
 the effects, for each model output (prefix 'outH_' when there are several):
  an output with one value per sequence (log counts), or one per task (a
  prefix 'taskT_' each):
  before          the prediction for the window as it is
  after_mean      the mean prediction over the --n shuffles of the hit
  after_sd        their standard deviation (ddof=1; nan when n is 1)
  drop            before - after_mean
  z               drop / after_sd; nan, never +-inf, where it means nothing:
                  n is 1; the shuffle cannot change the hit (a homopolymer,
                  an all-N stretch; ACAC under --shuffle dinucleotide), where
                  drop and after_sd are then exactly 0; or after_sd is below
                  float resolution, after_sd < 16 * eps * scale (eps the
                  outputs' machine epsilon, 2^-23 for float32; scale the
                  largest |prediction| of the row, before or after)
  an output with two or more axes per sequence (a profile, positions last:
  (strands, positions) for BPNet; a single-strand profile of shape (batch,
  positions) reads as one task per position: give it a strand axis, (batch, 1,
  positions)):
  sum_before      the output summed over all its axes, before (total signal)
  sum_drop        sum_before - mean over the shuffles of the same sum after
  jsd             Jensen-Shannon distance (base 2, 0 to 1) between the profile
                  before and the mean of the n profiles after, each made a
                  distribution over all its values: softmax of the logits
                  (--profile logits), or values over their sum (--profile
                  probs); exactly 0, as is sum_drop, where the shuffle cannot
                  change the hit
summary.tsv: one row per motif name, sorted by the median drop of the first
  per-sequence output (else by the first profile's median jsd), largest first:
  name, hits      the motif and its number of hits (rows: its effect rows; a
                  hit in two windows has two)
  median_drop, mean_drop
                  of 'drop' over its rows (per output and task, prefixed so)
  frac_z_gt_2     the fraction of its rows with z > 2, among the rows whose
                  z is not nan (nan when none has one)
  nan_z           how many of its rows have z = nan
  median_jsd, mean_jsd, median_sum_drop, nan_jsd
                  the same for profile outputs
  Every statistic skips nan values.
skipped.tsv: hits measured nowhere (hit, line, chrom, start, end, name,
  reason): in no window, only partly inside one, outside their peak's window,
  their peak's window off the chromosome, too short for the shuffle, longer
  than the windows, or (with
  --skip-missing-chromosomes) on a chromosome the genome lacks.
effects.png (--plot): each motif's distribution of drop (and jsd) over its
  hits, motifs sorted by median.
"""


# --- windows --------------------------------------------------------------------------------


def peak_windows(peaks: pandas.DataFrame, lengths: dict, width: int) -> pandas.DataFrame:
    """Place a window of ``width`` bases on each peak (no sequences read).

    Parameters
    ----------
    peaks : pandas.DataFrame
        As returned by :func:`jablate.genome.files.read_peaks`.
    lengths : dict of str to int
        Chromosome lengths.
    width : int
        The window width (the model's input length).

    Returns
    -------
    windows : pandas.DataFrame
        The windows that fit on their chromosome, in peak order: ``peak``, ``line`` (when
        the peaks came from a file), ``chrom``, ``window_start``, ``window_end``,
        ``peak_start``, ``peak_end``, ``summit`` (offset from ``peak_start``, -1 for
        none), ``name``. ``attrs`` holds ``width``, ``n_peaks``, ``lengths``,
        ``skipped_peaks`` (indices of peaks without a window: it runs off the chromosome,
        or the genome lacks the chromosome), ``absent_peaks`` (those of the latter) and
        ``off_peaks`` (``{chrom: [(start, end, window_start, window_end), ...]}``, the peaks
        of the former and their windows, for
        telling why a hit inside one is in no window).
    """

    width = int(width)
    start = peaks["start"].to_numpy()
    end = peaks["end"].to_numpy()
    summit = peaks["summit"].to_numpy()
    mid = numpy.where(summit >= 0, start + summit, start + (end - start) // 2)
    low = mid - width // 2
    high = mid + width // 2 + width % 2
    size = numpy.array([lengths.get(c, 0) for c in peaks["chrom"]], dtype=numpy.int64)
    fits = (low >= 0) & (high <= size)
    columns = {"peak": peaks["peak"].to_numpy()}
    if "line" in peaks.columns:
        columns["line"] = peaks["line"].to_numpy()
    columns.update(chrom=peaks["chrom"].to_numpy(), window_start=low, window_end=high,
        peak_start=start, peak_end=end, summit=summit, name=peaks["name"].to_numpy())
    every = pandas.DataFrame(columns)
    windows = every[fits].reset_index(drop=True)
    absent = ~peaks["chrom"].isin(list(lengths)).to_numpy()
    off = numpy.nonzero(~fits & ~absent)[0]
    off_peaks = {}
    for i in off:
        off_peaks.setdefault(str(peaks["chrom"].iloc[i]), []).append(
            (int(start[i]), int(end[i]), int(low[i]), int(high[i])))
    windows.attrs.update(width=width, n_peaks=len(peaks), lengths=dict(lengths),
        skipped_peaks=[int(p) for p in peaks["peak"].to_numpy()[~fits]],
        absent_peaks=[int(p) for p in peaks["peak"].to_numpy()[absent]], off_peaks=off_peaks)
    return windows


def fetch_windows(genome: Any, windows: pandas.DataFrame, rows: Optional[Sequence[int]] = None,
        dtype: Any = numpy.int8, pad_to: Optional[int] = None) -> numpy.ndarray:
    """Read windows from the genome and one-hot encode them.

    Parameters
    ----------
    genome : str, os.PathLike or pyfaidx.Fasta
        The genome (see :func:`jablate.genome.files.open_genome`).
    windows : pandas.DataFrame
        From :func:`peak_windows` or :func:`load_windows`.
    rows : sequence of int, optional
        Which windows (positions in ``windows``); default all.
    dtype : numpy dtype, optional
        Default ``numpy.int8``.
    pad_to : int, optional
        Append all-zero windows up to this many rows (one array shape for every chunk of
        a long run, so compiled programs are reused).

    Returns
    -------
    X : numpy.ndarray, shape (len(rows), 4, width)
        One-hot over ``ACGT``; lowercase (soft-masked) bases count as ordinary bases,
        ``N`` and other IUPAC codes are all-zero columns.

    Raises
    ------
    InputError
        When the genome cannot be opened, its ``.fai`` is stale, or a window holds a
        character that is no base: anything but an IUPAC nucleotide code (either case),
        ``X``, ``.``, ``*`` or ``-`` (those are all-zero columns).
    """

    fasta = open_genome(genome)
    rows = numpy.arange(len(windows)) if rows is None else numpy.asarray(rows, dtype=int)
    chrom = windows["chrom"].to_numpy()
    low = windows["window_start"].to_numpy()
    high = windows["window_end"].to_numpy()
    sequences = [str(fasta[chrom[r]][int(low[r]):int(high[r])]) for r in rows]
    _refuse_what_is_not_a_base(sequences, rows, windows, fasta)
    X = one_hot_encode(sequences, alphabet="ACGT", dtype=dtype)
    if pad_to is not None and pad_to > len(sequences):  # all-zero windows: all N
        width = int(high[rows[0]] - low[rows[0]]) if len(rows) else 0
        padded = numpy.zeros((pad_to, 4, width), dtype=X.dtype)
        padded[:len(X)] = X
        return padded
    return X


#: What a genome's sequence may hold: IUPAC nucleotide codes in either case, and the gap
#: and masking characters some FASTA files use.
_NOT_A_BASE = re.compile(r"[^ACGTUNRYKMSWBDHVXacgtunrykmswbdhvx.*-]")


def _refuse_what_is_not_a_base(sequences, rows, windows, fasta):
    """Refuse a window holding a character no genome's sequence has (``>``, a digit): its
    bases were read from the wrong place (an index that does not describe the file)."""

    for sequence, r in zip(sequences, rows):
        found = _NOT_A_BASE.search(sequence)
        if found is not None:
            row = windows.iloc[int(r)]
            raise InputError(f"genome '{getattr(fasta, 'filename', fasta)}': the window "
                f"{row['chrom']}:{row['window_start']}-{row['window_end']} holds "
                f"{found.group()!r}, which is no base (at offset {found.start()}): the "
                "genome was read from the wrong place; if its .fai is older than the "
                "FASTA's contents, delete it and it is built again")


def load_windows(genome: Any, peaks: Any, width: int, dtype: Any = numpy.int8,
        return_skipped: bool = False, skip_missing_chromosomes: bool = False) -> tuple:
    """One window of the model's input width per peak, one-hot encoded.

    Each window is centred on the peak's summit (narrowPeak column 10) when it has one,
    else on its midpoint ``start + (end - start) // 2``, and spans
    ``[mid - width // 2, mid + width // 2 + width % 2)``, as tangermeme's
    ``extract_loci``. A window that runs off its chromosome is skipped.

    Parameters
    ----------
    genome : str, os.PathLike or pyfaidx.Fasta
        A FASTA genome, plain or bgzip-compressed, indexed with pyfaidx (a ``.fai`` is
        written beside it when missing).
    peaks : str, os.PathLike or pandas.DataFrame
        A narrowPeak or BED file, or a DataFrame with ``chrom``, ``start``, ``end`` and
        optionally ``summit`` (offset from ``start``, -1 for none) and ``name``.
    width : int
        The model's input length (2114 for BPNet and ChromBPNet).
    dtype : numpy dtype, optional
        Of ``X``. Default ``numpy.int8``.
    return_skipped : bool, optional
        Also return the peaks whose window was skipped. Default False.
    skip_missing_chromosomes : bool, optional
        Skip peaks on chromosomes the genome lacks (with that reason) instead of raising.
        Default False.

    Returns
    -------
    X : numpy.ndarray, shape (W, 4, width)
        One-hot over ``ACGT``: soft-masked (lowercase) bases are ordinary bases, ``N`` an
        all-zero column.
    windows : pandas.DataFrame
        W rows, row ``i`` describing ``X[i]`` (see :func:`peak_windows`).
    skipped : pandas.DataFrame
        Only with ``return_skipped``: the peaks (as read) whose window runs off their
        chromosome or whose chromosome the genome lacks, with a ``reason``.

    Raises
    ------
    ValueError
        (:class:`jablate._core.io.InputError`) For a missing or unindexable genome, an empty or
        malformed peak file (the message names the file and line), a chromosome missing
        from the genome, or a window longer than a chromosome.
    """

    fasta = open_genome(genome)
    lengths = genome_lengths(fasta)
    name = None if not isinstance(genome, (str, os.PathLike)) else os.fspath(genome)
    peaks = read_peaks(peaks, lengths, int(width), genome=name,
                       skip_missing_chromosomes=skip_missing_chromosomes)
    windows = peak_windows(peaks, lengths, width)
    windows.attrs["genome"] = fasta.filename  # for hits_to_annotations' matched_sequence check
    X = fetch_windows(fasta, windows, dtype=dtype)
    if not return_skipped:
        return X, windows
    skipped = peaks[peaks["peak"].isin(windows.attrs["skipped_peaks"])].reset_index(drop=True)
    skipped["reason"] = numpy.where(skipped["peak"].isin(windows.attrs["absent_peaks"]),
                                    MISSING, "its window runs off the chromosome")
    return X, windows, skipped


# --- hits -----------------------------------------------------------------------------------


#: Why a hit on a chromosome the genome lacks is skipped (``skip_missing_chromosomes``).
MISSING = "its chromosome is not in the genome"


def map_hits(hits: pandas.DataFrame, windows: pandas.DataFrame,
        min_width: int = 1) -> tuple:
    """Map hits (as read by :func:`jablate.genome.files.read_hits`) into windows.

    A hit with a ``peak`` (>= 0) goes to its own peak's window; any other hit to every
    window that contains it entirely.

    Returns
    -------
    mapped : pandas.DataFrame
        One row per (hit, window), ordered by hit and then window: the hit's columns
        (less ``peak``), then ``window``, ``peak``, ``window_start``, ``window_end``,
        ``offset_start``, ``offset_end``.
    skipped : pandas.DataFrame
        The hits measured nowhere: their columns (less ``peak``) and ``reason``.
    """

    H = len(hits)
    start = hits["start"].to_numpy(dtype=numpy.int64)
    end = hits["end"].to_numpy(dtype=numpy.int64)
    chrom = hits["chrom"].to_numpy()
    peak = hits["peak"].to_numpy(dtype=numpy.int64) if "peak" in hits.columns else \
        numpy.full(H, -1, dtype=numpy.int64)
    w_start = windows["window_start"].to_numpy(dtype=numpy.int64)
    w_end = windows["window_end"].to_numpy(dtype=numpy.int64)
    w_chrom = windows["chrom"].to_numpy()
    width = int(windows.attrs.get("width", w_end[0] - w_start[0] if len(windows) else 0))
    reason = numpy.full(H, "", dtype=object)
    pair_hit, pair_window = [], []
    lengths = windows.attrs.get("lengths")  # None: windows without them, nothing checked
    missing = numpy.zeros(H, dtype=bool) if lengths is None else \
        ~pandas.Series(chrom, dtype=object).isin(list(lengths)).to_numpy()

    short = end - start < min_width
    reason[short] = f"shorter than {min_width} bases, the shuffle's minimum"
    longer = end - start > width if len(windows) else numpy.zeros(H, dtype=bool)
    reason[longer] = f"longer than the windows ({width} bases)"
    reason[missing] = MISSING  # read with skip_missing_chromosomes=True
    excluded = short | longer | missing

    # hits that name their peak
    own = numpy.nonzero((peak >= 0) & ~excluded)[0]
    if len(own):
        n_peaks = int(windows.attrs.get("n_peaks", max(int(peak.max()) + 1,
            int(windows["peak"].max()) + 1 if len(windows) else 0)))
        row_of = numpy.full(max(n_peaks, int(peak.max()) + 1), -1, dtype=numpy.int64)
        row_of[windows["peak"].to_numpy(dtype=numpy.int64)] = numpy.arange(len(windows))
        row = row_of[peak[own]]
        off = set(windows.attrs.get("skipped_peaks", []))
        absent = set(windows.attrs.get("absent_peaks", []))
        for h, r in zip(own, row):
            if r < 0:
                reason[h] = ("its peak's chromosome is not in the genome" if peak[h] in absent
                    else "its peak's window runs off the chromosome" if peak[h] in off
                    else "its peak has no window")
            elif w_chrom[r] != chrom[h]:
                reason[h] = "on another chromosome than its peak"
            elif w_start[r] <= start[h] and end[h] <= w_end[r]:
                pair_hit.append(h)
                pair_window.append(r)
            elif w_start[r] < end[h] and start[h] < w_end[r]:
                reason[h] = "only partly inside its peak's window"
            else:
                reason[h] = "outside its peak's window"

    # every other hit: each window containing it (windows all have one width)
    free = (peak < 0) & ~excluded
    by_chrom = pandas.Series(numpy.arange(len(windows))).groupby(w_chrom).indices if len(
        windows) else {}
    for name in pandas.unique(chrom[free]):
        members = numpy.nonzero(free & (chrom == name))[0]
        rows = numpy.asarray(by_chrom.get(name, []), dtype=numpy.int64)
        rows = rows[numpy.argsort(w_start[rows], kind="stable")]
        starts = w_start[rows]
        s, e = start[members], end[members]
        lo = numpy.searchsorted(starts, e - width, "left")
        hi = numpy.maximum(numpy.searchsorted(starts, s, "right"), lo)
        touch_lo = numpy.searchsorted(starts, s - width, "right")
        touch_hi = numpy.searchsorted(starts, e, "left")
        counts = hi - lo
        none = counts == 0
        reason[members[none & (touch_hi > touch_lo)]] = "only partly inside a window"
        nowhere = members[none & (touch_hi <= touch_lo)]
        reason[nowhere] = "in no window"
        off = windows.attrs.get("off_peaks", {}).get(name, ())
        for _, _, w_lo, w_hi in off:  # every window first: a peak's own hits win below
            near = nowhere[(w_lo <= start[nowhere]) & (end[nowhere] <= w_hi)]
            reason[near] = "in the window of a peak, which runs off the chromosome"
        for lo_, hi_, _, _ in off:
            inside = nowhere[(lo_ <= start[nowhere]) & (end[nowhere] <= hi_)]
            reason[inside] = "in a peak whose window runs off the chromosome"
        some = ~none
        repeat = counts[some]
        firsts = numpy.repeat(lo[some], repeat)
        steps = numpy.arange(repeat.sum()) - numpy.repeat(numpy.cumsum(repeat) - repeat, repeat)
        pair_hit.extend(numpy.repeat(members[some], repeat).tolist())
        pair_window.extend(rows[firsts + steps].tolist())

    pair_hit = numpy.asarray(pair_hit, dtype=numpy.int64)
    pair_window = numpy.asarray(pair_window, dtype=numpy.int64)
    order = numpy.lexsort((pair_window, pair_hit))
    pair_hit, pair_window = pair_hit[order], pair_window[order]

    columns = [c for c in hits.columns if c != "peak"]
    mapped = hits.iloc[pair_hit][columns].reset_index(drop=True)
    mapped["window"] = pair_window
    mapped["peak"] = windows["peak"].to_numpy(dtype=numpy.int64)[pair_window]
    mapped["window_start"] = w_start[pair_window]
    mapped["window_end"] = w_end[pair_window]
    mapped["offset_start"] = start[pair_hit] - w_start[pair_window]
    mapped["offset_end"] = end[pair_hit] - w_start[pair_window]

    lost = numpy.nonzero(reason != "")[0]
    keep = [c for c in ("hit", "line", "chrom", "start", "end", "name") if c in hits.columns]
    skipped = hits.iloc[lost][keep].reset_index(drop=True)
    skipped["reason"] = reason[lost].astype(str)
    return mapped, skipped


def hits_to_annotations(hits: Any, windows: pandas.DataFrame, min_width: int = 1,
        return_skipped: bool = False, interval_names: Optional[str] = None,
        skip_missing_chromosomes: bool = False) -> tuple:
    """Map motif hits into the windows; annotations for :func:`jablate.ablate_annotations`.

    A hit that names its peak (Fi-NeMo's ``peak_id``, a DataFrame's ``peak``) maps to
    that peak's window; any other hit maps to every window that contains it entirely.
    Hits in no window, only partly inside one, or shorter than ``min_width`` are
    skipped.

    Parameters
    ----------
    hits : str, os.PathLike or pandas.DataFrame
        A BED, Fi-NeMo ``hits.tsv`` or FIMO TSV file (recognised by its first line), or a
        DataFrame with ``chrom``, ``start``, ``end`` (0-based, half-open) and optionally
        ``name``, ``strand`` and ``peak`` (0-based index of the hit's peak in the peak
        file; -1 for none). See :func:`jablate.genome.files.read_hits`.
    windows : pandas.DataFrame
        From :func:`load_windows`.
    min_width : int, optional
        Shortest hit to keep; 3 for ``jablate.dinucleotide_shuffle``. Default 1.
    return_skipped : bool, optional
        Also return the skipped hits with the reason. Default False.
    interval_names : {None, "bedtools", "samtools"}, optional
        How a FIMO file's interval names ``chrom:start-end`` count: bedtools' 0-based,
        end exclusive, or samtools' 1-based, end inclusive. Default None: bedtools where
        the file has FIMO's ``matched_sequence`` (see
        :func:`jablate.genome.files.read_hits`); a file of interval names without it must
        say.
    skip_missing_chromosomes : bool, optional
        Skip hits on chromosomes the genome lacks (with that reason) instead of raising.
        Default False.

    Returns
    -------
    annotations : numpy.ndarray of int64, shape (k, 3)
        Rows ``(window, offset_start, offset_end)``: the row of ``X`` and the hit's
        region in it, ``end`` exclusive.
    mapped : pandas.DataFrame
        k rows, row ``i`` for annotation ``i``: the hit's columns (``hit``, ``line``,
        ``chrom``, ``start``, ``end``, ``name``, ``strand``, the file's other columns),
        then ``window``, ``peak``, ``window_start``, ``window_end``, ``offset_start``,
        ``offset_end``.
    skipped : pandas.DataFrame
        Only with ``return_skipped``: ``hit``, ``line``, ``chrom``, ``start``, ``end``,
        ``name``, ``reason``.

    Raises
    ------
    ValueError
        (:class:`jablate._core.io.InputError`) For an empty, malformed or unrecognised hit
        file (the message names the file and line), a chromosome missing from the
        genome, a peak index beyond the peak file, or a FIMO ``matched_sequence`` that is
        not the genome's bases where the hit is (checked when ``windows`` come from
        :func:`load_windows`, which keeps the genome's file name in ``attrs``; FIMO interval
        names read in an assumed convention need that check, or ``interval_names``).
    """

    if not isinstance(hits, pandas.DataFrame) or "format" not in hits.attrs:
        hits = read_hits(hits, windows.attrs.get("lengths"), windows.attrs.get("n_peaks"),
            interval_names=interval_names, skip_missing_chromosomes=skip_missing_chromosomes)
    genome = windows.attrs.get("genome")
    if genome is not None:
        check_matched_sequences(hits, open_genome(genome), "the hits",
                                hits.attrs.get("interval_names", "bedtools"))
    elif hits.attrs.get("interval_names_assumed"):
        raise InputError("the hits' FIMO interval names were read as bedtools' (0-based) "
            "on the strength of their matched_sequence, which cannot be checked here: these "
            "windows do not know their genome (make them with load_windows), or say "
            "interval_names='bedtools' or 'samtools'")
    mapped, skipped = map_hits(hits, windows, min_width)
    annotations = mapped[["window", "offset_start", "offset_end"]].to_numpy(
        dtype=numpy.int64).reshape(-1, 3)
    return (annotations, mapped, skipped) if return_skipped else (annotations, mapped)


# --- effects --------------------------------------------------------------------------------


def _distribution(values, profile):
    """Rows of ``values`` (..., P) made distributions over their last axis."""

    if profile == "logits":
        shifted = values - values.max(axis=-1, keepdims=True)
        weights = numpy.exp(shifted)
    else:
        weights = values
    with numpy.errstate(invalid="ignore", divide="ignore"):
        return weights / weights.sum(axis=-1, keepdims=True)


def _js_distance(p, q):
    m = 0.5 * (p + q)
    with numpy.errstate(invalid="ignore", divide="ignore"):
        kl = lambda a: numpy.where(a > 0, a * numpy.log2(a / m), 0.0).sum(axis=-1)
        divergence = 0.5 * kl(p) + 0.5 * kl(q)
    return numpy.sqrt(numpy.clip(divergence, 0.0, None))


def hit_effects(result: Any, mapped_hits: pandas.DataFrame, profile: str = "logits",
        arrangements: Optional[Any] = None) -> pandas.DataFrame:
    """The effect of ablating each hit, per model output, beside the hit's columns.

    Parameters
    ----------
    result : PerturbationAnnotationsResult or tuple
        ``(y_befores, y_afters)`` from :func:`jablate.ablate_annotations` on the
        annotations of ``mapped_hits``: shapes ``(k, 1, ...)`` and ``(k, 1, n, ...)``, or
        lists of such for a model with several outputs.
    mapped_hits : pandas.DataFrame
        From :func:`hits_to_annotations` (k rows); any DataFrame of k rows works.
    profile : {"logits", "probs"}, optional
        How a profile output becomes a distribution for the Jensen-Shannon distance:
        softmax of logits (BPNet, ChromBPNet), or non-negative values over their sum.
        Default ``"logits"``.
    arrangements : array-like, shape (k,), optional
        How many distinct sequences the shuffle can make of each hit
        (:func:`jablate.api.effects.arrangements` on the same ``X``, annotations and shuffle);
        written as the column ``arrangements``. Where it is 1 the shuffle cannot change
        the hit: ``drop``, ``after_sd``, ``sum_drop`` and ``jsd`` are exactly 0 and ``z``
        is nan. Default None: no such column, and every hit is taken to change.

    Returns
    -------
    effects : pandas.DataFrame
        ``mapped_hits`` and, for each output (prefix ``outH_`` when there are several):
        for an output with one value per sequence, or one per task (prefix ``taskT_``),
        ``before``, ``after_mean``, ``after_sd`` (ddof=1), ``drop`` (``before -
        after_mean``) and ``z`` (``drop / after_sd``); for an output with a position
        axis (two or more axes per sequence, positions last, e.g. BPNet's (strands,
        positions)), ``sum_before``, ``sum_drop`` and ``jsd``, the Jensen-Shannon
        distance (base 2) between the profile before and the mean profile after. ``z``
        follows :func:`jablate.api.effects.shuffle_effects`: nan (never ±inf) where n is 1,
        the hit cannot change, or ``after_sd`` is below float resolution. See
        :data:`EFFECTS_HELP`.

    Raises
    ------
    ValueError
        When the shapes do not match ``mapped_hits``, ``profile`` is unknown, or
        ``profile="probs"`` meets negative values.
    """

    if profile not in PROFILE_MODES:
        raise InputError(f"profile must be one of {PROFILE_MODES}; got {profile!r}")
    y_befores, y_afters = result
    multi = isinstance(y_befores, (list, tuple))
    befores = list(y_befores) if multi else [y_befores]
    afters = list(y_afters) if multi else [y_afters]
    k = len(mapped_hits)
    summaries = []
    for h, (before, after) in enumerate(zip(befores, afters)):
        eps = float_resolution(before, after)
        before = numpy.asarray(before, dtype=numpy.float64)
        after = numpy.asarray(after, dtype=numpy.float64)
        if before.shape[:2] != (k, 1) or after.shape[:2] != (k, 1) or after.ndim < 3 or \
                after.shape[3:] != before.shape[2:]:
            raise InputError(f"output {h}: shapes {before.shape} before and {after.shape} "
                f"after do not fit {k} hits: expected ({k}, 1, ...) and ({k}, 1, n, ...)")
        b = before.reshape(k, -1)
        a = after.reshape(k, after.shape[2], -1)
        if before.ndim <= 3:
            summaries.append(_Values(b, a.mean(1), lambda t, can, b=b, a=a, eps=eps:
                shuffle_effects(b[:, t], a[:, :, t], can, eps=eps)))
        else:
            if profile == "probs" and ((b < 0).any() or (a < 0).any()):
                raise InputError(f"output {h} has negative values, so it holds no "
                    "probabilities: use profile='logits' (--profile logits on the command line)")
            summaries.append(_Profile(b.sum(axis=1), a.sum(axis=2).mean(axis=1),
                _distribution(b, profile), _distribution(a, profile).mean(axis=1)))
    return _effects_table(mapped_hits, summaries, multi, arrangements)


class _Values(NamedTuple):
    """An output with one value per sequence or per task: each hit's values before and
    mean after (k, T), and ``effects(t, can) -> Effects`` of task ``t``."""

    before: numpy.ndarray
    after_mean: numpy.ndarray
    effects: Callable


class _Profile(NamedTuple):
    """A profile output: each hit's total before and mean total after (k,), and its
    distribution before and mean distribution after (k, P)."""

    total_before: numpy.ndarray
    total_after: numpy.ndarray
    distribution_before: numpy.ndarray
    distribution_after: numpy.ndarray


def _effects_table(mapped_hits, summaries, multi, arrangements):
    """The effects table from each output's summary (:class:`_Values`, :class:`_Profile`)."""
    k = len(mapped_hits)
    effects = mapped_hits.copy()
    measures = {}
    if arrangements is None:
        can = numpy.ones(k, dtype=bool)
    else:
        counts = numpy.asarray(arrangements, dtype=numpy.float64).reshape(-1)
        if counts.shape != (k,):
            raise InputError(f"arrangements must hold one count per hit ({k}); got shape "
                f"{counts.shape}")
        measures["arrangements"] = counts
        can = counts > 1
    for h, summary in enumerate(summaries):
        prefix = f"out{h}_" if multi else ""
        if isinstance(summary, _Values):
            tasks = summary.before.shape[1]
            for t in range(tasks):
                p = prefix + (f"task{t}_" if tasks > 1 else "")
                drop, spread, z = summary.effects(t, can)
                measures.update({p + "before": summary.before[:, t],
                    p + "after_mean": summary.after_mean[:, t], p + "after_sd": spread,
                    p + "drop": drop, p + "z": z})
        else:
            measures[prefix + "sum_before"] = summary.total_before
            measures[prefix + "sum_drop"] = numpy.where(can,
                summary.total_before - summary.total_after, 0.0)
            measures[prefix + "jsd"] = numpy.where(can, _js_distance(
                summary.distribution_before, summary.distribution_after), 0.0)
    renames = {}
    for name in measures:
        column = name
        while column in mapped_hits.columns:
            column = "hit_" + column
        if column != name:
            renames[name] = column
    effects = effects.rename(columns=renames)
    # one frame of every measure at once: a column at a time fragments pandas' frame (a
    # warning per hundred columns, as a (batch, L) output's L tasks make)
    return pandas.concat([effects, pandas.DataFrame(measures, index=effects.index)], axis=1)


@dataclass(frozen=True)
class DeviceEffects:
    """What the effects need of each shuffled prediction, computed where the model runs.

    ``predict``'s ``func`` for ``ablate_annotations(..., reduce="mean_std")`` (see
    :func:`hit_effects_from_summary`): the mean over the shuffles of what it returns is all
    :func:`hit_effects` reads, so a run keeps (k, ...) numbers per output rather than
    every shuffle's (k, n, ...) and the softmax of every shuffled profile runs on the
    device. For an output with one value per sequence or per task, the output itself;
    for a profile output (two or more axes per sequence), its distribution over all its
    values (softmax of logits, or values over their sum), its total, and whether any
    value is negative. A last output says how to read them: ``[multi, mode, kind_0,
    ...]`` (1 for a tuple/list output; 1 for ``"probs"``; kind 1 for a profile), so the
    host never guesses the layout. Works on JAX arrays and on torch tensors (a model
    bridged from torch).

    Keep one instance per mode (:data:`DEVICE_EFFECTS`): compiled programs are cached
    on the instance, weakly.
    """

    profile: str

    def __post_init__(self):
        mark(self, OutputFunc("DeviceEffects"))  # the same on torch tensors and JAX arrays

    def __call__(self, y: Any) -> tuple:
        multi = isinstance(y, (tuple, list))
        ys = list(y) if multi else [y]
        ops = array_ops(ys[0])
        out, kinds = [], [float(multi), float(self.profile == "probs")]
        for h, v in enumerate(ys):
            if v.ndim >= 1 and math.prod(v.shape[1:]) == 0:
                where = f"output {h}" if multi else "the model's output"
                raise InputError(f"cannot measure {where}: it has no values per window "
                    f"(shape {tuple(v.shape[1:])} each; a model that trims its input, as "
                    "BPNet does, returns nothing for windows shorter than it expects: is "
                    "--window the model's input length?)")
            if v.ndim <= 2:
                out.append(v)
                kinds.append(0.0)
                continue
            flat = v.reshape(v.shape[0], -1)
            if self.profile == "logits":
                weights = ops.exp(flat - ops.amax(flat, -1))
            else:
                weights = flat
            total = ops.sum(flat, -1)
            out += [weights / ops.sum(weights, -1), total,
                    ops.amax(ops.less(flat, 0) * 1.0, -1)]
            kinds.append(1.0)
        out.append(ops.constant(kinds, ys[0]))
        return tuple(out)


#: One :class:`DeviceEffects` per profile mode (compiled programs are cached on them).
DEVICE_EFFECTS = {mode: DeviceEffects(mode) for mode in ("logits", "probs")}


def hit_effects_from_summary(result: Any, mapped_hits: pandas.DataFrame, n: int,
        profile: str = "logits", arrangements: Optional[Any] = None) -> pandas.DataFrame:
    """:func:`hit_effects` from a run that kept only means: ``ablate_annotations(...,
    reduce="mean_std", additional_func_kwargs=dict(func=DEVICE_EFFECTS[profile]))``.

    The same columns as :func:`hit_effects` on the run that keeps every shuffle, equal to
    float32 rounding (the distributions and means are computed in the outputs' dtype on
    the device, the rest in float64 here); what ``jablate hits`` writes.

    Parameters
    ----------
    result : PerturbationAnnotationsSummaryResult
        ``(y_befores, y_after_means, y_after_stds)``: lists of (k, 1, ...) arrays, the
        outputs of :class:`DeviceEffects` (the last one its layout).
    mapped_hits : pandas.DataFrame
        k rows.
    n : int
        Shuffles per hit.
    profile : {"logits", "probs"}, optional
        The mode the run's :class:`DeviceEffects` had (for messages). Default "logits".
    arrangements : array-like, shape (k,), optional
        As for :func:`hit_effects`.

    Returns
    -------
    effects : pandas.DataFrame

    Raises
    ------
    ValueError
        When the shapes do not fit, the layout output is missing or inconsistent, or
        ``profile="probs"`` meets negative values.
    """

    if profile not in PROFILE_MODES:
        raise InputError(f"profile must be one of {PROFILE_MODES}; got {profile!r}")
    befores, means, stds = (list(part) if isinstance(part, (list, tuple)) else [part]
                            for part in result)
    k = len(mapped_hits)
    if k == 0:
        raise InputError("no hits: mapped_hits is empty")
    for part in (befores, means, stds):
        for h, y in enumerate(part):
            if tuple(numpy.shape(y)[:2]) != (k, 1):
                raise InputError(f"output {h} has shape {numpy.shape(y)}; expected ({k}, 1, "
                    "...) for the hits")
    layout = numpy.asarray(means[-1], dtype=numpy.float64).reshape(k, -1)
    if layout.shape[1] < 3 or (layout != layout[:1]).any():
        raise InputError("the run's last output is not DeviceEffects' layout; run "
            "ablate_annotations with additional_func_kwargs=dict(func=DEVICE_EFFECTS[...])")
    multi, kinds = bool(layout[0, 0]), layout[0, 2:].astype(int)
    if layout[0, 1] != (profile == "probs"):
        raise InputError(f"the run computed its distributions as "
            f"{'probs' if layout[0, 1] else 'logits'}, not as profile={profile!r}")
    if len(means) - 1 != sum(3 if kind else 1 for kind in kinds):
        raise InputError(f"the run's outputs ({len(means) - 1}) do not fit the layout "
            f"{kinds.tolist()}")
    host = lambda part, j, shape=(k, -1): numpy.asarray(part[j], numpy.float64).reshape(shape)
    summaries, i = [], 0
    for h, kind in enumerate(kinds):
        if kind == 0:  # from_mean_std measures float resolution in the outputs' dtype
            b, mean, std = (numpy.asarray(part[i]).reshape(k, -1)
                            for part in (befores, means, stds))
            summaries.append(_Values(b.astype(numpy.float64), mean.astype(numpy.float64),
                lambda t, can, b=b, mean=mean, std=std:
                from_mean_std(b[:, t], mean[:, t], std[:, t], n, can)))
            i += 1
            continue
        if profile == "probs" and (host(befores, i + 2).any() or host(means, i + 2).any()):
            raise InputError(f"output {h} has negative values, so it holds no "
                "probabilities: use profile='logits' (--profile logits on the command line)")
        summaries.append(_Profile(host(befores, i + 1, (k,)), host(means, i + 1, (k,)),
            host(befores, i), host(means, i)))
        i += 3
    return _effects_table(mapped_hits, summaries, multi, arrangements)


def _measure_groups(columns):
    """Prefixes of per-sequence measures (``drop`` and ``z``) and of profiles (``jsd``)."""

    columns = list(columns)
    scalar = [c[:-len("drop")] for c in columns if c.endswith("drop") and
        c[:-len("drop")] + "z" in columns]
    profile = [c[:-len("jsd")] for c in columns if c.endswith("jsd") and
        c[:-len("jsd")] + "sum_drop" in columns]
    return scalar, profile


def measure_columns(columns: Sequence[str]) -> list:
    """The columns of an effects table that :func:`summarise_effects` and
    :func:`plot_effects` read, besides ``hit`` and ``name``."""

    scalar, profile = _measure_groups(columns)
    return [p + c for p in scalar for c in ("drop", "z")] + \
        [p + c for p in profile for c in ("jsd", "sum_drop")]


def _nan_count(values):
    return int(numpy.isnan(values.to_numpy(dtype=float)).sum())


def _fraction_above_2(z):
    z = z.to_numpy(dtype=float)
    z = z[~numpy.isnan(z)]
    return float((z > 2).mean()) if z.size else numpy.nan


def summarise_effects(effects: pandas.DataFrame) -> pandas.DataFrame:
    """Summarise effects per motif name.

    Parameters
    ----------
    effects : pandas.DataFrame
        From :func:`hit_effects` (or ``effects.tsv`` read back).

    Returns
    -------
    summary : pandas.DataFrame
        One row per ``name``: ``hits`` (distinct hits), ``rows`` (effect rows), and for
        each per-sequence output ``median_drop``, ``mean_drop``, ``frac_z_gt_2`` (the
        fraction of the rows with a z that have z > 2; nan when none has one) and
        ``nan_z`` (rows whose z is nan), for each profile output ``median_jsd``,
        ``mean_jsd``, ``median_sum_drop`` and ``nan_jsd``, each with the output's prefix.
        Every statistic skips nan values. Sorted by the median drop of the first
        per-sequence output (else the first profile's median jsd), largest first (ties by
        name).
    """

    scalar, profile = _measure_groups(effects.columns)
    groups = effects.groupby("name", sort=True)
    sizes = groups.size()
    columns = {"name": list(groups.groups.keys()),
               "hits": (groups["hit"].nunique() if "hit" in effects.columns else
                        sizes).to_numpy(),
               "rows": sizes.to_numpy()}  # one frame of them all (many tasks: many columns)
    for p in scalar:
        drop = groups[p + "drop"]
        columns[p + "median_drop"] = drop.median().to_numpy()
        columns[p + "mean_drop"] = drop.mean().to_numpy()
        columns[p + "frac_z_gt_2"] = groups[p + "z"].apply(_fraction_above_2).to_numpy()
        columns[p + "nan_z"] = groups[p + "z"].apply(_nan_count).to_numpy()
    for p in profile:
        columns[p + "median_jsd"] = groups[p + "jsd"].median().to_numpy()
        columns[p + "mean_jsd"] = groups[p + "jsd"].mean().to_numpy()
        columns[p + "median_sum_drop"] = groups[p + "sum_drop"].median().to_numpy()
        columns[p + "nan_jsd"] = groups[p + "jsd"].apply(_nan_count).to_numpy()
    summary = pandas.DataFrame(columns)
    medians = [c for c in summary.columns if c.endswith("median_drop")] + \
        [c for c in summary.columns if c.endswith("median_jsd")]
    if medians:
        key = summary[medians[0]].fillna(-numpy.inf)
        summary = summary.assign(_key=key).sort_values(["_key", "name"],
            ascending=[False, True], kind="stable").drop(columns="_key")
    return summary.reset_index(drop=True)


def measure_labels(columns: Sequence[str], output_names: Optional[Sequence[str]] = None) -> \
        list:
    """The measures :func:`plot_effects` draws, with axis labels a reader understands.

    Parameters
    ----------
    columns : sequence of str
        The columns of an effects table.
    output_names : sequence of str, optional
        A name per model output, in order (for BPNet ``["profile", "log counts"]``).
        Default: ``"output H"`` for a model with several outputs, ``"prediction"`` for one,
        and ``"profile"`` for an output with a position axis.

    Returns
    -------
    measures : list of (str, str)
        ``(column, label)`` for the ``drop`` of each per-sequence output (and task) and the
        ``jsd`` of each profile, e.g. ``("out1_drop", "log counts drop")``,
        ``("out0_jsd", "profile JSD")``.

    Raises
    ------
    ValueError
        When ``output_names`` does not name every output of the table.
    """

    scalar, profile = _measure_groups(columns)
    outputs = sorted({int(m[1]) for p in scalar + profile for m in [re.match(r"out(\d+)_",
        p)] if m}) or [None]
    if output_names is not None:
        output_names = list(output_names)
        if len(output_names) != len(outputs):
            raise InputError(f"output_names has {len(output_names)} names; the effects "
                f"table has {len(outputs)} model output(s)")

    def name(prefix, kind):
        match = re.match(r"(?:out(\d+)_)?(?:task(\d+)_)?", prefix)
        h, task = match.group(1), match.group(2)
        if output_names is not None:
            base = output_names[outputs.index(int(h) if h is not None else None)]
        elif kind == "profile":
            base = "profile" if h is None else f"profile (output {h})"
        else:
            base = "prediction" if h is None else f"output {h}"
        return base + (f", task {task}" if task is not None else "")

    return [(p + "drop", f"{name(p, 'scalar')} drop") for p in scalar] + \
        [(p + "jsd", f"{name(p, 'profile')} JSD") for p in profile]


def plot_effects(effects: pandas.DataFrame, file: Any, format: Optional[str] = None,
        max_motifs: int = 100, output_names: Optional[Sequence[str]] = None) -> None:
    """Draw each motif's distribution of effects, motifs sorted by median effect.

    One panel per measure (``drop`` of each per-sequence output, ``jsd`` of each
    profile), a horizontal box per motif name, sharing the order of the first panel.
    Axis labels name the outputs (``output_names``); small effects get a common power of
    ten beside the axis (``×10⁻³``) instead of long tick labels.

    Parameters
    ----------
    effects : pandas.DataFrame
        From :func:`hit_effects`.
    file : str, os.PathLike or binary file object
        Where to write the figure.
    format : {"png", "pdf", "svg"}, optional
        Default: from the file name's extension.
    max_motifs : int, optional
        With more motif names, only the ``max_motifs`` with the largest medians are drawn
        (the title says so). Default 100.
    output_names : sequence of str, optional
        A name per model output for the axis labels (see :func:`measure_labels`).

    Raises
    ------
    ValueError
        When ``output_names`` does not name every output.
    """

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    measures = measure_labels(effects.columns, output_names)
    summary = summarise_effects(effects)
    names = list(summary["name"])
    shown = names[:max_motifs]
    count = dict(zip(summary["name"], summary["rows"]))
    height = max(3.0, 0.24 * len(shown) + 1.8)
    figure, axes = plt.subplots(1, max(len(measures), 1), squeeze=False, sharey=True,
        figsize=(3.2 + 3.6 * max(len(measures), 1), height))
    groups = effects.groupby("name")
    labels = [f"{name} ({count[name]})" for name in shown]
    positions = numpy.arange(len(shown))[::-1]
    for axis, (column, label) in zip(axes[0], measures):
        data = [groups.get_group(name)[column].to_numpy(dtype=float) for name in shown]
        data = [d[numpy.isfinite(d)] for d in data]
        style = dict(positions=positions, widths=0.6, flierprops=dict(markersize=2,
            alpha=0.5), medianprops=dict(color="tab:red"))
        try:
            axis.boxplot(data, orientation="horizontal", **style)
        except TypeError:  # matplotlib < 3.10
            axis.boxplot(data, vert=False, **style)
        axis.axvline(0, color="grey", lw=0.8, ls="--")
        axis.xaxis.set_major_locator(MaxNLocator(nbins=4))
        formatter = ScalarFormatter(useMathText=True)
        formatter.set_powerlimits((-2, 3))
        axis.xaxis.set_major_formatter(formatter)
        axis.set_xlabel(label)
    axes[0][0].set_yticks(positions, labels, fontsize=8 if len(shown) <= 60 else 6)
    axes[0][0].set_ylim(-1, len(shown))
    axes[0][0].set_ylabel("motif (effect rows)")
    more = f"; {len(shown)} of {len(names)} motifs" if len(shown) < len(names) else ""
    legend = (["drop = before − mean after"] if any(c.endswith("drop") for c, _ in measures)
        else []) + (["JSD = profile change"] if any(c.endswith("jsd") for c, _ in measures)
        else [])
    figure.suptitle(f"effect of shuffling each motif's hits: {'; '.join(legend)}{more}",
        fontsize=10)
    figure.tight_layout()
    if format is None:
        format = os.path.splitext(os.fspath(file))[1].lstrip(".").lower()
    figure.savefig(file, format=format, dpi=100)
    plt.close(figure)


def _float_cells(values: numpy.ndarray) -> list:
    """Floats as text, 6 significant digits (``nan``, ``inf``), but integral ones of 10**6
    to 2**53 in full (``arrangements``: 2444321280, not 2.44432e+09; below 10**6 the six
    digits already are the integer). Vectorised: only those few cells are formatted apart,
    so a table of 10**6 hits pays no Python call per cell."""
    cells = list(map("{:.6g}".format, values.tolist()))  # Python floats format fastest
    size = numpy.abs(values)
    with numpy.errstate(invalid="ignore"):
        whole = (size >= 1e6) & (size < 2.0 ** 53) & (values == numpy.floor(values))
    for i in numpy.flatnonzero(whole):
        cells[i] = str(int(values[i]))
    return cells


def effects_tsv(effects: pandas.DataFrame, header: bool = True) -> str:
    """The rows of a table as tab-separated text: integers as they are, floats as
    :func:`_float_cells` writes them, everything else as text."""

    cells = []
    for column in effects.columns:
        values = effects[column].to_numpy()
        if values.dtype.kind == "f":
            cells.append(_float_cells(values))
        else:
            cells.append([str(v) for v in values])
    lines = ["\t".join(row) for row in zip(*cells)]
    if header:
        lines.insert(0, "\t".join(map(str, effects.columns)))
    return "".join(line + "\n" for line in lines)
