"""The benchmark cases: each returns a Markdown section and a list of target lines.

Every timed comparison runs tangermeme 1.6 and jablate on the same inputs and weights,
in this process, with the same ``batch_size`` (64 at full size) and ``device='cpu'``, torch using as
many threads as JAX (``os.cpu_count()``); see :mod:`benchmarks.harness` for the timing
protocol. Sizes are in :data:`SIZES` (full) and :data:`QUICK` (``--quick``).
"""

import os
import tempfile

import numpy

from . import harness, models
from .harness import Side, _np, alternate, fmt_s, gb, rel_diff, target_line, time_table

SIZES = {
    "bpnet": dict(N=64, L=2114, n=20, width=100, n_filters=64, n_layers=8, batch_size=64,
                  repeats=3),
    "shuffles": dict(N=1000, L=1000, n=20, repeats=5),
    "annotations": dict(N=100, L=1000, k=500, width=20, n=20, batch_size=64, repeats=5),
    "memory": dict(N=2000, L=2114, n=100, width=100, filters=8, kernel=7, batch_size=64,
                   tangermeme_scaling_N=(100, 200)),
}
# --quick: the same code paths on inputs small enough to run in about a minute, with
# a smaller BPNet (same architecture, fewer filters and layers) and smaller batches.
QUICK = {
    "bpnet": dict(N=4, L=500, n=2, width=100, n_filters=16, n_layers=4, batch_size=8,
                  repeats=2),
    "shuffles": dict(N=20, L=200, n=5, repeats=2),
    "annotations": dict(N=10, L=500, k=20, width=20, n=5, batch_size=16, repeats=2),
    "memory": dict(N=40, L=2114, n=10, width=100, filters=8, kernel=7, batch_size=64,
                   tangermeme_scaling_N=(20, 40)),
}
MEMORY_TARGET_BYTES = 1e9
TANGERMEME_RUN_LIMIT_BYTES = 12e9


def _head(tree, rows):
    """The first ``rows`` examples of every leaf of an output tree."""
    if isinstance(tree, (tuple, list)):
        return [_head(t, rows) for t in tree]
    return tree[:rows]


def _setup(lines):
    return "\n".join(f"- {line}" for line in lines)


# ---------------------------------------------------------------------------------------
# 1. BPNet ablation


