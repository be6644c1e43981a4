"""``python -m benchmarks.new_sizes LABEL``: what a call on a new number of sequences costs,
for comparing two versions of jablate on one machine (run it in each tree, one after the
other, each in a fresh process).

bpnet-lite's BPNet (32 filters, 4 layers, random weights), translated (``backend="jax"``),
2,114 bp, ``batch_size=32``. For each path, calls on N = 8, 9, 10, 12 and again 9
sequences, one line each with the seconds of every call (the first pays the translation and
the shared compiles; the last is warm):

- ``ablate``, the central 100 bp, n=10, ``incremental`` False and True, and the same with
  ``reduce="mean_std"``;
- ``ablate_annotations``, one 20-bp annotation per sequence, n=10, ``incremental=False``;
- ``jablate.shuffle`` and ``jablate.dinucleotide_shuffle`` of the whole sequences, n=20, a
  JAX key;
- ``saturation_mutagenesis`` of its count head (``CountWrapper``), the central 20 bp,
  ``incremental=False``.

Run from the repository root of the tree to measure.
"""

import sys
import time


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    label = argv[0] if argv else "this tree"
    import jax
    import numpy
    import torch
    from bpnetlite.bpnet import CountWrapper

    import jablate

    from . import models

    bpnet = models.bpnet_torch(32, 4)
    count = CountWrapper(bpnet).eval()
    start, end = models.centre(2114, 100)
    X = torch.from_numpy(models.one_hot(12, 2114, seed=1))
    kw = dict(random_state=0, batch_size=32, backend="jax")
    key = jax.random.key(0)
    runs = {
        "ablate incremental=False": lambda x: jablate.ablate(
            bpnet, x, start, end, n=10, incremental=False, **kw),
        "ablate incremental=True": lambda x: jablate.ablate(
            bpnet, x, start, end, n=10, incremental=True, **kw),
        "ablate reduce=mean_std incremental=False": lambda x: jablate.ablate(
            bpnet, x, start, end, n=10, incremental=False, reduce="mean_std", **kw),
        "ablate reduce=mean_std incremental=True": lambda x: jablate.ablate(
            bpnet, x, start, end, n=10, incremental=True, reduce="mean_std", **kw),
        "ablate_annotations": lambda x: jablate.ablate_annotations(
            bpnet, x, numpy.array([[j, 1000 + j, 1020 + j] for j in range(len(x))]), n=10,
            incremental=False, **kw),
        "shuffle": lambda x: jablate.shuffle(x, n=20, random_state=key),
        "dinucleotide_shuffle": lambda x: jablate.dinucleotide_shuffle(x, n=20,
                                                                      random_state=key),
        "saturation_mutagenesis": lambda x: jablate.saturation_mutagenesis(
            count, x, start=1047, end=1067, incremental=False, batch_size=32, backend="jax"),
    }
    for name, run in runs.items():
        times = []
        for n in (8, 9, 10, 12, 9):
            t = time.perf_counter()
            jax.block_until_ready(jax.tree.leaves(run(X[:n])))
            times.append(time.perf_counter() - t)
        print(label, name, " ".join(f"N={n}: {s:.2f} s" for n, s in zip(
            (8, 9, 10, 12, 9), times)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
