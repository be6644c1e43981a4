"""Genome-scale motif ablation (``jablate hits``): reading a genome, peaks and motif hits
(``files``), windows around peaks and the hits in them, their effects (``hits``), and the
resumable, sharded run that writes the tables (``run``)."""

from jablate.genome.files import read_hits, read_peaks
from jablate.genome.hits import (
    EFFECTS_HELP,
    PROFILE_MODES,
    effects_tsv,
    fetch_windows,
    hit_effects,
    hits_to_annotations,
    load_windows,
    map_hits,
    measure_columns,
    measure_labels,
    peak_windows,
    plot_effects,
    summarise_effects,
)
from jablate.genome.run import run_hits

__all__ = ["load_windows", "hits_to_annotations", "hit_effects", "summarise_effects",
           "plot_effects", "peak_windows", "fetch_windows", "map_hits", "effects_tsv",
           "measure_columns", "measure_labels", "EFFECTS_HELP", "PROFILE_MODES", "read_hits",
           "read_peaks", "run_hits"]
