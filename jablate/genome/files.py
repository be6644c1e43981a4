"""Reading a genome, peak files and motif-hit files for :mod:`jablate.genome.hits`.

Every problem with an input raises :class:`jablate._core.io.InputError` (a ``ValueError``) with
one line that names the file, the line number and the cause (``peaks.bed:12: end 90 is
not after start 100``). Coordinates are converted to 0-based, half-open ``[start, end)``
on reading, whatever the file's own convention.
"""

import hashlib
import os
import re
from typing import Any, Optional

import numpy
import pandas

from jablate._core.io import InputError, _read_lines, names_columns

__all__ = ["open_genome", "genome_lengths", "genome_digest", "read_peaks", "read_hits",
    "HIT_FORMATS", "HIT_COLUMNS", "INTERVAL_NAMES", "file_digest"]

#: What :func:`read_hits` recognises, by the name it stores in ``hits.attrs["format"]``.
HIT_FORMATS = ("bed", "finemo", "fimo", "table")
#: The columns every hit table starts with (``line`` only when read from a file).
HIT_COLUMNS = ("hit", "line", "chrom", "start", "end", "name", "strand")
#: Columns that :func:`jablate.genome.hits.hits_to_annotations` adds; a hit file's own column of
#: one of these names is renamed with the prefix ``hit_``.
WINDOW_COLUMNS = ("window", "peak", "window_start", "window_end", "offset_start", "offset_end")

_GZIP_MAGIC = b"\x1f\x8b"
# bedtools getfasta / samtools faidx names: 'chr1:100-200', 'chr1:100-200(+)', 'name::chr1:100-200',
# 'chr1:101-200/rc'
#: Conventions of interval names ``chrom:start-end`` (``read_hits``' ``interval_names``).
INTERVAL_NAMES = ("bedtools", "samtools")
_INTERVAL_NAME = re.compile(r"^(?:.*::)?(?P<chrom>.+):(?P<start>\d+)-(?P<end>\d+)"
    r"(?:\((?P<strand>[+-])\)|(?P<rc>/rc))?$")  # (-): bedtools getfasta -s; /rc: samtools -i


# --- the genome ---------------------------------------------------------------------------


def open_genome(genome: Any) -> Any:
    """Open an indexed FASTA genome with pyfaidx (building its ``.fai`` when missing).

    Parameters
    ----------
    genome : str, os.PathLike or pyfaidx.Fasta
        A FASTA file, plain or bgzip-compressed (``.fa.gz`` written by ``bgzip``; reading
        it needs Biopython), or an open ``pyfaidx.Fasta``, returned as is.

    Returns
    -------
    fasta : pyfaidx.Fasta
        Records by the first word of their header line.

    Raises
    ------
    InputError
        When the file is missing or unreadable, gzip-compressed but not with bgzip (or
        compressed under a name without ``.gz``), cannot be indexed (irregular line
        lengths, duplicate names), or has a ``.fai`` that does not describe it (stale;
        checked for an uncompressed FASTA opened here, not for a bgzip-compressed one or
        an already open ``pyfaidx.Fasta``).
    """

    import pyfaidx

    if isinstance(genome, pyfaidx.Fasta):
        return genome
    path = os.fspath(genome)
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == _GZIP_MAGIC
    except OSError as error:
        raise InputError(f"cannot read genome '{path}': {error.strerror or error}") from None
    try:
        fasta = pyfaidx.Fasta(path, as_raw=True, sequence_always_upper=False)
    except pyfaidx.UnsupportedCompressionFormat:
        fresh = (path[:-3] if path.endswith(".gz") else path) + ".bgz"
        raise InputError(f"cannot read genome '{path}': it is gzip-compressed, but not "
            "with bgzip, so it has no random access; recompress it with bgzip into a new "
            f"file ('gunzip -c {path} | bgzip > {fresh}', then --genome {fresh}) or "
            "decompress it") from None
    except ImportError as error:
        if gzipped:
            raise InputError(f"cannot read genome '{path}': reading a bgzip-compressed "
                "FASTA needs Biopython ('pip install biopython'), or decompress it") from None
        raise InputError(f"cannot read genome '{path}': {error}") from None
    except OSError as error:
        raise InputError(f"cannot read genome '{path}': {error.strerror or error}") from None
    except Exception as error:  # pyfaidx's FastaIndexingError, duplicate keys (ValueError)
        reason = " ".join(str(error).split()) or type(error).__name__
        if gzipped and not path.lower().endswith((".gz", ".bgz", ".bgzf")):
            reason = ("it is gzip-compressed, but its name does not end in .gz or .bgz, "
                "so it was read as text; name it .fa.gz (bgzip) or decompress it")
        raise InputError(f"cannot index genome '{path}': {reason}") from None
    if not gzipped:
        _check_index(fasta, path)
    return fasta


