"""The demo: a small convolutional JAX model that has learned the GATA motif.

``DemoModel`` (one convolution, a ReLU, a max over positions, one dense unit) was trained by
``scripts/train_demo_model.py`` on random background sequences, half of which had ``GATAAG``
planted at a random position: the target is 1 when the motif is present and 0 when it is
not. Its weights ship in ``jablate/data/demo_model.npz`` (about 3 KB).

``run_demo`` plants the motif into held-out background sequences, ablates the motif's region
and an equally long control region elsewhere in the same sequences with
:func:`jablate.ablate_annotations`, prints a table and draws a plot. ``jablate demo`` on the
command line calls it.
"""

import os
import sys
from typing import Any, Optional, TextIO

import flax.linen as nn
import numpy

from jablate._core.io import AtomicFiles, plot_format
from jablate.api.effects import changeable, shuffle_effects

__all__ = [
    "MOTIF",
    "ALPHABET",
    "LENGTH",
    "DemoModel",
    "WEIGHTS_PATH",
    "random_sequences",
    "plant_motif",
    "contains_motif",
    "load_model",
    "region_summary",
    "run_demo",
]

MOTIF = "GATAAG"
ALPHABET = "ACGT"
LENGTH = 100
WEIGHTS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
    "demo_model.npz")

# Held-out sequences come from a seed the training script never uses.
HELD_OUT_SEED = 2024
MOTIF_START = 30
CONTROL_START = 70


class DemoModel(nn.Module):
    """Conv(16 filters, width 11) -> ReLU -> max over positions -> Dense(1).

    Attributes
    ----------
    filters : int
        Number of convolution filters. Default 16.
    width : int
        Filter width. Default 11.

    Call a bound module on one-hot sequences ``X`` of shape (N, 4, L) to get (N, 1).
    """

    filters: int = 16
    width: int = 11

    @nn.compact
    def __call__(self, X):
        h = nn.Conv(self.filters, kernel_size=(self.width,), padding="SAME")(
            X.transpose(0, 2, 1))
        h = nn.relu(h).max(axis=1)
        return nn.Dense(1)(h)


def random_sequences(n: int, length: int = LENGTH, seed: int = 0) -> numpy.ndarray:
    """Draw uniform random DNA background sequences, one-hot encoded.

    Parameters
    ----------
    n : int
        Number of sequences.
    length : int, optional
        Sequence length L. Default 100.
    seed : int, optional
        Seed of the ``numpy.random.RandomState`` that draws them. Default 0.

    Returns
    -------
    X : numpy.ndarray, shape (n, 4, length), float32
        One-hot sequences over ``ACGT``.
    """

    codes = numpy.random.RandomState(seed).randint(4, size=(n, length))
    return numpy.eye(4, dtype=numpy.float32)[codes].transpose(0, 2, 1).copy()


def plant_motif(X: numpy.ndarray, positions: Any, motif: str = MOTIF) -> numpy.ndarray:
    """Write a motif into one-hot sequences.

    Parameters
    ----------
    X : numpy.ndarray, shape (N, 4, L)
        One-hot sequences; not modified.
    positions : int or array-like of int, shape (N,)
        Where the motif starts in each sequence (one int for all).
    motif : str, optional
        The motif over ``ACGT``. Default ``"GATAAG"``.

    Returns
    -------
    X : numpy.ndarray, shape (N, 4, L)
        A copy of ``X`` with the motif planted.
    """

    X = numpy.array(X, copy=True)
    positions = numpy.broadcast_to(numpy.asarray(positions), (X.shape[0],))
    encoded = numpy.eye(4, dtype=X.dtype)[[ALPHABET.index(c) for c in motif]].T
    for row, position in enumerate(positions):
        X[row, :, position:position + len(motif)] = encoded
    return X


def contains_motif(X: numpy.ndarray, motif: str = MOTIF) -> numpy.ndarray:
    """Say which one-hot sequences contain a motif (forward strand).

    Parameters
    ----------
    X : numpy.ndarray, shape (N, 4, L)
        One-hot sequences.
    motif : str, optional
        Default ``"GATAAG"``.

    Returns
    -------
    present : numpy.ndarray of bool, shape (N,)
    """

    codes = numpy.where(X.sum(axis=1) > 0, X.argmax(axis=1), -1)
    target = numpy.array([ALPHABET.index(c) for c in motif])
    k = len(motif)
    windows = numpy.lib.stride_tricks.sliding_window_view(codes, k, axis=1)
    return (windows == target).all(axis=-1).any(axis=-1)


