"""Hits per second of the genome workflow on this CPU: ``python -m benchmarks.hits``.

Issue 12, "Performance". bpnet-lite's ``BPNet(n_filters=64, n_layers=8,
n_control_tracks=0)`` (input 2,114 bp, output 1,000 bp) with **random weights** (speed
does not depend on them), translated to JAX (``backend='jax'``, as ``jablate hits
--translate``), ablated at ``n`` shuffles per hit with ``incremental=False`` and with
``incremental=True`` on the same hits.

The input is synthetic and built in a temporary directory: a FASTA of random sequence
(``--chroms`` chromosomes of ``--chrom-length`` bp), a narrowPeak file of ``--peaks``
peaks with summits, and a BED of ``--hits-per-peak`` hits of 10–20 bp per peak within
±400 bp of its summit. The workflow is the one ``jablate hits`` runs:
``jablate.genome.hits.load_windows`` + ``hits_to_annotations`` + ``jablate.ablate_annotations``;
only ``ablate_annotations`` is timed (reading the genome and mapping the hits are
measured once and printed apart).

Each mode is warmed up once (translation, XLA compiles), then timed ``--repeats`` times,
the modes alternated (A B A B ...); medians are reported with every run, the peak RSS of
the process (``resource.getrusage``, so the maximum over everything that ran) and the
load average. ``--append PATH`` appends the Markdown section to ``PATH`` (the end of
``benchmarks/RESULTS.md`` lies below its keep-marker, so ``python -m benchmarks`` keeps it).
"""

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

import numpy


def _machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model})"