def _check_index(fasta: Any, path: str) -> None:
    """Refuse a ``.fai`` that does not describe the FASTA beside it.

    pyfaidx trusts an index newer than its FASTA; a genome decompressed again (``gunzip``
    restores the old modification time) or rewrapped keeps an older, newer-dated ``.fai``,
    and reads shifted bases and header text without a word. For every record, the byte
    before its first base ends a line, its first line ends where the index says (when it
    has more than one line) and its last base is followed by a line end or the end of the
    file: three reads of a few bytes each."""

    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size

        def at(position, count=1):
            handle.seek(position)
            return handle.read(count)

        for name, record in fasta.faidx.index.items():
            rlen, offset, lenc, lenb = record.rlen, record.offset, record.lenc, record.lenb
            if rlen <= 0:
                continue
            full, rest = divmod(rlen, lenc) if lenc > 0 else (0, 0)
            last = offset + full * lenb + rest if rest else offset + (full - 1) * lenb + lenc
            good = (lenc > 0 and lenb - lenc in (1, 2) and offset >= 1
                    and at(offset - 1) == b"\n" and last <= size
                    and (last == size or at(last) in (b"\n", b"\r"))
                    and (rlen <= lenc or at(offset + lenc, lenb - lenc) in (b"\n", b"\r\n")))
            if not good:
                raise InputError(f"genome '{path}': its index '{path}.fai' does not describe "
                    f"the file (record '{name}' is not where or as long as the index says): "
                    "either the .fai is stale (the FASTA was replaced, rewrapped or truncated "
                    "since, e.g. decompressed again with its old date; delete the .fai and it "
                    "is built again), or the record's sequence lines are not all one width "
                    "ending in a line break (trailing spaces, say), which pyfaidx cannot read")


def genome_lengths(fasta: Any) -> dict:
    """The length of every record of an open genome, by name (in file order)."""

    return {name: len(fasta[name]) for name in fasta.keys()}


def genome_digest(fasta: Any) -> str:
    """A short SHA-256 of the genome's record names and lengths (its index, not its bases)."""

    text = "\n".join(f"{name}\t{length}" for name, length in genome_lengths(fasta).items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: Any) -> str:
    """A short SHA-256 of a file's bytes."""

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


# --- lines and fields -----------------------------------------------------------------------


def _lines(path, what):
    """``(number, fields, tabbed)`` of the data lines of a tab-separated file (1-based
    numbers; ``tabbed``: whether the line had tabs, else it was split on spaces).

    Blank lines and BED ``track``/``browser`` lines are skipped; ``#`` lines are returned
    (callers decide whether one is a header). A line without tabs is split on spaces.
    """

    try:
        lines = _read_lines(path)
    except InputError as error:
        raise InputError(f"{what}: {error}") from None
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.split()[0] in ("track", "browser"):
            continue
        fields = line.rstrip("\r\n").split("\t") if "\t" in line else stripped.split()
        yield number, [field.strip() for field in fields], "\t" in line


def _int(text, label, where):
    try:
        return int(text)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {label} '{text}' is not an integer") from None


def _check_interval(chrom, start, end, where, lengths, genome, label="interval",
                    skip_missing=False):
    if start < 0:
        raise InputError(f"{where}: start {start} is negative")
    if end <= start:
        raise InputError(f"{where}: end {end} is not after start {start}")
    if lengths is not None:
        if chrom not in lengths:
            hint = _naming_hint(chrom, lengths)
            if skip_missing and not hint:  # a naming mismatch is never skipped
                return
            raise InputError(f"{where}: chromosome '{chrom}' is not in the genome{genome}"
                + (hint or " (skip_missing_chromosomes=True, or --skip-missing-chromosomes, "
                   "skips the peaks and hits on chromosomes the genome lacks)"))
        if end > lengths[chrom]:
            raise InputError(f"{where}: {label} {start}-{end} runs past the end of "
                f"'{chrom}' ({lengths[chrom]} bases)")


def _naming_hint(chrom, lengths):
    """A hint when the genome names the chromosome the other way (``chr1`` and ``1``)."""
    other = chrom[3:] if chrom.startswith("chr") else "chr" + chrom
    if other in lengths:
        return (f" (it has '{other}': the files name chromosomes differently, UCSC's "
            "'chr1' against Ensembl's '1'; rename one of them)")
    return ""


def _genome_label(genome):
    return f" '{genome}'" if genome else ""


