"""The ``jablate`` command line.

    jablate [--version] [--debug] COMMAND
    jablate demo [--plot jablate-demo.png]
    jablate ablate --model SPEC --fasta seqs.fa --regions regions.bed [options]
    jablate hits --model SPEC --genome hg38.fa --peaks peaks.narrowPeak --hits hits.tsv
                 --out DIR [options]

``main(argv)`` returns the exit status: 0 on success, 2 for bad usage or input, 1 when the
model fails while it runs (or on an unexpected error), 130 when interrupted (143 on SIGTERM,
129 on SIGHUP). Every error is
one line on stderr, ``jablate: error: ...``; ``--debug`` prints the traceback before it.
Output files are written to temporary files beside their final names and moved into place
only when everything succeeded.
"""

import argparse
import contextlib
import os
import re
import signal
import sys
import threading
import traceback
import warnings
from typing import Any, Optional

import numpy

from jablate import __version__
from jablate._core import interrupts
from jablate._core.caches import COMPILE_CACHE_ENV
from jablate._core.dtypes import dtype_kind
from jablate._core.errors import (
    InputError,
    ModelFailure,
    counted,
    length_question,
    one_line,
    out_of_memory,
    outside_stacklevel,
    refuse_not_finite,
)
from jablate._core.io import (
    STDIN,
    AtomicFiles,
    format_table,
    note_unusual_letters,
    one_hot_encode,
    output_paths,
    plot_format,
    read_fasta,
    read_regions,
)
from jablate.api import effects
from jablate.api.loading import (
    INCREMENTAL,
    RunOptions,
    check_device,
    load_model,
    model_kind,
    run_annotations,
)
from jablate.api.sums import DEVICE_SUMS, compensation_holds, trusted

__all__ = ["main", "build_parser", "load_model", "summarise", "summarise_sums"]

_SEED_LIMIT = 2**32 - 1
_DINUCLEOTIDE_MIN_WIDTH = 3  # jablate.dinucleotide_shuffle's shortest region
_PLOT_PANELS = 12  # --plot's most panels (--per-task: the tasks with the largest drops)

TABLE_HELP = """\
output table (--table FILE, or standard output without it), one row per region:
  name            the region's 4th column in --regions, else 'sequence:start-end'
  sequence        the FASTA record it lies on
  start, end      0-based, end exclusive, as in --regions
  mean_before     the model's prediction for the unshuffled sequence
  mean_after      the mean prediction over the --n shuffles of the region
  mean_drop       mean_before - mean_after
  z_score         mean_drop / sd, where sd is the standard deviation of the n
                  shuffled predictions (ddof=1, the sample sd). nan, never
                  +-inf, where it means nothing: n is 1; the shuffle cannot
                  change the region (a homopolymer, an all-N stretch; ACAC
                  under --shuffle dinucleotide), where mean_drop is then
                  exactly 0; or sd is below float resolution, sd < 16 * eps *
                  scale (eps the outputs' machine epsilon, 2^-23 for float32;
                  scale the largest |prediction| of the region, before or
                  after). 'jablate demo' uses the same z-score per sequence.
  An output with more than one value per sequence (a profile, several tasks)
  is summed over its non-batch axes before anything else, and its columns
  start with 'sum_' (sum_mean_before ...); without --out the sums are taken
  where the model runs, compensated (as exact as float64 sums of the values).
  With --per-task, every output of shape (batch, T) gets a group of columns
  per task T = 0, 1, ..., prefixed 'taskT_' (task0_mean_drop ...), instead of
  its sum (a profile of shape (batch, L) is split so too, into L groups);
  outputs with more axes (BPNet's profile, (batch, 2, L)) are still summed.
  A model with several outputs gets
  one group of columns per output H = 0, 1, ..., prefixed 'outH_'
  (out0_mean_drop, out1_sum_z_score, out0_task2_z_score ...).
  A --table name ending in .csv gives comma-separated values (quoted where
  needed); any other name, and standard output, tab-separated values.

--out FILE.npz holds, for k regions and n shuffles:
  y_befores       (k, 1, ...) the model's output before, per region
  y_afters        (k, 1, n, ...) its output after each shuffle
  y_befores_H, y_afters_H
                  the same for output H of a model with several outputs
                  (instead of y_befores and y_afters)
  names, sequences, starts, ends
                  (k,) the regions, as in the table
  annotations     (k, 3) rows (FASTA record index, start, end), as passed
                  to jablate.ablate_annotations

--plot FILE draws mean_drop per region with +- sd over the shuffles, a panel
per group of columns (with --per-task, the 12 tasks with the largest
|mean_drop| when there are more); the format follows the extension: .png,
.pdf or .svg.

exit status: 0 success; 2 bad usage or input; 1 the model failed while it
ran (one line naming the model and the cause; --debug for the traceback);
130 interrupted by Ctrl-C (143 by SIGTERM, 129 by SIGHUP). No partial output
file is ever left behind.
"""




