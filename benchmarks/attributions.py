"""``python -m benchmarks.attributions [--quick] [--rows 1,2,3] [--append PATH]``: issue 13's
performance table.

jablate's JAX ``saturation_mutagenesis`` and ``deep_lift_shap`` against tangermeme 1.6's, on
bpnet-lite's ``BPNet(64 filters, 8 layers)``, 2,114 bp, **random weights**
(``torch.manual_seed(0)``), count head (bpnet-lite's ``CountWrapper``); jablate translates
the torch module (``backend="jax"``), tangermeme runs it in torch. Side by side in one
process, alternated after one untimed warm-up each, medians (the protocol of
:func:`benchmarks.incremental.compare`); a tangermeme warm-up longer than
``--tangermeme-once`` seconds is its only timed run.

1. ISM of 16 × 2,114 bp: jablate with the incremental engine (fastISM for JAX), jablate
   with it off (``batch_size=8``, its fastest), tangermeme's ``saturation_mutagenesis``
   (its default fastISM path, kept on: its timing guard ``_FAST_MAX_RELATIVE_TIME`` set to
   infinity, since on a loaded machine it may otherwise drop to its plain path).
2. ``deep_lift_shap`` of 64 × 2,114 bp, ``n_shuffles=20``: the same explicit references
   (drawn once by ``jablate.dinucleotide_shuffle``) on both sides, and jablate drawing
   them in-step.
3. ``ablate(func=deep_lift_shap, n=10, n_shuffles=10)`` on 16 sequences, central 100-bp
   region, ``random_state=0``: jablate's fast path (shuffles and references in-step)
   against tangermeme's ``ablate(func=deep_lift_shap)``.
"""

import argparse
import os
import sys
import time
import warnings

FULL = dict(ism=dict(N=16, L=2114, batch_size=64, off_batch_size=8, repeats=1),
            dls=dict(N=64, L=2114, R=20, batch_size=64, repeats=2),
            ablate=dict(N=16, L=2114, n=10, R=10, width=100, batch_size=64, repeats=1),
            bpnet=dict(n_filters=64, n_layers=8))
QUICK = dict(ism=dict(N=2, L=500, batch_size=64, off_batch_size=8, repeats=1),
             dls=dict(N=4, L=500, R=4, batch_size=16, repeats=1),
             ablate=dict(N=2, L=500, n=2, R=3, width=50, batch_size=16, repeats=1),
             bpnet=dict(n_filters=16, n_layers=4))
TARGETS = {"1": {"tangermeme": 10, "jablate, incremental off": 2.5},
           "2": {"tangermeme": 3}, "3": {"tangermeme": 3}}
LABELS = {"1": "ISM, {N} × {L:,} bp, BPNet count head",
          "2": "`deep_lift_shap`, {N} × {L:,} bp, `n_shuffles={R}`, BPNet count head",
          "3": "`ablate(func=deep_lift_shap, n={n}, n_shuffles={R})`, {N} × {L:,} bp"}