# --- peaks ----------------------------------------------------------------------------------


def _is_bed12(fields: list) -> bool:
    """Whether a peak line is BED12-shaped (BED12, MACS2's gappedPeak): column 10 is then
    blockCount, columns 11 and 12 its comma-separated blockSizes and blockStarts."""

    def blocks(text, count):
        items = text.rstrip(",").split(",")
        if len(items) != count or not all(i.strip().isdigit() for i in items):
            return None
        return [int(i) for i in items]

    if len(fields) < 12 or not fields[9].isdigit() or int(fields[9]) < 1:
        return False
    sizes, starts = blocks(fields[10], int(fields[9])), blocks(fields[11], int(fields[9]))
    if sizes is None or starts is None:
        return False
    try:  # BED12's rules: the first block at the start, the last one ending at the end
        span = int(fields[2]) - int(fields[1])
    except ValueError:
        return False
    return starts[0] == 0 and starts[-1] + sizes[-1] == span


def _summit(fields: list, where: str) -> int:
    """A peak line's summit offset: narrowPeak's column 10 (also in IDR's and other
    narrowPeak-based files), -1 (none: the window is centred on the peak's midpoint) for
    BED of fewer columns and for BED12-shaped lines, whose column 10 is a block count."""

    if len(fields) < 10 or _is_bed12(fields):
        return -1
    return _int(fields[9], "summit (column 10)", where)


def read_peaks(peaks: Any, lengths: Optional[dict] = None, width: Optional[int] = None,
        genome: Optional[str] = None,
        skip_missing_chromosomes: bool = False) -> pandas.DataFrame:
    """Read peaks from a narrowPeak or BED file (or check a DataFrame of them).

    Parameters
    ----------
    peaks : str, os.PathLike or pandas.DataFrame
        A narrowPeak file (10 columns, or more as IDR writes; column 10 is the summit's
        offset from ``start``, ``-1`` when absent) or a BED file (3 or more columns,
        column 4 the name; BED12 and MACS2's gappedPeak, whose column 10 is a block count,
        have no summit), 0-based, half-open, possibly gzip-compressed; or a DataFrame with
        ``chrom``, ``start``, ``end`` and optionally ``summit`` (offset from ``start``) and
        ``name``. A first line whose start and end are not numbers is a header, skipped.
    lengths : dict of str to int, optional
        Chromosome lengths; when given, every peak's chromosome must be one of them and
        the peak must lie on it.
    width : int, optional
        The window width; when given with ``lengths``, a chromosome shorter than it that
        holds a peak is an error.
    genome : str, optional
        The genome's file name, for messages.
    skip_missing_chromosomes : bool, optional
        Keep peaks on chromosomes that ``lengths`` lacks (unchecked) instead of raising:
        :func:`jablate.genome.hits.peak_windows` then gives them no window. A chromosome
        the genome names the other way (``chr1`` against ``1``) still raises. Default
        False.

    Returns
    -------
    peaks : pandas.DataFrame
        One row per peak, in file order: ``peak`` (0-based index, Fi-NeMo's ``peak_id``),
        ``line`` (1-based line in the file; absent for a DataFrame), ``chrom``, ``start``,
        ``end``, ``name`` (``"."`` when absent) and ``summit`` (offset from ``start``, -1
        when absent).

    Raises
    ------
    InputError
        For an empty file, too few columns, non-integer coordinates, ``end <= start``, a
        negative start, a summit outside its peak, a chromosome missing from the genome
        (unless ``skip_missing_chromosomes``), a peak past its chromosome's end or a window
        longer than its chromosome.
    """

    label = _genome_label(genome)
    if isinstance(peaks, pandas.DataFrame):
        rows, lines, where_of = _peaks_from_frame(peaks), None, lambda i: f"peaks row {i}"
    else:
        path = os.fspath(peaks)
        rows, lines = [], []
        for number, fields, _ in _lines(path, "peaks"):
            if fields[0].startswith("#"):
                continue
            if not rows and names_columns(fields):
                continue  # a header line ('chrom start end ...'), as hits files may have
            where = f"{path}:{number}"
            if len(fields) < 3:
                raise InputError(f"{where}: expected at least 3 tab-separated columns "
                    f"(chrom, start, end), found {len(fields)}")
            start = _int(fields[1], "start", where)
            end = _int(fields[2], "end", where)
            summit = _summit(fields, where)
            name = fields[3] if len(fields) > 3 and fields[3] else "."
            rows.append((fields[0], start, end, name, summit))
            lines.append(number)
        if not rows:
            raise InputError(f"{path}: no peaks (expected BED or narrowPeak lines "
                "'chrom<TAB>start<TAB>end...')")
        where_of = lambda i: f"{path}:{lines[i]}"

    seen = set()
    for i, (chrom, start, end, _, summit) in enumerate(rows):
        where = where_of(i)
        _check_interval(chrom, start, end, where, lengths, label, "peak",
                        skip_missing_chromosomes)
        if summit < -1 or summit >= end - start:
            raise InputError(f"{where}: summit offset {summit} lies outside the peak "
                f"{start}-{end} (expected 0 to {end - start - 1}, or -1 for none)")
        if width is not None and lengths is not None and chrom not in seen and chrom in lengths:
            seen.add(chrom)
            if width > lengths[chrom]:
                raise InputError(f"{where}: the window of {width} bases is longer than "
                    f"chromosome '{chrom}' ({lengths[chrom]} bases)")

    frame = pandas.DataFrame({
        "peak": numpy.arange(len(rows), dtype=numpy.int64),
        "line": numpy.asarray(lines, dtype=numpy.int64) if lines is not None else None,
        "chrom": [r[0] for r in rows],
        "start": numpy.asarray([r[1] for r in rows], dtype=numpy.int64),
        "end": numpy.asarray([r[2] for r in rows], dtype=numpy.int64),
        "name": [r[3] for r in rows],
        "summit": numpy.asarray([r[4] for r in rows], dtype=numpy.int64),
    })
    return frame if lines is not None else frame.drop(columns="line")