#: The environment every command reads (the end of each command's --help).
ENVIRONMENT_HELP = """
environment:
  JABLATE_COMPILE_CACHE
                  where compiled programs are kept between runs, so that a
                  second run of the same model, shapes and options compiles
                  again only what calls back into Python (a torch model run
                  in torch); default ~/.cache/jablate/xla, or
                  $XDG_CACHE_HOME/jablate/xla, a subdirectory per kind of CPU;
                  not bounded: delete it any time. 'off' compiles afresh every
                  run. Results do not depend on it. JAX_COMPILATION_CACHE_DIR,
                  when set, is used instead, with JAX's own settings.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line instead of argparse's usage block.
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``jablate`` command.

    Returns
    -------
    parser : argparse.ArgumentParser
        With the subcommands ``demo``, ``ablate`` and ``hits``; each sets ``args.command``.
    """

    parser = _Parser(prog="jablate", description="In-silico ablation for genomics "
        "deep-learning models, on JAX.", epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"jablate {__version__}")
    _add_debug(parser, False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser("demo", help="ablate a planted GATA motif with a small "
        "built-in model (no downloads, seconds)", description="Plant GATAAG into random "
        "sequences, ablate it and a control region with the built-in demo model, print "
        "a table and write a plot. The z-score is that of 'jablate ablate' (see its "
        "--help), computed per sequence; the table shows its median over the sequences.",
        epilog=ENVIRONMENT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--plot", metavar="FILE", default="jablate-demo.png",
        help="plot of predictions before vs after; .png, .pdf or .svg (default: "
        "%(default)s)")
    demo.add_argument("--n", type=_positive_int, default=20,
        help="shuffles per region (default: %(default)s)")
    demo.add_argument("--seed", type=_seed, default=0,
        help="random seed of the shuffles (default: %(default)s)")
    _add_debug(demo, argparse.SUPPRESS)

    ablate = commands.add_parser("ablate", help="ablate regions of FASTA sequences "
        "with your model", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Shuffle each region N times and compare the model's predictions\n"
        "before and after (jablate.ablate_annotations). Without --table, the table\n"
        "is printed on standard output.", epilog=TABLE_HELP + ENVIRONMENT_HELP)
    ablate.add_argument("--model", required=True, metavar="SPEC",
        help="'package.module:attribute' (or 'path/to/file.py:attribute') naming a "
        "torch.nn.Module, a function returning one, a bound flax module or a JAX "
        "function; or a torch.export program (.pt2). A class is refused: name an "
        "instance, or a function that returns one. The module is imported with the "
        "current directory on sys.path.")
    ablate.add_argument("--fasta", required=True, metavar="FILE",
        help="sequences, all of one length; may be gzip-compressed (.fa.gz, bgzip); '-' "
        "reads standard input")
    ablate.add_argument("--regions", required=True, metavar="FILE",
        help="tab-separated 'sequence start end [name]' lines, 0-based, end exclusive "
        "(BED), after an optional header line; may be gzip-compressed; '-' reads "
        "standard input")
    _add_run_options(ablate, "region",
        "random seed; the same seed gives the same results (default: %(default)s)")
    ablate.add_argument("--out", metavar="FILE.npz",
        help="all predictions before and after, and the regions")
    ablate.add_argument("--table", metavar="FILE.tsv", help="one row per region (see "
        "below); FILE.csv for comma-separated values")
    ablate.add_argument("--plot", metavar="FILE.png", help="drops per region; .png, .pdf "
        "or .svg")
    ablate.add_argument("--per-task", action="store_true",
        help="columns for each task of an output of shape (batch, T) (a multi-task "
        "classifier), as 'jablate hits' writes them, instead of their sum; every such "
        "output is split, a (batch, L) profile into L column groups too")
    ablate.add_argument("--quiet", action="store_true", help="no progress bar")
    ablate.add_argument("--verbose", action="store_true",
        help="print the incremental engine's analysis of the model (jablate.incremental_report)"
        " on stderr before the run")
    _add_debug(ablate, argparse.SUPPRESS)
    _add_hits(commands)
    _add_attribute(commands)
    return parser


ATTRIBUTE_HELP = """
output files:
  --out FILE.npz  arr_0        (N, 4, L) hypothetical attributions: every base at
                               every position (what 'modisco motifs -a' reads)
                  attributions (N, 4, L) arr_0 times the one-hot sequences: the
                               observed bases' contributions
                  names        (N,) the FASTA record names
  --sequences FILE.npz
                  arr_0        (N, 4, L) the one-hot sequences, channels A, C, G, T
                               (what 'modisco motifs -s' reads); names
  --plot FILE     logos of the observed bases' contributions, for the 4 sequences
                  with the largest total |attribution|, each over 100 positions
                  about its strongest one; .png, .pdf or .svg

--method deep_lift_shap is jablate.deep_lift_shap (DeepLIFT with SHAP's
references: --n-shuffles dinucleotide shuffles of each sequence, drawn from
--seed); --method ism is jablate.saturation_mutagenesis (every substitution
at every position; the change of the output minus its mean over the four
bases). A torch model is translated to JAX for both. The model must return
(batch, T) for the output explained (a (batch,) output is taken as T = 1);
--output picks one output of a model that returns several (BPNet's
(profile, counts): --output 1 explains the counts; --output 0 --profile the
profile, as bpnet-lite's ProfileWrapper does).

exit status: 0 success; 2 bad usage or input; 1 the model failed while it
ran; 130 interrupted by Ctrl-C (143 by SIGTERM, 129 by SIGHUP). No partial
output file is ever left behind.
"""


def _add_attribute(commands):
    from jablate.attribution.command import METHOD_NAMES

    attribute = commands.add_parser("attribute", help="attributions of FASTA sequences "
        "(DeepLIFT/SHAP or ISM), for TF-MoDISco", formatter_class=argparse.
        RawDescriptionHelpFormatter, description="Explain one output of the model for "
        "each sequence: how much each base\ncontributes (jablate.deep_lift_shap or "
        "jablate.saturation_mutagenesis),\nwritten as TF-MoDISco reads them.",
        epilog=ATTRIBUTE_HELP + ENVIRONMENT_HELP)
    attribute.add_argument("--model", required=True, metavar="SPEC",
        help="as for 'jablate ablate': 'package.module:attribute', "
        "'path/to/file.py:attribute' or a .pt2 program")
    attribute.add_argument("--fasta", required=True, metavar="FILE",
        help="sequences, all of one length; may be gzip-compressed (.fa.gz, bgzip); '-' "
        "reads standard input")
    attribute.add_argument("--out", required=True, metavar="FILE.npz",
        help="the attributions (see below)")
    attribute.add_argument("--sequences", metavar="FILE.npz",
        help="the one-hot sequences, for 'modisco motifs -s'")
    attribute.add_argument("--plot", metavar="FILE.png", help="logos of the strongest "
        "contributions; .png, .pdf or .svg")
    attribute.add_argument("--method", choices=METHOD_NAMES, default="deep_lift_shap",
        help="DeepLIFT/SHAP or in-silico saturation mutagenesis (default: %(default)s)")
    attribute.add_argument("--output", type=_index, metavar="I",
        help="which output to explain, for a model that returns several (0-based)")
    attribute.add_argument("--target", type=_index, default=0, metavar="T",
        help="which task of that output, its column (default: %(default)s)")
    attribute.add_argument("--profile", action="store_true", help="the output is a "
        "profile (BPNet's (strands, positions) logits): explain it as bpnet-lite's "
        "ProfileWrapper does, the sum of its mean-centred logits times their softmax, "
        "the product attributed as bpnet-lite attributes it")
    attribute.add_argument("--n-shuffles", type=_positive_int, metavar="N",
        help="references per sequence, for deep_lift_shap (default: 20)")
    attribute.add_argument("--seed", type=_seed,
        help="random seed of the references, for deep_lift_shap (default: 0)")
    attribute.add_argument("--batch-size", type=_positive_int, default=32,
        help="sequence-reference pairs (deep_lift_shap) or edited sequences (ism) per "
        "model call (default: %(default)s)")
    attribute.add_argument("--device", help="the JAX device to run on (cpu, cuda, "
        "cuda:1, ...; default: JAX's default device)")
    attribute.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_debug(attribute, argparse.SUPPRESS)


def _add_run_options(parser, unit, seed_help):
    """The options of a run that ``jablate ablate`` and ``jablate hits`` share; each
    becomes a keyword of :func:`jablate.ablate_annotations` in :func:`_run`."""

    parser.add_argument("--n", type=_positive_int, default=20,
        help=f"shuffles per {unit} (default: %(default)s)")
    parser.add_argument("--shuffle", choices=("mono", "dinucleotide"), default="mono",
        help="shuffle that keeps mono- or dinucleotide counts (default: %(default)s)")
    parser.add_argument("--seed", type=_seed, default=0, help=seed_help)
    parser.add_argument("--batch-size", type=_positive_int, default=64,
        help="sequences per model call (default: %(default)s)")
    parser.add_argument("--device", help="device for a torch model (cpu, cuda, "
        "cuda:1, ...); for a JAX model, the accelerator to run on")
    parser.add_argument("--translate", action="store_true",
        help="translate a torch model to JAX instead of bridging it (backend='jax')")
    parser.add_argument("--incremental", choices=tuple(INCREMENTAL), default="auto",
        help="compute only what a shuffle can change (JAX or --translate'd models): 'on' "
        "always (exit 2 where it cannot), 'auto' where the backend's cost model predicts it "
        "is faster, cold only for runs of at least 2,048 shuffled items (default: "
        "%(default)s)")




def _add_hits(commands):
    from jablate.genome.hits import EFFECTS_HELP
    from jablate.genome.run import DEFAULT_CHUNK_SIZE

    hits = commands.add_parser("hits", help="ablate every motif hit in the peaks of a "
        "genome: a table of effects, resumable", formatter_class=argparse.
        RawDescriptionHelpFormatter, description="One window of the model's input length "
        "per peak (centred on the\nnarrowPeak summit, else the midpoint; windows that run "
        "off their\nchromosome are skipped); each motif hit inside a window is shuffled "
        "--n\ntimes (jablate.ablate_annotations) and its effect on every model\noutput "
        "is written to DIR/effects.tsv, with DIR/summary.tsv, DIR/skipped.tsv\nand a "
        "plot. Work is saved in chunks under DIR/parts: a killed run\ncontinues with "
        "--resume, and --shard I/K splits it over cluster jobs.", epilog=EFFECTS_HELP +
        _HITS_EPILOG + ENVIRONMENT_HELP)
    hits.add_argument("--model", required=True, metavar="SPEC",
        help="as for 'jablate ablate': 'package.module:attribute' or a .pt2 program")
    hits.add_argument("--genome", required=True, metavar="FASTA",
        help="the genome, plain or bgzip-compressed (.fa.gz from bgzip, not gzip); a "
        ".fai index is written beside it when missing")
    hits.add_argument("--peaks", required=True, metavar="FILE",
        help="narrowPeak (summit in column 10) or BED, with or without a header line; "
        "may be gzip-compressed")
    hits.add_argument("--hits", required=True, metavar="FILE",
        help="motif hits: BED, Fi-NeMo hits.tsv, FIMO TSV (1-based), or a table with "
        "chrom, start, end[, name, strand, peak] columns; recognised by its first line")
    hits.add_argument("--fimo-intervals", choices=("bedtools", "samtools"),
        default=None, help="how a FIMO sequence_name such as chr1:4751-5250 (FIMO "
        "run on extracted sequences) counts: 'bedtools' getfasta's 0-based start, end "
        "exclusive, or 'samtools' faidx's (and R GRanges') 1-based start, end inclusive "
        "(default: bedtools where FIMO's matched_sequence column lets it be checked "
        "against the genome; without that column it must be given)")
    hits.add_argument("--skip-missing-chromosomes", action="store_true",
        help="skip peaks and hits on chromosomes the genome lacks (chrM, alt or EBV "
        "contigs of another assembly's files), listing the hits in skipped.tsv; without "
        "it such a chromosome is an error")
    hits.add_argument("--out", required=True, metavar="DIR",
        help="the output directory (created when missing)")
    hits.add_argument("--window", type=_positive_int, metavar="W",
        help="the model's input length (2114 for BPNet); required unless a .pt2 "
        "--model has a static input shape")
    _add_run_options(hits, "hit", "random seed; under --shuffle mono every hit is shuffled "
        "as tangermeme's ablate(..., random_state=SEED) would shuffle it alone; --shuffle "
        "dinucleotide draws jablate's own uniform dinucleotide shuffles, not tangermeme's "
        "(default: %(default)s)")
    hits.add_argument("--profile", choices=("logits", "probs"), default="logits",
        help="what profile outputs hold, for the Jensen-Shannon distance (default: "
        "%(default)s)")
    hits.add_argument("--plot", choices=("png", "pdf", "svg", "none"), default="png",
        help="format of DIR/effects.FORMAT, or none (default: %(default)s)")
    hits.add_argument("--output-names", metavar="NAMES", type=_names,
        help="comma-separated names of the model's outputs, in order, for the plot's "
        "axes: 'profile,log counts' for BPNet and ChromBPNet gives 'profile JSD' and "
        "'log counts drop' (default: 'output 0', 'output 1', ...; 'profile' for a "
        "profile output)")
    hits.add_argument("--resume", action="store_true",
        help="reuse the finished chunks in DIR/parts (made with the same settings)")
    hits.add_argument("--shard", type=_shard, metavar="I/K",
        help="compute only chunks c with c %% K == I (0 <= I < K), for job arrays; "
        "'slurm' takes I and K from a Slurm job array's variables (see below); a "
        "later run without --shard (with --resume) assembles the table")
    hits.add_argument("--distributed", metavar="ADDRESS,K,I", nargs="?", const="auto",
        type=_distributed,
        help="one job of K processes under jax.distributed (say, one per host or GPU): "
        "process I computes the chunks --shard I/K would, every process on its own local "
        "devices, and process 0 assembles the table when all have finished; ADDRESS is "
        "the coordinator's HOST:PORT. Without a value, JAX finds them in the job's "
        "environment (a Slurm, Open MPI, Kubernetes or TPU job)")
    hits.add_argument("--chunk-size", type=_positive_int, default=DEFAULT_CHUNK_SIZE,
        metavar="ROWS", help="(hit, window) rows per part file (default: %(default)s)")
    hits.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    _add_debug(hits, argparse.SUPPRESS)


_HITS_EPILOG = """
DIR/parts/ holds one file per finished chunk and settings.json, what the
results depend on (model, inputs' contents, --window, --n, --shuffle, --seed,
--profile, --translate, --chunk-size, --fimo-intervals). A run refuses parts
made with other settings, and parts of this run without --resume (or
--shard). --batch-size, --device and --incremental may change between resumed
runs: the shuffles are the same, and the chunks computed with other batches (or
on another device) agree with the others to float32 rounding, not byte for
byte. Shards share DIR (one filesystem); index a genome once (samtools faidx,
or any run) before starting shards that read it at the same time.

A Slurm job array needs no arithmetic: --shard slurm reads
SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN, SLURM_ARRAY_TASK_COUNT and
SLURM_ARRAY_TASK_STEP, so that task t of --array=MIN-MAX:STEP computes shard
(t - MIN) / STEP of COUNT:
  sbatch --array=0-31 --wrap "jablate hits ... --out DIR --shard slurm"
  jablate hits ... --out DIR --resume      # afterwards: assembles DIR/effects.tsv

exit status: 0 success; 2 bad usage or input (one line naming the file, line
and cause; nothing written); 1 the model failed while it ran (finished chunks
are kept for --resume); 130 interrupted by Ctrl-C, 143 by SIGTERM (a batch
system's time limit), 129 by SIGHUP (finished chunks are kept for --resume).
"""


_SLURM = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_STEP")


def _slurm_shard():
    """``(I, K)`` of this Slurm array task, from the variables Slurm sets."""

    values = {}
    for name in _SLURM:
        text = os.environ.get(name)
        if text is None and name in ("SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP"):
            text = "0" if name.endswith("MIN") else "1"
        if text is None:
            raise argparse.ArgumentTypeError(f"'slurm': {name} is not set (is this a task "
                "of a Slurm job array, sbatch --array=...?)")
        try:
            values[name] = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'slurm': {name}='{text}' is not an "
                "integer") from None
    task, low, count, step = (values[name] for name in _SLURM)
    if step < 1 or (task - low) % step or not 0 <= (task - low) // step < count:
        raise argparse.ArgumentTypeError(f"'slurm': task {task} is not one of the {count} "
            f"tasks {low}, {low + step}, ... (SLURM_ARRAY_TASK_MIN={low}, "
            f"SLURM_ARRAY_TASK_STEP={step})")
    return (task - low) // step, count


