"""Attributions as transformations of a model's jaxpr: ``deeplift`` (tangermeme's
``deep_lift_shap``) and ``ism`` (``saturation_mutagenesis``, with the incremental engine)."""
