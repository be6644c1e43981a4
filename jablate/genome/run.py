"""``jablate hits``: genome + peaks + motif hits -> a table of effects, in resumable chunks.

The (hit, window) rows are cut into chunks of ``--chunk-size`` rows, in hit order. Each
chunk's effects are written to ``DIR/parts/chunk-NNNNNN.tsv`` (a temporary file moved into
place, so a part is whole or absent) as soon as it is done. ``DIR/effects.tsv``,
``summary.tsv``, ``skipped.tsv`` and the plot appear together, atomically, only when every
chunk is done. ``DIR/parts/settings.json`` records what the results depend on; a run
refuses parts made with other settings.

Every hit is ablated as tangermeme's ``ablate(model, X[w:w+1], start, end, n=n,
random_state=seed)`` would (``ablate_annotations`` re-seeds each annotation), so a hit's
result depends on the seed and its own window only, never on the chunk, the shard or the
other hits, and a resumed or sharded run gives the bytes of an uninterrupted one.
"""

import argparse
import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
import warnings
from typing import Any, NamedTuple, Optional

import jax
import numpy
import pandas

from jablate._core.errors import InputError, ModelFailure, counted, refuse_not_finite
from jablate._core.io import STDIN, new_file_mode
from jablate._core.placement import host_device
from jablate.api.effects import arrangements
from jablate.api.loading import (
    RunOptions,
    check_device,
    load_model,
    model_digest,
    model_kind,
    run_annotations,
)
from jablate.engine import stream as engine
from jablate.genome.files import (
    check_matched_sequences,
    file_digest,
    genome_digest,
    genome_lengths,
    open_genome,
    read_hits,
    read_peaks,
)
from jablate.genome.hits import (
    DEVICE_EFFECTS,
    effects_tsv,
    fetch_windows,
    hit_effects_from_summary,
    map_hits,
    measure_columns,
    measure_labels,
    peak_windows,
    plot_effects,
    summarise_effects,
)

__all__ = ["run_hits", "static_input_length", "SETTINGS_FILE", "DEFAULT_CHUNK_SIZE"]

SETTINGS_FILE = "settings.json"
DEFAULT_CHUNK_SIZE = 256
_FORMAT = 4  # 2: the arrangements column; nan is an ordinary value; 3: effects reduced on the
# device (hit_effects_from_summary), the spread about the shuffles' own mean; 4: each part's
# windows digest beside it (chunk-N.windows)
_OPTIONS = {
    "format": "the parts' format version",
    "model": "--model",
    "model_file": "--model (the .pt2 file's contents)",
    "model_weights": "--model (its weights)",
    "genome": "--genome (its sequence names or lengths)",
    "peaks": "--peaks (the file's contents)",
    "hits": "--hits (the file's contents)",
    "window": "--window",
    "n": "--n",
    "shuffle": "--shuffle",
    "seed": "--seed",
    "profile": "--profile",
    "translate": "--translate",
    "chunk_size": "--chunk-size",
    "fimo_intervals": "--fimo-intervals",
}
_DIGESTS = {"model_file", "model_weights", "genome", "peaks", "hits"}


def _counted(*_: Any) -> None:
    """Regions the shuffle cannot change, reported by no one: :meth:`_Run.read_chunk`
    counted every hit's arrangements for the table (and :meth:`_Run.assemble` reports
    them once)."""


def _part_name(chunk):
    return f"chunk-{chunk:06d}.tsv"


def _windows_name(chunk):
    return f"chunk-{chunk:06d}.windows"


def windows_digest(X: numpy.ndarray) -> str:
    """A short SHA-256 of a chunk's one-hot windows (which positions are set), so that a
    resumed run can tell whether the genome still gives the bases a part was computed
    from: settings.json records only its names and lengths (a masked copy of a genome has
    the same). About 0.3 ms for 256 windows of 2,114 bp.

    Parameters
    ----------
    X : numpy.ndarray, shape (W, 4, L)
        From :func:`jablate.genome.hits.fetch_windows`.

    Returns
    -------
    str
        16 hexadecimal digits, with the shape.
    """

    bits = numpy.packbits(numpy.asarray(X) != 0, axis=None)
    shape = "x".join(map(str, numpy.shape(X)))
    return f"{shape}:{hashlib.sha256(bits.tobytes()).hexdigest()[:16]}"


