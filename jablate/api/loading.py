"""Models named on the command line, and runs of them with command-line options.

``load_model(SPEC)`` turns ``package.module:attribute`` (or a ``.pt2`` program) into a
model; :func:`run_annotations` runs :func:`jablate.ablate_annotations` with a
:class:`RunOptions` and reports the model's own failures as
:class:`jablate._core.errors.ModelFailure`. ``jablate ablate`` and ``jablate hits`` both use it;
this module is a library (it never imports the command line).
"""

import importlib
import importlib.util
import inspect
import logging
import os
import sys
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Optional

from jablate._core.errors import InputError, ModelFailure, a_or_an
from jablate.api.ablate import annotations_ablation
from jablate.api.ersatz import warn_unchangeable

__all__ = ["load_model", "is_torch_module", "model_kind", "check_device", "RunOptions",
           "run_annotations", "INCREMENTAL"]

#: ``--incremental`` as ablate_annotations' ``incremental=``.
INCREMENTAL = {"auto": "auto", "on": True, "off": False}


def load_model(spec: str) -> Any:
    """Load the model named by a ``--model`` SPEC.

    Parameters
    ----------
    spec : str
        ``module:attribute`` (dotted attribute allowed; the module may also be a ``.py``
        file path) or the path of a ``torch.export`` program (``.pt2``). The module is
        imported with the current directory first on ``sys.path``. The attribute may be a
        ``torch.nn.Module``, a bound flax module, an nnx module, a function that returns
        one (or a JAX function) when called with no arguments, or a JAX function of the
        one-hot batch ``X`` (N, A, L). A class is refused: calling it would make a model
        with fresh, untrained weights.

    Returns
    -------
    model : torch.nn.Module or callable
        Ready to pass to :func:`jablate.ablate_annotations` (torch modules in eval mode).

    Raises
    ------
    InputError
        When the module cannot be imported, the attribute does not exist, the ``.pt2``
        file cannot be loaded, or the object is a class or not a usable model.
    """

    if spec.endswith(".pt2") or (os.path.isfile(spec) and ":" not in spec):
        return _load_exported(spec)
    module_name, colon, attribute = spec.rpartition(":")
    if not colon or not module_name or not attribute:
        raise InputError(f"--model '{spec}' is neither 'package.module:attribute' nor "
            "a torch.export .pt2 file")

    module = _import(module_name, spec)
    obj = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise InputError(f"--model '{spec}': module '{module_name}' has no "
                f"attribute '{attribute}'") from None

    if inspect.isclass(obj):
        raise InputError(f"--model '{spec}' is a class, and an instance made here would "
            f"have untrained weights; name an instance with its weights loaded, or a "
            f"function that returns one")
    if _is_model_object(obj):
        return _prepare(obj, spec)
    if not callable(obj):
        raise InputError(f"--model '{spec}' is {a_or_an(type(obj).__name__)}, not a model "
            "(expected a torch.nn.Module, a flax module or a function)")
    if _callable_without_arguments(obj):
        try:
            made = obj()
        except Exception as error:
            raise InputError(f"--model '{spec}': calling it with no arguments failed: "
                f"{type(error).__name__}: {error}") from error
        if _is_model_object(made):
            return _prepare(made, spec)
        if inspect.isclass(made) or not callable(made):
            raise InputError(f"--model '{spec}' returned a {type(made).__name__}, not a "
                "model")
        return made
    return obj


def _import(module_name, spec):
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        if module_name.endswith(".py"):
            if not os.path.isfile(module_name):
                raise InputError(f"--model '{spec}': no such file '{module_name}'")
            name = os.path.splitext(os.path.basename(module_name))[0]
            loader = importlib.util.spec_from_file_location(name, module_name)
            module = importlib.util.module_from_spec(loader)
            sys.modules[name] = module
            loader.loader.exec_module(module)
            return module
        return importlib.import_module(module_name)
    except InputError:
        raise
    except Exception as error:
        raise InputError(f"--model '{spec}': cannot import '{module_name}': "
            f"{type(error).__name__}: {error}") from error


