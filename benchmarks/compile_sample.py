"""Compile time of a sample of the test suite's programs, for choosing the suite's XLA flags.

Usage (the suite's settings, then one flag more; alternate the two and repeat)::

    JAX_DISABLE_MOST_OPTIMIZATIONS=1 XLA_FLAGS="--xla_cpu_use_fusion_emitters=false" \\
        taskset -c 0 python -m benchmarks.compile_sample base
    JAX_DISABLE_MOST_OPTIMIZATIONS=1 XLA_FLAGS="--xla_cpu_use_fusion_emitters=false \\
        --xla_cpu_parallel_codegen_split_count=1" \\
        taskset -c 0 python -m benchmarks.compile_sample one

Runs ``ablate`` with a key and with an int seed (dinucleotide), and ``deep_lift_shap``, on a
small convolution for five numbers of sequences (75 programs), and prints the wall time and
JAX's compile-time events (backend compile, lowering, tracing) in seconds. Nothing is timed
in the tests; results are in benchmarks/RESULTS.md.
"""

import sys
import time

import jax
import numpy
from jax import monitoring

import jablate


def main(label: str) -> str:
    """Run the sample once in this process; return the line it prints."""

    totals = {}

    def listener(event, duration, **_):
        totals[event] = totals.get(event, 0.0) + duration

    monitoring.register_event_duration_secs_listener(listener)
    rng = numpy.random.default_rng(0)
    X = numpy.eye(4, dtype=numpy.float32)[rng.integers(0, 4, (40, 80))].transpose(0, 2, 1)
    W = rng.normal(size=(8, 4, 5)).astype(numpy.float32)

    def model(x):
        h = jax.lax.conv_general_dilated(x, W, (1,), "VALID",
                                         dimension_numbers=("NCH", "OIH", "NCH"))
        return jax.nn.relu(h).mean((1, 2))[:, None]

    start = time.time()
    for n in (3, 5, 9, 17, 33):
        jablate.ablate(model, X[:n], 10, 40, n=5, random_state=jax.random.key(0))
        jablate.ablate(model, X[:n], 10, 40, n=5, random_state=0,
                       shuffle_fn=jablate.dinucleotide_shuffle)
        jablate.deep_lift_shap(model, X[:n], n_shuffles=3, random_state=0)
    event = lambda k: totals.get("/jax/core/compile/" + k, 0.0)  # noqa: E731
    return (f"{label}: wall {time.time() - start:.2f} backend "
            f"{event('backend_compile_duration'):.2f} lower "
            f"{event('jaxpr_to_mlir_module_duration'):.2f} trace "
            f"{event('jaxpr_trace_duration'):.2f}")


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else "run"))