def static_input_length(model: Any) -> Optional[int]:
    """The sequence length a ``torch.export`` program was traced at, when it is static.

    Parameters
    ----------
    model : object
        As returned by :func:`jablate.api.loading.load_model`.

    Returns
    -------
    length : int or None
        The last dimension of the program's first input when it is a plain integer; None
        for symbolic lengths and for anything that is not an exported program.
    """

    torch = sys.modules.get("torch")
    if torch is None:
        return None
    inner = model.module if type(model).__name__ == "StaticBatchModule" else model
    if not isinstance(inner, torch.fx.GraphModule):
        return None
    first = next((n for n in inner.graph.nodes if n.op == "placeholder"), None)
    value = None if first is None else first.meta.get("val")
    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else ()
    return shape[-1] if len(shape) >= 2 and isinstance(shape[-1], int) else None


def _is_export(spec):
    return spec.endswith(".pt2") or (os.path.isfile(spec) and ":" not in spec)


class _Run:
    """One ``jablate hits`` invocation; see :func:`run_hits`."""

    def __init__(self, args):
        self.args = args
        self.options = RunOptions.from_args(args)
        self.error = InputError
        self.say = (lambda message: None) if args.quiet else \
            (lambda message: print(f"jablate: {message}", file=sys.stderr, flush=True))
        self.parts = os.path.join(args.out, "parts")
        self.theirs = None  # the settings of the parts already there
        self.digests = set()  # the chunks whose windows' digest this run wrote
        self.names_checked = False  # --output-names against the first chunk's columns
        self.finished_before = False  # whether DIR/parts held finished chunks

    # --- inputs, all checked before anything is written ---------------------------------

    def read_inputs(self):
        args = self.args
        for option in ("genome", "peaks", "hits"):
            if getattr(args, option) == STDIN:
                raise self.error(f"--{option} cannot be standard input ('-'): a resumable "
                    "run reads its inputs again, and records their digests; name a file")
        self.fasta = open_genome(args.genome)
        lengths = genome_lengths(self.fasta)
        self.model = None
        width = args.window
        if _is_export(args.model):
            self.model = load_model(args.model)
            static = static_input_length(self.model)
            if static is not None and width is not None and width != static:
                raise self.error(f"--window {width} differs from the input length {static} "
                    f"that '{args.model}' was exported with")
            width = static if static is not None else width
        if width is None:
            raise self.error("--window is required: the model's input length (2114 for "
                "BPNet and ChromBPNet); only a .pt2 exported with a static input shape "
                "gives it")
        self.width = width
        skip = args.skip_missing_chromosomes
        peaks = read_peaks(args.peaks, lengths, width, genome=args.genome,
            skip_missing_chromosomes=skip)
        self.windows = peak_windows(peaks, lengths, width)
        repeated = int(self.windows.duplicated(["chrom", "window_start", "window_end"]).sum())
        if repeated:
            warnings.warn(f"{counted(repeated, 'window')} of '{args.peaks}' "
                f"{'repeats' if repeated == 1 else 'repeat'} an earlier "
                "peak's window exactly (duplicate peaks, or summits called twice): a hit in "
                "them that names no peak is measured once per copy, and each copy is a row "
                "of summary.tsv's statistics", UserWarning, stacklevel=2)
        hits = read_hits(args.hits, lengths, len(peaks), genome=args.genome,
            peaks_name=f"'{args.peaks}'", interval_names=args.fimo_intervals,
            skip_missing_chromosomes=skip)
        # the convention FIMO's interval names were read in (given, or bedtools where the
        # matched sequences check it); bedtools, as before, for other files' settings
        convention = hits.attrs.get("interval_names", args.fimo_intervals or "bedtools")
        check_matched_sequences(hits, self.fasta, f"'{args.hits}'", convention)
        min_width = 3 if args.shuffle == "dinucleotide" else 1
        self.mapped, self.skipped = map_hits(hits, self.windows, min_width)
        reasons = "; ".join(f"{reason}: {count}" for reason, count in
            self.skipped["reason"].value_counts(sort=False).items())
        if len(self.mapped) == 0:
            raise self.error(f"none of the {len(hits)} hits in '{args.hits}' can be "
                f"measured ({reasons}); check that hits, peaks and genome match")
        self.chunks = math.ceil(len(self.mapped) / args.chunk_size)
        absent = len(self.windows.attrs["absent_peaks"])
        off = len(self.windows.attrs["skipped_peaks"]) - absent
        self.say(f"{len(peaks)} peaks: {len(self.windows)} windows of {width} bp"
            + (f" ({off} run off their chromosome and are skipped)" if off else "")
            + (f" ({absent} on chromosomes the genome lacks are skipped)" if absent else ""))
        self.say(f"{len(hits)} hits ({hits.attrs['format']}): {len(self.mapped)} "
            f"(hit, window) rows in {counted(self.chunks, 'chunk')}"
            + (f"; {len(self.skipped)} skipped ({reasons}), to be listed in skipped.tsv"
               if len(self.skipped) else ""))
        self.settings = {
            "format": _FORMAT, "model": args.model,
            "model_file": file_digest(args.model) if os.path.isfile(args.model) else None,
            "genome": genome_digest(self.fasta), "peaks": _digest(args.peaks),
            "hits": _digest(args.hits), "window": width, "n": args.n,
            "shuffle": args.shuffle, "seed": args.seed, "profile": args.profile,
            "translate": args.translate, "chunk_size": args.chunk_size,
            "fimo_intervals": convention,
        }  # not --skip-missing-chromosomes: where both runs succeed, it changes nothing

    def finished_chunks(self):
        """The chunks already in ``DIR/parts``; raise when they may not be reused."""

        args, parts = self.args, self.parts
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise self.error(f"--out '{args.out}' is a file, not a directory")
        if not os.path.isdir(parts):
            return set()
        names = set(os.listdir(parts))
        done = {c for c in range(self.chunks) if _part_name(c) in names}
        stray = sorted(n for n in names if n.startswith("chunk-") and n.endswith(".tsv") and
            n not in {_part_name(c) for c in done})
        settings_path = os.path.join(parts, SETTINGS_FILE)
        if not os.path.isfile(settings_path):
            if done or stray:
                raise self.error(f"--out '{args.out}' holds parts without "
                    f"{SETTINGS_FILE}; refusing to mix them with this run: choose another "
                    f"--out or delete '{parts}'")
            return set()
        self.theirs = _load_settings(settings_path, self.error)
        self.refuse_other_settings(stray)
        if done and not args.resume and args.shard is None:
            raise self.error(f"--out '{args.out}' already holds {len(done)} of "
                f"{self.chunks} chunks of this run; pass --resume to reuse them, or "
                "choose another --out")
        return done

    def refuse_other_settings(self, stray=()):
        """Raise when the settings of the parts in ``DIR/parts`` differ from this run's
        (those known so far: the model's weights once it is loaded)."""
        theirs = self.theirs
        differ = [key for key in _OPTIONS if key in self.settings and
                  theirs.get(key) != self.settings.get(key)]
        if differ or stray:
            detail = "; ".join(_difference(key, theirs.get(key), self.settings.get(key))
                for key in differ) or f"parts beyond this run's {self.chunks} chunks"
            raise self.error(f"--out '{self.args.out}' holds the parts of another run with "
                f"different settings ({detail}); refusing to mix them: choose another "
                f"--out, or delete '{self.parts}' to start over")

    def load_model(self):
        """Load the model, record its weights' digest (:func:`model_digest`) among the
        settings, and check them against the parts there already."""
        args = self.args
        if self.model is None:
            self.model = load_model(args.model)
        self.settings["model_weights"] = model_digest(self.model)
        if self.theirs is not None:
            self.refuse_other_settings()
        kind = model_kind(self.model)
        self.jax_runs = kind != "torch" or args.translate
        if args.translate and kind != "torch":
            raise self.error("--translate translates torch models to JAX; --model names a "
                "JAX model")
        check_device(kind, args.device, args.translate)

    # --- work ---------------------------------------------------------------------------

    def write_settings(self):
        os.makedirs(self.parts, exist_ok=True)
        final = os.path.join(self.parts, SETTINGS_FILE)
        text = json.dumps(self.settings, indent=1, sort_keys=True) + "\n"
        temporary = _temporary(self.parts, SETTINGS_FILE)
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        try:
            os.link(temporary, final)  # fails if a concurrent shard wrote it first
        except FileExistsError:
            theirs = _load_settings(final, self.error)
            if any(theirs.get(k) != self.settings.get(k) for k in _OPTIONS):
                raise self.error(f"--out '{self.args.out}': another run with different "
                    "settings started writing parts there; refusing to mix them") from None
        finally:
            os.unlink(temporary)

    def compute(self, chunks, done_rows, total_rows):
        """Read, run and write ``chunks``, one chunk ahead: chunk ``i + 1`` is read and its
        work dispatched to the device before chunk ``i``'s results are read back and
        written, so the host's work on a chunk overlaps the device's on the next one (JAX
        dispatches without waiting; see :meth:`run_chunk`). A failure still writes the
        chunk finished before it."""
        from tqdm.auto import tqdm

        bar = tqdm(total=total_rows, initial=done_rows, unit="hit", desc="hits",
            disable=self.args.quiet, file=sys.stderr, dynamic_ncols=True, smoothing=0.05)
        pending, written = [], 0
        try:
            for chunk in chunks:
                inputs = self.read_chunk(chunk)
                pending.append((inputs, self.run_chunk(inputs)))
                if len(pending) > 1:
                    bar.update(self.write_chunk(*pending.pop(0)))
                    written += 1
            while pending:
                bar.update(self.write_chunk(*pending.pop(0)))
                written += 1
        except BaseException as error:
            if pending:  # keep what the device finished before the failure
                with contextlib.suppress(Exception):
                    self.write_chunk(*pending.pop(0))
            if isinstance(error, ModelFailure) and not written \
                    and not self.finished_before:  # else --window has worked before
                asked = error.about_shapes(f"on the first chunk: is --window {self.width} "
                    "the input length the model expects?")
                if asked is not error:
                    raise asked from error.error
            raise
        finally:
            bar.close()

    def chunk_windows(self, chunk):
        """Chunk ``chunk``'s hits, the rows of its windows among them, and its windows
        (one-hot, padded to one shape)."""
        size = self.args.chunk_size
        part = self.mapped.iloc[chunk * size:(chunk + 1) * size].reset_index(drop=True)
        rows, inverse = numpy.unique(part["window"].to_numpy(), return_inverse=True)
        return part, inverse, fetch_windows(self.fasta, self.windows, rows, pad_to=size)

    def read_chunk(self, chunk):
        """Chunk ``chunk``'s hits, windows (padded to one shape), annotations, the
        arrangements of each hit and the windows' digest."""
        part, inverse, X = self.chunk_windows(chunk)
        digest = windows_digest(X)
        if self.jax_runs:  # put on the host backend once, for the counts and the run
            X = jax.device_put(X, host_device())
        annotations = numpy.stack([inverse, part["offset_start"].to_numpy(),
            part["offset_end"].to_numpy()], axis=1).astype(numpy.int64)
        counts = arrangements(self.options.shuffle_fn(), X, annotations)
        return _Chunk(chunk, part, X, annotations, counts, digest)

    def check_windows(self, done):
        """Raise unless every finished chunk in ``done`` was computed from the windows the
        genome gives now (its ``chunk-N.windows`` digest): about 4 ms a chunk of 256
        windows from a plain FASTA, 25 ms from a bgzip one."""
        if len(done) > 64:
            self.say(f"checking the windows of {len(done)} finished chunks against --genome")
        for chunk in sorted(done):
            path = os.path.join(self.parts, _windows_name(chunk))
            try:
                with open(path, encoding="utf-8") as handle:
                    theirs = handle.read().strip()
            except OSError:
                raise self.error(f"--out '{self.args.out}': {_part_name(chunk)} has no "
                    f"{_windows_name(chunk)} beside it, so the bases it was computed from "
                    f"are unknown; delete '{self.parts}' to start over") from None
            if theirs != windows_digest(self.chunk_windows(chunk)[2]):
                raise self.error(f"--out '{self.args.out}': {_part_name(chunk)} was "
                    f"computed from other bases than --genome '{self.args.genome}' gives now "
                    "(the same sequence names and lengths, other sequence: a masked or "
                    "patched copy?); refusing to mix them: choose another --out, or delete "
                    f"'{self.parts}' to start over")

    def run_chunk(self, inputs):
        """Dispatch the chunk's ablation; its summary, not waited for where JAX runs it.

        A JAX model (or a translated one) is given the windows as a JAX array on the host
        (the CPU backend): its checks run there, it is moved to the device once, and the
        summary comes back as device arrays that :meth:`write_chunk` reads; nothing in
        between waits for the device. (:meth:`read_chunk` put the windows there.)"""
        return run_annotations(self.model, inputs.X, inputs.annotations, self.options,
            unchangeable=_counted, verbose=False, reduce="mean_std",
            additional_func_kwargs=dict(func=DEVICE_EFFECTS[self.args.profile]))

    def write_chunk(self, inputs, result):
        """Read the chunk's summary back and write its part; the number of hits it holds.

        Raises
        ------
        ModelFailure
            When reading the summary back raises (a device error of the chunk's work
            surfaces here, after :meth:`run_chunk` dispatched it)."""
        try:
            result = jax.device_get(result)
        except Exception as error:
            raise ModelFailure(self.args.model, error) from error
        try:
            effects = hit_effects_from_summary(result, inputs.part, self.args.n,
                self.args.profile, inputs.counts)
        except ValueError as error:
            raise self.error(f"cannot compute effects: {error}") from None
        if self.args.output_names is not None and self.args.plot != "none" \
                and not self.names_checked:  # every chunk has the same columns
            try:  # before the first part is written, not after the last
                measure_labels(effects.columns, self.args.output_names)
            except ValueError as error:
                raise self.error(f"--output-names: {error}") from None
            self.names_checked = True
        # the digest first: a part is finished when it exists, with its digest beside it
        _write_atomically(os.path.join(self.parts, _windows_name(inputs.chunk)),
            f"{inputs.digest}\n".encode("utf-8"))
        self.digests.add(inputs.chunk)
        _write_atomically(os.path.join(self.parts, _part_name(inputs.chunk)),
            effects_tsv(effects).encode("utf-8"))
        return len(inputs.part)

    def assemble(self):
        from jablate._core.io import AtomicFiles

        args = self.args
        paths = [os.path.join(self.parts, _part_name(c)) for c in range(self.chunks)]
        outputs = {name: os.path.join(args.out, name) for name in ("effects.tsv",
            "summary.tsv", "skipped.tsv")}
        if args.plot != "none":
            outputs["plot"] = os.path.join(args.out, f"effects.{args.plot}")
        with AtomicFiles() as files:
            handles = {key: files.open(path) for key, path in outputs.items()}
            for index, path in enumerate(paths):
                with open(path, "rb") as part:
                    header = part.readline()
                    if index == 0:
                        handles["effects.tsv"].write(header)
                    while block := part.read(1 << 20):
                        handles["effects.tsv"].write(block)
            effects = _read_effects(paths)
            self.check_finite(effects)
            unchanged = int((effects["arrangements"] <= 1).sum())
            if unchanged:
                self.say(f"{unchanged} hit{'s' if unchanged != 1 else ''} cannot be "
                    f"changed by the {args.shuffle} shuffle "
                    "(arrangements = 1 in effects.tsv: homopolymers, all-N stretches...): "
                    "every shuffle equals the original, so their drop is 0 and z is nan")
            handles["summary.tsv"].write(effects_tsv(summarise_effects(effects)).encode())
            handles["skipped.tsv"].write(effects_tsv(self.skipped).encode())
            if "plot" in handles:
                try:
                    plot_effects(effects, handles["plot"], args.plot,
                        output_names=args.output_names)
                except ValueError as error:
                    raise self.error(f"--output-names: {error}") from None
        for name in os.listdir(self.parts):  # temporaries of killed runs
            if name.startswith(".chunk-"):
                os.unlink(os.path.join(self.parts, name))
        ours = tuple(f".{os.path.basename(p)}." for p in outputs.values())
        for name in os.listdir(args.out):  # a killed assembly's temporaries
            if name.startswith(ours) and name.endswith(".part"):
                os.unlink(os.path.join(args.out, name))
        self.say(f"wrote {outputs['effects.tsv']} ({len(effects)} rows), "
            + ", ".join(os.path.basename(p) for k, p in outputs.items() if k != "effects.tsv")
            + (f"; {len(self.skipped)} hits skipped" if len(self.skipped) else ""))


    def check_finite(self, effects):
        """Refuse a table in which no prediction before shuffling is finite (the model's
        output is NaN or inf for every window: a wrong --window, say); say how many rows
        are not finite otherwise."""
        before = [c for c in effects.columns if c == "before" or c.endswith("_before")]
        if not before or len(effects) == 0:
            return
        refuse_not_finite(effects[before].to_numpy(), self.args.model, "window", "effect",
            "rows of effects.tsv (a column ending in 'before')", "their effects are NaN",
            f"are windows of {self.width} bp the input length the model expects?")


