"""jablate: in-silico ablation for genomics deep-learning models, on JAX.

tangermeme's documented API (``ablate``, ``ablate_annotations``, ``predict``,
``shuffle``, ``dinucleotide_shuffle``) over a pure-functional JAX engine:
explicit ``jax.random`` keys, vmapped shuffles drawn inside compiled steps, and
torch modules bridged through DLPack.
"""

import sys as _sys
from importlib import metadata as _metadata

from jablate import functional
from jablate._core.caches import clear_caches, use_compile_cache
from jablate._core.errors import InputError
from jablate._core.results import (
    PerturbationAnnotationsResult,
    PerturbationAnnotationsSummaryResult,
    PerturbationResult,
    PerturbationSummaryResult,
)
from jablate.api import effects
from jablate.api.ablate import ablate, ablate_annotations
from jablate.api.ersatz import dinucleotide_shuffle, shuffle
from jablate.api.predict import predict
from jablate.api.report import incremental_report
from jablate.attribution.deeplift import deep_lift_shap
from jablate.attribution.ism import SaturationMutagenesisRawResult, saturation_mutagenesis

# `jablate.effects` is jablate.api.effects: importable by that name too
# (`from jablate.effects import arrangements`, as the README writes it)
_sys.modules.setdefault(__name__ + ".effects", effects)


def __getattr__(name: str):
    """``jablate.translate``: :func:`jablate.bridges.torch_export.translate`, imported (with
    torch) when first asked for, so that ``import jablate`` never imports torch."""
    if name == "translate":
        from jablate.bridges.torch_export import translate

        return translate
    raise AttributeError(f"module 'jablate' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | {"translate"})


try:
    __version__ = _metadata.version("jablate")
except _metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ablate", "ablate_annotations", "predict", "shuffle", "dinucleotide_shuffle", "functional",
    "incremental_report", "saturation_mutagenesis", "SaturationMutagenesisRawResult",
    "PerturbationResult", "PerturbationAnnotationsResult", "PerturbationSummaryResult",
    "PerturbationAnnotationsSummaryResult", "deep_lift_shap", "effects", "InputError",
    "clear_caches", "use_compile_cache",
]
