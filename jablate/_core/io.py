"""Reading sequences and regions from files, and writing result files atomically.

Everything here is plain Python and NumPy (no JAX), so the command line can check its
inputs before it loads a model. Problems with an input file raise :class:`InputError`, a
``ValueError`` whose message names the file and, where it applies, the line. Input files
may be gzip-compressed (bgzip included), whatever their names.
"""

import csv
import gzip
import io
import os
import sys
import tempfile
import zlib

import numpy

from jablate._core import interrupts
from jablate._core.errors import InputError

__all__ = [
    "InputError",
    "Region",
    "read_fasta",
    "read_regions",
    "one_hot_encode",
    "PLOT_FORMATS",
    "plot_format",
    "output_paths",
    "note_unusual_letters",
    "format_table",
    "AtomicFiles",
    "new_file_mode",
]

PLOT_FORMATS = ("png", "pdf", "svg")
_GZIP_MAGIC = b"\x1f\x8b"


class Region(tuple):
    """One line of a region file: ``(name, sequence, start, end, line)``.

    ``start`` is 0-based and inclusive, ``end`` exclusive; ``line`` is the 1-based line
    number in the region file.
    """

    __slots__ = ()
    _fields = ("name", "sequence", "start", "end", "line")

    def __new__(cls, name, sequence, start, end, line):
        return tuple.__new__(cls, (name, sequence, start, end, line))

    name = property(lambda self: self[0])
    sequence = property(lambda self: self[1])
    start = property(lambda self: self[2])
    end = property(lambda self: self[3])
    line = property(lambda self: self[4])


#: The file name that means standard input (``--fasta -``), as most command-line tools read it.
STDIN = "-"


def source_name(path) -> str:
    """How messages name an input file: ``<stdin>`` for :data:`STDIN`, else the path."""
    return "<stdin>" if str(path) == STDIN else str(path)


def _read_lines(path):
    """The lines of a text file (standard input for :data:`STDIN`), gunzipped first when it
    starts with gzip's magic bytes; a UTF-8 byte-order mark (as some Windows editors and
    Excel write one) is dropped."""

    name = source_name(path)
    try:
        if str(path) == STDIN:
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as raw:
                data = raw.read()
        if data[:2] == _GZIP_MAGIC:
            data = gzip.decompress(data)
        with io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig") as handle:
            return handle.read().splitlines()  # universal newlines, as open(..., "rt")
    except UnicodeDecodeError:
        raise InputError(f"cannot read '{name}': not a text file") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise InputError(f"cannot read '{name}': damaged gzip data ({error})") from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise InputError(f"cannot read '{name}': {reason}") from None


def read_fasta(path):
    """Read a FASTA file whose sequences all have the same length.

    The name of a record is the first word after ``>``. Sequence lines are joined; spaces
    inside them are dropped. A gzip-compressed file (``.fa.gz``, bgzip too) is recognised
    by its first bytes and decompressed.

    Parameters
    ----------
    path : str or os.PathLike
        The FASTA file; ``"-"`` reads standard input.

    Returns
    -------
    names : list of str, length N
        The record names, in file order.
    sequences : list of str, length N
        The sequences, as written (case kept), all of one length L.

    Raises
    ------
    InputError
        When the file is missing or unreadable, holds no records, has sequence data before
        the first header, an empty or duplicated record name, an empty sequence, or
        sequences of different lengths.
    """

    lines = _read_lines(path)
    path = source_name(path)  # for messages
    names, sequences, header_lines = [], [], []
    seen = {}
    chunks = None

    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if line.startswith(">"):
            fields = line[1:].split()
            if not fields:
                raise InputError(f"{path}:{number}: empty sequence name after '>'")
            name = fields[0]
            if name in seen:
                raise InputError(f"{path}:{number}: duplicate sequence name '{name}' "
                    f"(first on line {seen[name]})")
            seen[name] = number
            if chunks is not None:
                sequences.append("".join(chunks))
            names.append(name)
            header_lines.append(number)
            chunks = []
        elif line and not line.startswith(";"):
            if chunks is None:
                raise InputError(f"{path}:{number}: sequence data before the first "
                    "'>' header; is this a FASTA file?")
            chunks.append("".join(line.split()))

    if chunks is None:
        raise InputError(f"{path}: no sequences (expected FASTA records starting with '>')")
    sequences.append("".join(chunks))

    length = len(sequences[0])
    for name, sequence, number in zip(names, sequences, header_lines):
        if not sequence:
            raise InputError(f"{path}:{number}: sequence '{name}' is empty")
        if len(sequence) != length:
            raise InputError(f"{path}:{number}: sequence '{name}' has length "
                f"{len(sequence)}, but '{names[0]}' has length {length}; all sequences "
                "must have one length")
    return names, sequences