def case_bpnet(cfg, log):
    import jax.numpy as jnp
    import torch
    from tangermeme.ablate import ablate as tm_ablate

    import jablate

    from . import bpnet_flax

    s = cfg.sizes["bpnet"]
    N, L, n = s["N"], s["L"], s["n"]
    start, end = models.centre(L, s["width"])
    batch_size = s["batch_size"]
    model = models.bpnet_torch(s["n_filters"], s["n_layers"])
    flax_model = bpnet_flax.from_torch(model)
    X = models.one_hot(N, L, seed=1)
    Xt, Xj = torch.from_numpy(X), jnp.asarray(X)
    kw = dict(start=start, end=end, n=n, random_state=0, batch_size=batch_size, device="cpu")

    check_rows = min(N, 8)
    with torch.inference_mode():
        y_torch = model(Xt[:check_rows])
    port_diff = rel_diff(flax_model(Xj[:check_rows]), y_torch)
    log(f"    flax port vs torch BPNet: max relative difference {port_diff:.2e}")
    if not port_diff <= 1e-4:
        raise AssertionError(f"the flax port differs from torch's BPNet by {port_diff:.2e} "
                             "(relative) > 1e-4: it is not the same model; not timing it.")

    try:
        from jablate.bridges.torch import translate
        translated = translate(model, Xt[:1])
        translate_diff = rel_diff(translated(Xj[:check_rows]), y_torch)
        translate_status = (f"available ({type(translated).__name__}, translated in "
                            f"{getattr(translated, 'translation_seconds', float('nan')):.1f} s; "
                            f"max relative difference to torch {translate_diff:.2e})")
    except Exception as e:  # not ready yet: reported, not fatal
        translated, translate_status = None, f"not available ({type(e).__name__}: {e})"
    log(f"    translate: {translate_status}")

    X_shuffled = harness.block(
        jablate.shuffle(Xj, start=start, end=end, n=n, random_state=0).reshape(N * n, 4, L))

    reference = Side("tangermeme.ablate, torch BPNet", lambda: tm_ablate(model, Xt, **kw),
                     warm=lambda: tm_ablate(model, Xt[:check_rows], **kw),
                     note=f"warm-up on {check_rows} sequences (torch compiles nothing)")
    bridge = Side("jablate.ablate, the same torch BPNet (DLPack bridge)",
                  lambda: jablate.ablate(model, Xt, **kw))
    port = Side("jablate.ablate, flax port with the torch weights",
                lambda: jablate.ablate(flax_model, Xj, **kw))
    sides = [reference, bridge, port]
    if translated is not None:
        trans = Side("jablate.ablate, jablate.bridges.torch.translate(BPNet)",
                     lambda: jablate.ablate(translated, Xj, **kw))
        sides.append(trans)
    predict = Side(f"jablate.predict, flax port, the {N * n:,} pre-shuffled sequences",
                   lambda: jablate.predict(flax_model, X_shuffled, batch_size=batch_size,
                                           device="cpu"),
                   note="not an ablation: the floor for one")
    sides.append(predict)

    diffs = {}

    def check(sides):
        ref = reference.warm_output
        for side in sides[1:-1]:
            out = side.warm_output
            diffs[side.name] = max(rel_diff(_head(out.y_before, check_rows), ref.y_before),
                                   rel_diff(_head(out.y_after, check_rows), ref.y_after))
            log(f"    {side.name} vs tangermeme: {diffs[side.name]:.2e}")

    alternate(sides, cfg.repeats or s["repeats"], log, check)

    lines = [
        f"Model: bpnet-lite `BPNet(n_filters={s['n_filters']}, n_layers={s['n_layers']}, "
        "n_control_tracks=0)` "
        f"(2 profile outputs; trimming {model.trimming}: {L:,} bp in, "
        f"{L - 2 * model.trimming:,} bp profile out, plus counts), random weights "
        f"(`torch.manual_seed(0)`), eval mode.",
        f"{N} random sequences × {L:,} bp; `ablate(model, X, start={start}, end={end}, n={n}, "
        f"random_state=0, batch_size={batch_size}, device='cpu')` — {N + N * n:,} model "
        f"inputs per call.",
        f"Flax port (`benchmarks/bpnet_flax.py`) vs torch on {check_rows} sequences: max "
        f"relative difference {port_diff:.2e} (required ≤ 1e-4).",
        f"`jablate.bridges.torch.translate`: {translate_status}.",
    ] + [f"{name} vs tangermeme, `y_before` and `y_after` of the warm-up "
         f"({check_rows} sequences): max relative difference {d:.2e}."
         for name, d in diffs.items()]
    table = time_table(sides, reference)
    ratio = lambda side: reference.median / side.median
    targets = [
        target_line("Case 1, jablate + flax port vs tangermeme", ratio(port), 3, quick=cfg.quick),
        target_line("Case 1, jablate + torch bridge vs tangermeme", ratio(bridge), 0.98,
                    quick=cfg.quick),
        target_line("Case 1, flax-port ablate / jitted predict of the shuffled sequences",
                    port.median / predict.median, 1.10, higher_is_better=False,
                    quick=cfg.quick),
    ]
    if translated is not None:
        targets.append(f"- Case 1, jablate + translate(BPNet) vs tangermeme: measured "
                       f"{ratio(trans):.2f}× (no target of its own)")
    else:
        targets.append("- Case 1, jablate + translate(BPNet): not available")
    return _section("1. BPNet ablation", lines, table, targets), targets


# ---------------------------------------------------------------------------------------
# 2. shuffles


def _dinucleotide_counts(Y):
    """(..., A, L) one-hot -> (..., A, A) counts of adjacent pairs."""
    return numpy.einsum("...al,...bl->...ab", Y[..., :-1], Y[..., 1:])