class _Chunk(NamedTuple):
    """One chunk's inputs: its number, hits, windows, annotations, arrangements and the
    windows' digest."""

    chunk: int
    part: pandas.DataFrame
    X: numpy.ndarray
    annotations: numpy.ndarray
    counts: numpy.ndarray
    digest: str


def run_hits(args: argparse.Namespace) -> int:
    """Run ``jablate hits``.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed options of ``jablate hits`` (see ``jablate hits --help``).

    Returns
    -------
    status : int
        0; errors are raised (:class:`jablate.InputError` for bad input, exit status 2).
    """

    distributed = getattr(args, "distributed", None)
    if distributed is not None:
        if args.shard is not None:
            raise InputError("--distributed splits the chunks between its processes; "
                             "drop --shard")
        args.shard = _join(distributed)
    run = _Run(args)
    run.read_inputs()
    done = run.finished_chunks()
    run.finished_before = bool(done)
    shard = args.shard  # a shard reuses (and checks) only its own chunks
    run.check_windows(done if shard is None else {c for c in done if c % shard[1] == shard[0]})
    run.load_model()
    created = [path for path in (args.out, run.parts, os.path.join(run.parts,
        SETTINGS_FILE)) if not os.path.exists(path)]
    try:
        if distributed is None:
            return _work(run, args, done)
        with engine.processes_apart():  # each process runs its own chunks, locally
            _work(run, args, done, assemble=False)
        return _assemble_when_all_finished(run, args)
    except BaseException:
        _remove_if_no_parts(run.parts, created, run.chunks, run.digests)
        raise


