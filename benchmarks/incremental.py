"""``python -m benchmarks.incremental [--quick] [--append PATH]``: issue 11's performance table.

Incremental ablation (``incremental=True``) against jablate's full path
(``incremental=False``) and against tangermeme 1.6, side by side in one process, alternated
(A B C A B C ...) after one untimed warm-up each, medians (see :mod:`benchmarks.harness`):

1. bpnet-lite ``BPNet(64 filters, 8 layers)``, 2,114 bp, **random weights**, translated
   (``backend="jax"``): ``ablate_annotations`` of 500 × 20-bp regions on 100 sequences, n=20.
2. Case 1: the same BPNet, ``ablate`` of 64 × 2,114 bp, one central 100-bp region, n=20.
3. Case 3: the small conv of :mod:`benchmarks.cases` (flax, torch weights), 500 annotations.
4. Case 4 with the engine on: peak RSS (``ru_maxrss``) of ``ablate(..., incremental=True)``
   on the small one-output conv of ``python -m benchmarks``' case 4, 2,000 × 2,114 bp, n=100,
   every shuffle kept and with ``reduce='mean_std'``, each in its own subprocess
   (:mod:`benchmarks.memory_child`).

A tangermeme run longer than ``--tangermeme-once`` seconds (120) is timed once (its warm-up
run) and not repeated. Prints a Markdown section; ``--append PATH`` appends it to PATH.

"""

import argparse
import os
import sys
import tempfile
import time

FULL = dict(bpnet_ann=dict(N=100, L=2114, k=500, width=20, n=20, batch_size=64, repeats=2),
            case1=dict(N=64, L=2114, width=100, n=20, batch_size=64, repeats=3),
            case3=dict(N=100, L=1000, k=500, width=20, n=20, batch_size=64, repeats=5),
            memory=dict(N=2000, L=2114, n=100, width=100, filters=8, kernel=7, batch_size=64),
            bpnet=dict(n_filters=64, n_layers=8))
QUICK = dict(bpnet_ann=dict(N=4, L=2114, k=6, width=20, n=2, batch_size=8, repeats=1),
             case1=dict(N=4, L=2114, width=100, n=2, batch_size=8, repeats=1),
             case3=dict(N=10, L=500, k=20, width=20, n=5, batch_size=16, repeats=2),
             memory=dict(N=40, L=2114, n=10, width=100, filters=8, kernel=7, batch_size=64),
             bpnet=dict(n_filters=16, n_layers=4))


# ---------------------------------------------------------------------------------------
# memory: case 4 of ``python -m benchmarks`` with the engine on


def run_memory(spec):
    """Peak RSS of case 4's ``ablate`` (small conv, one output) with ``incremental=True``,
    every shuffle kept and ``reduce='mean_std'``, each in its own process
    (:func:`benchmarks.harness.run_child`)."""
    import numpy

    from . import harness, models

    start, end = models.centre(spec["L"], spec["width"])
    torch_model = models.small_conv_torch(spec["filters"], spec["kernel"], seed=0)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "weights.npz")
        numpy.savez(weights, **models.small_conv_weights(torch_model))
        child = dict(N=spec["N"], L=spec["L"], n=spec["n"], start=start, end=end,
                     batch_size=spec["batch_size"], seed=5, weights=weights,
                     filters=spec["filters"], width=spec["kernel"], incremental=True)
        for side in ("jablate", "jablate-mean_std"):
            out[side] = harness.run_child(dict(child, side=side))
    return out


# ---------------------------------------------------------------------------------------
# timed comparisons


def _load():
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def compare(title, sides, repeats, once_after, log):
    """Warm each side up (timed, not counted), then alternate ``repeats`` rounds.

    A side whose warm-up took longer than ``once_after`` seconds is not repeated: its
    warm-up time is its only time (``once=True``). Returns the warm-up outputs.
    """
    import gc

    from .harness import block

    log(f"{title} (load {_load()})")
    outputs = {}
    for side in sides:
        gc.collect()
        t0 = time.perf_counter()
        outputs[side["name"]] = block(side["run"]())
        side["warm"] = time.perf_counter() - t0
        side["times"] = []
        side["once"] = side.get("tangermeme", False) and side["warm"] > once_after
        if side["once"]:
            side["times"] = [side["warm"]]
        log(f"  warm-up {side['name']}: {side['warm']:.2f} s"
            + (" (> limit: timed once)" if side["once"] else ""))
    for r in range(repeats):
        for side in sides:
            if side["once"]:
                continue
            gc.collect()
            t0 = time.perf_counter()
            out = block(side["run"]())
            side["times"].append(time.perf_counter() - t0)
            del out
        log(f"  round {r + 1}: " + ", ".join(f"{s['name']} {s['times'][-1]:.2f} s"
                                             for s in sides if not s["once"]))
    return outputs


