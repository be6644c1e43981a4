"""``python -m benchmarks.gpu [--dry-run] [--out PATH]``: case 5, jablate against tangermeme
on a CUDA GPU (issue 19's table), as one prepared script for a short loan of a GPU.

bpnet-lite ``BPNet(64 filters, 8 layers)``, 2,114 bp, **random weights**
(``torch.manual_seed(0)``); tangermeme 1.6 runs the torch module on the GPU
(``device='cuda'``), jablate runs with its defaults (no ``device=``: JAX's default backend).
Side by side in one process, alternated after one untimed warm-up each, medians
(:func:`benchmarks.incremental.compare`). Rows:

A. ``ablate``, 512 × 2,114 bp, the central 100 bp, n=20, ``batch_size=256``: tangermeme; the
   torch module with a CPU tensor and ``backend='jax'``; the translated module (a JAX
   callable) with ``random_state=jax.random.key(0)``, ``incremental='auto'`` (the default)
   and ``False``; the forward floor (``jablate.predict`` of the translated module on the
   10,240 pre-shuffled sequences).
B. ``ablate_annotations``, 500 × 20 bp on 100 × 2,114 bp, n=20: tangermeme; jablate on the
   torch module (``backend='jax'``), ``incremental='auto'`` and ``False``.
C. ``deep_lift_shap``, 64 × 2,114 bp, 20 references, count head (bpnet-lite's
   ``CountWrapper``): tangermeme and jablate on the same references; jablate drawing them.
D. ``saturation_mutagenesis``, 8 × 2,114 bp, count head: tangermeme (its fastISM, timing
   guard off) and jablate, ``incremental='auto'`` and ``False``.
F. ``ablate(func=deep_lift_shap)``, 8 × 2,114 bp, the central 100 bp, n=4, 20 references
   (each side draws its own: a time, not an agreement), count head: tangermeme and jablate.
E. Precision: jablate's row-A outputs with XLA's default float32 precision (TF32 on a GPU)
   against ``jax.default_matmul_precision('highest')`` (full float32).

Without a GPU it prints one line saying so and exits 0. ``--dry-run`` runs every row on the
CPU at tiny sizes (to check the script before a GPU is lent; it judges nothing).
``benchmarks/gpu_run.sh`` is the command for the device machine.
"""

import argparse
import os
import platform
import sys
import time
import warnings

FULL = dict(ablate=dict(N=512, L=2114, width=100, n=20, batch_size=256),
            ann=dict(N=100, L=2114, k=500, width=20, n=20, batch_size=256),
            dls=dict(N=64, L=2114, R=20, batch_size=256),
            ism=dict(N=8, L=2114, batch_size=256),
            func=dict(N=8, L=2114, width=100, n=4, R=20, batch_size=256),
            bpnet=dict(n_filters=64, n_layers=8), repeats=3)
DRY = dict(ablate=dict(N=4, L=500, width=50, n=3, batch_size=8),
           ann=dict(N=4, L=500, k=6, width=20, n=3, batch_size=8),
           dls=dict(N=2, L=500, R=3, batch_size=8),
           ism=dict(N=1, L=200, batch_size=64),
           func=dict(N=1, L=200, width=20, n=2, R=2, batch_size=8),
           bpnet=dict(n_filters=8, n_layers=2), repeats=1)
TARGETS = dict(tangermeme_ablate=5.0, floor=1.1, annotations=15.0, dls=3.0, ism=2.0, auto=1.1)


def gpu_status():
    """``(gpus, text)``: the GPUs JAX sees, and a line listing JAX's and torch's devices."""
    import jax
    try:
        import torch
        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = "torch not installed"
    devices = jax.devices()
    gpus = [d for d in devices if d.platform == "gpu"]
    return gpus, f"`jax.devices()` = `{devices}`; `torch.cuda.is_available()` = `{cuda}`"