def _remove_if_no_parts(parts, created, chunks, digests=()):
    """After a failure, remove what this run created (settings.json, the folders) when no
    finished chunk is there to resume from; first the windows' digests it wrote whose part
    is missing (another shard's, being written, are not touched)."""

    names = set(os.listdir(parts)) if os.path.isdir(parts) else set()
    if names & {_part_name(c) for c in range(chunks)}:
        return
    for chunk in digests:  # a digest written just before its part failed
        if not os.path.exists(os.path.join(parts, _part_name(chunk))):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(parts, _windows_name(chunk)))
    for path in reversed(created):  # the settings, then parts/, then --out
        try:
            os.unlink(path) if path.endswith(SETTINGS_FILE) else os.rmdir(path)
        except OSError:  # another shard's files, or already gone
            pass


def _join(distributed) -> tuple:
    """Join the ``jax.distributed`` job ``--distributed`` names; this process's shard
    ``(I, K)``."""
    import jax

    # before anything starts a backend (jax.distributed's rule); the CPU's collectives
    # (this job's barriers, when it runs on CPUs) through gloo; GPUs ignore the setting
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if distributed == "auto":
        jax.distributed.initialize()
    else:
        address, count, index = distributed
        jax.distributed.initialize(address, count, index)
    return jax.process_index(), jax.process_count()