def _load():
    return "{:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def _peak_rss_gb():
    # ru_maxrss is in kB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def write_inputs(folder, chroms, chrom_length, peaks, hits_per_peak, seed):
    """A random genome, peaks with summits and hits of 10–20 bp in BED; their paths."""

    rng = numpy.random.default_rng(seed)
    genome = os.path.join(folder, "genome.fa")
    with open(genome, "w") as f:
        for c in range(chroms):
            seq = "".join(numpy.array(list("ACGT"))[rng.integers(0, 4, chrom_length)])
            f.write(f">chr{c + 1}\n")
            for i in range(0, chrom_length, 80):
                f.write(seq[i:i + 80] + "\n")
    # summits evenly spaced (jittered) so that no window holds another peak's hits
    per_chrom = -(-peaks // chroms)
    step = (chrom_length - 4000) // per_chrom
    if step < 3000:
        raise SystemExit("too many peaks for the chromosomes: windows would overlap")
    peak_rows, hit_rows = [], []
    for p in range(peaks):
        chrom = f"chr{p % chroms + 1}"
        summit = 2000 + (p // chroms) * step + step // 2 + int(rng.integers(-200, 200))
        start, end = summit - 250, summit + 250
        peak_rows.append(f"{chrom}\t{start}\t{end}\tpeak{p}\t0\t.\t0\t0\t0\t{summit - start}")
        for h in range(hits_per_peak):
            width = int(rng.integers(10, 21))
            s = summit + int(rng.integers(-400, 400 - width))
            hit_rows.append(f"{chrom}\t{s}\t{s + width}\tmotif{h % 4}")
    peaks_path = os.path.join(folder, "peaks.narrowPeak")
    hits_path = os.path.join(folder, "hits.bed")
    with open(peaks_path, "w") as f:
        f.write("\n".join(peak_rows) + "\n")
    with open(hits_path, "w") as f:
        f.write("\n".join(hit_rows) + "\n")
    return genome, peaks_path, hits_path


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.hits",
                                description=__doc__.split("\n")[0])
    p.add_argument("--chroms", type=int, default=2)
    p.add_argument("--chrom-length", type=int, default=200_000)
    p.add_argument("--peaks", type=int, default=50)
    p.add_argument("--hits-per-peak", type=int, default=4)
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2, help="timed runs per mode (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--append", metavar="PATH", help="append the Markdown section to PATH")
    p.add_argument("--assumed-gpu-speedup", type=float, default=100.0,
                   help="ASSUMED (not measured) speed of one GPU over this whole CPU, for "
                   "the cluster extrapolation only (default 100)")
    p.add_argument("--gpus", type=int, default=8, help="GPUs in the extrapolated cluster")
    args = p.parse_args(argv)

    import torch
    from bpnetlite import BPNet

    import jablate
    from jablate.genome.hits import hits_to_annotations, load_windows

    torch.manual_seed(args.seed)
    model = BPNet(n_filters=64, n_layers=8, n_control_tracks=0, verbose=False).eval()

    with tempfile.TemporaryDirectory() as folder:
        genome, peaks, hits = write_inputs(folder, args.chroms, args.chrom_length,
                                           args.peaks, args.hits_per_peak, args.seed)
        t0 = time.perf_counter()
        X, windows = load_windows(genome, peaks, 2114)
        annotations, mapped = hits_to_annotations(hits, windows)
        t_load = time.perf_counter() - t0
    k = len(annotations)

    kw = dict(n=args.n, random_state=args.seed, batch_size=args.batch_size, backend="jax",
              verbose=False)
    modes = {"full (incremental=False)": False, "incremental=True": True}

    def run(incremental):
        t = time.perf_counter()
        result = jablate.ablate_annotations(model, X, annotations, incremental=incremental, **kw)
        numpy.asarray(result[1][0] if isinstance(result[1], list) else result[1])
        return time.perf_counter() - t, result

    load_start = _load()
    warm, results = {}, {}
    for name, inc in modes.items():
        warm[name], results[name] = run(inc)
        print(f"warm-up {name}: {warm[name]:.2f} s (translation + compiles)", file=sys.stderr)

    times = {name: [] for name in modes}
    for r in range(args.repeats):
        for name, inc in modes.items():
            t, _ = run(inc)
            times[name].append(t)
            print(f"run {r + 1} {name}: {t:.2f} s ({k / t:.1f} hits/s)", file=sys.stderr)
    load_end = _load()

    # agreement of the two modes (same seed, same shuffles)
    def flat(res):
        parts = res[1] if isinstance(res[1], list) else [res[1]]
        return [numpy.asarray(a, dtype=numpy.float64) for a in parts]
    diff = max(float(numpy.max(numpy.abs(a - b)) / (numpy.max(numpy.abs(b)) or 1.0))
               for a, b in zip(flat(results["incremental=True"]),
                               flat(results["full (incremental=False)"])))

    med = {name: statistics.median(ts) for name, ts in times.items()}
    rate = {name: k / m for name, m in med.items()}
    full, inc = "full (incremental=False)", "incremental=True"
    ratio = rate[inc] / rate[full]
    H = 1_000_000
    lines = [
        "",
        f"## Genome-scale hits (issue 12), {time.strftime('%Y-%m-%d', time.gmtime())}",
        "",
        f"`python -m benchmarks.hits` (`--peaks {args.peaks} --hits-per-peak "
        f"{args.hits_per_peak} --n {args.n} --batch-size {args.batch_size} --repeats "
        f"{args.repeats}`), on {_machine()}; load average {load_start} at the start of the "
        f"timed runs, {load_end} at their end.",
        "",
        "bpnet-lite `BPNet(n_filters=64, n_layers=8, n_control_tracks=0)` (2,114 bp in, "
        "1,000 bp out) with **random weights**, translated to JAX (`backend='jax'`, as "
        f"`jablate hits --translate`). Synthetic genome: {args.chroms} × "
        f"{args.chrom_length:,} bp of random sequence, {len(windows)} peaks with summits, "
        f"{mapped['hit'].nunique()} hits of 10–20 bp in BED ({k} (hit, window) rows: "
        f"the rates count these); `load_windows` + `hits_to_annotations` took "
        f"{t_load:.2f} s. Each hit is ablated with n={args.n} shuffles "
        f"({k * args.n:,} shuffled windows per run).",
        "",
        "| mode | warm-up (s) | runs (s) | median (s) | hits/s |",
        "|---|---|---|---|---|",
    ]
    for name in modes:
        lines.append(f"| {name} | {warm[name]:.2f} | "
                     f"{', '.join(f'{t:.2f}' for t in times[name])} | {med[name]:.2f} | "
                     f"{rate[name]:.1f} |")
    lines += [
        "",
        f"- incremental / full: **{ratio:.2f}×** the hits per second. The two modes agree to "
        f"a max relative difference of {diff:.1e}.",
        f"- Peak RSS of the process (both modes, `resource.getrusage`): "
        f"{_peak_rss_gb():.2f} GB.",
        f"- 10⁶ hits on this one machine (measured rate, no extrapolation beyond scaling "
        f"the count): full {H:,} / {rate[full]:.1f} = {H / rate[full]:,.0f} s ≈ "
        f"{H / rate[full] / 3600:.1f} h; incremental {H:,} / {rate[inc]:.1f} = "
        f"{H / rate[inc]:,.0f} s ≈ {H / rate[inc] / 3600:.1f} h.",
        f"- *Extrapolation, not a measurement* (no GPU was available to this run): a cluster "
        f"of {args.gpus} GPUs, each ASSUMED {args.assumed_gpu_speedup:g}× faster than this "
        f"whole CPU on this workload, the hits split evenly (`jablate hits --shard I/K`, "
        f"no communication), the incremental / full ratio assumed to carry over unchanged "
        f"(it may not: a GPU's batch is wider and its bottlenecks differ). Full: "
        f"{H / rate[full]:,.0f} s / ({args.assumed_gpu_speedup:g} × {args.gpus}) = "
        f"{H / rate[full] / args.assumed_gpu_speedup / args.gpus:,.0f} s ≈ "
        f"{H / rate[full] / args.assumed_gpu_speedup / args.gpus / 60:.1f} min; incremental: "
        f"{H / rate[inc]:,.0f} s / ({args.assumed_gpu_speedup:g} × {args.gpus}) = "
        f"{H / rate[inc] / args.assumed_gpu_speedup / args.gpus:,.0f} s ≈ "
        f"{H / rate[inc] / args.assumed_gpu_speedup / args.gpus / 60:.1f} min, plus per-GPU "
        f"start-up (translation and compiles: the warm-ups above, on this CPU).",
    ]
    print("\n".join(lines))
    if args.append:
        with open(args.append, "a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