def _peaks_from_frame(frame):
    missing = [c for c in ("chrom", "start", "end") if c not in frame.columns]
    if missing:
        raise InputError(f"peaks DataFrame lacks the column(s) {missing}; expected chrom, "
            "start, end and optionally summit and name")
    if len(frame) == 0:
        raise InputError("peaks DataFrame is empty")
    summits = frame["summit"] if "summit" in frame.columns else [-1] * len(frame)
    names = frame["name"] if "name" in frame.columns else ["."] * len(frame)
    rows = []
    for i, (chrom, start, end, name, summit) in enumerate(zip(frame["chrom"], frame["start"],
            frame["end"], names, summits)):
        where = f"peaks row {i}"
        rows.append((str(chrom), _int(start, "start", where), _int(end, "end", where),
            str(name), _int(summit, "summit", where)))
    return rows


# --- hits -----------------------------------------------------------------------------------


#: Other names of a table's columns: UCSC's (chromStart, chromEnd) and ``chr``. Each is read
#: as its canonical name where the header lacks that name.
TABLE_ALIASES = {"chr": "chrom", "chromstart": "start", "chromend": "end"}


def _header_kind(fields):
    """``(kind, column names)`` of a hits file's first line, kind None when it is no header.

    A table's header may start with ``#`` (``#chrom start end``, as bedtools and UCSC write
    it), glued to the first name or a field of its own."""

    if fields and fields[0] == "#":  # '# chrom start end': the mark is a field of its own
        fields = fields[1:]
    names = [f.lstrip("#").strip().lower().replace(" ", "_") for f in fields]
    have = set(names)
    if {"sequence_name", "start", "stop"} <= have and have & {"motif_id", "pattern_name"}:
        return "fimo", names
    if {"chr", "start", "end", "motif_name"} <= have:
        return "finemo", names
    names = [TABLE_ALIASES[n] if n in TABLE_ALIASES and TABLE_ALIASES[n] not in have else n
             for n in names]
    if {"chrom", "start", "end"} <= set(names):
        return "table", names
    return None, names


