"""``python -m benchmarks [--quick] [--out FILE] [--cases 1,2,...] [--repeats R]``.

Runs the cases of :mod:`benchmarks.cases` side by side with tangermeme and writes a
Markdown report: a table per case, the targets met or missed, the machine, the versions
and the exact command. The full run writes ``benchmarks/RESULTS.md``; ``--quick`` (small
sizes, for CI: it checks that the suite runs and asserts nothing about time) writes to
a temporary file unless ``--out`` is given. Exits 1 when a case fails.

Measurements made by separate scripts (``benchmarks.memory_profile``,
``benchmarks.backend_overhead``) are pasted into ``RESULTS.md`` below the line
:data:`KEEP_MARKER`; rewriting the report keeps everything from that line on.
"""

import argparse
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "RESULTS.md")
QUICK_OUT = os.path.join(tempfile.gettempdir(), "jablate-benchmarks-quick.md")
KEEP_MARKER = ("<!-- Separate measurements: everything below this line is kept when "
               "`python -m benchmarks` rewrites this file. -->")


def _kept(path):
    """The part of an existing report from :data:`KEEP_MARKER` on ('' when none)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return ""
    at = text.find(KEEP_MARKER)
    return "" if at < 0 else "\n" + text[at:]


@dataclass
class Config:
    quick: bool
    sizes: dict
    repeats: int | None


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[1])
    p.add_argument("--quick", action="store_true",
                   help="small sizes, a couple of minutes; targets are not judged")
    p.add_argument("--out", default=None,
                   help=f"report file (default {os.path.relpath(DEFAULT_OUT)}; "
                        f"with --quick, {QUICK_OUT})")
    p.add_argument("--cases", default=None,
                   help="comma-separated case numbers (default: all, 1-5)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed rounds per comparison (default: 3 for case 1, 5 for the "
                        "others; 2 with --quick)")
    args = p.parse_args(argv)
    from .cases import CASES
    if args.cases:
        try:
            args.cases = [int(c) for c in args.cases.split(",") if c.strip()]
        except ValueError:
            p.error(f"--cases takes comma-separated numbers, got {args.cases!r}")
        unknown = [c for c in args.cases if c not in CASES]
        if unknown:
            p.error(f"unknown case(s) {unknown}; there are {sorted(CASES)}")
    else:
        args.cases = sorted(CASES)
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.out is None:
        args.out = QUICK_OUT if args.quick else DEFAULT_OUT
    return args


def _command(argv):
    return " ".join(["python -m benchmarks"] + argv)


def _report(command, quick, machine, versions, started, sections, targets, failed, done):
    head = ["# jablate benchmarks: side by side with tangermeme", ""]
    if quick:
        head += ["**Quick mode** (`--quick`): small sizes to check that the suite runs; the "
                 "numbers below say nothing about speed and no target is judged.", ""]
    if not done:
        head += ["*Run in progress: later cases are not in this file yet.*", ""]
    head += [
        f"Command: `{command}` (from the repository root), started {started}.", "",
        "Protocol: tangermeme and jablate run in one process on the same inputs and the "
        "same model weights, with the same `batch_size` (64 at full size) and "
        "`device='cpu'`; torch uses `os.cpu_count()` threads, as XLA does. Each side is "
        "warmed up once (JAX compiles there), then the sides run in turn A B C A B C ...; "
        "the tables give each side's median and every run, and the ratio tangermeme "
        "median / side median (above 1: jablate is faster). Memory cases run each side in "
        "its own subprocess and report its peak resident set (`ru_maxrss`). Absolute times "
        "drift on a shared machine; ratios from alternated runs hold better.", "",
        "## Machine", "",
    ]
    head += [f"- {k}: {v}" for k, v in machine.items()]
    head += ["", "## Versions", ""]
    head += [f"- {k} {v}" for k, v in versions.items()]
    head += ["", "## Targets", ""]
    head += targets or ["- (no case with targets was run)"]
    if failed:
        head += ["", "**Failed cases:** " + ", ".join(str(c) for c in failed)]
    return "\n".join(head) + "\n\n" + "\n".join(sections)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse(argv)

    import torch
    torch.set_num_threads(os.cpu_count())

    from . import cases, harness

    config = Config(quick=args.quick, sizes=cases.QUICK if args.quick else cases.SIZES,
                    repeats=args.repeats or (2 if args.quick else None))
    command = _command(argv)
    machine, versions = harness.machine_info(), harness.versions()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    sections, targets, failed = [], [], []
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)

    kept = _kept(args.out)

    def write(done):
        text = _report(command, args.quick, machine, versions, started, sections, targets,
                       failed, done) + kept
        with open(args.out, "w") as f:
            f.write(text)

    log = lambda msg: print(msg, flush=True)
    t_all = time.perf_counter()
    for number in args.cases:
        title, fn = cases.CASES[number]
        log(f"case {number}: {title}")
        t0 = time.perf_counter()
        try:
            section, case_targets = fn(config, log)
        except Exception:
            failed.append(number)
            tb = traceback.format_exc()
            log(tb)
            section = f"## {number}. {title}\n\n**FAILED**:\n\n```\n{tb}```\n"
            case_targets = [f"- Case {number}: FAILED (see its section)"]
        elapsed = time.perf_counter() - t0
        log(f"case {number} done in {elapsed:.1f} s")
        sections.append(section + f"\n*Case wall time {elapsed:.0f} s; load average after: "
                        + " / ".join(f"{x:.2f}" for x in os.getloadavg()) + ".*\n")
        targets.extend(case_targets)
        write(done=False)
    machine["Suite wall time"] = f"{time.perf_counter() - t_all:.0f} s"
    write(done=True)
    log(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
