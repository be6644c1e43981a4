"""tangermeme's verbs over the engine: ``predict``, ``ablate`` and ``ablate_annotations``,
the batch shuffles with tangermeme's signatures (``ersatz``) and the effect statistics every
table shares (``effects``)."""