def read_hits(hits: Any, lengths: Optional[dict] = None, n_peaks: Optional[int] = None,
        genome: Optional[str] = None, peaks_name: str = "the peaks",
        interval_names: Optional[str] = None,
        skip_missing_chromosomes: bool = False) -> pandas.DataFrame:
    """Read motif hits from a BED, Fi-NeMo, FIMO or tabular file, or check a DataFrame.

    The format is recognised from the first line that is not blank:

    * FIMO (MEME suite) TSV: a header with ``motif_id`` (or ``#pattern name``),
      ``sequence_name``, ``start``, ``stop``...; 1-based, inclusive. ``sequence_name`` is
      a chromosome, or an interval name ``chrom:start-end`` (optionally ``name::``
      before it and ``(+)``/``(-)``, or samtools faidx -i's ``/rc``, after it) when FIMO
      scanned extracted sequences; positions are then made genomic (counted from the
      interval's end on ``(-)`` and ``/rc``).
      ``interval_names`` says how to read such a name. The name is ``motif_alt_id`` when
      present, else ``motif_id``.
    * Fi-NeMo ``hits.tsv``: a header with ``chr``, ``start``, ``end``, ``motif_name``...;
      0-based, half-open; ``peak_id`` (when present) is the hit's peak: the 0-based index
      of its line in the peak file.
    * a table with a header holding ``chrom`` (or ``chr``), ``start``, ``end`` (or UCSC's
      ``chromStart``, ``chromEnd``), 0-based, half-open, and optionally ``name``
      (or, the first present, ``motif_name``, ``motif_alt_id``, ``motif``, ``motif_id``,
      ``pattern_name``),
      ``strand`` and ``peak`` (as the DataFrame below, e.g. one written with ``to_csv``);
      the header may start with ``#`` (``#chrom start end ...``);
    * BED: no header, 3 or more columns (chrom, start, end, name, score, strand, ...);
      0-based, half-open.

    Parameters
    ----------
    hits : str, os.PathLike or pandas.DataFrame
        The file (possibly gzip-compressed), or a DataFrame with ``chrom``, ``start``,
        ``end`` (0-based, half-open) and optionally ``name`` (or another of
        :data:`NAME_COLUMNS`), ``strand`` and ``peak`` (the 0-based index of the hit's
        peak; -1 or missing for none).
    lengths : dict of str to int, optional
        Chromosome lengths; when given, hits must lie on them.
    n_peaks : int, optional
        The number of peaks; when given, a peak index must be below it.
    genome, peaks_name : str, optional
        Names for messages.
    interval_names : {None, "bedtools", "samtools"}, optional
        The convention of FIMO ``sequence_name`` intervals ``chrom:start-end``:
        ``"bedtools"`` (``bedtools getfasta``: 0-based start, end exclusive) or
        ``"samtools"`` (``samtools faidx``, R's GRanges: 1-based start, end inclusive).
        Default None: ``"bedtools"`` where the file has a ``matched_sequence`` column,
        which :func:`check_matched_sequences` then compares with the genome
        (``attrs["interval_names_assumed"]`` is True); a file of interval names
        without one is refused, as nothing could tell a 1-base shift.
    skip_missing_chromosomes : bool, optional
        Keep hits on chromosomes that ``lengths`` lacks (unchecked) instead of raising:
        :func:`jablate.genome.hits.map_hits` skips them with that reason. A chromosome the
        genome names the other way (``chr1`` against ``1``) still raises. Default False.

    Returns
    -------
    hits : pandas.DataFrame
        One row per hit, in input order: ``hit`` (0-based index), ``line`` (1-based line
        in the file; files only), ``chrom``, ``start``, ``end`` (0-based, half-open),
        ``name`` (``"."`` when absent), ``strand`` (``"."`` when absent), ``peak``
        (-1 when the input names none), then every other column of the input under its
        own name (as text for files; one named like a column above or like those that
        :func:`jablate.genome.hits.hits_to_annotations` adds gets the prefix ``hit_``; BED's
        5th column is ``score``, the 7th on ``bed7``, ...). ``attrs["format"]`` is one of
        :data:`HIT_FORMATS` (``"dataframe"`` for a DataFrame); for FIMO, ``attrs`` also
        holds ``interval_names`` (the convention used) and ``interval_names_assumed``.
        A hit on a ``(-)`` or ``/rc`` interval (reverse complemented) gets the genome's strand:
        FIMO's ``+`` there is ``-``.

    Raises
    ------
    InputError
        For an empty file, an unrecognised format, a line with too few columns,
        non-integer coordinates, ``end <= start``, a negative start, a chromosome missing
        from the genome, a hit past its chromosome's end, or a peak index that is not
        an integer in ``[0, n_peaks)``, or FIMO interval names without ``matched_sequence``
        and without ``interval_names``.
    """

    if interval_names is not None and interval_names not in INTERVAL_NAMES:
        raise InputError(f"interval_names must be None or one of {INTERVAL_NAMES}; got "
            f"{interval_names!r}")
    label = _genome_label(genome)
    if isinstance(hits, pandas.DataFrame):
        return _hits_from_frame(hits, lengths, n_peaks, label, peaks_name,
                                skip_missing_chromosomes)
    path = os.fspath(hits)
    kind, header, rows = None, None, []
    # a '#'-marked line naming chrom, start and end: a header only when the first data line
    # has as many columns, split the same way (else a comment that happens to name them,
    # over BED lines)
    marked = None
    for number, fields, tabbed in _lines(path, "hits"):
        if kind is None:
            kind, names = _header_kind(fields)
            if kind == "table" and fields[0].startswith("#"):
                kind, marked = None, (names, tabbed)
                continue
            if kind is not None:
                header = names
                continue
            if fields[0].startswith("#"):
                continue
            if marked is not None and (len(fields), tabbed) == (len(marked[0]), marked[1]):
                kind, header = "table", marked[0]
            elif len(fields) >= 3 and fields[1].lstrip("-").isdigit() and \
                    fields[2].lstrip("-").isdigit():
                kind = "bed"
            elif len(fields) >= 3 and fields[1].lstrip("-").isdigit():  # a BED line, bad end?
                raise InputError(f"{path}:{number}: cannot recognise the hit format: as a "
                    f"BED line its end {fields[2]!r} is not an integer; expected a FIMO "
                    "header (motif_id ... sequence_name start stop), a Fi-NeMo header (chr "
                    "start end ... motif_name), a header with chrom, start and end, or BED "
                    "lines (chrom, start, end, ...)")
            else:
                raise InputError(f"{path}:{number}: cannot recognise the hit format: "
                    "expected a FIMO header (motif_id ... sequence_name start stop), a "
                    "Fi-NeMo header (chr start end ... motif_name), a header with chrom, "
                    "start and end, or BED lines (chrom, start, end, ...)")
        if fields[0].startswith("#"):
            continue
        rows.append((number, fields))
    if not rows:
        found = f" (a {kind} header, but no hits)" if kind is not None else ""
        raise InputError(f"{path}: no hits{found}")
    parse = {"bed": _bed_hit, "finemo": _finemo_hit, "fimo": _fimo_hit, "table": _table_hit}
    columns = _extra_columns(kind, header, max(len(f) for _, f in rows))
    parsed = []
    for number, fields in rows:
        where = f"{path}:{number}"
        if header is not None and len(fields) < len(header):
            fields = fields + [""] * (len(header) - len(fields))
        record = parse[kind](fields, header, where, lengths, interval_names)
        _check_interval(record[0], record[1], record[2], where, lengths, label, "hit",
                        skip_missing_chromosomes)
        if n_peaks is not None and record[5] >= n_peaks:
            raise InputError(f"{where}: peak {record[5]} does not exist: {peaks_name} "
                f"has {n_peaks} peaks (0 to {n_peaks - 1})")
        parsed.append((number, record, fields))
    frame = _hit_frame([p[1] for p in parsed], [p[0] for p in parsed])
    for column, index in columns:
        frame[column] = [f[index] if index < len(f) else "" for _, _, f in parsed]
    frame.attrs["format"] = kind
    if kind == "fimo":  # the interval-name convention used, and whether it was assumed
        names = [f[header.index("sequence_name")] for _, _, f in parsed]
        intervals = any(r[0] != n and r[0] in (lengths or ())
                        for (_, r, _), n in zip(parsed, names))
        frame.attrs["interval_names"] = interval_names or "bedtools"
        frame.attrs["interval_names_assumed"] = intervals and interval_names is None
    return frame


