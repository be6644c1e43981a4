"""``jablate attribute``: DeepLIFT/SHAP or ISM attributions of FASTA sequences, on the
command line, written as TF-MoDISco reads them.

The front door of :func:`jablate.deep_lift_shap` and :func:`jablate.saturation_mutagenesis`
for the command line: it reads the sequences, picks the model output to explain (a tuple
output by ``--output``; a ``(batch,)`` output gets an axis), runs one of the two with
``hypothetical=True`` and writes

* ``--out FILE.npz``: ``arr_0`` (N, 4, L), the hypothetical attributions (what
  ``modisco motifs -a`` reads), ``attributions`` (N, 4, L), the same times the one-hot
  sequences (the observed bases' contributions, what ``hypothetical=False`` returns),
  and ``names`` (N,);
* ``--sequences FILE.npz``: ``arr_0`` (N, 4, L), the one-hot sequences (``modisco motifs
  -s``), and ``names``;
* ``--plot FILE``: logos of the observed bases' contributions about the strongest position
  of the sequences with the largest total ``|attribution|``.

Every file appears whole or not at all (:class:`jablate._core.io.AtomicFiles`).
"""

from __future__ import annotations

import sys
import warnings
from functools import partial
from typing import Any, Optional

import numpy

from jablate._core.errors import InputError, ModelFailure, length_question, refuse_not_finite
from jablate._core.io import (
    AtomicFiles,
    note_unusual_letters,
    one_hot_encode,
    output_paths,
    plot_format,
    read_fasta,
)

__all__ = ["run_attribute", "pick_output", "plot_logos", "METHOD_NAMES"]

#: ``--method``'s choices (:func:`_attribute` turns each into its function).
METHOD_NAMES = ("deep_lift_shap", "ism")
#: Sequences ``--plot`` draws, and the widest stretch of each.
LOGO_SEQUENCES, LOGO_WIDTH = 4, 100
#: Base colours of the logos (A, C, G, T), as logomaker's and tangermeme's defaults.
LOGO_COLOURS = ("#109648", "#255C99", "#F7B32B", "#D62839")


def _shapes(outputs: Any) -> str:
    return ", ".join(str(tuple(o.shape[1:])) for o in outputs)


def pick_output(model: Any, kind: str, outputs: Any, output: Optional[int],
                spec: str, target: int = 0, profile: bool = False) -> Any:
    """The model that returns ``(batch, T)``, what attributions explain: ``model`` itself,
    or a wrapper taking output ``output`` of a tuple (or list) and giving a ``(batch,)``
    output its task axis.

    Parameters
    ----------
    model : object
        From :func:`jablate.api.loading.load_model`.
    kind : {"torch", "jax"}
        :func:`jablate.api.loading.model_kind` of the model (a torch module is wrapped in
        a torch module, so that it is still translated to JAX).
    outputs : array or tuple of arrays
        The model's outputs on one sequence (batch 1).
    output : int or None
        ``--output``: which output of a tuple.
    spec : str
        ``--model``, for messages.
    target : int, optional
        ``--target``: the column explained, checked here. Default 0.
    profile : bool, optional
        ``--profile``: the chosen output is a profile (two or more axes per sequence,
        e.g. BPNet's (batch, strands, positions) logits), explained as bpnet-lite's
        ``ProfileWrapper`` explains it: the sum, over all its values, of the logits
        minus their mean times their softmax. Default False.

    Returns
    -------
    model : object

    Raises
    ------
    InputError
        A tuple output without ``--output`` (or with one out of range), ``--output`` for a
        single output, a chosen output with more than one axis per sequence (or, with
        ``profile``, with fewer than two), or a ``target`` that is not one of its
        columns.
    """

    several = isinstance(outputs, (tuple, list))
    if several:
        if output is None:
            raise InputError(f"the model returns {len(outputs)} outputs (per sequence: "
                f"{_shapes(outputs)}); choose the one to explain with --output I")
        if not 0 <= output < len(outputs):
            raise InputError(f"--output {output} is not an output of the model: it returns "
                f"{len(outputs)} (0 to {len(outputs) - 1})")
        chosen = outputs[output]
    else:
        if output not in (None, 0):
            raise InputError(f"--output {output}: the model returns one output (per "
                f"sequence {tuple(outputs.shape[1:])}); leave --output out")
        chosen, output = outputs, None
    if profile and chosen.ndim < 3:
        raise InputError(f"--profile explains a profile, two or more axes per sequence "
            f"(BPNet's (strands, positions)); the output explained has per sequence "
            f"{tuple(chosen.shape[1:])}")
    if chosen.ndim > 2 and not profile:
        raise InputError(f"the output to explain has {chosen.ndim - 1} axes per sequence "
            f"{tuple(chosen.shape[1:])} (a profile?); attributions explain one value per "
            "task, (batch, T): add --profile to explain it as bpnet-lite's ProfileWrapper "
            "does, or name a model that reduces it in a function --model names")
    flat = chosen.ndim == 1
    columns = 1 if flat or profile else chosen.shape[1]
    if not 0 <= target < columns:
        raise InputError(f"--target {target} is not a column of the output explained: it "
            f"has {columns} (0 to {columns - 1})" if columns > 1 else
            f"--target {target}: the output explained has one column; leave --target out")
    if output is None and not flat and not profile:
        return model
    if kind == "torch":
        return _torch_output(model, output, flat, profile)

    from jablate.models.runner import eval_view

    run = eval_view(model) if _is_nnx(model) else model  # as predict runs it

    def explained(x, *args):
        import jax

        y = run(x, *args)
        y = y if output is None else y[output]
        if profile:  # bpnet-lite's ProfileWrapper
            logits = y.reshape(y.shape[0], -1)
            logits = logits - logits.mean(axis=-1, keepdims=True)
            return (logits * jax.nn.softmax(logits, axis=-1)).sum(axis=-1, keepdims=True)
        return y[:, None] if flat else y

    explained.__name__ = f"{spec} output {output}" if output is not None else spec
    return explained


