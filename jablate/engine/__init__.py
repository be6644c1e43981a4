"""The one engine: plans of work items and how they become model inputs (``stream``:
plans, draws, devices, ``run`` and ``run_mean_std``), the one batch loop with its sinks
and the first-batch check (``executor``), and funcs of one sequence streamed inside
``ablate`` (``per_sequence``)."""