def _field(fields, header, name, where, required=True):
    if name in header:
        return fields[header.index(name)]
    if required:
        raise InputError(f"{where}: no '{name}' column")
    return None


def _peak_id(text, where, label="peak_id"):
    if text is None or text in ("", ".", "-1", "NA", "nan"):
        return -1
    value = _int(text, label, where)
    if value < 0:
        raise InputError(f"{where}: {label} {value} is negative")
    return value


def _bed_hit(fields, header, where, lengths, interval_names=None):
    if len(fields) < 3:
        raise InputError(f"{where}: expected at least 3 tab-separated columns (chrom, "
            f"start, end), found {len(fields)}")
    name = fields[3] if len(fields) > 3 and fields[3] else "."
    strand = fields[5] if len(fields) > 5 and fields[5] else "."
    return (fields[0], _int(fields[1], "start", where), _int(fields[2], "end", where), name,
        strand, -1)


def _finemo_hit(fields, header, where, lengths, interval_names=None):
    get = lambda name, required=True: _field(fields, header, name, where, required)
    strand = get("strand", False) or "."
    return (get("chr"), _int(get("start"), "start", where), _int(get("end"), "end", where),
        get("motif_name") or ".", strand, _peak_id(get("peak_id", False), where))


#: The columns a table's (or a DataFrame's) motif name is read from, the first present.
NAME_COLUMNS = ("name", "motif_name", "motif_alt_id", "motif", "motif_id", "pattern_name")


def _name_column(columns):
    return next((c for c in NAME_COLUMNS if c in columns), None)