def _is_nnx(model):
    """Whether ``model`` is a flax nnx module (flax is not imported to say no)."""
    if "flax" not in sys.modules:
        return False
    from flax import nnx

    return isinstance(model, nnx.Module)


def _torch_output(model, output, flat, profile=False):
    """A torch module returning output ``output`` of ``model``'s tuple, as (batch, T) (a
    profile reduced as bpnet-lite's ``ProfileWrapper`` reduces it)."""
    import torch

    class Output(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x, *args):
            y = self.model(x, *args)
            y = y if output is None else y[output]
            if profile:  # bpnet-lite's ProfileWrapper
                logits = y.reshape(y.shape[0], -1)
                logits = logits - torch.mean(logits, dim=-1, keepdim=True)
                return (logits * torch.softmax(logits, dim=-1)).sum(dim=-1, keepdim=True)
            return y[:, None] if flat else y

    return Output()


def run_attribute(args: Any) -> int:
    """``jablate attribute``, from its parsed options (see ``jablate attribute --help``).

    Parameters
    ----------
    args : argparse.Namespace

    Returns
    -------
    status : int
        0.

    Raises
    ------
    InputError
        Bad options or input, before the model runs where it can be known then.
    ModelFailure
        The model failed while it ran.
    """

    from jablate.api.loading import check_device, load_model, model_kind
    from jablate.api.predict import predict

    paths = output_paths(args, ("out", "sequences", "plot"), npz=("out", "sequences"),
                         inputs=("fasta", "model"))
    fmt = plot_format(args.plot) if "plot" in paths else None
    if args.method != "deep_lift_shap":
        given = [f"--{name.replace('_', '-')}" for name in ("n_shuffles", "seed")
                 if getattr(args, name) is not None]
        if given:
            raise InputError(f"{' and '.join(given)} {'is' if len(given) == 1 else 'are'} "
                f"for --method deep_lift_shap's references; --method {args.method} draws "
                "none")
    names, sequences = read_fasta(args.fasta)
    note_unusual_letters(sequences, args.fasta)
    X = one_hot_encode(sequences)

    with AtomicFiles() as files:
        handles = {option: files.open(path) for option, path in paths.items()}
        model = load_model(args.model)
        kind = model_kind(model)
        device = check_device(kind, args.device, True)
        try:
            outputs = predict(model, X[:1], batch_size=1)
        except InputError:
            raise
        except Exception as error:
            raise ModelFailure(args.model, error).about_shapes(
                length_question(X.shape[-1])) from error
        _check_not_empty(outputs, args.model, X.shape[-1])
        explained = pick_output(model, kind, outputs, args.output, args.model, args.target,
                                args.profile)
        hypothetical = _attribute(explained, X, args, device)
        contributions = hypothetical * X  # the observed bases'
        if "out" in handles:
            numpy.savez(handles["out"], arr_0=hypothetical, attributions=contributions,
                        names=numpy.array(names, dtype=str))
        if "sequences" in handles:
            numpy.savez(handles["sequences"], arr_0=X, names=numpy.array(names, dtype=str))
        if "plot" in handles:
            plot_logos(handles["plot"], contributions, names, fmt)
    if not args.quiet:
        for option in handles:
            print(f"jablate: wrote {getattr(args, option)}", file=sys.stderr)
    return 0


def _check_not_empty(outputs, spec, length):
    """Refuse outputs with no values per sequence (a BPNet's profile when the input is no
    longer than its cropping), with the length question."""
    for i, o in enumerate(outputs if isinstance(outputs, (tuple, list)) else [outputs]):
        if getattr(o, "ndim", 0) >= 1 and 0 in tuple(o.shape[1:]):
            raise ModelFailure(spec, ValueError(f"its output {i} is empty: per sequence "
                f"{tuple(o.shape[1:])}"), length_question(length))


