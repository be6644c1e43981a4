"""Incremental evaluation: recompute only what a change of a region can change.

``analysis`` reads a model's jaxpr and propagates the window a region can change through
every layer (``graph``: the jaxpr as a flat list of equations; ``windows``: windows of
positions; ``rules``: the rule of each primitive); ``run`` runs an ablation's shuffled
items that way inside ``ablate`` and ``ablate_annotations``, checked against the full path.
"""