def _distributed(text):
    """``--distributed``: 'auto', or 'HOST:PORT,K,I' -> (address, K, I)."""
    if text == "auto":
        return "auto"
    parts = text.split(",")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit() \
            or ":" not in parts[0]:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT,K,I (say 10.0.0.1:1234,4,0); "
                                         f"got '{text}'")
    count, index = int(parts[1]), int(parts[2])
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"expected 0 <= I < K; got I={index}, K={count}")
    return parts[0], count, index


def _shard(text):
    if text.strip().lower() == "slurm":
        return _slurm_shard()
    index, slash, count = text.partition("/")
    try:
        index, count = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not I/K (e.g. 0/4)") from None
    if not slash or count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"'{text}': expected I/K with 0 <= I < K")
    return index, count


def _names(text):
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"'{text}' holds an empty name (expected "
            "NAME,NAME,...)")
    return names


def _add_debug(parser, default):
    # Accepted before and after the subcommand; a subcommand's default must not
    # overwrite what the main parser saw, hence SUPPRESS there.
    parser.add_argument("--debug", action="store_true", default=default,
        help="print the traceback of an error")


def _int_option(minimum, maximum=None):
    """An argparse type: an integer of at least ``minimum`` (and at most ``maximum``)."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
        if maximum is not None and not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be between {minimum} and {maximum}, got "
                f"{value}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_option(1)
_index = _int_option(0)
_seed = _int_option(0, _SEED_LIMIT)


def main(argv: Optional[list] = None) -> int:
    """Run the ``jablate`` command line.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name. Default ``sys.argv[1:]``.

    Returns
    -------
    status : int
        0 on success (``--help`` and ``--version`` included); 2 for bad usage or input
        (options, files, a model that cannot be loaded, or jablate's own checks of the
        input); 1 when the model raised while it ran, or on an unexpected error; 130 when
        interrupted by Ctrl-C, 143 by SIGTERM, 129 by SIGHUP (where no one else
        handles those). Errors are one line on stderr; with ``--debug`` the
        traceback comes first.
    """

    parser = build_parser()
    try:
        with _watching_interrupts() as interrupted:
            return _main(parser, argv, interrupted)
    finally:
        _remove_unreadable_entries()


def _remove_unreadable_entries():
    """Delete the compile cache entries JAX could not read in this run (see
    :func:`jablate._core.caches.remove_unreadable_entries`)."""

    from jablate._core.caches import remove_unreadable_entries

    while _UNREADABLE:
        directory, modules = _UNREADABLE.popitem()
        try:
            remove_unreadable_entries(directory, modules - {""})
        except BaseException:  # a cache's upkeep never changes how the command ended
            pass


def _main(parser, argv, interrupted):
    args = None
    try:
        try:
            args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
        except SystemExit as exit:  # --help, --version, or a usage error already reported
            return exit.code
        if extra:  # said by the subcommand, whose --help lists its options
            prog = f"{parser.prog} {args.command}" if args.command else parser.prog
            print(f"{prog}: error: unrecognized arguments: {' '.join(extra)} (see "
                  f"'{prog} --help')", file=sys.stderr)
            return 2
        if args.command is None:
            parser.print_help()
            return 0
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line(getattr(args, "quiet", False))
            _use_compile_cache()
            return _COMMANDS[args.command](args)
    except BrokenPipeError:
        # stdout was closed early (e.g. `jablate ablate ... | head`).
        sys.stdout = open(os.devnull, "w")
        return 1
    except KeyboardInterrupt:
        return _interrupted(args)
    except Exception as error:
        if interrupted():
            # Ctrl-C inside a model call can surface as another exception.
            return _interrupted(args)
        status, message = _report(error, args)
        if getattr(args, "debug", False):
            traceback.print_exception(error)
        print(f"jablate: error: {message}", file=sys.stderr)
        return status


def _warning_line(quiet):
    """``warnings.showwarning`` for the command line: one ``jablate:`` line per warning, no
    source line; with ``--quiet`` nothing for jablate's notes on regions that cannot
    change (the tables say so with nan)."""

    from jablate.api.ersatz import UnchangedRegionWarning

    said = set()

    def show(message, category, filename, lineno, file=None, line=None):
        if quiet and issubclass(category, UnchangedRegionWarning):
            return
        text = one_line(message)
        if text.startswith(_CACHE_ERRORS):  # JAX warns per program: once per cause
            cause = re.sub(r" for '[^']*'", "", text)
            if cause in said:
                return
            said.add(cause)
            text += _cache_remedy(text)
        print(f"jablate: warning: {text}", file=sys.stderr)

    return show


#: Compile cache directories with entries JAX could not read in this run, and the
#: programs JAX named.
_UNREADABLE: dict = {}
#: The compile cache directories this process chose itself (not a user's JAX's).
_OURS: set = set()

#: How JAX's warnings about its persistent compilation cache begin.
_CACHE_ERRORS = ("Error reading persistent compilation cache",
                 "Error writing persistent compilation cache")


def _cache_remedy(text):
    """What to do about a warning of JAX's on its compilation cache."""

    import jax

    where = jax.config.jax_compilation_cache_dir
    if text.startswith(_CACHE_ERRORS[0]):  # JAX never replaces an entry it cannot read
        if where not in _OURS:
            return (f" (the compile cache {where}, JAX_COMPILATION_CACHE_DIR's, holds an "
                    "entry JAX cannot read, as a run killed while writing it leaves: "
                    "delete it, or the directory)")
        module = re.search(r"entry for '([^']*)'", text)
        _UNREADABLE.setdefault(where, set()).add(module.group(1) if module else "")
        return (f" (the compile cache {where} holds an entry JAX cannot read, as a run "
                "killed while writing it leaves: jablate deletes the entries it finds cut "
                "short when this run ends; should this come again, delete the directory, "
                f"or set {COMPILE_CACHE_ENV}=off)")
    return f" (the compile cache {where}; {COMPILE_CACHE_ENV}=off does without it)"


