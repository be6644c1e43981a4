"""One side of a memory case in its own process: ``python -m benchmarks.memory_child SPEC``.

SPEC is JSON: ``side`` ('tangermeme', 'jablate', 'jablate-mean_std' or
'jablate-bridge'), ``N``, ``L``, ``n``, ``start``, ``end``, ``batch_size``, ``seed``,
``model`` ('small_conv', the default, or 'bpnet') and ``weights``: for 'small_conv' an
.npz of :func:`benchmarks.models.small_conv_weights` with ``filters`` and ``width``; for
'bpnet' an .npz of :func:`benchmarks.bpnet_flax.to_arrays` with its ``config`` (the JAX
sides only: the flax port of bpnet-lite's BPNet, both outputs kept, profile and counts).
The inputs are built before the call; the last stdout line is JSON with the
resident set before the call, the seconds the call took and the output shapes. The
parent reads the peak resident set from ``os.wait4``. Only the side's own framework is
imported: the JAX sides never import torch unless they bridge a torch module.

``python -m benchmarks.memory_child --launch SPEC`` is the small launcher the benchmark
process starts: it starts the measured child itself and prints the child's JSON with
``maxrss_bytes`` from ``os.wait4``. Linux carries a process's peak RSS across ``exec``
(``ru_maxrss`` of a child exec'd from the 1 GB benchmark process starts at 1 GB), so the
measured child must be forked from a process that stayed small: this launcher imports
nothing but the standard library.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _shapes(tree):
    if isinstance(tree, (tuple, list)):
        return [_shapes(t) for t in tree]
    return list(tree.shape)


def _peak_rss_bytes():
    """VmHWM, the kernel's high-water mark of this process image's resident set."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def launch(spec_json):
    """Run the measured child; print its JSON result with its ``ru_maxrss`` added."""
    with tempfile.TemporaryFile() as errfile:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.memory_child", spec_json],
                                stdout=subprocess.PIPE, stderr=errfile)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # not proc.wait(): wait4 gives its rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        errfile.seek(0)
        err = errfile.read()
    if proc.returncode != 0:
        sys.stderr.write(err.decode(errors="replace")[-5000:])
        sys.exit(proc.returncode or 1)
    result = json.loads(out.decode().strip().splitlines()[-1])
    result["maxrss_bytes"] = usage.ru_maxrss * 1024  # Linux reports kilobytes
    result["launcher_maxrss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


def main(spec):
    import numpy

    from benchmarks import models

    X = models.one_hot(spec["N"], spec["L"], spec["seed"])
    weights = dict(numpy.load(spec["weights"]))
    common = dict(start=spec["start"], end=spec["end"], n=spec["n"], random_state=0,
                  batch_size=spec["batch_size"], device="cpu")
    side = spec["side"]
    if "incremental" in spec and side != "tangermeme":
        common["incremental"] = spec["incremental"]
    if spec.get("model", "small_conv") == "bpnet":
        if side not in ("jablate", "jablate-mean_std"):
            raise ValueError(f"side {side!r} is not measured with model 'bpnet'")
        from benchmarks import bpnet_flax
        from jablate import ablate
        model = bpnet_flax.from_arrays(spec["config"], weights)
        reduce = "mean_std" if side == "jablate-mean_std" else None
        call = lambda: ablate(model, X, reduce=reduce, **common)
    elif side in ("tangermeme", "jablate-bridge"):
        import torch
        torch.set_num_threads(os.cpu_count())
        model = models.load_small_conv_torch(weights, spec["filters"], spec["width"])
        X = torch.from_numpy(X)
        if side == "tangermeme":
            from tangermeme.ablate import ablate
        else:
            from jablate import ablate
        call = lambda: ablate(model, X, **common)
    else:
        from jablate import ablate
        model = models.small_conv_flax(weights, spec["filters"], spec["width"])
        reduce = "mean_std" if side == "jablate-mean_std" else None
        call = lambda: ablate(model, X, reduce=reduce, **common)
    rss_before = _rss_bytes()
    t0 = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - t0
    shapes = _shapes(tuple(result))
    print(json.dumps({"side": side, "rss_before_bytes": rss_before, "seconds": seconds,
                      "output_shapes": shapes, "vmhwm_bytes": _peak_rss_bytes()}))


if __name__ == "__main__":
    if sys.argv[1] == "--launch":
        launch(sys.argv[2])
    else:
        main(json.loads(sys.argv[1]))
