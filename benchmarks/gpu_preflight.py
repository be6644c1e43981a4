"""``python -m benchmarks.gpu_preflight``: the first thing ``benchmarks/gpu_run.sh`` runs on a
borrowed GPU, in well under a minute, so that a missing package or a GPU that JAX or torch
cannot use stops the call before it spends device time on measurements that would fail or,
worse, quietly run on the CPU.

It prints the versions and devices, imports everything the benchmarks import, runs a tiny
tangermeme shuffle (numba compiles its kernels), a tiny ``jablate.ablate`` and a torch
operation, and checks that JAX's default backend is the GPU, that the ablation ran there and
that torch sees CUDA. Exit status 0 when all holds, 1 with the reason otherwise.
``GPU_PREFLIGHT_ALLOW_CPU=1`` accepts a CPU (to try the script without a GPU).
"""

import os
import platform
import sys
import time


def check() -> list:
    """The problems found (empty when the machine is ready); prints what it sees."""

    started = time.perf_counter()
    problems = []
    allow_cpu = os.environ.get("GPU_PREFLIGHT_ALLOW_CPU") == "1"
    import bpnetlite.bpnet  # noqa: F401
    import jax
    import jax.numpy as jnp
    import numba
    import numpy
    import pyfaidx
    import tangermeme
    import tangermeme.ablate  # noqa: F401
    import tangermeme.deep_lift_shap  # noqa: F401
    import tangermeme.saturation_mutagenesis  # noqa: F401
    import torch
    from tangermeme.ersatz import shuffle

    import benchmarks.gpu  # noqa: F401
    import benchmarks.hits_host  # noqa: F401
    import jablate
    from benchmarks.gpu import torch_precision

    print(f"Python {platform.python_version()}; jax {jax.__version__}; torch {torch.__version__}; "
          f"numpy {numpy.__version__}; numba {numba.__version__}; tangermeme "
          f"{tangermeme.__version__}; pyfaidx {pyfaidx.__version__}; jablate "
          f"{jablate.__version__} from {os.path.dirname(jablate.__file__)}")
    print(f"jax.devices() = {jax.devices()}; default backend {jax.default_backend()}; "
          f"torch.cuda.is_available() = {torch.cuda.is_available()}"
          + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else ""))
    print(f"torch precision: {torch_precision()}; XLA_PYTHON_CLIENT_MEM_FRACTION = "
          f"{os.environ.get('XLA_PYTHON_CLIENT_MEM_FRACTION')}")
    if not allow_cpu and "site-packages" not in jablate.__file__ and ".site" not in \
            jablate.__file__:
        problems.append(f"jablate is imported from {jablate.__file__}, not an installed wheel")

    X = torch.eye(4)[torch.randint(4, (2, 50), generator=torch.Generator().manual_seed(0))]
    X = X.permute(0, 2, 1).contiguous()
    shuffled = shuffle(X, start=10, end=30, n=2, random_state=0)
    if tuple(shuffled.shape) != (2, 2, 4, 50):
        problems.append(f"tangermeme's shuffle gave shape {tuple(shuffled.shape)}")

    W = jnp.asarray(numpy.random.RandomState(0).normal(size=(3, 4, 5)), jnp.float32)

    def model(x):
        return jnp.tanh(jax.lax.conv(x, W, (1,), "SAME")).mean(-1)

    y_before, y_after = jablate.ablate(model, jnp.asarray(X.numpy()), 10, 30, n=3,
                                       random_state=jax.random.key(0))
    platforms = {d.platform for d in y_after.devices()}
    print(f"jablate.ablate: y_after {y_after.shape} on {sorted(platforms)}")
    if not numpy.isfinite(numpy.asarray(y_after)).all():
        problems.append("jablate.ablate gave values that are not finite")
    if not allow_cpu:
        if jax.default_backend() != "gpu":
            problems.append(f"JAX's default backend is {jax.default_backend()!r}, not 'gpu'")
        if platforms != {"gpu"}:
            problems.append(f"jablate.ablate computed on {sorted(platforms)}, not the GPU")
        if not torch.cuda.is_available():
            problems.append("torch does not see CUDA")
        else:
            total = torch.ones(4, device="cuda").sum().item()
            if total != 4.0:
                problems.append(f"torch on CUDA summed four ones to {total}")
    print(f"preflight took {time.perf_counter() - started:.1f} s")
    return problems


def main() -> None:
    problems = check()
    if problems:
        print("PREFLIGHT FAILED: " + "; ".join(problems))
        sys.exit(1)
    print("preflight ok")


if __name__ == "__main__":
    main()