def load_model(path: str = WEIGHTS_PATH) -> Any:
    """Load the demo model with its trained weights.

    Parameters
    ----------
    path : str, optional
        An ``.npz`` written by ``scripts/train_demo_model.py``. Default: the weights shipped
        with jablate.

    Returns
    -------
    model : flax.linen.Module
        A bound ``DemoModel``: call it on a JAX array of shape (N, 4, L) to get (N, 1).
    """

    import jax.numpy as jnp

    with numpy.load(path) as weights:
        params = {}
        for key in weights.files:
            layer, name = key.split("/")
            params.setdefault(layer, {})[name] = jnp.asarray(weights[key])
    width, _, filters = params["Conv_0"]["kernel"].shape
    return DemoModel(filters=filters, width=width).bind({"params": params})


def region_summary(y_before: Any, y_after: Any, changes: Optional[Any] = None) -> dict:
    """Summarise before/after predictions of one group of regions.

    Parameters
    ----------
    y_before : numpy.ndarray, shape (k,)
        Prediction for each of the k sequences before ablation.
    y_after : numpy.ndarray, shape (k, n)
        Prediction after each of the n shuffles.
    changes : array-like of bool, shape (k,), optional
        Whether the shuffle can change each region (:func:`jablate.api.effects.changeable`).
        Default None: all can.

    Returns
    -------
    summary : dict
        ``before``, ``after`` (means over sequences and shuffles), ``drop``
        (``before - after``), ``z_each`` (k,): each sequence's z-score from
        :func:`jablate.api.effects.shuffle_effects` (its drop over the sample standard
        deviation, ``ddof=1``, of its n shuffled predictions; the ``z_score`` of ``jablate
        ablate``, ``nan`` where it means nothing), and ``z``: the median of ``z_each`` over
        the sequences where it is defined (``nan`` when it is nowhere: n is 1, or no
        shuffle changed anything).
    """

    y_before, y_after = numpy.asarray(y_before), numpy.asarray(y_after)
    before = float(numpy.mean(y_before))
    after = float(numpy.mean(y_after))
    z_each = shuffle_effects(y_before, y_after, changes).z
    defined = z_each[~numpy.isnan(z_each)]
    z = float(numpy.median(defined)) if defined.size else numpy.nan
    return {"before": before, "after": after, "drop": before - after, "z_each": z_each,
        "z": z}


def run_demo(plot: Optional[str] = "jablate-demo.png", n: int = 20, n_sequences: int = 64,
             seed: int = 0, verbose: bool = False, file: Optional[TextIO] = None) -> dict:
    """Ablate a planted GATA motif and a control region with the demo model.

    ``GATAAG`` is planted at position 30 of ``n_sequences`` held-out random sequences of
    length 100; the motif's region (30-36) and an equally long control region (70-76) of
    each sequence are shuffled ``n`` times with :func:`jablate.ablate_annotations`.

    Parameters
    ----------
    plot : str or None, optional
        Where to write a plot of predictions before vs after for both regions, in the
        format of its extension (``.png``, ``.pdf`` or ``.svg``); ``None`` for no plot.
        Default ``"jablate-demo.png"``.
    n : int, optional
        Shuffles per region. Default 20.
    n_sequences : int, optional
        Number of held-out sequences. Default 64.
    seed : int, optional
        ``random_state`` for the shuffles. Default 0.
    verbose : bool, optional
        Show a progress bar. Default False.
    file : file object, optional
        Where to print the table. Default ``sys.stdout``.

    Returns
    -------
    summaries : dict of str to dict
        ``region_summary`` of the ``"motif"`` and ``"control"`` regions.

    Raises
    ------
    jablate._core.io.InputError
        When ``plot`` has another extension or cannot be written, before any work.
    """

    file = sys.stdout if file is None else file
    format = None if plot is None else plot_format(plot)
    k = len(MOTIF)
    X = plant_motif(random_sequences(n_sequences, LENGTH, HELD_OUT_SEED), MOTIF_START)
    rows = numpy.arange(n_sequences)
    regions = {"motif": MOTIF_START, "control": CONTROL_START}
    annotations = numpy.concatenate([
        numpy.stack([rows, numpy.full_like(rows, s), numpy.full_like(rows, s + k)], 1)
        for s in regions.values()])

    with AtomicFiles() as files:
        handle = None if plot is None else files.open(plot)  # a bad path fails first
        summaries = _ablate_and_report(X, annotations, regions, n, n_sequences, seed,
            verbose, file, handle, format)
    if plot is not None:
        print(f"wrote {plot}", file=file)
    return summaries


