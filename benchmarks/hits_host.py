"""Host work per hit of ``jablate hits``: ``python -m benchmarks.hits_host``.

Issue 19, "`jablate hits` on GPUs": 10⁶ hits in 5 minutes on one GPU leaves every part
of a run but the model's forward passes a budget of tens of microseconds per hit. This
measures that part on the CPU, where it runs whatever the accelerator: a *trivial* model
(the G+C count of the window, ``benchmarks.hits_host:gc``, a JAX function) whose own
work is a sum, so nearly all the time is jablate's (reading the genome, planning,
drawing and applying the shuffles, the effects, writing the parts).

``--model SPEC`` (say ``benchmarks.hits_host:bpnet -- --translate``) runs another model
instead, and the per-hit time is then a hit's whole cost: issue 19's 10⁶-hit target on a
GPU, extrapolated from the hits measured.

One synthetic genome (``benchmarks.hits.write_inputs``: ``--chroms`` × ``--chrom-length``
bp, ``--peaks`` peaks, ``--hits-per-peak`` hits of 10–20 bp each) and one process:

1. a warm-up run of ``jablate hits`` on the same inputs (imports and XLA compiles,
   paid once per process: their count is bounded by the shapes, not by the hits);
2. ``--repeats`` timed runs (the median is reported), in the same process, each into
   another ``--out``, with each chunk's
   time, the XLA compiles it still needed (``jax.monitoring``; none expected) and a
   profile of where it went (``--profile N`` prints the N largest cumulative entries
   of jablate's own code).

The marginal cost per hit is the wall time of the timed run's chunk pipeline (reading
windows, ablating, writing parts: ``_Run.compute``; not reading the inputs or assembling
the table, which are printed apart) over its hits. It includes the
trivial model's own work on this CPU, so it bounds the host work from above.
"""

import argparse
import cProfile
import functools
import os
import pstats
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp


def gc(X):
    """The trivial model: the G+C count of each window, shape (N, 1)."""
    return jnp.sum(X[:, 1:3], axis=(1, 2))[:, None]


@functools.lru_cache(maxsize=1)
def bpnet():
    """bpnet-lite's BPNet (64 filters, 8 layers, random weights), one object per process:
    ``--model benchmarks.hits_host:bpnet -- --translate`` translates it once, so the timed
    runs reuse its compiled programs (as one long run does) and the warm-up holds the
    translation and the compiles."""
    from benchmarks.models import bpnet_torch

    return bpnet_torch()


TRIVIAL = "benchmarks.hits_host:gc"


