"""torch bridge against ``backend='jax'`` on the CPU: ``python -m benchmarks.backend_overhead``.

``jablate.ablate(torch_model, X, ..., backend='jax')`` translates the module to JAX
(``jablate.bridges.torch.translate``) and runs it with XLA; the default runs the module
in torch, fed through DLPack. For a mid-size model (BPNet) XLA is faster; for a tiny one
the translation, the compile and XLA's per-batch costs can outweigh it. Two models:

* ``tiny``: Conv1d(4 → 8, width 5, 'same') → ReLU → mean over positions → Linear(8 → 1);
  100 sequences × 200 bp, the central 20 bp shuffled, n=20 (2,100 model inputs).
* ``bpnet``: bpnet-lite ``BPNet(n_filters=64, n_layers=8, n_control_tracks=0)``;
  8 sequences × 2,114 bp, the central 100 bp shuffled, n=20 (168 model inputs).

Weights from ``torch.manual_seed(0)``, ``random_state=0``, ``batch_size=64``,
``device='cpu'``, X a float32 torch tensor, torch using ``os.cpu_count()`` threads.

Cold costs are measured in a fresh process per (model, backend): for ``'jax'``, the
translation (``translate(model, X[:1])``, timed on its own) and then the first
``ablate`` call (XLA compile and run, the translation cached); for the default, the first
call. Warm calls are then timed in this process with both sides alternated
(:func:`benchmarks.harness.alternate`: one warm-up each, then A B A B ...), medians
reported with the ratio torch-bridge / jax (above 1: ``backend='jax'`` is faster).
Prints a Markdown section for ``benchmarks/RESULTS.md``.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

CASES = {
    "tiny": dict(N=100, L=200, width=20, n=20, batch_size=64, repeats=15),
    "bpnet": dict(N=8, L=2114, width=100, n=20, batch_size=64, repeats=5),
}


def _model(case):
    import torch

    from . import models
    if case == "bpnet":
        return models.bpnet_torch(64, 8, seed=0)

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(4, 8, 5, padding=2)
            self.linear = torch.nn.Linear(8, 1)

        def forward(self, X):
            return self.linear(torch.relu(self.conv(X)).mean(dim=-1))

    torch.manual_seed(0)
    return Tiny().eval()


def _setup(case):
    import torch

    from . import models
    torch.set_num_threads(os.cpu_count())
    s = CASES[case]
    start, end = models.centre(s["L"], s["width"])
    X = torch.from_numpy(models.one_hot(s["N"], s["L"], seed=7))
    kw = dict(start=start, end=end, n=s["n"], random_state=0, batch_size=s["batch_size"],
              device="cpu")
    return _model(case), X, kw


def _cold(case, backend):
    """In a fresh process: seconds of the translation (jax) and of the first call."""
    import jablate
    from jablate.bridges.torch import translate

    model, X, kw = _setup(case)
    out = {}
    if backend == "jax":
        t0 = time.perf_counter()
        translate(model, X[:1])
        out["translate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    jablate.ablate(model, X, **kw, **({"backend": "jax"} if backend == "jax" else {}))
    out["first_call_s"] = time.perf_counter() - t0
    print(json.dumps(out))


def _run_cold(case, backend):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.backend_overhead", "--cold",
                           case, backend], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if proc.returncode != 0:
        raise RuntimeError(f"cold run {case}/{backend} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rel_diff(a, b):
    la = a if isinstance(a, (list, tuple)) else [a]
    lb = b if isinstance(b, (list, tuple)) else [b]
    return max(float((x - y).abs().max() / y.abs().max().clamp_min(1e-30))
               for x, y in zip(la, lb))


def _warm(case, repeats, log):
    import jablate

    from .harness import Side, alternate

    model, X, kw = _setup(case)
    bridge = Side("default (torch module through the DLPack bridge)",
                  lambda: jablate.ablate(model, X, **kw))
    jax_side = Side("`backend='jax'` (translated, XLA)",
                    lambda: jablate.ablate(model, X, backend="jax", **kw))
    diff = {}

    def check(sides):
        a, b = jax_side.warm_output, bridge.warm_output
        diff["y"] = max(_rel_diff(a.y_before, b.y_before), _rel_diff(a.y_after, b.y_after))

    alternate([bridge, jax_side], repeats, log, check)
    return bridge, jax_side, diff["y"]


def _ms(seconds):
    return f"{seconds * 1e3:.1f}"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--cold"]:
        _cold(argv[1], argv[2])
        return 0
    p = argparse.ArgumentParser(prog="python -m benchmarks.backend_overhead",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="tiny,bpnet", help="comma-separated: tiny, bpnet")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed rounds per case (default: 15 tiny, 5 bpnet)")
    p.add_argument("--cold-repeats", type=int, default=3,
                   help="fresh processes per backend for the cold costs, alternated (default 3)")
    args = p.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    if any(c not in CASES for c in cases):
        p.error(f"--cases takes {list(CASES)}")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)

    from . import harness
    machine, versions = harness.machine_info(), harness.versions()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load_start = os.getloadavg()
    rows, runs, notes = [], [], []
    for case in cases:
        s = CASES[case]
        inputs = s["N"] * (s["n"] + 1)
        log(f"{case}: cold runs")
        cold = {"torch": [], "jax": []}
        for _ in range(args.cold_repeats):
            for backend in cold:
                cold[backend].append(_run_cold(case, backend))
        log(f"{case}: cold {cold}")
        med = lambda runs, k: statistics.median(r[k] for r in runs)
        cold_torch = {"first_call_s": med(cold["torch"], "first_call_s")}
        cold_jax = {k: med(cold["jax"], k) for k in ("translate_s", "first_call_s")}
        bridge, jax_side, diff = _warm(case, args.repeats or s["repeats"], log)
        ratio = bridge.median / jax_side.median
        saved = bridge.median - jax_side.median
        cold_jax_total = cold_jax["translate_s"] + cold_jax["first_call_s"]
        rows.append(
            f"| {case} | {inputs:,} | {cold_torch['first_call_s']:.2f} | "
            f"{cold_jax_total:.2f} ({cold_jax['translate_s']:.2f} + "
            f"{cold_jax['first_call_s']:.2f}) | {bridge.median:.3f} | {jax_side.median:.3f} | "
            f"{ratio:.2f}× |")
        bridge_cold = ", ".join(f"{r['first_call_s']:.2f}" for r in cold["torch"])
        jax_cold = ", ".join(f"{r['translate_s']:.2f} + {r['first_call_s']:.2f}"
                             for r in cold["jax"])
        runs.append(f"- {case}, cold runs (s): default bridge first call {bridge_cold}; "
                    f"`backend='jax'` translate + first call {jax_cold}.")
        runs.append(f"- {case}, warm runs (s): default bridge "
                    f"{', '.join(f'{t:.3f}' for t in bridge.times)}; `backend='jax'` "
                    f"{', '.join(f'{t:.3f}' for t in jax_side.times)}.")
        per_input = lambda side, inputs=inputs: _ms(side.median / inputs * 1e3)
        if saved > 0:
            calls = (cold_jax_total - cold_torch["first_call_s"]) / saved
            notes.append(f"- {case}: a warm `backend='jax'` call saves {_ms(saved)} ms "
                         f"({per_input(bridge)} → {per_input(jax_side)} µs per model input); "
                         f"its extra cold cost "
                         f"({cold_jax_total - cold_torch['first_call_s']:.2f} s) is repaid "
                         f"after ≈ {max(calls, 0):.0f} warm calls.")
        else:
            notes.append(f"- {case}: `backend='jax'` is **slower** warm too, by {_ms(-saved)} ms "
                         f"per call ({per_input(bridge)} → {per_input(jax_side)} µs per model "
                         "input), on top of its translation and compile.")
        notes.append(f"- {case}: outputs of the two backends agree to a max relative "
                     f"difference of {diff:.1e}.")
    load_end = os.getloadavg()
    lines = [
        "Command: `" + " ".join(["python -m benchmarks.backend_overhead"] + argv)
        + "` (from the repository root).", "",
        f"Started {started}; machine: {machine['CPU']}, {machine['Memory']} RAM, torch "
        f"threads {machine['torch threads']}, {platform.platform()}, Python "
        f"{platform.python_version()}; jax {versions['jax']}, torch {versions['torch']}. "
        f"Load average (1/5/15 min) at start {' / '.join(f'{x:.2f}' for x in load_start)}, "
        f"at the end {' / '.join(f'{x:.2f}' for x in load_end)}.", "",
        "| model | inputs per call | default bridge: first call in a fresh process (s) | "
        "`backend='jax'`: translate + first call, fresh process (s) | default bridge: warm "
        "median (s) | `backend='jax'`: warm median (s) | warm bridge / jax |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ] + rows + [""] + runs + notes
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