ROWS = {"1": "ism", "2": "dls", "3": "ablate"}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.attributions",
                                description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes; targets not judged")
    p.add_argument("--rows", default="1,2,3", help="rows to run (default 1,2,3)")
    p.add_argument("--tangermeme-once", type=float, default=60.0,
                   help="a tangermeme warm-up longer than this (s) is its only timed run")
    p.add_argument("--append", metavar="PATH", help="append the Markdown section to PATH")
    args = p.parse_args(argv)

    import numpy
    import torch
    from bpnetlite.bpnet import CountWrapper
    from tangermeme.ablate import ablate as tm_ablate
    from tangermeme.deep_lift_shap import deep_lift_shap as tm_dls
    from tangermeme.saturation_mutagenesis import saturation_mutagenesis as tm_ism

    import jablate

    from . import harness, models
    from .incremental import _agreement, _load, compare

    warnings.simplefilter("ignore")  # convergence warnings of random weights, on both sides
    torch.set_num_threads(os.cpu_count())
    S = QUICK if args.quick else FULL
    rows = {int(r) for r in args.rows.split(",") if r.strip()}
    log = lambda m: print(m, file=sys.stderr, flush=True)
    started, load_start = time.strftime("%Y-%m-%d %H:%M:%S %Z"), _load()
    counts = CountWrapper(models.bpnet_torch(**S["bpnet"])).eval()
    results = {}

    def record(key, sides, repeats):
        outs = compare(LABELS[key].format(**S[ROWS[key]]), sides, repeats, args.tangermeme_once,
                       log)
        names = [s["name"] for s in sides]
        diffs = {n: _agreement(_tuple(outs[names[0]]), _tuple(outs[n])) for n in names[1:]}
        for n, d in diffs.items():
            log(f"  {names[0]} vs {n}: max |diff| / max |{n}| = {d:.2e}")
        results[key] = dict(sides=sides, diffs=diffs)

    if 1 in rows:
        s = S["ism"]
        Xt = torch.from_numpy(models.one_hot(s["N"], s["L"], seed=21))
        # jablate's own path without the engine at its best batch (8 beat 32 and 64 here)
        jab = lambda inc: jablate.saturation_mutagenesis(
            counts, Xt, incremental=inc,
            batch_size=s["batch_size"] if inc else s["off_batch_size"])
        # tangermeme times one batch of its fastISM against its plain path and may drop
        # fastISM on a loaded machine (then a 16-sequence run takes ~35 min): keep it on,
        # as its own accuracy check still runs
        tm_module = sys.modules["tangermeme.saturation_mutagenesis"]
        if hasattr(tm_module, "_FAST_MAX_RELATIVE_TIME"):
            tm_module._FAST_MAX_RELATIVE_TIME = float("inf")
        record("1", [dict(name="jablate, incremental", run=lambda: jab(True)),
                     dict(name="jablate, incremental off", run=lambda: jab(False)),
                     dict(name="tangermeme", tangermeme=True,
                          run=lambda: tm_ism(counts, Xt, batch_size=s["batch_size"],
                                             device="cpu"))], s["repeats"])
    if 2 in rows:
        s = S["dls"]
        Xt = torch.from_numpy(models.one_hot(s["N"], s["L"], seed=22))
        refs = torch.from_numpy(numpy.asarray(
            jablate.dinucleotide_shuffle(Xt.numpy(), n=s["R"], random_state=0)))
        kw = dict(batch_size=s["batch_size"])
        record("2", [dict(name="jablate", run=lambda: jablate.deep_lift_shap(
                         counts, Xt, references=refs, **kw)),
                     dict(name="jablate, references in-step", run=lambda: jablate.deep_lift_shap(
                         counts, Xt, n_shuffles=s["R"], random_state=0, **kw)),
                     dict(name="tangermeme", tangermeme=True, run=lambda: tm_dls(
                         counts, Xt, references=refs, device="cpu", **kw))], s["repeats"])
    if 3 in rows:
        s = S["ablate"]
        Xt = torch.from_numpy(models.one_hot(s["N"], s["L"], seed=23))
        start, end = models.centre(s["L"], s["width"])
        kw = dict(n=s["n"], random_state=0, batch_size=s["batch_size"],
                  additional_func_kwargs=dict(n_shuffles=s["R"]))
        record("3", [dict(name="jablate", run=lambda: jablate.ablate(
                         counts, Xt, start, end, func=jablate.deep_lift_shap, **kw)),
                     dict(name="tangermeme", tangermeme=True, run=lambda: tm_ablate(
                         counts, Xt, start, end, func=tm_dls, device="cpu", **kw))],
               s["repeats"])
        results["3"]["diffs"] = {}  # different reference samplers: not comparable
    text = report(args, S, results, started, load_start, _load(), harness)
    print(text)
    if args.append:
        with open(args.append, "a") as f:
            f.write("\n" + text)
    return 0


def _tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def report(args, S, results, started, load_start, load_end, harness):
    import subprocess as sp

    from .incremental import _median

    commit = sp.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                    text=True).stdout.strip() or "?"
    info = harness.machine_info()
    cmd = " ".join(["python -m benchmarks.attributions"] + sys.argv[1:])
    lines = ["## Attributions (issue 13), " + started.split()[0], "",
             f"`{cmd}` at commit {commit}, started {started}. Machine: {info['CPU']}, "
             f"{info['Memory']}, JAX {info['JAX devices']}, torch threads "
             f"{info['torch threads']}; load average {load_start} at the start, {load_end} at "
             "the end.", "",
             "Protocol: in one process the sides of a row alternate after one untimed warm-up "
             "each (translation and XLA compiles happen there); medians. A tangermeme warm-up "
             f"longer than {args.tangermeme_once:.0f} s is its only timed run (*once*). BPNet "
             f"is bpnet-lite's `BPNet(n_filters={S['bpnet']['n_filters']}, n_layers="
             f"{S['bpnet']['n_layers']}, n_control_tracks=0)`, **random "
             "weights** (`torch.manual_seed(0)`), count head through bpnet-lite's "
             "`CountWrapper`; jablate translates it, tangermeme 1.6.0 runs it in torch on the "
             "CPU.", "",
             "| row | side | median (s) | runs (s) | ratio: side / first side | target | "
             "max rel. diff to the first side |", "|---|---|---:|---|---:|---|---:|"]
    fmt = harness.fmt_s
    for key in ("1", "2", "3"):
        if key not in results:
            continue
        sides, diffs = results[key]["sides"], results[key]["diffs"]
        first = _median(sides[0]["times"])
        for s in sides:
            med = _median(s["times"])
            ratio = med / first
            target = TARGETS[key].get(s["name"])
            verdict = "" if target is None else (
                f"≥{target}×: " + ("not judged (--quick)" if args.quick else
                                   "met" if ratio >= target else "**MISSED**"))
            once = " (*once*)" if s.get("once") else ""
            runs = ", ".join(fmt(t) for t in s["times"]) + f" (warm-up {fmt(s['warm'])})"
            diff = f"{diffs[s['name']]:.1e}" if s["name"] in diffs else ""
            label = LABELS[key].format(**S[ROWS[key]])
            lines.append(f"| {label} | {s['name']} | {fmt(med)}{once} | {runs} | "
                         f"{ratio:.2f}× | {verdict} | {diff} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