def names_columns(fields: list) -> bool:
    """Whether the first data line of a region, peak or hit file names its columns: neither
    its start nor its end (fields 2 and 3) is a number in any notation (a malformed data
    line has at least one of them: ``1e+03`` is then refused as not an integer, never
    skipped as a header).

    Parameters
    ----------
    fields : list of str
        The line's columns.

    Returns
    -------
    bool
    """

    def numeric(text):  # a number in any notation (R writes 1000 as 1e+03): not a name
        try:
            float(text)
        except ValueError:
            return False
        return True

    return len(fields) >= 3 and not numeric(fields[1]) and not numeric(fields[2])


def read_regions(path, lengths, fasta_path=None):
    """Read a tab-separated region file against known sequences.

    Each line is ``sequence start end [name ...]`` with 0-based ``start`` and exclusive
    ``end``. Blank lines, lines starting with ``#``, BED ``track``/``browser`` lines and a
    header line (the first data line, when neither its start nor its end is a number) are
    skipped; columns after the fourth are ignored. A line without tabs may separate its
    columns by spaces. A gzip-compressed file is recognised by its first bytes.

    Parameters
    ----------
    path : str or os.PathLike
        The region file; ``"-"`` reads standard input.
    lengths : dict of str to int
        Length of every known sequence, by name.
    fasta_path : str or os.PathLike, optional
        Where the sequences came from, for error messages.

    Returns
    -------
    regions : list of Region
        In file order. A region without a 4th column is named ``sequence:start-end``.

    Raises
    ------
    InputError
        When the file is missing or unreadable or holds no regions, or a line has fewer than
        three columns, a start or end that is not an integer, an unknown sequence name,
        ``start < 0``, ``end <= start`` or ``end`` past the end of its sequence.
    """

    where = f" in '{source_name(fasta_path)}'" if fasta_path is not None else ""
    regions, seen = [], False
    lines = _read_lines(path)
    path = source_name(path)  # for messages
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.split()[0] in ("track", "browser"):
            continue

        fields = line.split("\t") if "\t" in line else line.split()
        fields = [field.strip() for field in fields]
        if not regions and not seen and names_columns(fields):
            seen = True  # a header line, as in the peak and hit files
            continue
        seen = True
        if len(fields) < 3:
            raise InputError(f"{path}:{number}: expected at least 3 tab-separated "
                f"columns (sequence, start, end), found {len(fields)}")

        sequence = fields[0]
        bounds = []
        for label, text in (("start", fields[1]), ("end", fields[2])):
            try:
                bounds.append(int(text))
            except ValueError:
                raise InputError(f"{path}:{number}: {label} '{text}' is not an "
                    "integer") from None
        start, end = bounds

        if sequence not in lengths:
            raise InputError(f"{path}:{number}: unknown sequence '{sequence}' (no such "
                f"record{where})")
        if start < 0:
            raise InputError(f"{path}:{number}: start {start} is negative")
        if end <= start:
            raise InputError(f"{path}:{number}: end {end} is not after start {start}")
        if end > lengths[sequence]:
            raise InputError(f"{path}:{number}: region {start}-{end} lies outside "
                f"sequence '{sequence}' of length {lengths[sequence]}")

        name = fields[3] if len(fields) > 3 and fields[3] else f"{sequence}:{start}-{end}"
        regions.append(Region(name, sequence, start, end, number))

    if not regions:
        raise InputError(f"{path}: no regions (expected lines 'sequence<TAB>start<TAB>end')")
    return regions