def _ablate_and_report(X, annotations, regions, n, n_sequences, seed, verbose, file, handle,
        format):
    import jablate

    k = len(MOTIF)
    model = load_model()
    y_befores, y_afters = jablate.ablate_annotations(model, X, annotations, n=n,
        random_state=seed, verbose=verbose)
    y_before = numpy.asarray(y_befores).reshape(len(annotations))
    y_after = numpy.asarray(y_afters).reshape(len(annotations), n)

    changes = changeable(jablate.shuffle, X, annotations)
    groups, summaries = {}, {}
    for index, name in enumerate(regions):
        part = slice(index * n_sequences, (index + 1) * n_sequences)
        groups[name] = (y_before[part], y_after[part])
        summaries[name] = region_summary(*groups[name], changes[part])

    print(f"jablate demo: {n_sequences} random sequences of length {LENGTH} with "
        f"{MOTIF} planted at {MOTIF_START}-{MOTIF_START + k}; each region shuffled "
        f"{n} times", file=file)
    print(f"{'region':<15}{'mean before':>13}{'mean after':>12}{'mean drop':>11}"
        f"{'median z':>10}", file=file)
    for name, start in regions.items():
        s = summaries[name]
        label = f"{name} {start}-{start + k}"
        print(f"{label:<15}{s['before']:>13.3f}{s['after']:>12.3f}{s['drop']:>11.3f}"
            f"{s['z']:>10.1f}", file=file)
    print("median z: median over the sequences of each one's z-score, (before - mean "
        "after) / sd of its shuffled predictions (ddof=1), as in 'jablate ablate'", file=file)

    if handle is not None:
        _plot_demo(handle, groups, regions, k, format)
    return summaries


#: What the demo model predicts, for axis labels.
OUTPUT_LABEL = "GATA score (model output; trained 1 = motif, 0 = none)"


def _plot_demo(handle, groups, regions, k, format):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colors = {"motif": "tab:red", "control": "tab:blue"}
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.4))
    low, high = numpy.inf, -numpy.inf
    n = next(iter(groups.values()))[1].shape[1]
    for name, (before, after) in groups.items():
        label = f"{name} region {regions[name]}-{regions[name] + k}"
        spread = shuffle_effects(before, after).spread if n > 1 else None
        left.errorbar(before, after.mean(axis=1), yerr=spread, fmt="o",
            ms=3, alpha=0.7, color=colors[name], label=label)
        low = min(low, before.min(), after.min())
        high = max(high, before.max(), after.max())
    left.plot([low, high], [low, high], color="grey", lw=1, ls="--", label="no change")
    left.set_xlabel("before: " + OUTPUT_LABEL, fontsize=8)
    left.set_ylabel(f"after: mean over {n} shuffles", fontsize=8)
    left.legend(frameon=False, fontsize=8)
    left.set_title("each sequence (error bars: sd over its shuffles, ddof=1)", fontsize=9)

    names = list(groups)
    befores = [groups[name][0].mean() for name in names]
    afters = [groups[name][1].mean() for name in names]
    # the mean over sequences of each shuffle, then its spread over the n shuffles
    spreads = [groups[name][1].mean(axis=0).std(ddof=1) if n > 1 else 0.0 for name in names]
    x = numpy.arange(len(names))
    right.bar(x - 0.2, befores, width=0.4, color="lightgrey", edgecolor="grey")
    right.bar(x + 0.2, afters, width=0.4, yerr=spreads, capsize=3,
        color=[colors[name] for name in names])
    right.set_xticks(x, [f"{name} region\n{regions[name]}-{regions[name] + k}"
        for name in names])
    right.set_ylabel(f"mean over {len(groups[names[0]][0])} sequences:\n" + OUTPUT_LABEL,
        fontsize=8)
    right.set_ylim(min(0, *afters) * 1.3, max(befores + afters) * 1.35)
    handles = [Patch(facecolor="lightgrey", edgecolor="grey", label="before")] + [
        Patch(facecolor=colors[name], label=f"after shuffling the {name} region")
        for name in names]
    right.legend(handles=handles, frameon=False, loc="upper right", fontsize=8)
    right.set_title(f"{MOTIF} ablation (error bars: sd of the mean over the {n} shuffles)",
        fontsize=9)
    figure.tight_layout()

    figure.savefig(handle, format=format, dpi=100)
    plt.close(figure)
