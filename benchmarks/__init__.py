"""Side-by-side benchmarks of jablate against tangermeme 1.6: ``python -m benchmarks``.

``python -m benchmarks`` runs every case at full size and writes ``benchmarks/RESULTS.md``;
``--quick`` runs small sizes (for CI: it checks that the suite runs, never how fast);
``--cases 1,3`` picks cases; ``--out FILE`` picks the report. See ``benchmarks/cases.py``.
``python -m benchmarks.memory_profile`` (peak memory on BPNet, ``reduce='mean_std'`` against
the default) and ``python -m benchmarks.backend_overhead`` (torch bridge against
``backend='jax'``) are separate measurements; see ``benchmarks/README.md``.
"""