def case_shuffles(cfg, log):
    import jax.numpy as jnp
    import torch
    from tangermeme import ersatz

    import jablate

    s = cfg.sizes["shuffles"]
    N, L, n = s["N"], s["L"], s["n"]
    X = models.one_hot(N, L, seed=2)
    Xt, Xj = torch.from_numpy(X), jnp.asarray(X)
    repeats = cfg.repeats or s["repeats"]
    cores = os.cpu_count()

    mono_ref = Side("tangermeme.ersatz.shuffle", lambda: ersatz.shuffle(Xt, n=n, random_state=0))
    mono_jax = Side("jablate.shuffle, JAX array in and out",
                    lambda: jablate.shuffle(Xj, n=n, random_state=0))
    mono_torch = Side("jablate.shuffle, torch tensor in and out",
                      lambda: jablate.shuffle(Xt, n=n, random_state=0))
    mono_equal = {}

    def check_mono(sides):
        ref = _np(mono_ref.warm_output)
        for side in sides[1:]:
            mono_equal[side.name] = bool(numpy.array_equal(_np(side.warm_output), ref))

    log("  shuffle")
    # --quick leaves out the torch-in/out rows: each costs one more compile (jit caches
    # key on the committed sharding of DLPack arrays) and adds no code path to check.
    mono_sides = [mono_ref, mono_jax] + ([] if cfg.quick else [mono_torch])
    alternate(mono_sides, repeats, log, check_mono)

    di_ref = Side("tangermeme.ersatz.dinucleotide_shuffle (default n_jobs=1)",
                  lambda: ersatz.dinucleotide_shuffle(Xt, n=n, random_state=0))
    di_ref_par = Side(f"tangermeme.ersatz.dinucleotide_shuffle, n_jobs={cores}",
                      lambda: ersatz.dinucleotide_shuffle(Xt, n=n, random_state=0,
                                                          n_jobs=cores))
    di_jax = Side("jablate.dinucleotide_shuffle, JAX array in and out",
                  lambda: jablate.dinucleotide_shuffle(Xj, n=n, random_state=0))
    di_torch = Side("jablate.dinucleotide_shuffle, torch tensor in and out",
                    lambda: jablate.dinucleotide_shuffle(Xt, n=n, random_state=0))
    di_sides = [di_ref, di_ref_par, di_jax] + ([] if cfg.quick else [di_torch])
    di_ok = {}

    def check_di(sides):
        rows = min(N, 50)
        want = _dinucleotide_counts(X[:rows])[:, None]
        for side in sides:
            Y = _np(side.warm_output)[:rows]
            di_ok[side.name] = bool(numpy.array_equal(_dinucleotide_counts(Y),
                                                      numpy.broadcast_to(want, (rows, n, 4, 4))))

    log("  dinucleotide_shuffle")
    alternate(di_sides, repeats, log, check_di)

    lines = [
        f"{N:,} random sequences × {L:,} bp, float32, the whole sequence shuffled, `n={n}`, "
        f"`random_state=0` on both sides: output ({N}, {n}, 4, {L}), "
        f"{gb(N * n * 4 * L * 4):.2f} GB. jablate's JAX output is waited for with "
        "`block_until_ready`.",
        "`shuffle` outputs identical to tangermeme's: " + ", ".join(
            f"{k}: {'yes' if v else '**no**'}" for k, v in mono_equal.items()) + ".",
        "`dinucleotide_shuffle` keeps every dinucleotide count (first 50 sequences, all "
        "shuffles): " + ", ".join(f"{k}: {'yes' if v else '**no**'}" for k, v in di_ok.items())
        + ". (No output parity is expected: jablate samples uniformly, tangermeme's sampler "
        "does not.)",
    ]
    table = ("**shuffle**\n\n" + time_table(mono_sides, mono_ref)
             + "\n\n**dinucleotide_shuffle**\n\n" + time_table(di_sides, di_ref))
    targets = [
        target_line("Case 2, dinucleotide_shuffle, jablate (JAX) vs tangermeme default n_jobs=1",
                    di_ref.median / di_jax.median, 3, quick=cfg.quick),
        target_line(f"Case 2, dinucleotide_shuffle, jablate (JAX) vs tangermeme n_jobs={cores}",
                    di_ref_par.median / di_jax.median, 3, quick=cfg.quick),
        f"- Case 2, shuffle, jablate (JAX) vs tangermeme: measured "
        f"{mono_ref.median / mono_jax.median:.2f}× (no target of its own)",
    ]
    return _section("2. Shuffles", lines, table, targets), targets


# ---------------------------------------------------------------------------------------
# 3. ablate_annotations