def _load_exported(path):
    if not os.path.isfile(path):
        reason = "it is a directory" if os.path.isdir(path) else "No such file"
        raise InputError(f"--model '{path}': cannot read '{path}': {reason}")
    try:
        import torch
    except ImportError:
        raise InputError(f"--model '{path}': loading a .pt2 program needs torch, "
            "which is not installed") from None
    if not zipfile.is_zipfile(path):
        raise InputError(f"--model '{path}': cannot load it as a torch.export program: "
            "not a .pt2 archive (torch.export.save writes one)")
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.ERROR)  # torch logs a traceback before raising
    try:
        program = torch.export.load(path).module()
    except Exception as error:
        raise InputError(f"--model '{path}': cannot load it as a torch.export program: "
            f"{type(error).__name__}: {error}") from None
    finally:
        logger.setLevel(level)
    from jablate.bridges.torch import any_batch  # a fixed-batch export runs in chunks of it
    return any_batch(program)


def is_torch_module(obj: Any) -> bool:
    """Whether ``obj`` is a ``torch.nn.Module`` (torch is never imported for the answer)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _is_flax_module(obj):
    linen = sys.modules.get("flax.linen")
    nnx = sys.modules.get("flax.nnx")
    return ((linen is not None and isinstance(obj, linen.Module)) or
        (nnx is not None and isinstance(obj, nnx.Module)))


def _is_model_object(obj):
    return not inspect.isclass(obj) and (is_torch_module(obj) or _is_flax_module(obj))


def _prepare(model, spec):
    linen = sys.modules.get("flax.linen")
    if linen is not None and isinstance(model, linen.Module) and model.scope is None:
        raise InputError(f"--model '{spec}' is an unbound flax module; name a bound "
            "one (module.bind(variables)) or a function returning it")
    if is_torch_module(model):
        try:
            model.eval()
        except Exception:  # exported programs do not all support eval()
            pass
    return model


def _callable_without_arguments(obj):
    try:
        inspect.signature(obj).bind()
    except TypeError:
        return False
    except ValueError:  # no signature (some builtins)
        return False
    return True


def model_kind(model: Any) -> str:
    """``"torch"`` for a torch module, ``"jax"`` for anything else."""
    return "torch" if is_torch_module(model) else "jax"


def model_digest(model: Any) -> Optional[str]:
    """A short SHA-256 of a model's weights (names, dtypes, shapes and bytes), or None
    where jablate cannot see them.

    A torch module's ``state_dict`` (tensors); a flax module's variables (linen, bound)
    or state (nnx), random number state left out; a pure model's parameters. A plain
    function (its weights, if any, closed over), a ``torch.export`` program (whose file
    ``jablate hits`` digests) and weights jablate cannot read give None.

    Parameters
    ----------
    model : object
        From :func:`load_model`.

    Returns
    -------
    str or None
        16 hexadecimal digits.
    """

    import hashlib

    try:
        leaves = _weights(model)
    except Exception:  # weights jablate cannot read: as for a plain function
        return None
    if not leaves:
        return None
    digest = hashlib.sha256()
    for name, dtype, shape, data in leaves:
        digest.update(f"{name}\t{dtype}\t{shape}\n".encode())
        digest.update(data.tobytes())
    return digest.hexdigest()[:16]


def _weights(model):
    """``(name, dtype, shape, bytes)`` of every array of a model's weights and state; random
    number state (nnx's ``rngs``, PRNG keys) and a torch module's extra state (any object)
    left out."""
    import numpy

    if model_kind(model) == "torch":
        import torch

        if not isinstance(model, torch.nn.Module):
            return []
        return [(name, str(t.dtype), tuple(t.shape), t.detach().cpu().reshape(-1)
                 .contiguous().view(torch.uint8).numpy())
                for name, t in model.state_dict().items() if isinstance(t, torch.Tensor)]
    import jax

    from jablate.models.runner import runner_for

    _, params = runner_for(model)
    leaves = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        name = jax.tree_util.keystr(path)
        if (not hasattr(leaf, "dtype") or "rngs" in name
                or jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.extended)):
            continue
        leaves.append((name, str(leaf.dtype), tuple(leaf.shape),
                       numpy.ascontiguousarray(jax.device_get(leaf)).reshape(-1)
                       .view(numpy.uint8)))
    return leaves


def check_device(kind: str, device: Optional[str], translate: bool,
                 name: str = "--device") -> Any:
    """The ``device=`` for ablate_annotations (None: leave it out); raise if unavailable.

    Resolved by jablate's one device resolver (``jablate.models.frontdoor.resolve_device``), for
    torch when a torch model runs in torch and for JAX otherwise, before the model runs.

    Parameters
    ----------
    kind : {"torch", "jax"}
        :func:`model_kind` of the model.
    device : str or None
        The device's name (``cpu``, ``cuda:1``, ...).
    translate : bool
        Whether a torch model is translated to JAX.
    name : str, optional
        The option's name for messages. Default ``"--device"``.

    Raises
    ------
    InputError
        When the framework has no such device.
    """

    if device is None:
        return None
    from jablate.models.frontdoor import resolve_device

    framework = "torch" if kind == "torch" and not translate else "jax"
    try:
        return resolve_device(device, framework, name=name)
    except ValueError as error:
        raise InputError(str(error).rstrip(".")) from None


@dataclass(frozen=True)
class RunOptions:
    """The options of a run that ``jablate ablate`` and ``jablate hits`` share.

    Attributes
    ----------
    spec : str
        The model's SPEC, for messages.
    n : int
        Shuffles per region.
    shuffle : {"mono", "dinucleotide"}
        Which shuffle.
    seed : int
        ``random_state``.
    batch_size : int
        Sequences per model call.
    incremental : {"auto", "on", "off"}
        The incremental engine's switch, as on the command line.
    translate : bool
        Translate a torch model to JAX (``backend="jax"``).
    device : str or None
        The device's name.
    verbose : bool
        Show a progress bar.
    """

    spec: str
    n: int
    shuffle: str = "mono"
    seed: int = 0
    batch_size: int = 64
    incremental: str = "auto"
    translate: bool = False
    device: Optional[str] = None
    verbose: bool = True

    @classmethod
    def from_args(cls, args: Any) -> "RunOptions":
        """From the parsed options of ``jablate ablate`` or ``jablate hits``."""
        return cls(spec=args.model, n=args.n, shuffle=args.shuffle, seed=args.seed,
                   batch_size=args.batch_size, incremental=args.incremental,
                   translate=args.translate, device=args.device, verbose=not args.quiet)

    def shuffle_fn(self) -> Any:
        """``jablate.shuffle`` or ``jablate.dinucleotide_shuffle``."""
        from jablate.api.ersatz import dinucleotide_shuffle, shuffle
        return dinucleotide_shuffle if self.shuffle == "dinucleotide" else shuffle


def run_annotations(model: Any, X: Any, annotations: Any, options: RunOptions,
                    unchangeable: Callable = warn_unchangeable, **extra: Any) -> Any:
    """:func:`jablate.ablate_annotations` with ``options`` (and ``extra`` keywords).

    Parameters
    ----------
    model : object
        From :func:`load_model`.
    X : numpy.ndarray, shape (N, A, L)
        One-hot sequences.
    annotations : numpy.ndarray of int, shape (k, 3)
        ``(example_idx, start, end)`` rows.
    options : RunOptions
    unchangeable : callable, optional
        How regions the shuffle cannot change are reported (see
        :func:`jablate.api.ablate.annotations_ablation`); by default a warning.
    **extra
        More keywords for ``ablate_annotations`` (they win over ``options``).

    Returns
    -------
    PerturbationAnnotationsResult

    Raises
    ------
    InputError
        jablate's own checks (``--translate`` of a JAX model, a missing device, ...).
    ModelFailure
        Anything else raised while the model ran.
    """

    kind = model_kind(model)
    if options.translate and kind != "torch":
        raise InputError("--translate translates torch models to JAX; --model names a "
                         "JAX model")
    if options.incremental == "on" and kind == "torch" and not options.translate:
        raise InputError("--incremental on needs a JAX model, or --translate for a torch "
                         "model: the incremental engine runs in JAX")
    device = check_device(kind, options.device, options.translate)
    kwargs = dict(n=options.n, shuffle_fn=options.shuffle_fn(), random_state=options.seed,
                  batch_size=options.batch_size, verbose=options.verbose,
                  incremental=INCREMENTAL[options.incremental])
    if options.translate:
        kwargs["backend"] = "jax"
    if device is not None:
        kwargs["device"] = device
    kwargs.update(extra)
    try:
        incremental, reduce = kwargs.pop("incremental"), kwargs.pop("reduce", None)
        return annotations_ablation(model, X, annotations, incremental, reduce, kwargs,
                                    unchangeable)
    except InputError:
        raise  # jablate's own checks: bad input
    except Exception as error:
        raise ModelFailure(options.spec, error) from error
