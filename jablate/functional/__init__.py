"""Key-first, single-sequence shuffles, traceable in ``start`` and ``end``.

Every function takes one sequence ``x`` of shape ``(A, L)`` and returns an array of the
same shape and dtype with positions ``[start, end)`` rearranged. ``start`` and ``end``
(``0 <= start < end <= L``) may be traced integers, so one compiled program serves regions
of any position and width; compose them with ``jax.vmap`` for batches and ``jax.jit`` for
speed. ``mono``: the uniform shuffle (a sort of random keys); ``dinucleotide``: the uniform
dinucleotide shuffle (an Eulerian walk over the region).
"""

from jablate.functional.dinucleotide import dinucleotide_counts, dinucleotide_shuffle, symbols
from jablate.functional.mono import permute_region, region_permutation, shuffle

__all__ = ["shuffle", "region_permutation", "permute_region", "dinucleotide_shuffle",
           "dinucleotide_counts", "symbols"]
