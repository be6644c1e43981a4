"""jablate: in-silico ablation for genomics deep-learning models, on JAX.

tangermeme's documented API (``ablate``, ``ablate_annotations``, ``predict``,
``shuffle``, ``dinucleotide_shuffle``) over a pure-functional JAX engine:
explicit ``jax.random`` keys, vmapped shuffles drawn inside compiled steps, and
torch modules bridged through DLPack.
"""

from importlib import metadata as _metadata

from . import effects, functional
from .ablate import ablate, ablate_annotations
from .caches import clear_caches
from .deeplift import deep_lift_shap
from .errors import InputError
from .ersatz import dinucleotide_shuffle, shuffle
from .incremental_engine import report as incremental_report
from .ism import SaturationMutagenesisRawResult, saturation_mutagenesis
from .predict import predict
from .results import (
    PerturbationAnnotationsResult,
    PerturbationAnnotationsSummaryResult,
    PerturbationResult,
    PerturbationSummaryResult,
)

try:
    __version__ = _metadata.version("jablate")
except _metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ablate", "ablate_annotations", "predict", "shuffle", "dinucleotide_shuffle", "functional",
    "incremental_report", "saturation_mutagenesis", "SaturationMutagenesisRawResult",
    "PerturbationResult", "PerturbationAnnotationsResult", "PerturbationSummaryResult",
    "PerturbationAnnotationsSummaryResult", "deep_lift_shap", "effects", "InputError",
    "clear_caches",
]