def _assemble_when_all_finished(run, args) -> int:
    """Wait for every process of the job (a barrier of ``jax.distributed``); each process
    then checks the windows of the next process's chunks against the genome it reads
    (:meth:`_Run.check_windows`: processes on several hosts may read different copies of
    ``--genome``), and when all agree process 0 assembles the table; the others say that it
    does. A disagreement anywhere, or any failure of a check, is an error in every process
    (each reaches the job's collective first), and no table is written.

    Raises
    ------
    InputError
        When a process's chunks were computed from other bases than its neighbour reads.
    """
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("jablate hits: every chunk written")
    index, count = args.shard
    neighbour = (index + 1) % count
    problem = None
    try:
        if count > 1:
            run.check_windows({c for c in range(run.chunks) if c % count == neighbour})
    except Exception as error:  # noqa: BLE001 - every process must reach the collective
        problem = error
    failed = numpy.asarray(multihost_utils.process_allgather(numpy.int32(problem is not None)))
    if isinstance(problem, InputError):
        raise InputError(f"process {neighbour}'s chunks: {problem}") from None
    if problem is not None:
        raise problem
    if failed.any():
        raise InputError(f"process {int(numpy.flatnonzero(failed)[0])}'s check of the next "
                         "process's chunks against --genome failed (see its message); no "
                         "table written")
    if index == 0:
        run.assemble()
    else:
        run.say(f"process {index} of {count} done; process 0 assembles {args.out}/effects.tsv")
    multihost_utils.sync_global_devices("jablate hits: assembled")
    return 0


