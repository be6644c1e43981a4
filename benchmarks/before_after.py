"""``python -m benchmarks.before_after LABEL``: warm medians of jablate alone, for comparing
two versions of jablate on one machine (run it in each tree, one after the other).

1. ``ablate`` of the translated bpnet-lite BPNet (64 filters, 8 layers, random weights),
   16 × 2,114 bp, the central 100 bp, n=20, ``batch_size=64``, ``incremental`` True and
   False (median of 3 warm calls);
2. ``ablate_annotations`` of case 3's small conv (flax, 100 × 1,000 bp, 500 × 20-bp
   annotations, n=20), ``incremental`` True and False (median of 7);
3. the key-stream shuffles: ``jablate.shuffle`` and ``jablate.dinucleotide_shuffle`` of
   1,000 × 1,000 bp, n=20, with ``random_state=jax.random.key(0)``, the whole sequence and
   a 100-bp region (median of 7).

One line per run: ``LABEL name: seconds ...``. Run from the repository root of the tree to
measure (an older tree needs ``bridges/`` reachable as ``jablate/bridges``).
"""

import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    label = argv[0] if argv else "this tree"
    import jax
    import jax.numpy as jnp
    import numpy
    import torch

    import jablate

    from . import models
    from .harness import warm_median
    from .incremental import _annotations

    out = {}
    bpnet = models.bpnet_torch(64, 8)
    X = models.one_hot(16, 2114, seed=1)
    start, end = models.centre(2114, 100)
    Xt = torch.from_numpy(X)
    kw = dict(start=start, end=end, n=20, random_state=0, batch_size=64)
    for inc in (True, False):
        out[f"bpnet ablate incremental={inc}"] = warm_median(
            lambda inc=inc: jablate.ablate(bpnet, Xt, backend="jax", incremental=inc, **kw), 3)
    s = dict(N=100, L=1000, k=500, width=20, n=20, batch_size=64)
    Xa, ann = _annotations(s, seed=3)
    torch_model = models.small_conv_torch(32, 11, seed=0)
    flax_model = models.small_conv_flax(models.small_conv_weights(torch_model), 32, 11)
    Xj = jnp.asarray(Xa)
    kw = dict(n=20, random_state=0, batch_size=64, device="cpu")
    for inc in (True, False):
        out[f"conv ablate_annotations incremental={inc}"] = warm_median(
            lambda inc=inc: jablate.ablate_annotations(flax_model, Xj, ann, incremental=inc,
                                                       **kw), 7)
    Xs = jnp.asarray(numpy.eye(4, dtype=numpy.float32)[numpy.random.RandomState(0).randint(
        0, 4, (1000, 1000))].transpose(0, 2, 1))
    key = jax.random.key(0)
    for name, fn in (("shuffle", jablate.shuffle),
                     ("dinucleotide_shuffle", jablate.dinucleotide_shuffle)):
        out[f"{name} whole"] = warm_median(
            lambda fn=fn: fn(Xs, 0, -1, n=20, random_state=key), 7)
        out[f"{name} 100 bp"] = warm_median(
            lambda fn=fn: fn(Xs, 450, 550, n=20, random_state=key), 7)
    print(label, "; ".join(f"{k}: {v:.3f} s" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