def _table_hit(fields, header, where, lengths, interval_names=None):
    get = lambda name, required=True: _field(fields, header, name, where, required)
    column = _name_column(header)
    return (get("chrom"), _int(get("start"), "start", where), _int(get("end"), "end", where),
        (get(column, False) if column else None) or ".", get("strand", False) or ".",
        _peak_id(get("peak", False), where, "peak"))


def _fimo_hit(fields, header, where, lengths, interval_names="bedtools"):
    get = lambda name, required=True: _field(fields, header, name, where, required)
    motif_id = get("motif_id", False) or get("pattern_name", False) or "."
    name = get("motif_alt_id", False) or motif_id
    sequence = get("sequence_name")
    start = _int(get("start"), "start", where)
    stop = _int(get("stop"), "stop", where)
    if start < 1:
        raise InputError(f"{where}: start {start} is not a 1-based position (FIMO counts "
            "from 1)")
    if stop < start:
        raise InputError(f"{where}: stop {stop} is before start {start}")
    chrom, begin, end = sequence, start - 1, stop
    strand = get("strand", False) or "."
    if lengths is not None and sequence not in lengths:
        match = _INTERVAL_NAME.match(sequence)
        if match is not None:  # an interval's chromosome the genome lacks is named as such
            chrom = match["chrom"]
            low, high = int(match["start"]), int(match["end"])
            if interval_names is None:  # (a chromosome the genome lacks: refused below)
                if "matched_sequence" not in header and chrom in lengths:
                    raise InputError(f"{where}: sequence '{sequence}' names an interval, "
                        "and the file has no matched_sequence column to check which "
                        "convention its positions count in; say it: --fimo-intervals "
                        "bedtools (bedtools getfasta: 0-based start, end exclusive) or "
                        "--fimo-intervals samtools (samtools faidx, R/GRanges: 1-based, "
                        "end inclusive); interval_names= in Python")
                interval_names = "bedtools"  # checked against matched_sequence after
            if interval_names == "samtools":  # 1-based, inclusive: the same bases
                low -= 1
                if low < 0:
                    raise InputError(f"{where}: sequence '{sequence}' starts at 0, which "
                        "is no 1-based (samtools) position; is it a bedtools name?")
            if stop > high - low:
                raise InputError(f"{where}: stop {stop} lies past the end of sequence "
                    f"'{sequence}' ({high - low} bases)")
            if match["strand"] == "-" or match["rc"]:  # the interval's reverse complement
                begin, end = high - stop, high - start + 1
                strand = {"+": "-", "-": "+"}.get(strand, strand)  # on the genome
            else:
                begin, end = low + start - 1, low + stop
    return (chrom, begin, end, name, strand, -1)


_COMPLEMENT = str.maketrans("ACGTN", "TGCAN")

#: Hits whose ``matched_sequence`` :func:`check_matched_sequences` compares with the genome.
MATCHED_SEQUENCE_CHECKS = 1000


def check_matched_sequences(hits: pandas.DataFrame, fasta: Any, label: str,
                            interval_names: str = "bedtools") -> None:
    """Refuse hits whose ``matched_sequence`` (FIMO's column) is not the genome's bases
    at their positions, on either strand: positions read with the wrong convention
    (``--fimo-intervals``), or another assembly, would shift every hit silently.

    Up to :data:`MATCHED_SEQUENCE_CHECKS` hits, spread evenly over the file, are compared
    (a wrong convention shifts all of them); a base other than A, C, G or T (N, or an
    IUPAC ambiguity code) on either side matches anything.

    Parameters
    ----------
    hits : pandas.DataFrame
        From :func:`read_hits`; without a ``matched_sequence`` column nothing is checked.
    fasta : pyfaidx.Fasta
        The genome (:func:`open_genome`).
    label : str
        The hits' file, for the message.
    interval_names : str, optional
        The interval-name convention the hits were read with, for the message.

    Raises
    ------
    InputError
        When a compared hit's matched sequence differs from the genome on both strands, or
        when the hits' interval-name convention was assumed
        (``attrs["interval_names_assumed"]``) and no hit could be compared.
    """
    if "matched_sequence" not in hits.columns or len(hits) == 0:
        return
    rows = numpy.unique(numpy.linspace(0, len(hits) - 1, min(len(hits), MATCHED_SEQUENCE_CHECKS)
                                       ).astype(numpy.int64))
    names = set(fasta.keys())
    bad, checked = [], 0
    for row in rows:
        hit = hits.iloc[int(row)]
        matched = str(hit["matched_sequence"]).upper()
        if hit["chrom"] not in names or not matched or matched in (".", "NAN"):
            continue
        checked += 1
        genomic = str(fasta[hit["chrom"]][int(hit["start"]):int(hit["end"])]).upper()
        reverse = genomic.translate(_COMPLEMENT)[::-1]
        if not any(len(g) == len(matched) and all(a == b or a not in "ACGT" or b not in "ACGT"
                   for a, b in zip(g, matched)) for g in (genomic, reverse)):
            bad.append((hit, genomic))
    if not checked and hits.attrs.get("interval_names_assumed"):
        raise InputError(f"{label}: its FIMO interval names were read as bedtools' (0-based) "
            "on the strength of matched_sequence, but no sampled hit has one to compare "
            "(empty, or on chromosomes the genome lacks); give --fimo-intervals bedtools or "
            "samtools (interval_names= in Python)")
    if bad:
        hit, genomic = bad[0]
        where = f" (line {hit['line']})" if "line" in hits.columns else ""
        raise InputError(
            f"{label}: {len(bad)} of {checked} hits checked have a matched_sequence that is not "
            f"the genome's bases at their position; the first{where}: '{hit['matched_sequence']}' "
            f"at {hit['chrom']}:{hit['start']}-{hit['end']}, where the genome has '{genomic}'. "
            "Are the positions read in the right convention (interval names read as "
            f"--fimo-intervals {interval_names}; the other is "
            f"{'samtools' if interval_names == 'bedtools' else 'bedtools'}), and is this "
            "the genome the hits were called on?")