def _work(run, args, done, assemble=True):
    run.write_settings()
    shard = args.shard
    mine = [c for c in range(run.chunks) if shard is None or c % shard[1] == shard[0]]
    todo = [c for c in mine if c not in done]
    size = args.chunk_size
    rows = lambda chunks: sum(min(size, len(run.mapped) - c * size) for c in chunks)
    if len(mine) > len(todo):
        run.say(f"reusing {len(mine) - len(todo)} finished chunks in {run.parts}")
    run.compute(todo, rows(mine) - rows(todo), rows(mine))
    if not assemble:
        return 0
    if shard is not None:
        left = run.chunks - len(set(os.listdir(run.parts)) & {_part_name(c) for c in
            range(run.chunks)})
        run.say(f"shard {shard[0]}/{shard[1]} done ({counted(len(todo), 'chunk')} computed, "
            f"{len(mine) - len(todo)} reused); {left} of {counted(run.chunks, 'chunk')} still "
            "missing"
            f"; run again without --shard (with --resume) to assemble {args.out}/effects.tsv")
        return 0
    run.assemble()
    return 0


# --- files ----------------------------------------------------------------------------------


def _digest(path):
    try:
        return file_digest(path)
    except OSError as error:  # already read once, so this is rare
        raise InputError(f"cannot read '{path}': {error.strerror or error}") from None


