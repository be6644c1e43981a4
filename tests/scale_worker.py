"""Run a fixed set of ablations and save them; run by tests/test_scale.py in subprocesses.

Usage: python scale_worker.py OUT.npz [COORDINATOR PROCESS_ID NUM_PROCESSES]
With the last three, it joins a ``jax.distributed`` run on CPU (gloo collectives).
"""

import sys

import jax
import jax.numpy as jnp
import numpy

import jablate

rng = numpy.random.default_rng(0)
X = numpy.eye(4, dtype=numpy.float32)[rng.integers(0, 4, (10, 60))].transpose(0, 2, 1)
W = rng.normal(size=(8, 4, 5)).astype(numpy.float32)
V = rng.normal(size=(8,)).astype(numpy.float32)


def model(x):
    h = jax.lax.conv_general_dilated(x, W, (1,), "VALID", dimension_numbers=("NCH", "OIH", "NCH"))
    h = jax.nn.relu(h)
    return jnp.einsum("bcl,c->b", h, V)[:, None], h.mean(-1)


def results():
    key = jax.random.key(3)
    out = {}
    r = jablate.ablate(model, X, 10, 40, n=5, random_state=key, batch_size=6)
    out["key_before"], out["key_after"] = r.y_before[0], r.y_after[1]
    r = jablate.ablate(model, X, 10, 40, n=5, random_state=0, batch_size=7)
    out["int_after"] = r.y_after[0]
    r = jablate.ablate(model, X, 0, -1, n=5, shuffle_fn=jablate.dinucleotide_shuffle,
                       random_state=key, batch_size=6, reduce="mean_std")
    out["mean"], out["std"] = r.y_after_mean[0], r.y_after_std[1]
    ann = numpy.array([[1, 3, 9], [7, 20, 50], [1, 30, 33], [9, 0, 60], [4, 5, 25]])
    r = jablate.ablate_annotations(model, X, ann, n=4, random_state=key, batch_size=5)
    out["ann_befores"], out["ann_afters"] = r.y_befores[0], r.y_afters[1]
    # the incremental engine, sharded the same way (its own batch sizes)
    r = jablate.ablate_annotations(model, X, ann, n=4, random_state=key, incremental=True)
    out["inc_befores"], out["inc_afters"] = r.y_befores[1], r.y_afters[0]
    r = jablate.ablate(model, X, 10, 40, n=5, random_state=key, reduce="mean_std",
                       incremental=True)
    out["inc_mean"], out["inc_std"] = r.y_after_mean[0], r.y_after_std[1]
    # one sequence: a process of two owns no group (it repeats the last one, dropped)
    for inc in (False, True):
        r = jablate.ablate(model, X[:1], 10, 40, n=5, random_state=key, reduce="mean_std",
                           incremental=inc, batch_size=4)
        out[f"one_mean_{inc}"], out[f"one_std_{inc}"] = r.y_after_mean[0], r.y_after_std[1]
    return {k: numpy.asarray(v) for k, v in out.items()}


if __name__ == "__main__":
    if len(sys.argv) > 2:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(sys.argv[2], num_processes=int(sys.argv[4]),
                                   process_id=int(sys.argv[3]))
    res = results()
    if jax.process_index() == 0:
        numpy.savez(sys.argv[1], devices=jax.device_count(), processes=jax.process_count(), **res)