def _args(folder, genome, peaks, hits, out, options, model=TRIVIAL):
    return ["hits", "--model", model, "--genome", genome, "--peaks",
            peaks, "--hits", hits, "--out", os.path.join(folder, out), "--window", "2114",
            "--plot", "none", "--quiet", *options]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.hits_host",
                                description=__doc__.split("\n")[0])
    p.add_argument("--chroms", type=int, default=8)
    p.add_argument("--chrom-length", type=int, default=1_000_000)
    p.add_argument("--peaks", type=int, default=2000)
    p.add_argument("--hits-per-peak", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5, help="timed runs (default 5)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="print the N largest cumulative entries of jablate's code")
    p.add_argument("--model", default=TRIVIAL, metavar="SPEC",
                   help="another model (jablate hits' --model): the per-hit time is then the "
                   "whole cost of a hit, e.g. 'benchmarks.hits_host:bpnet -- --translate' "
                   "for issue 19's 10⁶-hit target on a GPU (default: the trivial model)")
    p.add_argument("options", nargs="*", help="more options for jablate hits (after --)")
    args = p.parse_args(argv)

    from jablate.genome import run

    compiles = []

    def on_compile(name, secs, **kw):
        if name == "/jax/core/compile/backend_compile_duration":
            compiles.append(secs)

    spans = []  # (seconds, hits, chunks) of each run's chunk pipeline (_Run.compute)
    compute = run._Run.compute

    def timed(self, chunks, done_rows, total_rows):
        t = time.perf_counter()
        compute(self, chunks, done_rows, total_rows)
        spans.append((time.perf_counter() - t, total_rows - done_rows, len(chunks)))

    phases = {"read_chunk": [], "run_chunk": [], "write_chunk": []}
    originals = {name: getattr(run._Run, name) for name in phases}

    def phase(name):
        def timed_phase(self, *args):
            t = time.perf_counter()
            out = originals[name](self, *args)
            phases[name].append(time.perf_counter() - t)
            return out
        return timed_phase

    # the listener and the timed methods are this call's only: removed however it ends
    jax.monitoring.register_event_duration_secs_listener(on_compile)
    run._Run.compute = timed
    for name in phases:
        setattr(run._Run, name, phase(name))
    try:
        _measure(args, compiles, spans, phases)
    finally:
        jax.monitoring.unregister_event_duration_listener(on_compile)
        run._Run.compute = compute
        for name, original in originals.items():
            setattr(run._Run, name, original)


def _measure(args, compiles, spans, phases):
    """The warm-up and the timed runs of :func:`main`, and their report on stdout."""

    from benchmarks.hits import write_inputs
    from jablate import cli

    profiler = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory() as folder:
        genome, peaks, hits = write_inputs(folder, args.chroms, args.chrom_length, args.peaks,
                                           args.hits_per_peak, 0)

        def once(out):
            t = time.perf_counter()
            if profiler and out != "warm":
                profiler.enable()
            status = cli.main(_args(folder, genome, peaks, hits, out, args.options, args.model))
            if profiler:
                profiler.disable()
            if status:
                raise SystemExit(f"the run {out} failed")
            return time.perf_counter() - t

        warm = once("warm")
        warm_compiles = len(compiles)
        # each result as soon as it exists: a run cut off by a time limit keeps these lines
        print(f"warm-up: {warm:.2f} s ({warm_compiles} XLA compiles)", flush=True)
        compiles.clear()
        for times in phases.values():
            times.clear()
        runs = []
        for repeat in range(args.repeats):
            spans.clear()
            total = once(f"timed{repeat}")
            runs.append((spans[0][0], total))
            print(f"timed run {repeat + 1}: {total:.2f} s in all, {spans[0][0]:.2f} s "
                  f"computing {spans[0][1]:,} hits", flush=True)
        rows, count = spans[0][1:]
    print(f"{rows:,} hits in {count} chunks")
    chunks, total = sorted(runs, key=lambda r: r[1])[len(runs) // 2]  # the median run
    per_hit, per_hit_all = chunks / rows, total / rows
    print(f"{args.repeats} timed runs ({', '.join(f'{c:.2f}' for c, _ in runs)} s computing "
          f"the chunks; {', '.join(f'{t:.2f}' for _, t in runs)} s in all, with reading the "
          f"inputs, mapping the hits and assembling the table); the median run: "
          f"{chunks:.2f} s computing the chunks, {total:.2f} s in all; per hit "
          f"{per_hit * 1e6:.1f} µs in the chunks ({rows / chunks:,.0f} hits/s), "
          f"{per_hit_all * 1e6:.1f} µs in all")
    print("per chunk (medians): " + ", ".join(
        f"{name} {statistics.median(times) * 1e3:.1f} ms" for name, times in phases.items())
        + f"; {rows / count:.0f} hits per chunk")
    print(f"XLA compiles in the timed runs: {len(compiles)} ({sum(compiles):.2f} s)")
    where = f"{jax.devices()[0].device_kind} ({jax.default_backend()})"
    if args.model == TRIVIAL:
        print(f"10⁶ hits: 10⁶ × {per_hit_all * 1e6:.1f} µs = {per_hit_all * 1e6:.0f} s of "
              "work besides the model's forward passes (the trivial model's own work on "
              f"this machine included); JAX on {where}")
    else:
        once = max(0.0, warm - total)  # translation and compiles: once per process
        whole = 1e6 * per_hit_all + once
        print(f"10⁶ hits through {args.model} {' '.join(args.options)}, extrapolated from "
              f"these {rows:,}: 10⁶ × {per_hit_all * 1e6:.1f} µs + {once:.1f} s once (the "
              f"warm-up's {warm:.1f} s less a timed run's {total:.1f} s: translation, "
              f"compiles) = {whole:.0f} s ({whole / 60:.1f} min; issue 19's target: under "
              f"5 min on one H200); JAX on {where}")
    if profiler:
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("cumulative").print_stats("jablate", args.profile)


if __name__ == "__main__":
    main()