def _use_compile_cache():
    """Keep compiled programs between runs (``$JABLATE_COMPILE_CACHE``; see the epilog);
    a directory that cannot be used is one warning line, and the run goes on."""

    import jax

    from jablate._core.caches import compile_cache_from_env

    users = jax.config.jax_compilation_cache_dir
    directory, why = compile_cache_from_env()
    if directory and not users:
        _OURS.add(directory)
    if why:
        warnings.warn(why, stacklevel=1)


def _interrupted(args):
    """Say what an interrupted command leaves; its status, 128 + the signal's number (130
    for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP)."""

    number = interrupts.signal_number()
    name = "" if number == signal.SIGINT else f" ({signal.Signals(number).name})"
    print(f"jablate: interrupted{name}; {_kept(args)}", file=sys.stderr)
    return 128 + number


def _kept(args):
    """What an interrupted command leaves: nothing, or the finished chunks of ``hits``."""

    return _kept_chunks(args) or "no output written"


def _kept_chunks(args):
    """``hits``' finished chunks, said for ``--resume``; ``""`` when there are none."""

    if getattr(args, "command", None) == "hits":
        parts = os.path.join(args.out, "parts")
        names = os.listdir(parts) if os.path.isdir(parts) else []
        chunks = sum(name.startswith("chunk-") and name.endswith(".tsv") for name in names)
        if chunks:
            return (f"{counted(chunks, 'finished chunk')} {'is' if chunks == 1 else 'are'} "
                f"kept in {parts}: run the same command with --resume to continue")
    return ""