def case_annotations(cfg, log):
    import jax.numpy as jnp
    import torch
    from tangermeme.ablate import ablate_annotations as tm_ablate_annotations

    import jablate

    s = cfg.sizes["annotations"]
    N, L, k, w, n = s["N"], s["L"], s["k"], s["width"], s["n"]
    X = models.one_hot(N, L, seed=3)
    rng = numpy.random.RandomState(4)
    starts = rng.randint(0, L - w + 1, size=k)
    ann = numpy.stack([rng.randint(N, size=k), starts, starts + w], axis=1).astype(numpy.int64)
    batch_size = s["batch_size"]
    torch_model = models.small_conv_torch(32, 11, seed=0)
    flax_model = models.small_conv_flax(models.small_conv_weights(torch_model), 32, 11)
    Xt, Xj, ann_t = torch.from_numpy(X), jnp.asarray(X), torch.from_numpy(ann)
    kw = dict(n=n, random_state=0, batch_size=batch_size, device="cpu")

    reference = Side("tangermeme.ablate_annotations, torch model",
                     lambda: tm_ablate_annotations(torch_model, Xt, ann_t, **kw))
    port = Side("jablate.ablate_annotations, flax model with the torch weights",
                lambda: jablate.ablate_annotations(flax_model, Xj, ann, **kw))
    bridge = Side("jablate.ablate_annotations, the same torch model (DLPack bridge)",
                  lambda: jablate.ablate_annotations(torch_model, Xt, ann_t, **kw))
    sides = [reference, port, bridge]
    diffs = {}

    def check(sides):
        ref = reference.warm_output
        for side in sides[1:]:
            out = side.warm_output
            diffs[side.name] = max(rel_diff(out.y_befores, ref.y_befores),
                                   rel_diff(out.y_afters, ref.y_afters))

    alternate(sides, cfg.repeats or s["repeats"], log, check)
    lines = [
        "Model: Conv1d(4 → 32, width 11, 'same') → ReLU → mean over positions → "
        "Linear(32 → 1); torch weights from `torch.manual_seed(0)`, copied into flax.",
        f"{N} random sequences × {L:,} bp; {k} annotations of {w} bp at random "
        f"(sequence, start); `ablate_annotations(model, X, annotations, n={n}, "
        f"random_state=0, batch_size={batch_size}, device='cpu')` — {k * (n + 1):,} model "
        "inputs per call.",
    ] + [f"{name} vs tangermeme (`y_befores`, `y_afters`): max relative difference {d:.2e}."
         for name, d in diffs.items()]
    targets = [
        target_line("Case 3, ablate_annotations, jablate + flax vs tangermeme",
                    reference.median / port.median, 10, quick=cfg.quick),
        f"- Case 3, ablate_annotations, jablate + torch bridge vs tangermeme: measured "
        f"{reference.median / bridge.median:.2f}× (no target of its own)",
    ]
    return _section("3. ablate_annotations", lines, time_table(sides, reference), targets), targets


# ---------------------------------------------------------------------------------------
# 4. memory