def torch_precision() -> str:
    """torch's float32 settings, as this process has them (TF32 for cuDNN's convolutions is
    on by default, for matmuls off)."""
    import torch
    return (f"`torch.backends.cudnn.allow_tf32` = {torch.backends.cudnn.allow_tf32}, "
            f"`torch.backends.cuda.matmul.allow_tf32` = "
            f"{torch.backends.cuda.matmul.allow_tf32}")


ROWS = "ABECDF"


def run(dry=False, log=print, rows_wanted=ROWS, publish=None):
    """Run the rows named in ``rows_wanted`` (letters of :data:`ROWS`; E needs A), in the
    order A, E, B, C, D, F; return ``(markdown, target lines)``. ``publish(markdown)``, if
    given, is called after each row with the section so far, so that a run cut short by its
    time limit still leaves every finished row behind."""
    import jax
    import jax.numpy as jnp
    import numpy
    import torch
    from bpnetlite.bpnet import CountWrapper
    from tangermeme.ablate import ablate as tm_ablate
    from tangermeme.ablate import ablate_annotations as tm_ablate_annotations
    from tangermeme.deep_lift_shap import deep_lift_shap as tm_dls
    from tangermeme.saturation_mutagenesis import saturation_mutagenesis as tm_ism

    import jablate
    from jablate.bridges.torch import translate

    from . import models
    from .harness import rel_diff
    from .incremental import _annotations, compare

    S = DRY if dry else FULL
    torch_device = "cpu" if dry else "cuda"
    started = time.time()
    bp = S["bpnet"]
    # separate modules with the same weights: tangermeme moves its module to the GPU
    bpnet_tm = models.bpnet_torch(**bp).eval()
    bpnet_j = models.bpnet_torch(**bp).eval()
    rows, targets = [], []
    unknown = set(rows_wanted) - set(ROWS)
    if unknown or ("E" in rows_wanted and "A" not in rows_wanted):
        raise ValueError(f"rows_wanted: letters of {ROWS!r}, E only with A; got {rows_wanted!r}")

    def section(final):
        gpus, status = gpu_status()
        name = (torch.cuda.get_device_name() if torch.cuda.is_available()
                else "no GPU (dry run)")
        versions = ", ".join(f"{m} {sys.modules[m].__version__}" for m in
                             ("jax", "jaxlib", "torch", "tangermeme", "jablate")
                             if hasattr(sys.modules.get(m), "__version__"))
        flags = (" --dry-run" if dry else "") + (
            f" --rows {rows_wanted}" if rows_wanted != ROWS else "")
        head = (f"GPU: **{name}** ({status}). {versions}; Python {platform.python_version()}. "
                f"Command: `python -m benchmarks.gpu{flags}`, started "
                f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(started))}, "
                f"wall {time.time() - started:.0f} s"
                + ("" if final else " so far (**partial**: the run had not finished)")
                + ". Precision: JAX, XLA's default float32 precision (TF32 for "
                "convolutions and matmuls on the GPU) unless said otherwise; torch, "
                f"{torch_precision()}.")
        return ("## 5. CUDA\n\n" + head + "\n\n" + "\n\n".join(rows) + "\n\n"
                + "\n".join(targets) + "\n")

    def done_row():
        if publish is not None:
            publish(section(final=False))

    def median(side):
        return sorted(side["times"])[len(side["times"]) // 2]

    def table(title, sides, note=""):
        ref = median(sides[0])
        lines = [f"### {title}", "", note, "", "| side | median (s) | runs (s) | "
                 f"{sides[0]['name']} / side |", "|---|---:|---|---:|"]
        for s in sides:
            runs = ", ".join(f"{t:.3f}" for t in s["times"])
            lines.append(f"| {s['name']} | {median(s):.3f} | {runs} | {ref / median(s):.2f}× |")
        rows.append("\n".join(lines))

    def target(label, value, goal, higher=True):
        op = "≥" if higher else "≤"
        met = value >= goal if higher else value <= goal
        verdict = "not judged (dry run)" if dry else ("met" if met else "**MISSED**")
        targets.append(f"- {label}: measured {value:.2f}× (target {op} {goal:g}×): {verdict}")

    # A. ablate
    if "A" in rows_wanted:
        s = S["ablate"]
        X = models.one_hot(s["N"], s["L"], seed=1)
        Xt, Xj = torch.from_numpy(X), jnp.asarray(X)
        start, end = models.centre(s["L"], s["width"])
        t0 = time.perf_counter()
        translated = translate(bpnet_j, Xt[:1])
        log(f"  translated BPNet in {time.perf_counter() - t0:.1f} s")
        key = jax.random.key(0)
        kw = dict(n=s["n"], batch_size=s["batch_size"])
        shuffled = jablate.shuffle(Xj, start, end, n=s["n"], random_state=key).reshape(
            -1, Xj.shape[1], Xj.shape[2])
        sides = [dict(name="tangermeme ablate, torch on the GPU", tangermeme=True,
                      run=lambda: tm_ablate(bpnet_tm, Xt, start, end, random_state=0,
                                            device=torch_device, **kw)),
                 dict(name="jablate, torch module, CPU tensor, backend='jax'",
                      run=lambda: jablate.ablate(bpnet_j, Xt, start, end, random_state=0,
                                                 backend="jax", **kw)),
                 dict(name="jablate, JAX callable, key, incremental='auto'",
                      run=lambda: jablate.ablate(translated, Xj, start, end, random_state=key,
                                                 **kw)),
                 dict(name="jablate, JAX callable, key, incremental=False",
                      run=lambda: jablate.ablate(translated, Xj, start, end, random_state=key,
                                                 incremental=False, **kw)),
                 dict(name="forward floor: jablate.predict of the pre-shuffled sequences",
                      run=lambda: jablate.predict(translated, shuffled,
                                                  batch_size=s["batch_size"])),
                 dict(name="jablate, torch module, CPU tensor (default: torch runs it, "
                      "through the bridge)",
                      run=lambda: jablate.ablate(bpnet_j, Xt, start, end, random_state=0,
                                                 **kw))]
        outs = compare(f"A. ablate {s['N']} × {s['L']}", sides, S["repeats"], float("inf"), log)
        agreement = rel_diff(tuple(outs[sides[0]["name"]]), tuple(outs[sides[1]["name"]]))
        bridged = rel_diff(tuple(outs[sides[0]["name"]]), tuple(outs[sides[5]["name"]]))
        table(f"A. `ablate`, {s['N']} × {s['L']:,} bp, central {s['width']} bp, n={s['n']}",
              sides, f"jablate (torch module, int seed: tangermeme's permutations) vs tangermeme, "
                     f"max relative difference {agreement:.2e} (backend='jax'), {bridged:.2e} "
                     "(the bridge).")
        ref, floor = median(sides[0]), median(sides[4])
        target("A, torch module + CPU tensor vs tangermeme", ref / median(sides[1]),
               TARGETS["tangermeme_ablate"])
        target("A, JAX callable + key vs tangermeme", ref / median(sides[2]),
               TARGETS["tangermeme_ablate"])
        target("A, JAX callable + key / forward floor", median(sides[2]) / floor, TARGETS["floor"],
               higher=False)
        target("A, incremental='auto' / incremental=False", median(sides[2]) / median(sides[3]),
               TARGETS["auto"], higher=False)
        done_row()

    # E. precision (on row A's JAX callable)
    if "E" in rows_wanted:
        default = outs[sides[3]["name"]]
        with jax.default_matmul_precision("highest"):
            highest = jablate.ablate(translated, Xj, start, end, random_state=key,
                                     incremental=False, **kw)
        precision = rel_diff(tuple(jax.tree.leaves(default)), tuple(jax.tree.leaves(highest)))
        rows.append(f"### E. Precision\n\nRow A's outputs with XLA's default float32 "
                    f"precision against `jax.default_matmul_precision('highest')`: "
                    f"max |diff| / max |highest| = {precision:.2e}.")
        done_row()
    outs = shuffled = None  # free the GPU memory row A held

    # B. ablate_annotations
    if "B" in rows_wanted:
        s = S["ann"]
        Xa, ann = _annotations(s, seed=11)
        Xat, ann_t = torch.from_numpy(Xa), torch.from_numpy(ann)
        kw = dict(n=s["n"], random_state=0, batch_size=s["batch_size"])
        sides = [dict(name="tangermeme ablate_annotations", tangermeme=True,
                      run=lambda: tm_ablate_annotations(bpnet_tm, Xat, ann_t, device=torch_device,
                                                        **kw)),
                 dict(name="jablate, torch module, backend='jax', incremental='auto'",
                      run=lambda: jablate.ablate_annotations(bpnet_j, Xat, ann_t, backend="jax",
                                                             **kw)),
                 dict(name="jablate, the same, incremental=False",
                      run=lambda: jablate.ablate_annotations(bpnet_j, Xat, ann_t, backend="jax",
                                                             incremental=False, **kw))]
        outs = compare("B. ablate_annotations", sides, S["repeats"], float("inf"), log)
        agreement = rel_diff(tuple(jax.tree.leaves(outs[sides[0]["name"]])),
                             tuple(jax.tree.leaves(outs[sides[2]["name"]])))
        table(f"B. `ablate_annotations`, {s['k']} × {s['width']} bp on {s['N']} × {s['L']:,} bp, "
              f"n={s['n']}", sides, f"max relative difference to tangermeme {agreement:.2e}.")
        target("B, ablate_annotations vs tangermeme", median(sides[0]) / median(sides[1]),
               TARGETS["annotations"])
        target("B, incremental='auto' / incremental=False", median(sides[1]) / median(sides[2]),
               TARGETS["auto"], higher=False)
        del outs
        done_row()
    # C. deep_lift_shap
    if "C" in rows_wanted:
        s = S["dls"]
        counts_tm, counts_j = CountWrapper(bpnet_tm).eval(), CountWrapper(bpnet_j).eval()
        Xd = torch.from_numpy(models.one_hot(s["N"], s["L"], seed=22))
        refs = torch.from_numpy(numpy.asarray(jablate.dinucleotide_shuffle(
            Xd.numpy(), n=s["R"], random_state=0)))
        kw = dict(batch_size=s["batch_size"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sides = [dict(name="tangermeme deep_lift_shap", tangermeme=True,
                          run=lambda: tm_dls(counts_tm, Xd, references=refs, device=torch_device,
                                             **kw)),
                     dict(name="jablate, the same references",
                          run=lambda: jablate.deep_lift_shap(counts_j, Xd, references=refs, **kw)),
                     dict(name="jablate, references drawn",
                          run=lambda: jablate.deep_lift_shap(counts_j, Xd, n_shuffles=s["R"],
                                                             random_state=0, **kw))]
            outs = compare("C. deep_lift_shap", sides, S["repeats"], float("inf"), log)
        agreement = rel_diff((outs[sides[0]["name"]],), (outs[sides[1]["name"]],))
        table(f"C. `deep_lift_shap`, {s['N']} × {s['L']:,} bp, {s['R']} references, count head",
              sides, f"same references: max relative difference {agreement:.2e}.")
        target("C, deep_lift_shap vs tangermeme", median(sides[0]) / median(sides[2]),
               TARGETS["dls"])
        del outs
        done_row()
    # D. saturation_mutagenesis
    if "D" in rows_wanted:
        s = S["ism"]
        Xi = torch.from_numpy(models.one_hot(s["N"], s["L"], seed=21))
        tm_module = sys.modules["tangermeme.saturation_mutagenesis"]
        if hasattr(tm_module, "_FAST_MAX_RELATIVE_TIME"):
            tm_module._FAST_MAX_RELATIVE_TIME = float("inf")  # keep its fastISM on
        kw = dict(batch_size=s["batch_size"])
        sides = [dict(name="tangermeme saturation_mutagenesis (fastISM)", tangermeme=True,
                      run=lambda: tm_ism(counts_tm, Xi, device=torch_device, **kw)),
                 dict(name="jablate, incremental='auto'",
                      run=lambda: jablate.saturation_mutagenesis(counts_j, Xi, **kw)),
                 dict(name="jablate, incremental=False",
                      run=lambda: jablate.saturation_mutagenesis(counts_j, Xi, incremental=False,
                                                                 **kw))]
        outs = compare("D. saturation_mutagenesis", sides, S["repeats"], float("inf"), log)
        agreement = rel_diff((outs[sides[0]["name"]],), (outs[sides[1]["name"]],))
        table(f"D. `saturation_mutagenesis`, {s['N']} × {s['L']:,} bp, count head", sides,
              f"max relative difference to tangermeme {agreement:.2e}.")
        target("D, saturation_mutagenesis vs tangermeme's fastISM",
               median(sides[0]) / median(sides[1]), TARGETS["ism"])
        target("D, incremental='auto' / incremental=False", median(sides[1]) / median(sides[2]),
               TARGETS["auto"], higher=False)
        done_row()
    # F. ablate(func=deep_lift_shap)
    if "F" in rows_wanted:
        s = S["func"]
        Xf = torch.from_numpy(models.one_hot(s["N"], s["L"], seed=23))
        start, end = models.centre(s["L"], s["width"])
        kw = dict(n=s["n"], random_state=0, batch_size=s["batch_size"],
                  additional_func_kwargs=dict(n_shuffles=s["R"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sides = [dict(name="tangermeme ablate(func=deep_lift_shap)", tangermeme=True,
                          run=lambda: tm_ablate(counts_tm, Xf, start, end, func=tm_dls,
                                                device=torch_device, **kw)),
                     dict(name="jablate ablate(func=jablate.deep_lift_shap)",
                          run=lambda: jablate.ablate(counts_j, Xf, start, end,
                                                     func=jablate.deep_lift_shap, **kw))]
            compare("F. ablate(func=deep_lift_shap)", sides, S["repeats"], float("inf"), log)
        table(f"F. `ablate(func=deep_lift_shap)`, {s['N']} × {s['L']:,} bp, central "
              f"{s['width']} bp, n={s['n']}, {s['R']} references, count head", sides,
              "each side draws its own references: a time, not an agreement.")
        done_row()

    return section(final=True), targets


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="every row on the CPU at tiny sizes; judges nothing")
    parser.add_argument("--out", help="also write the Markdown section to this file, "
                        "rewritten after each row (a run cut short keeps its finished rows)")
    parser.add_argument("--rows", default=ROWS, help=f"the rows to run, letters of {ROWS} "
                        "(E needs A), for a rerun of what a time limit cut off")
    args = parser.parse_args(argv)
    wanted = args.rows.upper()
    if set(wanted) - set(ROWS) or ("E" in wanted and "A" not in wanted):
        parser.error(f"--rows: letters of {ROWS}, E only with A; got {args.rows!r}")
    gpus, status = gpu_status()
    if not gpus and not args.dry_run:
        print(f"benchmarks.gpu: not run: no GPU ({status}).")
        return 0
    log = lambda line: print(line, file=sys.stderr, flush=True)
    def publish(text):
        if args.out:  # whole files only: written beside, then renamed over
            with open(args.out + ".part", "w") as f:
                f.write(text)
            os.replace(args.out + ".part", args.out)

    text, _ = run(dry=args.dry_run, log=log, rows_wanted=wanted, publish=publish)
    print(text)
    publish(text)
    return 0


if __name__ == "__main__":
    if not (os.environ.get("XLA_CLIENT_MEM_FRACTION")  # set both and jaxlib refuses
            or os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION")):
        os.environ["XLA_CLIENT_MEM_FRACTION"] = "0.5"  # torch shares the card
    sys.exit(main())