def _platform(args):
    """``'cpu'``, ``'gpu'`` or another JAX platform: where the run's JAX work computed."""
    device = (getattr(args, "device", None) or "").lower()
    if device:
        return "cpu" if device.startswith("cpu") else (
            "gpu" if device.startswith(("cuda", "gpu", "rocm")) else device.split(":")[0])
    import jax

    backend = jax.default_backend()
    return "gpu" if backend in ("cuda", "rocm") else backend


def _memory_hint(error, args):
    """What to change when the model's run ran out of memory (``""`` otherwise)."""
    kind = out_of_memory(error)
    batch = getattr(args, "batch_size", None)
    if not kind or batch is None:
        return ""
    platform = _platform(args)
    where = "host" if kind == "host" or (kind == "xla" and platform == "cpu") else "device"
    hint = (f"; out of {where} memory at --batch-size {batch}: a smaller --batch-size needs "
            "less and draws the same shuffles, its results equal to float32 rounding")
    if where == "device" and (kind == "device" or platform == "gpu"):
        # every jaxlib reads the older name; newer ones refuse both names set at once
        fraction = ("XLA_CLIENT_MEM_FRACTION" if os.environ.get("XLA_CLIENT_MEM_FRACTION")
                    else "XLA_PYTHON_CLIENT_MEM_FRACTION")
        hint += (" (JAX takes 75% of a GPU's memory when it starts; with a torch model on the "
                 f"same GPU, {fraction}=0.5 or XLA_PYTHON_CLIENT_PREALLOCATE=false leaves "
                 "torch more)")
    return hint


def _report(error, args=None):
    """The exit status and the one-line message for an exception that ended a command.

    A model that ran out of memory is told what to change (``--batch-size``; on a GPU
    shared with torch, JAX's share of its memory); a failed ``hits`` run says which of its
    chunks are kept for ``--resume`` (when it has any)."""

    if isinstance(error, ModelFailure):
        message = str(error) + _memory_hint(error.error, args)
        kept = _kept_chunks(args)
        return 1, message + (f"; {kept}" if kept else "")
    if isinstance(error, (InputError, ValueError, TypeError, OSError)):
        return 2, one_line(error)
    return 1, (f"unexpected {type(error).__name__}: {one_line(error)} (run again with "
        "--debug for the traceback)")