def _difference(key, theirs, ours):
    if key in _DIGESTS:
        return f"{_OPTIONS[key]} differs"
    return f"{_OPTIONS[key]}: {json.dumps(theirs)} there, {json.dumps(ours)} here"


def _load_settings(path, error):
    try:
        with open(path, encoding="utf-8") as handle:
            settings = json.load(handle)
    except (OSError, ValueError) as problem:
        raise error(f"cannot read '{path}': {problem}") from None
    if not isinstance(settings, dict):
        raise error(f"cannot read '{path}': not a JSON object")
    return settings


def _temporary(directory, name):
    descriptor, path = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".part")
    os.close(descriptor)
    os.chmod(path, new_file_mode())  # mkstemp makes it 0600; outputs are all one mode
    return path


def _write_atomically(path, data):
    directory, name = os.path.split(path)
    temporary = _temporary(directory, name)
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _read_effects(paths):
    """The assembled effects, for the summary, the plot and the check that some outputs are
    finite (only the columns they use)."""

    header = open(paths[0], encoding="utf-8").readline().rstrip("\n").split("\t")
    measures = measure_columns(header)
    wanted = [c for c in ("hit", "name", "arrangements") if c in header] + measures + [
        c for c in header if (c == "before" or c.endswith("_before")) and c not in measures]
    frames = [pandas.read_csv(path, sep="\t", usecols=wanted, dtype={"name": str},
        keep_default_na=False) for path in paths]
    effects = pandas.concat(frames, ignore_index=True)
    for column in wanted:
        if column == "hit":
            effects[column] = pandas.to_numeric(effects[column])
        elif column != "name":  # measures: 'nan' (and 'inf') are ordinary values
            effects[column] = effects[column].astype(numpy.float64)
    return effects
