"""Why two targets are missed: ``python -m benchmarks.diagnostics``.

1. ``ablate_annotations`` (case 3) against the pure forward pass of the same number of
   model inputs in batches of 64: if jablate is no slower than the forward pass alone,
   it is compute-bound and only a faster model (not a faster ablation) helps.
2. BPNet's profile head (a 75-tap convolution from 64 channels to 2): XLA's CPU
   convolution against the same product as one matmul plus a shifted sum over taps
   (what ``jablate.bridges.torch.translate`` lowers such convolutions to).
Medians of 3 after a warm-up; JAX results waited for with ``block_until_ready``.
"""


import jax
import jax.numpy as jnp
import numpy
import torch

import jablate
from benchmarks import models
from benchmarks.harness import warm_median


def annotations_floor():
    from tangermeme.ablate import ablate_annotations
    torch.set_num_threads(2)
    module = models.small_conv_torch(32, 11, 0)
    model = models.small_conv_flax(models.small_conv_weights(module), 32, 11)
    X = models.one_hot(100, 1000, 0)
    rng = numpy.random.default_rng(0)
    starts = rng.integers(0, 980, 500)
    ann = numpy.stack([rng.integers(0, 100, 500), starts, starts + 20], 1)
    Xj, kw = jnp.asarray(X), dict(n=20, random_state=0, batch_size=64)
    forward, batch = jax.jit(lambda x: model(x)), Xj[:64]
    steps = -(-(len(ann) * 21) // 64)
    return {
        "jablate.ablate_annotations (10,500 inputs)":
            warm_median(lambda: jablate.ablate_annotations(model, Xj, ann, **kw).y_afters),
        f"forward pass only, {steps} batches of 64":
            warm_median(lambda: [forward(batch) for _ in range(steps)][-1]),
        "tangermeme.ablate_annotations":
            warm_median(lambda: ablate_annotations(module, torch.from_numpy(X),
                                                   torch.from_numpy(ann), device="cpu", **kw)),
    }


def profile_head():
    rng = numpy.random.default_rng(0)
    h = jnp.asarray(rng.standard_normal((64, 64, 2114)).astype(numpy.float32))
    w = jnp.asarray(rng.standard_normal((2, 64, 75)).astype(numpy.float32))
    conv = jax.jit(lambda x: jax.lax.conv_general_dilated(
        x, w, (1,), [(37, 37)], dimension_numbers=("NCH", "OIH", "NCH")))

    @jax.jit
    def taps(x):
        t = jnp.pad(jnp.einsum("ock,bcl->bkol", w, x), ((0, 0), (0, 0), (0, 0), (37, 37)))
        return sum(t[:, k, :, k:k + x.shape[-1]] for k in range(75))

    err = float(jnp.max(jnp.abs(conv(h) - taps(h))) / jnp.max(jnp.abs(conv(h))))
    return {"lax.conv_general_dilated, 64 x 64 ch x 2,114 bp -> 2 ch, 75 taps":
            warm_median(lambda: conv(h)),
            f"matmul + shifted tap sum (max rel. difference {err:.1e})":
                warm_median(lambda: taps(h))}


if __name__ == "__main__":
    for title, fn in [("ablate_annotations, case 3", annotations_floor),
                      ("BPNet profile head", profile_head)]:
        print(title)
        for name, seconds in fn().items():
            print(f"  {name}: {seconds:.3f} s")