def _extra_columns(kind, header, width):
    """``(column name, field index)`` of the input columns kept beside the normalised ones."""

    used = {
        "bed": {0, 1, 2, 3, 5},
        "finemo": {"chr", "start", "end", "motif_name", "strand"},
        "table": {"chrom", "start", "end", "name", "strand", "peak"},
        "fimo": {"start", "stop", "strand"},
    }[kind]
    if kind == "bed":
        names = {4: "score"}
        pairs = [(names.get(i, f"bed{i + 1}"), i) for i in range(3, width) if i not in used]
    else:
        if kind == "table":
            used = used | {_name_column(header)}
        pairs = [(name, i) for i, name in enumerate(header) if name not in used and name]
    return [(_unclash(name), i) for name, i in pairs]


def _unclash(name):
    taken = set(HIT_COLUMNS) | set(WINDOW_COLUMNS)
    while name in taken:
        name = "hit_" + name
    return name


def _hit_frame(records, lines):
    frame = pandas.DataFrame({
        "hit": numpy.arange(len(records), dtype=numpy.int64),
        "line": numpy.asarray(lines, dtype=numpy.int64) if lines is not None else None,
        "chrom": [r[0] for r in records],
        "start": numpy.asarray([r[1] for r in records], dtype=numpy.int64),
        "end": numpy.asarray([r[2] for r in records], dtype=numpy.int64),
        "name": [r[3] for r in records],
        "strand": [r[4] for r in records],
        "peak": numpy.asarray([r[5] for r in records], dtype=numpy.int64),
    })
    return frame if lines is not None else frame.drop(columns="line")


def _hits_from_frame(frame, lengths, n_peaks, label, peaks_name, skip_missing=False):
    missing = [c for c in ("chrom", "start", "end") if c not in frame.columns]
    if missing:
        raise InputError(f"hits DataFrame lacks the column(s) {missing}; expected chrom, "
            "start, end and optionally name, strand and peak")
    if len(frame) == 0:
        raise InputError("hits DataFrame is empty")
    get = lambda name, default: frame[name] if name in frame.columns else [default] * len(frame)
    name_column = _name_column(frame.columns) or "name"
    records = []
    for i, (chrom, start, end, name, strand, peak) in enumerate(zip(frame["chrom"],
            frame["start"], frame["end"], get(name_column, "."), get("strand", "."),
            get("peak", -1))):
        where = f"hits row {i}"
        start, end = _int(start, "start", where), _int(end, "end", where)
        peak = -1 if peak is None or (isinstance(peak, float) and numpy.isnan(peak)) else \
            _int(peak, "peak", where)
        if peak < -1:
            raise InputError(f"{where}: peak {peak} is negative")
        _check_interval(str(chrom), start, end, where, lengths, label, "hit", skip_missing)
        if n_peaks is not None and peak >= n_peaks:
            raise InputError(f"{where}: peak {peak} does not exist: {peaks_name} has "
                f"{n_peaks} peaks (0 to {n_peaks - 1})")
        records.append((str(chrom), start, end, str(name), str(strand), peak))
    out = _hit_frame(records, None)
    for column in frame.columns:
        if column not in ("chrom", "start", "end", name_column, "strand", "peak"):
            out[_unclash(column)] = frame[column].to_numpy()
    out.attrs["format"] = "dataframe"
    return out