@contextlib.contextmanager
def _watching_interrupts():
    """Note SIGINT (still raising KeyboardInterrupt); yield a function saying if it came.

    Noted in :mod:`jablate._core.interrupts` too, so that an interrupt Python swallowed
    (raised inside a garbage-collection callback) is raised again at the next batch or
    before output files are committed."""

    interrupts.reset()  # a signal of an earlier command is not this one's
    if threading.current_thread() is not threading.main_thread():
        try:
            yield lambda: False
        finally:
            interrupts.reset()
        return

    def handler(number, frame):
        interrupts.note(number)
        raise KeyboardInterrupt

    # SIGINT where Python's own handler has it (not where the shell ignores it: `cmd &` in
    # a script, or where someone else handles it); SIGTERM (a batch system's time limit,
    # `kill`) and SIGHUP (a closed terminal) end a run as Ctrl-C does, with nothing
    # half-written left, where no one else handles them, whatever SIGINT's state (a run
    # started in the background of a script ignores SIGINT and still gets SIGTERM)
    ours = [signal.SIGINT] if signal.getsignal(signal.SIGINT) is signal.default_int_handler \
        else []
    others = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None))
              if s is not None and signal.getsignal(s) is signal.SIG_DFL]
    for number in ours + others:
        signal.signal(number, handler)
    try:
        yield interrupts.pending
    finally:
        for number in ours:
            signal.signal(number, signal.default_int_handler)
        for number in others:
            signal.signal(number, signal.SIG_DFL)
        interrupts.reset()


def _demo(args):
    from jablate.demo import run_demo

    run_demo(plot=args.plot, n=args.n, seed=args.seed)
    return 0


def _ablate(args):
    if args.fasta == STDIN and args.regions == STDIN:
        raise InputError("--fasta and --regions cannot both be standard input ('-')")
    names, sequences = read_fasta(args.fasta)
    note_unusual_letters(sequences, args.fasta)
    regions = read_regions(args.regions, {name: len(s) for name, s in
        zip(names, sequences)}, fasta_path=args.fasta)
    if args.shuffle == "dinucleotide":
        _check_dinucleotide_widths(regions, args.regions)
        _note_unknown_bases(regions, dict(zip(names, sequences)))
    X = one_hot_encode(sequences)
    index = {name: i for i, name in enumerate(names)}
    annotations = numpy.array([(index[r.sequence], r.start, r.end) for r in regions],
        dtype=numpy.int64)

    paths = output_paths(args, ("out", "table", "plot"), npz=("out",),
                         inputs=("fasta", "regions", "model"))
    plot = plot_format(args.plot) if args.plot is not None else None

    with AtomicFiles() as files, _asking_about_length(X.shape[-1]):
        handles = {option: files.open(path) for option, path in paths.items()}

        model = load_model(args.model)
        kind = model_kind(model)
        if args.verbose:
            _print_report(model, kind, X, annotations, args)
        options = RunOptions.from_args(args)
        changes = effects.changeable(options.shuffle_fn(), X, annotations)
        heads = None
        if "out" not in handles and not args.per_task and _sums_exact(kind, options):
            sums = run_annotations(model, X, annotations, options,
                additional_func_kwargs=dict(func=DEVICE_SUMS))
            if trusted(*sums):
                heads = summarise_sums(*sums, len(regions), args.n, changes)
            else:
                _warn_host_sums("some of the model's outputs are not finite, or too large "
                    "to sum in their dtype, or integers of 2**24 or more", " (the model "
                    "runs again)")
        if heads is None:
            y_befores, y_afters = run_annotations(model, X, annotations, options)
            heads = summarise(y_befores, y_afters, len(regions), args.n, changes,
                per_task=args.per_task)
        refuse_not_finite(numpy.stack([head["before"] for head in heads], axis=-1),
            args.model, "region", "drop", "regions", "their rows hold NaN or inf",
            length_question(X.shape[-1]))

        if "out" in handles:
            _write_npz(handles["out"], y_befores, y_afters, regions, annotations)
        table = format_table(*_table(regions, heads), path=args.table)
        if "table" in handles:
            handles["table"].write(table.encode("utf-8"))
        if "plot" in handles:
            _plot_drops(handles["plot"], regions, heads, args.n, plot)

    if "table" not in handles:
        sys.stdout.write(table)
        sys.stdout.flush()
    if not args.quiet:
        for option in handles:
            print(f"jablate: wrote {getattr(args, option)}", file=sys.stderr)
    return 0


def _hits(args):
    from jablate.genome import run as genome_run

    return genome_run.run_hits(args)


def _attribute(args):
    from jablate.attribution.command import run_attribute

    return run_attribute(args)


_COMMANDS = {"demo": _demo, "ablate": _ablate, "hits": _hits, "attribute": _attribute}


def _sums_exact(kind, options):
    """Whether the table may come from sums on the device (:class:`DeviceSums`): where the
    model runs keeps compensated summation exact. Otherwise every shuffle's output comes
    back and is summed here, with a warning."""
    framework = "torch" if kind == "torch" and not options.translate else "jax"
    if compensation_holds(check_device(kind, options.device, options.translate), framework):
        return True
    _warn_host_sums("compensated sums are not exact where the model runs")
    return False


def _warn_host_sums(why, again=""):
    warnings.warn(f"{why}: every shuffle's output is brought back and summed on the host"
        f"{again}", RuntimeWarning, stacklevel=outside_stacklevel())


@contextlib.contextmanager
def _asking_about_length(length):
    """A model failure that speaks of shapes (JAX's and torch's words) asks whether
    sequences of ``length`` are what the model takes."""

    try:
        yield
    except ModelFailure as error:
        asked = error.about_shapes(length_question(length))
        if asked is error:
            raise
        raise asked from error.error


def _note_unknown_bases(regions, sequences):
    """Say (a warning line) how many regions hold bases other than A, C, G, T, which the
    dinucleotide shuffle moves as a symbol of their own, where tangermeme's refuses them."""

    held = [r for r in regions
        if set(sequences[r.sequence][r.start:r.end].upper()) - set("ACGT")]
    if held:
        shown = ", ".join(r.name for r in held[:3]) + (", ..." if len(held) > 3 else "")
        warnings.warn(f"{counted(len(held), 'region')} of {len(regions)} ({shown}) "
            f"{'holds' if len(held) == 1 else 'hold'} unknown bases (N): --shuffle "
            "dinucleotide moves each as a symbol of its own (tangermeme's "
            "dinucleotide_shuffle refuses them)", stacklevel=2)