def _attribute(model, X, args, device):
    """Hypothetical attributions (N, 4, L), float32, by ``args.method``."""
    from jablate.attribution.deeplift import NoRuleError, deep_lift_shap, rescale_first
    from jablate.attribution.ism import saturation_mutagenesis

    kwargs = dict(target=args.target, batch_size=args.batch_size, hypothetical=True,
                  verbose=not args.quiet)
    if device is not None:
        kwargs["device"] = device
    # a profile's logits times their softmax, attributed as bpnet-lite does (the product
    # rescaled as one nonlinearity of the logits)
    rules = {"mul": rescale_first} if args.profile else None
    method = {"ism": saturation_mutagenesis,
              "deep_lift_shap": partial(deep_lift_shap, n_shuffles=args.n_shuffles or 20,
                                        random_state=args.seed or 0,
                                        additional_nonlinear_rules=rules)}[args.method]
    try:
        with warnings.catch_warnings():  # said here, for the command line
            warnings.filterwarnings("ignore", message="The model's output is not finite")
            out = numpy.asarray(method(model, X, **kwargs), dtype=numpy.float32)
    except InputError:
        raise
    except NoRuleError as error:  # deep_lift_shap has no rule for an operation
        raise InputError(f"{str(error).split('. ')[0]}; --method ism attributes any model "
            "(in Python, deep_lift_shap takes rules of your own: "
            "additional_nonlinear_rules)") from error
    except Exception as error:
        raise ModelFailure(args.model, error) from error
    refuse_not_finite(out, args.model, "sequence", "attribution",
                      "sequences (or their references or substitutions)",
                      "their attributions hold NaN or inf", length_question(X.shape[-1]))
    return out


def plot_logos(handle: Any, contributions: numpy.ndarray, names: list, fmt: str) -> None:
    """Logos of the observed bases' contributions: the :data:`LOGO_SEQUENCES` sequences
    with the largest total ``|contribution|``, each over :data:`LOGO_WIDTH` positions
    about its largest ``|contribution|`` (letters above the axis for positive values,
    below for negative ones).

    Parameters
    ----------
    handle : binary file
    contributions : numpy.ndarray, shape (N, 4, L)
        Zero but at the observed base of each position (hypothetical attributions times
        the one-hot sequences).
    names : list of str, length N
    fmt : {"png", "pdf", "svg"}

    Returns
    -------
    None
    """

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.font_manager import FontProperties
    from matplotlib.patches import PathPatch
    from matplotlib.textpath import TextPath
    from matplotlib.transforms import Affine2D

    N, _, L = contributions.shape
    odd = ~numpy.isfinite(contributions).all(axis=(1, 2))  # drawn as 0, and said so
    contributions = numpy.where(numpy.isfinite(contributions), contributions, 0)
    totals = numpy.abs(contributions).sum(axis=(1, 2))
    order = numpy.argsort(-totals, kind="stable")[:LOGO_SEQUENCES]
    width = min(L, LOGO_WIDTH)
    font = FontProperties(family="DejaVu Sans", weight="bold")
    glyphs = {}
    for letter in "ACGT":
        path = TextPath((0, 0), letter, size=1, prop=font)
        box = path.get_extents()
        glyphs[letter] = path.transformed(Affine2D().translate(-box.x0, -box.y0)
                                          .scale(1 / box.width, 1 / box.height))
    figure, axes = plt.subplots(len(order), 1, figsize=(12, 1.8 * len(order)), squeeze=False)
    for ax, i in zip(axes[:, 0], order):
        per_position = contributions[i].sum(axis=0)
        centre = int(numpy.argmax(numpy.abs(per_position)))
        lo = min(max(0, centre - width // 2), L - width)
        for p in range(lo, lo + width):
            base = int(numpy.argmax(numpy.abs(contributions[i, :, p])))
            height = float(contributions[i, base, p])
            if height == 0:
                continue
            glyph = glyphs["ACGT"[base]].transformed(Affine2D().scale(0.9, abs(height))
                .translate(p - 0.45, min(0.0, height)))
            ax.add_patch(PathPatch(glyph, facecolor=LOGO_COLOURS[base], edgecolor="none"))
        top = numpy.abs(per_position[lo:lo + width]).max(initial=0) or 1.0
        ax.set_xlim(lo - 1, lo + width)
        ax.set_ylim(-1.1 * top, 1.1 * top)
        ax.axhline(0, color="0.6", lw=0.5)
        ax.set_title(f"{names[i]}: positions {lo} to {lo + width - 1} (0-based)"
                     + ("; NaN or inf drawn as 0" if odd[i] else ""), fontsize=9, loc="left")
        ax.set_ylabel("contribution")
    axes[-1, 0].set_xlabel("position")
    figure.tight_layout()
    figure.savefig(handle, format=fmt)
    plt.close(figure)
