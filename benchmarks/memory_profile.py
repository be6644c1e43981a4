"""Peak memory of ``jablate.ablate`` on a profile model: ``python -m benchmarks.memory_profile``.

Case 4 of ``python -m benchmarks`` measures memory with a one-output model, whose
``y_after`` is tiny whatever ``reduce`` is. Here the model is BPNet (bpnet-lite's
architecture, 64 filters, 8 layers, through the flax port of ``benchmarks/bpnet_flax.py``
with the torch model's seeded weights) and both of its outputs are kept: the profile
``(2, 1,000)`` and the counts ``(1,)`` per input. ``reduce=None`` (the default) returns
``y_after`` of shape ``(N, n, 2, 1000)``; ``reduce='mean_std'`` returns its mean and
standard deviation over the ``n`` shuffles, ``(N, 2, 1000)`` each.

Each side runs in its own process, started by the small launcher of
:mod:`benchmarks.memory_child`; peak resident set = that child's ``ru_maxrss``. When the
default path's ``y_after`` alone would pass ``--limit-gb``, it is measured at
``--fallback-N`` (two sizes) and its peak at ``N`` is extrapolated linearly, and labelled
so. Prints a Markdown section (machine, command, table) for ``benchmarks/RESULTS.md``.

Full size (2,000 × 2,114 bp, n=100: 202,000 BPNet inputs per side) takes tens of minutes
per side on a 2-core CPU; ``--N 40 --n 10`` checks that it runs.
"""

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy

from . import bpnet_flax, harness, models
from .harness import gb

NAMES = {"jablate-mean_std": "jablate.ablate, `reduce='mean_std'`",
         "jablate": "jablate.ablate, default `reduce=None` (every shuffle's output kept)"}


def _parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.memory_profile",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--N", type=int, default=2000, help="sequences (default 2000)")
    p.add_argument("--L", type=int, default=2114, help="sequence length (default 2114)")
    p.add_argument("--n", type=int, default=100, help="shuffles per sequence (default 100)")
    p.add_argument("--width", type=int, default=100, help="region width, centred (default 100)")
    p.add_argument("--batch-size", type=int, default=64, help="default 64, as case 4")
    p.add_argument("--sides", default="jablate-mean_std,jablate",
                   help="comma-separated, of: " + ", ".join(NAMES))
    p.add_argument("--limit-gb", type=float, default=12.0,
                   help="largest default-path y_after measured at full N (default 12)")
    p.add_argument("--fallback-N", default="100,200",
                   help="the two N for the default path above --limit-gb (default 100,200)")
    args = p.parse_args(argv)
    args.sides = [s for s in args.sides.split(",") if s]
    unknown = [s for s in args.sides if s not in NAMES]
    if unknown:
        p.error(f"unknown side(s) {unknown}; there are {list(NAMES)}")
    args.fallback_N = [int(x) for x in args.fallback_N.split(",")]
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse(argv)
    N, L, n = args.N, args.L, args.n
    start, end = models.centre(L, args.width)
    torch_model = models.bpnet_torch(64, 8, seed=0)
    config, arrays = bpnet_flax.to_arrays(bpnet_flax.from_torch(torch_model))
    out_len = L - 2 * config["trimming"]
    per_input = (config["n_outputs"] * out_len + 1) * 4  # float32 profile + counts
    y_after_bytes = lambda rows: rows * n * per_input
    log = lambda msg: print(msg, file=sys.stderr, flush=True)

    machine = harness.machine_info()
    load_start = os.getloadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "bpnet.npz")
        numpy.savez(weights, **arrays)
        spec = dict(model="bpnet", config=config, weights=weights, N=N, L=L, n=n, start=start,
                    end=end, batch_size=args.batch_size, seed=5)
        for side in args.sides:
            sizes = [N]
            if side == "jablate" and gb(y_after_bytes(N)) > args.limit_gb:
                sizes = args.fallback_N
            for rn in sizes:
                log(f"{side} N={rn}: running ...")
                r = harness.run_child(dict(spec, side=side, N=rn))
                log(f"{side} N={rn}: peak {gb(r['maxrss_bytes']):.3f} GB in "
                    f"{r['seconds']:.0f} s; outputs {r['output_shapes']}")
                rows.append((side, rn, r))
    load_end = os.getloadavg()

    lines = [
        "Command: `" + " ".join(["python -m benchmarks.memory_profile"] + argv) + "` (from "
        "the repository root).",
        "",
        f"Started {started}; machine: {machine['CPU']}, {machine['Memory']} RAM, "
        f"{platform.platform()}, Python {platform.python_version()}; load average (1/5/15 "
        f"min) at start {' / '.join(f'{x:.2f}' for x in load_start)}, at the end "
        f"{' / '.join(f'{x:.2f}' for x in load_end)}.",
        "",
        f"- Model: bpnet-lite `BPNet(n_filters=64, n_layers=8, n_control_tracks=0)` "
        f"(`torch.manual_seed(0)`), run as its flax port (`benchmarks/bpnet_flax.py`): "
        f"{L:,} bp in; outputs profile ({config['n_outputs']}, {out_len:,}) and counts (1,) "
        f"per input, both kept.",
        f"- `jablate.ablate(model, X, start={start}, end={end}, n={n}, random_state=0, "
        f"batch_size={args.batch_size}, device='cpu', reduce=...)`, X float32 "
        f"({N:,}, 4, {L:,}) = {gb(N * 4 * L * 4):.3f} GB, built in the child before the call.",
        f"- Expected sizes: the default path returns `y_after` ({N:,}, {n}, "
        f"{config['n_outputs']}, {out_len:,}) float32 (+ counts ({N:,}, {n}, 1)) = "
        f"{gb(y_after_bytes(N)):.2f} GB; `reduce='mean_std'` returns mean and std "
        f"({N:,}, {config['n_outputs']}, {out_len:,}) each (+ counts) = "
        f"{gb(2 * N * per_input):.3f} GB.",
        "- Peak RSS = `ru_maxrss` of the measuring child (interpreter, imports and X "
        "included), from `os.wait4` in a launcher that imports only the standard library; "
        "VmHWM is the kernel's high-water mark read at the child's end.",
        "",
        "| side | N | RSS before the call (GB) | peak RSS, `ru_maxrss` (GB) | VmHWM (GB) | "
        "peak − before (GB) | call (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for side, rn, r in rows:
        hwm = r.get("vmhwm_bytes")
        lines.append(f"| {NAMES[side]} | {rn:,} | {gb(r['rss_before_bytes']):.3f} | "
                     f"{gb(r['maxrss_bytes']):.3f} | "
                     f"{'n/a' if hwm is None else f'{gb(hwm):.3f}'} | "
                     f"{gb(r['maxrss_bytes'] - r['rss_before_bytes']):.3f} | "
                     f"{harness.fmt_s(r['seconds'])} |")
    fallback = [(rn, r["maxrss_bytes"]) for side, rn, r in rows if side == "jablate"
                and rn != N]
    if len(fallback) == 2:
        (n1, m1), (n2, m2) = fallback
        slope = (m2 - m1) / (n2 - n1)
        lines += ["", f"- The default path was **not run at N={N:,}** (`y_after` alone "
                  f"{gb(y_after_bytes(N)):.1f} GB > {args.limit_gb:g} GB). Extrapolated "
                  f"linearly from the measured N={n1:,} and N={n2:,}: "
                  f"**≈ {gb(m2 + slope * (N - n2)):.1f} GB (extrapolated, not measured)**."]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