def _check_dinucleotide_widths(regions, path):
    for region in regions:
        if region.end - region.start < _DINUCLEOTIDE_MIN_WIDTH:
            raise InputError(f"{path}:{region.line}: region {region.start}-{region.end} "
                f"is {region.end - region.start} long; --shuffle dinucleotide needs at "
                f"least {_DINUCLEOTIDE_MIN_WIDTH} bases")


# --- the model -------------------------------------------------------------------------


def _print_report(model, kind, X, annotations, args):
    """The incremental engine's analysis at the widest region's width bucket, on stderr."""

    import jablate
    from jablate.incremental.run import buckets

    if kind == "torch" and not args.translate:
        print("jablate: incremental report: the model runs in torch (use --translate)",
            file=sys.stderr)
        return
    width = int(buckets(annotations[:, 2] - annotations[:, 1], X.shape[-1]).max())
    try:
        table = jablate.incremental_report(model, X[:1], width)
    except ValueError as error:
        raise InputError(f"--verbose: {error}") from None
    print(f"jablate: incremental analysis at width {width}:\n{table}", file=sys.stderr)


# --- summaries and outputs ------------------------------------------------------------


def _heads(y):
    return list(y) if isinstance(y, (list, tuple)) else [y]


def summarise(y_befores: Any, y_afters: Any, k: int, n: int,
              changes: Optional[Any] = None, per_task: bool = False) -> list:
    """Reduce every output head to one number per region and shuffle.

    A head with more than one value per example (a profile, several tasks) is summarised by
    its sum over the non-batch axes; with ``per_task``, an output with one value per task
    (``(k, 1, T)`` before) gives a head per task instead.

    Parameters
    ----------
    y_befores : array or list of arrays, each of shape (k, 1, ...)
        As returned by :func:`jablate.ablate_annotations`.
    y_afters : array or list of arrays, each of shape (k, 1, n, ...)
        As returned by :func:`jablate.ablate_annotations`.
    k : int
        Number of regions.
    n : int
        Number of shuffles.
    changes : array-like of bool, shape (k,), optional
        Whether the shuffle can change each region (:func:`jablate.api.effects.changeable`).
        Default None: all can.
    per_task : bool, optional
        A head per task of an output with one value per task (T > 1), labelled
        ``"taskT_"`` (``"outH_taskT_"``). Default False.

    Returns
    -------
    heads : list of dict
        One per head, with ``before`` (k,), ``after`` (k, n), ``drop`` (k,):
        ``before - mean(after)``, ``spread`` (k,): the standard deviation of ``after`` over
        shuffles (ddof=1; ``nan`` when n is 1), ``z`` (k,): ``drop / spread``, ``summed``:
        whether values were summed, and ``label``: the column prefix (``""``, ``"sum_"``,
        ``"out0_"``, ``"out0_sum_"``...). ``drop``, ``spread`` and ``z`` follow
        :func:`jablate.api.effects.shuffle_effects` (``nan`` z where the region cannot change,
        n is 1 or the spread is below float resolution; never ``±inf``).

    Raises
    ------
    InputError
        When an output is not a real-valued array with the expected leading axes.
    """

    befores, afters = _heads(y_befores), _heads(y_afters)
    if len(befores) != len(afters):
        raise InputError(f"cannot summarise the model's output: {len(befores)} "
            f"output(s) before ablation but {len(afters)} after")

    heads = []
    for h, (before, after) in enumerate(zip(befores, afters)):
        where = f"output {h}" if len(befores) > 1 else "the model's output"
        try:
            before, after = numpy.asarray(before), numpy.asarray(after)
        except Exception as error:
            raise InputError(f"cannot summarise {where}: {type(error).__name__}: "
                f"{error}") from None
        names = (before.dtype.name, after.dtype.name)
        if any(dtype_kind(name) not in "biuf" for name in names):
            raise InputError(f"cannot summarise {where}: it holds {before.dtype} "
                "values, not real numbers")
        eps = effects.float_resolution(before, after)
        if "bfloat16" in names:  # ml_dtypes' type: numpy sums it through float32
            before, after = before.astype(numpy.float32), after.astype(numpy.float32)
        if before.shape[:2] != (k, 1) or after.shape[:3] != (k, 1, n):
            raise InputError(f"cannot summarise {where}: got shapes {before.shape} "
                f"before and {after.shape} after, expected ({k}, 1, ...) and "
                f"({k}, 1, {n}, ...)")
        prefix = f"out{h}_" if len(befores) > 1 else ""
        if per_task and before.ndim == 3 and before.shape[2] > 1:  # (k, 1, T): per task
            for t in range(before.shape[2]):
                heads.append(_summed_head(before[:, :, t], after[..., t], k, n, eps,
                    changes, f"{prefix}task{t}_", f"output {h}, task {t}" if prefix else
                    f"task {t}"))
        else:
            heads.append(_summed_head(before, after, k, n, eps, changes, prefix,
                f"output {h}" if prefix else "prediction"))
    return heads


def _summed_head(before, after, k, n, eps, changes, prefix, name):
    """The head of values ``before`` (k, 1, ...) and ``after`` (k, 1, n, ...), summed over
    their other axes (float64)."""
    scale = numpy.maximum(numpy.abs(before).reshape(k, -1).sum(axis=1, dtype=numpy.float64),
        numpy.abs(after).reshape(k, n, -1).sum(axis=2, dtype=numpy.float64).max(axis=1))
    return _head(before.reshape(k, -1).sum(axis=1, dtype=numpy.float64),
        after.reshape(k, n, -1).sum(axis=2, dtype=numpy.float64), scale, eps, changes,
        prefix, before[0, 0].size > 1, name)