def case_memory(cfg, log):
    s = cfg.sizes["memory"]
    N, L, n = s["N"], s["L"], s["n"]
    start, end = models.centre(L, s["width"])
    torch_model = models.small_conv_torch(s["filters"], s["kernel"], seed=0)
    materialised = N * n * 4 * L * 4  # tangermeme's (N, n, A, L) float32 shuffled batch
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "weights.npz")
        numpy.savez(weights, **models.small_conv_weights(torch_model))
        spec = dict(N=N, L=L, n=n, start=start, end=end, batch_size=s["batch_size"], seed=5,
                    weights=weights, filters=s["filters"], width=s["kernel"])
        rows = []
        jablate_sides = ("jablate", "jablate-mean_std") + (() if cfg.quick else ("jablate-bridge",))
        for side in jablate_sides:
            r = harness.run_child(dict(spec, side=side))
            log(f"    {side}: peak {gb(r['maxrss_bytes']):.3f} GB in {r['seconds']:.1f} s")
            rows.append((side, N, r))
        # tangermeme holds the (N, n, A, L) batch twice at its peak: the stacked n copies
        # of X (while the list of copies is alive inside shuffle), then the contiguous
        # reshape of the permuted stack next to the stack itself inside ablate.
        estimate = 2 * materialised
        available = harness.mem_available() or 0
        tm_fits = estimate <= TANGERMEME_RUN_LIMIT_BYTES and estimate <= 0.8 * available
        tm_ns = [N] if tm_fits else list(s["tangermeme_scaling_N"])
        tm_runs = []
        for tn in tm_ns:
            r = harness.run_child(dict(spec, side="tangermeme", N=tn))
            log(f"    tangermeme N={tn}: peak {gb(r['maxrss_bytes']):.3f} GB in "
                f"{r['seconds']:.1f} s")
            rows.append(("tangermeme", tn, r))
            tm_runs.append((tn, r["maxrss_bytes"]))

    names = {"jablate": "jablate.ablate, flax model (default: every shuffle's output kept)",
             "jablate-mean_std": "jablate.ablate, flax model, `reduce='mean_std'`",
             "jablate-bridge": "jablate.ablate, the torch model (DLPack bridge)",
             "tangermeme": "tangermeme.ablate, torch model"}
    table = ["| side | N | RSS before the call (GB) | peak RSS, `ru_maxrss` (GB) | "
             "VmHWM (GB) | call (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    for side, rn, r in rows:
        hwm = r.get("vmhwm_bytes")
        table.append(f"| {names[side]} | {rn:,} | {gb(r['rss_before_bytes']):.3f} | "
                     f"{gb(r['maxrss_bytes']):.3f} | "
                     f"{'n/a' if hwm is None else f'{gb(hwm):.3f}'} | {fmt_s(r['seconds'])} |")
    lines = [
        f"Model: Conv1d(4 → {s['filters']}, width {s['kernel']}, 'same') → ReLU → mean → "
        f"Linear → 1 output (the same weights on every side).",
        f"`ablate(model, X, start={start}, end={end}, n={n}, random_state=0, "
        f"batch_size={s['batch_size']}, device='cpu')`, X float32 ({N:,}, 4, {L:,}) built in the "
        "subprocess before the call. Each side runs in its own subprocess, started by a "
        "small launcher process; peak resident set = `ru_maxrss` of that child (`os.wait4` "
        "in the launcher), which includes the interpreter, the imports and X. (Linux carries "
        "`ru_maxrss` across `exec`, so a child started straight from the benchmark process "
        "would report that process's size; the kernel's own high-water mark, VmHWM from "
        "`/proc/self/status` at the end of the child, is shown as a cross-check.)",
        f"tangermeme materialises the ({N:,}, {n}, 4, {L:,}) float32 shuffled batch: "
        f"{gb(materialised):.2f} GB, held twice at its peak (≈ {gb(estimate):.1f} GB plus "
        "the process).",
    ]
    if tm_fits:
        lines.append(f"tangermeme was run at the full size (estimate {gb(estimate):.1f} GB ≤ "
                     f"{gb(TANGERMEME_RUN_LIMIT_BYTES):.0f} GB and below 80% of the "
                     f"{gb(available):.1f} GB available).")
    else:
        (n1, m1), (n2, m2) = tm_runs[0], tm_runs[-1]
        slope = (m2 - m1) / (n2 - n1)
        extrapolated = m2 + slope * (N - n2)
        lines.append(
            f"tangermeme was **not run at N={N:,}**: it would need ≈ {gb(estimate):.1f} GB for "
            f"the two copies of the shuffled batch alone, more than the "
            f"{gb(TANGERMEME_RUN_LIMIT_BYTES):.0f} GB limit set for this suite "
            f"({gb(available):.1f} GB were available). Measured at N={n1:,} and N={n2:,} "
            f"instead (peaks {gb(m1):.2f} GB and {gb(m2):.2f} GB): {gb(slope * 1000):.2f} GB "
            f"per 1,000 sequences (the estimate says {gb(2 * materialised / N * 1000):.2f}). "
            f"Its peak at N={N:,} is **extrapolated, not measured**: a straight line through "
            f"those two points gives ≈ {gb(extrapolated):.1f} GB.")
    targets = [target_line(f"Case 4, peak RSS of {names[side]}", gb(r["maxrss_bytes"]), 1,
                           higher_is_better=False, unit=" GB", quick=cfg.quick)
               for side, _, r in rows if side.startswith("jablate")]
    return _section("4. Memory: ablate with N × n shuffles", lines, "\n".join(table),
                    targets), targets


# ---------------------------------------------------------------------------------------
# 5. CUDA


def case_cuda(cfg, log):
    """Case 5 (:mod:`benchmarks.gpu`): on a CUDA GPU, issue 19's table side by side with
    tangermeme; without one, one line saying so."""
    from . import gpu

    gpus, listing = gpu.gpu_status()
    if not gpus:
        text = f"Not run: no GPU was available on this machine ({listing})."
        log("    " + text)
        return f"## 5. CUDA\n\n{text}\n", [f"- Case 5, CUDA: {text}"]
    text, targets = gpu.run(dry=False, log=lambda line: log("    " + line))
    return text, targets


def _section(title, lines, table, targets):
    return f"## {title}\n\n{_setup(lines)}\n\n{table}\n\n" + "\n".join(targets) + "\n"


CASES = {1: ("BPNet ablation", case_bpnet), 2: ("shuffles", case_shuffles),
         3: ("ablate_annotations", case_annotations), 4: ("memory", case_memory),
         5: ("CUDA", case_cuda)}