def _annotations(s, seed):
    """Random sequences (``seed``) and ``k`` regions of ``width`` on them (``seed + 1``):
    rows ``(sequence, start, end)``."""
    import numpy

    from . import models

    X = models.one_hot(s["N"], s["L"], seed=seed)
    rng = numpy.random.RandomState(seed + 1)
    starts = rng.randint(0, s["L"] - s["width"] + 1, size=s["k"])
    ann = numpy.stack([rng.randint(s["N"], size=s["k"]), starts, starts + s["width"]],
                      axis=1).astype(numpy.int64)
    return X, ann


def _median(ts):
    import statistics
    return statistics.median(ts)


def _agreement(a, b):
    from .harness import rel_diff
    return rel_diff(tuple(a), tuple(b))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.incremental",
                                description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes; targets not judged")
    p.add_argument("--rows", default="1,2,3,4", help="rows to run (default 1,2,3,4)")
    p.add_argument("--memory-N", type=int, default=None,
                   help="sequences for row 4 (default 2,000; 8 with --quick)")
    p.add_argument("--tangermeme-once", type=float, default=120.0,
                   help="a tangermeme warm-up longer than this (s) is its only timed run")
    p.add_argument("--append", metavar="PATH", help="append the Markdown section to PATH")
    args = p.parse_args(argv)

    import torch
    from tangermeme.ablate import ablate as tm_ablate
    from tangermeme.ablate import ablate_annotations as tm_ablate_annotations

    import jablate

    from . import harness, models

    torch.set_num_threads(os.cpu_count())
    S = QUICK if args.quick else FULL
    rows = {int(r) for r in args.rows.split(",") if r.strip()}
    log = lambda m: print(m, file=sys.stderr, flush=True)
    started, load_start = time.strftime("%Y-%m-%d %H:%M:%S %Z"), _load()
    results = {}
    bp = S["bpnet"]
    bpnet = models.bpnet_torch(bp["n_filters"], bp["n_layers"]) if rows & {1, 2, 4} else None

    def three(label, jab, tm, repeats):
        sides = [dict(name="incremental", run=lambda: jab(True)),
                 dict(name="full", run=lambda: jab(False)),
                 dict(name="tangermeme", run=tm, tangermeme=True)]
        outs = compare(label, sides, repeats, args.tangermeme_once, log)
        diff = _agreement(outs["incremental"], outs["full"])
        log(f"  incremental vs full: max |diff| / max |full| = {diff:.2e}")
        results[label] = dict(sides={s["name"]: s for s in sides}, diff=diff)

    if 1 in rows:
        s = S["bpnet_ann"]
        X, ann = _annotations(s, seed=11)
        Xt, ann_t = torch.from_numpy(X), torch.from_numpy(ann)
        kw = dict(n=s["n"], random_state=0, batch_size=s["batch_size"])
        three("1", lambda inc: jablate.ablate_annotations(bpnet, Xt, ann_t, backend="jax",
                                                          incremental=inc, **kw),
              lambda: tm_ablate_annotations(bpnet, Xt, ann_t, device="cpu", **kw),
              s["repeats"])
    if 2 in rows:
        s = S["case1"]
        X = models.one_hot(s["N"], s["L"], seed=1)
        start, end = models.centre(s["L"], s["width"])
        Xt = torch.from_numpy(X)
        kw = dict(start=start, end=end, n=s["n"], random_state=0, batch_size=s["batch_size"])
        three("2", lambda inc: jablate.ablate(bpnet, Xt, backend="jax", incremental=inc, **kw),
              lambda: tm_ablate(bpnet, Xt, device="cpu", **kw), s["repeats"])
    if 3 in rows:
        s = S["case3"]
        X, ann = _annotations(s, seed=3)
        torch_model = models.small_conv_torch(32, 11, seed=0)
        flax_model = models.small_conv_flax(models.small_conv_weights(torch_model), 32, 11)
        import jax.numpy as jnp
        Xj, Xt, ann_t = jnp.asarray(X), torch.from_numpy(X), torch.from_numpy(ann)
        kw = dict(n=s["n"], random_state=0, batch_size=s["batch_size"], device="cpu")
        three("3", lambda inc: jablate.ablate_annotations(flax_model, Xj, ann,
                                                          incremental=inc, **kw),
              lambda: tm_ablate_annotations(torch_model, Xt, ann_t, **kw), s["repeats"])
    if 4 in rows:
        s = dict(S["memory"])
        if args.memory_N:
            s["N"] = args.memory_N
        log(f"row 4: incremental ablate, N={s['N']} (load {_load()})")
        results["4"] = dict(spec=s, r=run_memory(s))
        for side, r in results["4"]["r"].items():
            log(f"  {side}: peak {r['maxrss_bytes'] / 1e9:.3f} GB in {r['seconds']:.1f} s")
    load_end = _load()

    text = report(args, S, results, started, load_start, load_end, harness)
    print(text)
    if args.append:
        with open(args.append, "a") as f:
            f.write("\n" + text)
    return 0


