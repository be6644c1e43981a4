"""Timing, memory and reporting helpers shared by the benchmark cases.

Timing: every side of a comparison is warmed up once (compiling what JAX compiles),
then the sides run in turn, A B C A B C ..., ``repeats`` times; each side's median is
reported with the ratio of the reference side's median to it. JAX results are waited for
(``jax.block_until_ready``) before the clock is read.

Memory: each side runs in a fresh subprocess (``python -m benchmarks.memory_child``);
its peak resident set is the ``ru_maxrss`` that ``os.wait4`` returns for that child.
"""

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import jax
import numpy


def block(tree):
    """Wait for every JAX array in ``tree`` (other leaves are left alone)."""
    for leaf in jax.tree_util.tree_leaves(tree):
        if isinstance(leaf, jax.Array):
            leaf.block_until_ready()
    return tree


@dataclass
class Side:
    """One contender: ``run()`` does the timed work; ``warm()`` (default ``run``) the warm-up."""

    name: str
    run: object
    warm: object = None
    note: str = ""
    times: list = field(default_factory=list)
    warm_output: object = None

    @property
    def median(self):
        return statistics.median(self.times) if self.times else float("nan")


def warm_median(fn, repeats=3):
    """The median time of ``repeats`` calls of ``fn`` after one warm-up call (JAX results
    waited for)."""
    block(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def alternate(sides, repeats, log=print, check=None):
    """Warm each side up, then time them in turn ``repeats`` times. Returns ``sides``.

    ``check(sides)``, when given, runs after the warm-ups while every side's
    ``warm_output`` is held (to compare outputs); those outputs are dropped before timing.
    """
    for side in sides:
        t0 = time.perf_counter()
        side.warm_output = block((side.warm or side.run)())
        log(f"    warm-up {side.name}: {time.perf_counter() - t0:.2f} s")
        gc.collect()
    if check is not None:
        check(sides)
    for side in sides:
        side.warm_output = None
    for r in range(repeats):
        for side in sides:
            gc.collect()
            t0 = time.perf_counter()
            out = block(side.run())
            side.times.append(time.perf_counter() - t0)
            del out
        log("    round {}: {}".format(r + 1, ", ".join(f"{s.name} {s.times[-1]:.2f} s"
                                                      for s in sides)))
    gc.collect()
    return sides


def fmt_s(seconds):
    if seconds != seconds:
        return "n/a"
    return f"{seconds:.3f}" if seconds < 10 else f"{seconds:.2f}"


def time_table(sides, reference):
    """Markdown table: side, median, every run, and reference median / side median."""
    ref = reference.median
    rows = ["| side | median (s) | runs (s) | tangermeme / side |",
            "|---|---:|---|---:|"]
    for s in sides:
        runs = ", ".join(fmt_s(t) for t in s.times)
        ratio = "1.00 (reference)" if s is reference else f"{ref / s.median:.2f}×"
        name = s.name + (f" — {s.note}" if s.note else "")
        rows.append(f"| {name} | {fmt_s(s.median)} | {runs} | {ratio} |")
    return "\n".join(rows)


def target_line(label, value, target, higher_is_better=True, unit="×", quick=False):
    """'- label: measured X (target ≥ T): met/MISSED' (quick mode never judges)."""
    op = "≥" if higher_is_better else "≤"
    met = value >= target if higher_is_better else value <= target
    if quick:
        verdict = "not judged in --quick mode (sizes too small)"
    else:
        verdict = "met" if met else "**MISSED**"
    return f"- {label}: measured {value:.2f}{unit} (target {op} {target:g}{unit}): {verdict}"


def run_child(spec):
    """Run one memory side (``benchmarks.memory_child``) with ``spec``; returns its JSON
    result with ``maxrss_bytes``, the ``ru_maxrss`` of that child (from ``os.wait4`` in
    the small launcher that started it, see :mod:`benchmarks.memory_child`)."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.memory_child", "--launch",
                           json.dumps(spec)], capture_output=True, env=env, cwd=root)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child {spec['side']} failed (exit {proc.returncode}):\n"
                           + proc.stderr.decode(errors="replace")[-3000:])
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


def gb(nbytes):
    """Bytes in GB (10**9 bytes), the unit of the targets."""
    return nbytes / 1e9


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def mem_available():
    """Bytes the kernel says are available now (None where unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def machine_info():
    import torch
    devices = jax.devices()
    total = _mem_total()
    return {
        "CPU": f"{_cpu_model()}, os.cpu_count() = {os.cpu_count()}",
        "Memory": f"{gb(total):.1f} GB" if total else "unknown",
        "JAX devices": ", ".join(f"{d.platform}:{d.device_kind}" for d in devices),
        "torch threads": str(torch.get_num_threads()),
        "Platform": f"{platform.platform()}, Python {platform.python_version()}",
        "Load average at start (1/5/15 min)": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def versions():
    import importlib.metadata as md

    import jaxlib
    import tangermeme
    import torch

    import jablate

    out = {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "torch": torch.__version__,
           "tangermeme": getattr(tangermeme, "__version__", md.version("tangermeme")),
           "jablate": jablate.__version__}
    for dist in ("flax", "numpy", "bpnet-lite", "numba"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


# --- comparing outputs ------------------------------------------------------------------

def _np(x):
    """torch / JAX / NumPy array as NumPy."""
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return numpy.asarray(x)


def _leaves(tree):
    if isinstance(tree, (tuple, list)):
        return [leaf for t in tree for leaf in _leaves(t)]
    return [_np(tree)]


def rel_diff(a, b):
    """max |a - b| / max |b| over matching leaves of two output trees (b the reference)."""
    la, lb = _leaves(a), _leaves(b)
    if len(la) != len(lb) or any(x.shape != y.shape for x, y in zip(la, lb)):
        raise AssertionError(f"output shapes differ: {[x.shape for x in la]} vs "
                             f"{[y.shape for y in lb]}")
    return max(float(numpy.abs(x - y).max() / max(numpy.abs(y).max(), 1e-30))
               for x, y in zip(la, lb))