def one_hot_encode(sequences, alphabet="ACGT", dtype=numpy.float32):
    """One-hot encode sequences of one length.

    Parameters
    ----------
    sequences : list of str, length N
        Sequences, all of length L. Letters are matched to ``alphabet`` ignoring case;
        any other letter becomes an all-zero column (an unknown base).
    alphabet : str, optional
        The A symbols, in channel order. Default ``"ACGT"``.
    dtype : numpy dtype, optional
        Default ``numpy.float32``.

    Returns
    -------
    X : numpy.ndarray, shape (N, A, L)
        The one-hot encoding.
    """

    lengths = {len(sequence) for sequence in sequences}
    if len(lengths) > 1:
        raise InputError(f"sequences must have one length, found lengths {sorted(lengths)}")
    length = lengths.pop() if lengths else 0

    lookup = numpy.full(256, -1, dtype=numpy.int16)
    for index, symbol in enumerate(alphabet):
        lookup[ord(symbol.upper())] = index
        lookup[ord(symbol.lower())] = index

    text = "".join(sequences).encode("latin-1", "replace")
    symbols = lookup[numpy.frombuffer(text, dtype=numpy.uint8)].reshape(len(sequences), length)
    X = numpy.empty((len(sequences), len(alphabet), length), dtype=dtype)
    for index in range(len(alphabet)):  # one pass per symbol, unknown bases match none
        numpy.equal(symbols, index, out=X[:, index, :], casting="unsafe")
    return X


def note_unusual_letters(sequences, path):
    """Warn (one line) when ``sequences`` hold letters other than A, C, G, T and N, in
    either case: :func:`one_hot_encode` makes each an unknown base (an all-zero column),
    as it does N, which is right for IUPAC codes and gaps but not for an RNA file (U).

    Parameters
    ----------
    sequences : list of str
    path : str or os.PathLike
        Their FASTA file, for the message.

    Returns
    -------
    None
    """
    import collections
    import warnings

    letters = collections.Counter()
    for sequence in sequences:
        letters.update(sequence.upper())
    odd = {letter: n for letter, n in letters.items() if letter not in "ACGTN"}
    if odd:
        shown = ", ".join(f"{n} {letter!r}" for letter, n in
                          sorted(odd.items(), key=lambda item: -item[1])[:4])
        more = ", ..." if len(odd) > 4 else ""
        warnings.warn(f"{source_name(path)}: {sum(odd.values())} of "
            f"{sum(letters.values())} bases are not A, C, G, T or N ({shown}{more}): each is "
            "read as an unknown base, as N is (an all-zero column)", stacklevel=2)


def _input_file(option, value):
    """The file an input option reads, or None: ``-`` is standard input, and a model
    spec names a file before its last ``:`` (``model.py:load``) or is one (``model.pt``)."""
    if value is None or value == "-":
        return None
    if option == "model":
        head = str(value).rsplit(":", 1)[0]
        value = head if os.path.isfile(head) else value
    return value if os.path.isfile(value) else None


def output_paths(args, options, npz=(), inputs=()):
    """The output files a command was given: ``{option: path}`` for each of ``options``
    (attribute names of ``args``) that is not None, checked before any work.

    Parameters
    ----------
    args : argparse.Namespace
    options : sequence of str
        ``("out", "table", "plot")``, say.
    npz : sequence of str, optional
        The options whose files hold a NumPy ``.npz`` archive: their names must end so.
    inputs : sequence of str, optional
        The options naming files the command reads (``("fasta", "regions", "model")``):
        no output may replace one.

    Returns
    -------
    paths : dict

    Raises
    ------
    InputError
        Two options name the same file, an output names an input file, or an ``npz``
        option's name does not end in ``.npz``.
    """
    paths = {option: getattr(args, option) for option in options
             if getattr(args, option) is not None}
    read = {os.path.realpath(f): option for option in inputs
            for f in [_input_file(option, getattr(args, option, None))] if f is not None}
    seen = {}
    for option, path in paths.items():
        real = os.path.realpath(path)
        if real in read:
            raise InputError(f"--{option} '{path}' names the file --{read[real]} reads; "
                             "writing it would replace the input")
        if real in seen:
            raise InputError(f"--{seen[real]} and --{option} name the same file '{path}'")
        seen[real] = option
        if option in npz and not str(path).lower().endswith(".npz"):
            raise InputError(f"--{option} '{path}' would hold a NumPy .npz archive; give it "
                "a name ending in .npz")
    return paths


