"""Models as pure functions: ``apply(params, x, *args)`` with parameters as arguments.

A :class:`JaxRunner` wraps a bound ``flax.linen`` module, a ``flax.nnx`` module, or
any callable on JAX arrays; its compiled programs are built once per model and
reused for every call with the same shapes. torch modules get a runner of the
same shape from ``jablate.bridges.torch``.
"""

import weakref

import jax
import jax.numpy as jnp
import numpy

from .arrays import is_torch_module, torch_bridge


def _as_tuple(y):
    """Model output as (tuple of arrays, multi-output flag)."""
    if isinstance(y, (tuple, list)):
        return tuple(y), True
    return (y,), False


def resolve_jax_device(device):
    """A JAX device for ``device`` ('cpu', 'cuda', 'gpu', 'tpu', 'cuda:1', a JAX device, None).

    Raises
    ------
    ValueError
        If no JAX device of that kind is visible.
    """
    if device is None:
        return None
    if isinstance(device, jax.Device):
        return device
    name = str(device)
    kind, _, index = name.partition(":")
    platform = {"cuda": "gpu", "rocm": "gpu"}.get(kind, kind)
    try:
        devices = jax.devices(platform)
    except RuntimeError:
        devices = []
    if not devices:
        raise ValueError(f"device {name!r} was requested but JAX sees no {platform} device; "
                         f"available: {[d.platform for d in jax.devices()]}.")
    i = int(index) if index else 0
    if i >= len(devices):
        raise ValueError(f"device {name!r} was requested but JAX sees only {len(devices)} "
                         f"{platform} device(s).")
    return devices[i]


class JaxRunner:
    """A JAX model in pure form: ``apply(params, x, *args) -> tuple of arrays``.

    Parameters
    ----------
    model: flax.linen.Module (bound), flax.nnx.Module, pure model or callable
        Maps a ``(B, A, L)`` JAX array (plus ``*args``) to an array or a
        tuple/list of arrays. A *pure model* has ``params`` and
        ``apply(params, x, *args)`` (as ``jablate.bridges.torch.translate`` returns).
    """

    jittable = True

    def __init__(self, model):
        self._model = model
        self._kind, self._static = self._split(model)
        self.multi = None

    @staticmethod
    def _split(model):
        try:
            import flax.linen as nn
            if isinstance(model, nn.Module):
                if model.scope is None:
                    raise ValueError("model is an unbound flax.linen Module; pass "
                                     "module.bind(variables) so that jablate has its weights.")
                return "linen", model.unbind()[0]
        except ImportError:  # pragma: no cover - flax is a dependency
            pass
        try:
            from flax import nnx
            if isinstance(model, nnx.Module):
                return "nnx", nnx.split(model)[0]
        except ImportError:  # pragma: no cover
            pass
        if callable(getattr(model, "apply", None)) and hasattr(model, "params"):
            return "pure", None  # e.g. jablate.bridges.torch.translate's TranslatedModel
        if not callable(model):
            raise ValueError(f"model must be a flax module, a callable on JAX arrays or a "
                             f"torch.nn.Module; got {type(model).__name__}.")
        return "callable", None

    @property
    def params(self):
        """The current parameters (re-read on each call, so updated weights are used)."""
        if self._kind == "linen":
            return self._model.unbind()[1]
        if self._kind == "nnx":
            from flax import nnx
            graphdef, state = nnx.split(self._model)
            if graphdef != self._static:
                raise ValueError("the nnx model's structure changed since jablate first saw it; "
                                 "pass the new module object.")
            return state
        if self._kind == "pure":
            return self._model.params
        return None

    def apply(self, params, x, *args):
        """Pure forward pass: tuple of output arrays."""
        if self._kind == "linen":
            y = self._static.apply(params, x, *args)
        elif self._kind == "nnx":
            from flax import nnx
            y = nnx.merge(self._static, params)(x, *args)
        elif self._kind == "pure":
            y = self._model.apply(params, x, *args)
        else:
            y = self._model(x, *args)
        y, multi = _as_tuple(y)
        self.multi = multi
        return y


_runners = weakref.WeakKeyDictionary()
_runners_by_id = {}


def runner_for(model, backend=None, example=None):
    """The cached runner of ``model`` (built once per model object).

    ``backend="jax"`` translates a torch module to JAX (``jablate.bridges.torch.translate``)
    using ``example`` (a JAX array shaped like one batch) for the export.
    """
    if backend not in (None, "torch", "jax"):
        raise ValueError(f"backend must be None, 'torch' or 'jax'; got {backend!r}.")
    if is_torch_module(model):
        if backend == "jax":
            bridge = torch_bridge()
            key = ("translated", id(model), tuple(example.shape[1:]), str(example.dtype))
            translated = bridge.translate(model, bridge.to_torch(example[:1]).float())
            return _cached(translated, lambda: JaxRunner(translated), key)
        return _cached(model, lambda: torch_bridge().TorchRunner(model), ("torch", id(model)))
    if backend == "torch":
        raise ValueError("backend='torch' needs a torch.nn.Module as model.")
    return _cached(model, lambda: JaxRunner(model), ("jax", id(model)))


def _cached(model, build, key):
    try:
        runner = _runners.get(model)
        if runner is None:
            runner = _runners[model] = build()
        return runner
    except TypeError:  # not weak-referenceable: cache by id while the object lives
        entry = _runners_by_id.get(key)
        if entry is None or entry[0] is not model:
            entry = _runners_by_id[key] = (model, build())
        return entry[1]