def summarise_sums(y_befores: Any, y_afters: Any, k: int, n: int,
                   changes: Optional[Any] = None) -> list:
    """:func:`summarise` from a run that kept only each prediction's sums.

    That is ``ablate_annotations(..., additional_func_kwargs=dict(func=DEVICE_SUMS))``
    (:class:`jablate.api.sums.DeviceSums`): three numbers per head, region and shuffle
    instead of every value of the output. The same heads as :func:`summarise` on the run
    that keeps every output: the sums are compensated on the device, so they differ only by
    the float32 rounding of each value where XLA fused the model's last operation into the
    sum, not by the rounding of the total.

    Parameters
    ----------
    y_befores : list of arrays, shapes (k, 1, 3) and, last, the layout (k, 1, 2H)
        What the run returned before shuffling: ``[hi, lo, sum of absolute values]`` per
        head, then ``[size_0, eps_0, size_1, ...]``.
    y_afters : list of arrays, shapes (k, 1, n, 3) and (k, 1, n, 2H)
        The same after each shuffle.
    k, n : int
        Number of regions and of shuffles.
    changes : array-like of bool, shape (k,), optional
        As for :func:`summarise`.

    Returns
    -------
    heads : list of dict
        As :func:`summarise`.

    Raises
    ------
    InputError
        When the outputs do not have DeviceSums' layout.
    """

    befores = [numpy.asarray(b, numpy.float64) for b in _heads(y_befores)]
    afters = [numpy.asarray(a, numpy.float64) for a in _heads(y_afters)]
    count = len(befores) - 1
    if (len(befores) != len(afters) or count < 1
            or befores[-1].shape != (k, 1, 2 * count)
            or any(b.shape != (k, 1, 3) for b in befores[:-1])
            or any(a.shape != (k, 1, n, 3) for a in afters[:-1])):
        raise InputError("cannot summarise the model's output: the run did not return "
            "DeviceSums' layout (ablate_annotations with "
            "additional_func_kwargs=dict(func=DEVICE_SUMS))")
    layout = befores[-1][0, 0]
    heads = []
    for h, (before, after) in enumerate(zip(befores[:-1], afters[:-1])):
        before, after = before[:, 0], after[:, 0]
        scale = numpy.maximum(before[:, 2], after[..., 2].max(axis=1))
        heads.append(_head(before[:, 0] + before[:, 1], after[..., 0] + after[..., 1],
            scale, float(layout[2 * h + 1]), changes, (f"out{h}_" if count > 1 else ""),
            layout[2 * h] > 1, f"output {h}" if count > 1 else "prediction"))
    return heads


def _head(before, after, scale, eps, changes, prefix, summed, name):
    """One head's summary: ``before`` (k,) and ``after`` (k, n), in float64; ``name`` says
    what it is in a plot ("prediction", "output 1", "task 3")."""
    drop, spread, z = effects.shuffle_effects(before, after, changes, scale, eps=eps)
    return dict(before=before, after=after, drop=drop, spread=spread, z=z,
        summed=bool(summed), label=prefix + ("sum_" if summed else ""), name=name)


def _table(regions, heads):
    """The header and the rows (strings) of the table that TABLE_HELP describes."""

    columns = ["name", "sequence", "start", "end"]
    for head in heads:
        columns += [head["label"] + c for c in ("mean_before", "mean_after", "mean_drop",
            "z_score")]
    rows = []
    for i, region in enumerate(regions):
        row = [region.name, region.sequence, str(region.start), str(region.end)]
        for head in heads:
            row += [f"{value:.6g}" for value in (head["before"][i],
                head["after"][i].mean(), head["drop"][i], head["z"][i])]
        rows.append(row)
    return columns, rows


def _write_npz(handle, y_befores, y_afters, regions, annotations):
    arrays = {}
    if isinstance(y_befores, (list, tuple)):
        for h, (before, after) in enumerate(zip(y_befores, y_afters)):
            arrays[f"y_befores_{h}"] = numpy.asarray(before)
            arrays[f"y_afters_{h}"] = numpy.asarray(after)
    else:
        arrays["y_befores"] = numpy.asarray(y_befores)
        arrays["y_afters"] = numpy.asarray(y_afters)
    arrays["names"] = numpy.array([r.name for r in regions], dtype=str)
    arrays["sequences"] = numpy.array([r.sequence for r in regions], dtype=str)
    arrays["starts"] = numpy.array([r.start for r in regions], dtype=numpy.int64)
    arrays["ends"] = numpy.array([r.end for r in regions], dtype=numpy.int64)
    arrays["annotations"] = annotations
    numpy.savez(handle, **arrays)


def _panels(heads):
    """The heads ``--plot`` draws, in order: all, or (``--per-task``) the
    :data:`_PLOT_PANELS` with the largest ``|mean_drop|`` of any region."""

    if len(heads) <= _PLOT_PANELS:
        return heads
    largest = [numpy.max(numpy.abs(numpy.nan_to_num(head["drop"])), initial=0) for head in heads]
    keep = numpy.sort(numpy.argsort(-numpy.asarray(largest), kind="stable")[:_PLOT_PANELS])
    return [heads[i] for i in keep]


def _plot_drops(handle, regions, heads, n, format):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = _panels(heads)
    figure, axes = plt.subplots(len(shown), 1, squeeze=False,
        figsize=(max(6, min(14, 0.3 * len(regions) + 3)), 3.2 * len(shown) + 0.8))
    for axis, head in zip(axes[:, 0], shown):
        order = numpy.argsort(-head["drop"], kind="stable")
        x = numpy.arange(len(order))
        if len(order) <= 60:
            axis.bar(x, head["drop"][order], yerr=head["spread"][order], capsize=2,
                color=numpy.where(head["drop"][order] >= 0, "tab:red", "tab:blue"),
                ecolor="grey")
            axis.set_xticks(x, [regions[i].name for i in order], rotation=90,
                fontsize=7)
        else:
            axis.fill_between(x, head["drop"][order] - head["spread"][order],
                head["drop"][order] + head["spread"][order], color="grey", alpha=0.3,
                lw=0, label="± sd over shuffles")
            axis.plot(x, head["drop"][order], color="tab:red", lw=1)
            axis.set_xlabel("region (sorted by drop)")
            axis.legend(frameon=False)
        axis.axhline(0, color="black", lw=0.8)
        axis.set_ylabel(f"drop in {'sum of ' if head['summed'] else ''}{head['name']}")
        axis.set_title(f"before − mean after ({n} shuffles; error: sd over shuffles)"
            + (f"; {len(shown)} of {len(heads)} panels, the largest drops"
               if len(shown) < len(heads) else ""), fontsize=9)
    figure.tight_layout()
    figure.savefig(handle, format=format, dpi=100)
    plt.close(figure)