def plot_format(path):
    """The figure format that the extension of ``path`` asks for.

    Parameters
    ----------
    path : str or os.PathLike
        Where a plot will be written.

    Returns
    -------
    format : str
        ``"png"``, ``"pdf"`` or ``"svg"`` (the extension, case ignored).

    Raises
    ------
    InputError
        When the extension is none of these.
    """

    extension = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if extension not in PLOT_FORMATS:
        found = f"'.{extension}'" if extension else "none"
        raise InputError(f"cannot write a plot to '{os.fspath(path)}': its extension must be "
            f".png, .pdf or .svg (found {found})")
    return extension


def format_table(columns, rows, path=None):
    """Write a table as text in the format that the extension of ``path`` asks for.

    Parameters
    ----------
    columns : list of str
        The header.
    rows : list of list of str
        The cells, each row as long as ``columns``.
    path : str or os.PathLike, optional
        The file the table is meant for. A name ending in ``.csv`` (case ignored) gives
        comma-separated values (RFC 4180 quoting, ``\n`` line ends); any other name, or
        ``None`` (standard output), gives tab-separated values.

    Returns
    -------
    text : str
        The table, header first, each line ending in ``\n``.
    """

    if path is not None and os.fspath(path).lower().endswith(".csv"):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return buffer.getvalue()
    return "".join("\t".join(row) + "\n" for row in [columns, *rows])


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The permissions ``open()`` gives a new file: ``0o666`` less the umask (``0o644``
    under the usual umask 022). Temporary files made private by ``mkstemp`` get them
    before they are moved into place, so every output has one mode."""
    return 0o666 & ~_umask()


class AtomicFiles:
    """Write several output files so that each appears whole or not at all.

    ``open(path)`` creates a temporary file beside ``path`` (so a missing or unwritable
    directory shows up before any work is done) and returns its binary handle. Leaving the
    ``with`` block normally moves every temporary file onto its final name with
    ``os.replace``; leaving it by an exception (including ``KeyboardInterrupt``) deletes
    them all, so no partial output is left behind.

    Examples
    --------
    >>> with AtomicFiles() as files:
    ...     handle = files.open("table.tsv")
    ...     handle.write(b"name\\tdrop\\n")
    """

    def __init__(self):
        self._pending = []

    def open(self, path):
        """Open a temporary file that will become ``path``.

        Parameters
        ----------
        path : str or os.PathLike
            The final name.

        Returns
        -------
        handle : file object
            Opened for binary writing.

        Raises
        ------
        InputError
            When the file cannot be created there (missing directory, no permission).
        """

        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise InputError(f"cannot write '{path}': it is a directory")
        try:
            descriptor, temporary = tempfile.mkstemp(dir=directory,
                prefix="." + os.path.basename(path) + ".", suffix=".part")
        except OSError as error:
            reason = error.strerror or str(error)
            raise InputError(f"cannot write '{path}': {reason}") from None
        os.chmod(temporary, new_file_mode())  # mkstemp makes it private (0600)
        handle = os.fdopen(descriptor, "wb")
        self._pending.append((handle, temporary, path))
        return handle

    def commit(self):
        """Close every temporary file and move it onto its final name (unless an interrupt
        came that Python swallowed: :func:`jablate._core.interrupts.check`).

        Raises
        ------
        KeyboardInterrupt
            The interrupt; nothing is moved.
        """

        interrupts.check()
        for handle, _, _ in self._pending:
            handle.close()
        for _, temporary, path in self._pending:
            os.replace(temporary, path)
        self._pending = []

    def discard(self):
        """Close and delete every temporary file that was not committed."""

        for handle, temporary, _ in self._pending:
            try:
                handle.close()
            finally:
                if os.path.exists(temporary):
                    os.unlink(temporary)
        self._pending = []

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is None:
            try:
                self.commit()
            except BaseException:
                self.discard()
                raise
        else:
            self.discard()
        return False