TARGETS = {"1": (4, 15), "2": (3, 8), "3": (10, 30)}
LABELS = {
    "1": "bpnet-lite BPNet (translated, random weights), `ablate_annotations`, 500 × 20 bp "
         "on 100 × 2,114 bp, n=20",
    "2": "Case 1: BPNet, `ablate`, 64 × 2,114 bp, 100-bp region, n=20",
    "3": "Case 3: small conv (flax), `ablate_annotations`, 500 × 20 bp on 100 × 1,000 bp, "
         "n=20",
}


def _verdict(value, target, quick):
    if quick:
        return "not judged (--quick)"
    return "met" if value >= target else "**MISSED**"


def report(args, S, results, started, load_start, load_end, harness):
    import subprocess as sp
    try:
        commit = sp.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                        text=True).stdout.strip()
    except OSError:
        commit = "?"
    cmd = " ".join(["python -m benchmarks.incremental"] + (sys.argv[1:] if args else []))
    info = harness.machine_info()
    lines = [f"## Incremental ablation (issue 11), {time.strftime('%Y-%m-%d', time.gmtime())}", "",
             f"`{cmd}` at commit {commit}, started {started}. Machine: {info['CPU']}, "
             f"nproc {os.cpu_count()}, {info['Memory']}, JAX {info['JAX devices']}, torch "
             f"threads {info['torch threads']}; load average {load_start} at the start, "
             f"{load_end} at the end.", "",
             "Protocol: in one process, the three sides of each row alternate (incremental, "
             "full, tangermeme, ...) after one untimed warm-up each (translation and XLA "
             "compiles happen there); medians. A tangermeme warm-up longer than "
             f"{args.tangermeme_once:.0f} s is its only timed run (marked *once*). BPNet is "
             "bpnet-lite's `BPNet(n_filters=64, n_layers=8, n_control_tracks=0)` with "
             "**random weights** (`torch.manual_seed(0)`); jablate runs it with "
             "`backend=\"jax\"` (translated), tangermeme runs the torch module; same "
             "annotations / region, `batch_size`, `random_state=0`.", "",
             ]
    if any(k in results for k in TARGETS):
        lines += ["| row | incremental (s) | full (s) | tangermeme (s) | full / incr. | "
                  "tangermeme / incr. | targets | incr. vs full, max rel. diff |",
                  "|---|---:|---:|---:|---:|---:|---|---:|"]
    fmt = harness.fmt_s
    verdicts = []
    for key in ("1", "2", "3"):
        if key not in results:
            continue
        sd, diff = results[key]["sides"], results[key]["diff"]
        inc, full, tm = (_median(sd[n]["times"]) for n in ("incremental", "full", "tangermeme"))
        r_full, r_tm = full / inc, tm / inc
        t_full, t_tm = TARGETS[key]
        once = " (*once*)" if sd["tangermeme"]["once"] else ""
        runs = "; ".join(f"{n}: " + ", ".join(fmt(t) for t in sd[n]["times"])
                         + f" (warm-up {fmt(sd[n]['warm'])})" for n in sd)
        lines.append(f"| {LABELS[key]} | {fmt(inc)} | {fmt(full)} | {fmt(tm)}{once} | "
                     f"{r_full:.2f}× | {r_tm:.2f}× | ≥{t_full}×: "
                     f"{_verdict(r_full, t_full, args.quick)}; ≥{t_tm}×: "
                     f"{_verdict(r_tm, t_tm, args.quick)} | {diff:.1e} |")
        verdicts.append(f"- Row {key} runs: {runs}.")
    lines.append("")
    lines += verdicts
    if "4" in results:
        s = results["4"]["spec"]
        full_size = s["N"] == FULL["memory"]["N"] and not args.quick
        for side, r in results["4"]["r"].items():
            peak = r["maxrss_bytes"] / 1e9
            verdict = ("not judged (--quick)" if args.quick else
                       ("met" if peak <= 1 else "**MISSED**") if full_size else
                       f"not judged at the target's size (N={s['N']:,}, not 2,000)")
            reduce = ", reduce='mean_std'" if side.endswith("mean_std") else ""
            lines.append(
                f"- Row 4 (case 4 of `python -m benchmarks`: Conv1d(4 → {s['filters']}, width "
                f"{s['kernel']}) → ReLU → mean → Linear, one output, flax), peak RSS of "
                f"`jablate.ablate(model, X, n={s['n']}, incremental=True{reduce}, "
                f"batch_size={s['batch_size']})`, {s['N']:,} × {s['L']:,} bp, central "
                f"{s['width']}-bp region, own subprocess (`ru_maxrss` via `os.wait4`; VmHWM "
                f"{(r.get('vmhwm_bytes') or 0) / 1e9:.3f} GB): **{peak:.3f} GB** in "
                f"{r['seconds']:.1f} s (target ≤ 1 GB at N=2,000: {verdict}).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
