"""The torch bridge: DLPack conversions and torch modules as JAX-facing runners.

Nothing in ``jablate/`` imports torch; the front door hands torch tensors and
modules to this module.

* :func:`from_torch` / :func:`to_torch` share memory through DLPack.
* :func:`wrap` turns a ``torch.nn.Module`` into a callable on JAX arrays that
  also works inside ``jax.jit`` (through ``jax.pure_callback``).
* :class:`TorchRunner` is what ``jablate.predict``/``ablate`` use for torch
  modules: batches are shuffled in JAX and handed to torch without copies.
* :func:`translate` lowers a module to ``jax.numpy`` with ``torch.export``.
* :func:`any_batch` lets a ``torch.export`` program saved at a fixed batch size run on
  any batch, in chunks of that size (:class:`StaticBatchModule`).
"""

import contextlib
import hashlib
import inspect
import weakref
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy
import torch

from jablate._core.errors import InputError
from jablate._core.placement import parse_device
from jablate.bridges._dlpack import from_torch  # noqa: F401 (API)
from jablate.bridges._static_batch import StaticBatchModule, any_batch, exported_batch  # noqa: F401 (API)

__all__ = ["from_torch", "to_torch", "torch_to_numpy", "wrap", "TorchRunner", "translate",
           "translate_func", "any_batch", "exported_batch", "StaticBatchModule"]


def to_torch(array):
    """A torch tensor sharing memory with a JAX array (or a NumPy array).

    Zero-copy through DLPack for JAX arrays on the CPU or a CUDA device (the
    tensor lands on the same device), and through ``torch.from_numpy`` for
    NumPy arrays. A NumPy array of a dtype torch lacks is copied to JAX first.
    """
    if isinstance(array, numpy.ndarray):
        try:
            return torch.from_numpy(numpy.ascontiguousarray(array))
        except TypeError:  # e.g. ml_dtypes' bfloat16
            array = jnp.asarray(array)
    return torch.from_dlpack(array)


def torch_to_numpy(tensor):
    """A NumPy view of a CPU tensor (copied to the CPU first when needed)."""
    return tensor.detach().cpu().numpy()


def torch_device(kind: str, index: Optional[int] = None, name: str = "device") -> "torch.device":
    """The torch device of a parsed device name (see ``jablate.models.frontdoor.resolve_device``).

    Raises
    ------
    ValueError
        If torch has no such device (CUDA or MPS unavailable, an index beyond the
        device count, a name torch does not know).
    """
    label = kind if index is None else f"{kind}:{index}"
    kind = "cuda" if kind == "gpu" else kind
    try:
        device = torch.device(kind if index is None else f"{kind}:{index}")
    except (RuntimeError, ValueError):
        raise InputError(f"{name} {label!r} is not a torch device.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{name} {label!r} was requested but torch sees no CUDA device; "
                             "use 'cpu'.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"{name} {label!r} was requested but torch sees only "
                             f"{torch.cuda.device_count()} CUDA device(s).")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"{name} {label!r} was requested but MPS is not available to torch.")
    return device


def _resolve_device(device):
    """``device`` as a torch.device; None is CUDA when available, as tangermeme."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        device = str(device)
    elif isinstance(device, jax.Device):
        device = f"{device.platform}:{device.id}"
    return torch_device(*parse_device(device))


def _resolve_dtype(model, dtype):
    if dtype is None:
        try:
            return next(model.parameters()).dtype
        except (StopIteration, AttributeError):
            return torch.float32
    if not isinstance(dtype, (str, torch.dtype)):  # a NumPy/JAX dtype or scalar type
        try:
            dtype = numpy.dtype(dtype).name
        except TypeError:
            raise InputError(f"dtype {dtype!r} is not a dtype.") from None
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype.replace("torch.", ""), None)
        if not isinstance(resolved, torch.dtype):
            raise InputError(f"dtype {dtype!r} is not a torch dtype.")
        return resolved
    return dtype


def _to_device(x, dtype, device):
    """tangermeme's rule: small ints go to the device first, then change dtype."""
    if (dtype.is_floating_point and not x.dtype.is_floating_point
            and x.element_size() < torch.finfo(dtype).bits // 8):
        return x.to(device).to(dtype)
    return x.to(dtype).to(device)


def _set_training(model, mode):
    try:
        model.train(mode)
    except NotImplementedError:  # torch.export's unlifted modules keep their exported mode
        pass


@contextlib.contextmanager
def _preserve_model_state(model, device):
    try:
        orig_device = next(model.parameters()).device
    except StopIteration:
        orig_device = None
    was_training = model.training
    if orig_device != device:
        model.to(device)
    _set_training(model, False)
    try:
        yield
    finally:
        if was_training:
            _set_training(model, True)
        if orig_device is not None and orig_device != device:
            model.to(orig_device)


class TorchRunner:
    """A ``torch.nn.Module`` seen from jablate's engine.

    Within :meth:`session`, calling the runner on a JAX batch ``(B, A, L)``
    (and a tuple of JAX extra inputs) runs the module on ``device`` in ``dtype``
    under ``torch.inference_mode`` and returns a tuple of CPU tensors. The
    module's device and training mode are restored when the session ends.
    """

    jittable = False
    params = None

    def __init__(self, model):
        self.model = any_batch(model)
        self._device, self._dtype, self._func = None, None, None

    @contextlib.contextmanager
    def session(self, device=None, dtype=None, func=None):
        """Hold ``device`` (default CUDA when available), ``dtype`` (default the
        module's parameter dtype) and a post-processing ``func`` for the calls inside.

        Raises
        ------
        ValueError
            If CUDA is requested but unavailable, or ``dtype`` is unknown.
        """
        device = _resolve_device(device)
        dtype = _resolve_dtype(self.model, dtype)
        with _preserve_model_state(self.model, device):
            self._device, self._dtype, self._func = device, dtype, func
            try:
                yield self
            finally:
                self._device, self._dtype, self._func = None, None, None

    def __call__(self, x, args=()):
        """Run on a JAX or NumPy batch ``x`` (and extra inputs): a CPU tensor, or a list of
        them for a multi-output model."""
        if self._device is None:
            with self.session():
                return self(x, args)
        xt = _to_device(to_torch(x), self._dtype, self._device)
        at = [_to_device(to_torch(a), self._dtype, self._device) for a in args]
        with torch.inference_mode():
            y = self.model(xt, *at)
            if self._func is not None:
                y = self._func(y)
        if isinstance(y, torch.Tensor):
            return y.cpu()
        if isinstance(y, (tuple, list)) and y and all(isinstance(t, torch.Tensor) for t in y):
            return [t.cpu() for t in y]
        raise InputError(f"the model must return a tensor or a non-empty tuple/list of "
                         f"tensors; got {type(y).__name__}"
                         f"{' (empty)' if isinstance(y, (tuple, list)) and not y else ''}.")

    @staticmethod
    def concat(chunks):
        """Concatenate per-batch outputs along the batch axis."""
        return torch.cat(chunks)

    @staticmethod
    def to_jax(y):
        """A batch output as a JAX array."""
        return from_torch(y)


def wrap(module, device=None, dtype=None):
    """A callable on JAX arrays that runs a torch module, eagerly or inside ``jax.jit``.

    Parameters
    ----------
    module: torch.nn.Module
    device: str, torch.device or None, optional
        Where the module runs; default CUDA when available, else the CPU.
    dtype: torch.dtype, str or None, optional
        Input dtype; default the module's parameter dtype.

    Returns
    -------
    fn: callable
        ``fn(x, *args)`` with JAX arrays ``x`` (B, ...) returns a JAX array or a
        tuple of them. Under ``jax.jit`` it runs through ``jax.pure_callback``;
        the output shapes come from a one-example probe, cached per input shape
        and dtype. The module's device and training mode are restored after
        every call.

    Raises
    ------
    ValueError
        If CUDA is requested but unavailable.
    """
    runner = TorchRunner(module)
    _resolve_device(device)
    shapes = {}

    def host_call(x, *args):
        with runner.session(device=device, dtype=dtype):
            y = runner(x, args)  # NumPy (from a callback or probe) or JAX arrays
        multi = isinstance(y, list)
        return tuple(torch_to_numpy(t) for t in (y if multi else [y])), multi

    def out_spec(x, args):
        sig = (x.shape[1:], str(x.dtype)) + tuple((a.shape[1:], str(a.dtype)) for a in args)
        if sig not in shapes:
            probe, multi = host_call(numpy.zeros((1,) + x.shape[1:], x.dtype),
                                     *(numpy.zeros((1,) + a.shape[1:], a.dtype) for a in args))
            shapes[sig] = ([(y.shape[1:], y.dtype) for y in probe], multi)
        specs, multi = shapes[sig]
        return tuple(jax.ShapeDtypeStruct((x.shape[0],) + s, d) for s, d in specs), multi

    def fn(x, *args):
        if not any(isinstance(a, jax.core.Tracer) for a in (x, *args)):
            ys, multi = host_call(x, *args)
            ys = tuple(jnp.asarray(y) for y in ys)
            return ys if multi else ys[0]
        specs, multi = out_spec(x, args)
        ys = jax.pure_callback(lambda *a: host_call(*a)[0], specs, x, *args,
                               vmap_method="sequential")
        return tuple(ys) if multi else ys[0]

    fn.module = module
    return fn


def translate(module, example_input, *example_args):
    """Lower ``module`` to a JAX function with ``torch.export``; see
    :func:`jablate.bridges.torch_export.translate` for the full contract."""
    from jablate.bridges.torch_export import translate as _translate
    return _translate(module, example_input, *example_args)


class _OutputFuncModule(torch.nn.Module):
    """``func`` on a module's outputs, as a module ``torch.export`` captures: ``_call(ys)``
    gives ``func`` the outputs in their container (a tuple or list, or the one tensor);
    :func:`_output_func_module` adds a ``forward`` of named arguments. It holds ``func``
    weakly where it can: one is made for each call of :func:`translate_func`, and nothing
    it leaves behind keeps ``func`` alive."""

    def __init__(self, func: Callable, container: Optional[type]):
        super().__init__()
        try:
            self._func = weakref.ref(func)
        except TypeError:
            self._func = lambda: func
        self._container = container

    def _call(self, ys: tuple):
        return self._func()(ys[0] if self._container is None else self._container(ys))


_ARITIES: dict = {}


def _output_func_module(func: Callable, container: Optional[type], count: int) -> torch.nn.Module:
    """An :class:`_OutputFuncModule` whose ``forward`` takes ``count`` named tensors (a
    ``*ys`` signature keeps torch.export from making the batch symbolic), of a class named
    ``func`` for torch.export's messages."""
    if count not in _ARITIES:
        names = ", ".join(f"y{i}" for i in range(count))
        namespace: dict = {}
        exec(f"def forward(self, {names}):\n    return self._call(({names},))\n", namespace)
        _ARITIES[count] = type("func", (_OutputFuncModule,), {"forward": namespace["forward"]})
    return _ARITIES[count](func, container)


class _TranslatedOutputFunc:
    """What :func:`translate_func` returns: the translation as a func on JAX outputs."""

    def __init__(self, translated: Any):
        self._translated = translated

    def __call__(self, y: Any) -> Any:
        leaves = list(y) if isinstance(y, (tuple, list)) else [y]
        return self._translated.apply(self._translated.params, *leaves)


#: func (or a bound method's object) -> {None (or the method's function): {fingerprint: post}}:
#: a func's translations, the last few states of what it captured.
_OUTPUT_FUNCS = weakref.WeakKeyDictionary()
#: Translations kept per func (each state of the tensors and values it captured is one).
OUTPUT_FUNC_STATES = 4


def _func_fingerprint(module: torch.nn.Module, examples: list) -> str:
    """What a translation of ``module`` (a func as a module) depends on: its exported graph
    (Python values the func reads, such as a global task index, are literals in it) and
    the bytes of every tensor it captured (a closed-over layer's weights, a tensor)."""
    exported = torch.export.export(module, tuple(examples))
    digest = hashlib.sha256(str(exported.graph).encode())
    for name in sorted(exported.constants):
        value = exported.constants[name]
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().contiguous()
            digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


def translate_func(func: Callable, outputs: Any) -> Callable:
    """``func``, torch code written for a torch module's outputs, translated to JAX.

    ``func`` is captured with ``torch.export`` as the forward of a module that takes the
    outputs (:func:`translate`), so it keeps torch's meaning on JAX arrays: ``y.std(-1)``
    is torch's unbiased standard deviation, ``y.softmax(-1)`` and ``y.max(-1).values``
    work. jablate translates the ``func`` of a torch module that runs translated
    (``backend='jax'``; ``saturation_mutagenesis``'s default) this way, so that it gives
    tangermeme's numbers. ``func`` is exported again on every call (milliseconds), so that
    what it captures is read then (a closed-over layer's weights changed in place, a
    global); a translation is reused, with its compiled programs, only for the same graph
    and captured tensors (the last :data:`OUTPUT_FUNC_STATES` states per ``func``, held
    weakly on it).

    Parameters
    ----------
    func: callable
        Maps the module's outputs (a tensor, or the tuple or list the module returns) to
        a tensor or a tuple/list of tensors, each row from its own row.
    outputs: jax.ShapeDtypeStruct, array, or tuple/list of them
        The module's outputs (their shapes and dtypes: ``jax.eval_shape`` of the
        translated module).

    Returns
    -------
    post: callable
        ``post(y)`` on the JAX outputs ``y``, traceable (``jax.jit``), one object per
        ``func``, shape and state of what it captured.

    Raises
    ------
    ValueError
        When ``torch.export`` cannot capture ``func`` or it holds an operation that has
        no JAX translation (the message says why and what to do instead).
    """
    container = type(outputs) if isinstance(outputs, (tuple, list)) else None
    if container is not None and container not in (tuple, list):
        container = tuple
    leaves = list(outputs) if container is not None else [outputs]
    # A bound method (``model.head``) is a new object at every attribute access: its
    # translations live on the object it is bound to, by the function it calls.
    owner, function = (func.__self__, func.__func__) if inspect.ismethod(func) else (func, None)
    try:
        states = _OUTPUT_FUNCS.setdefault(owner, {}).setdefault(function, {})
    except TypeError:  # not weakly referenceable: translated for this call only
        states = {}
    # A new module each call, exported again (milliseconds): what the func captures (a
    # layer's weights changed in place, a global) is read now, as tangermeme's torch call
    # reads it, and a translation is reused only for the same graph and tensors.
    module = _output_func_module(func, container, len(leaves))
    # on the host, whatever JAX's default device: only shapes and dtypes matter
    examples = [torch.zeros((1,) + tuple(leaf.shape[1:]),
                            dtype=getattr(torch, jnp.dtype(leaf.dtype).name)) for leaf in leaves]
    try:
        key = (container, tuple((tuple(e.shape), e.dtype) for e in examples),
               _func_fingerprint(module, examples))
        if key in states:
            return states[key]
        translated = translate(module, *examples)
    except Exception as error:  # noqa: BLE001 - any failure: the user's func, said so
        reason = " ".join(str(error).split()).split(". ")[0][:300]
        raise InputError(
            f"func could not be translated to JAX with the torch module ({type(error).__name__}: "
            f"{reason}). A torch module that runs translated (backend='jax'; "
            "saturation_mutagenesis's default) gets its func translated too, so that the func "
            "keeps torch's meaning: it must be torch code that torch.export can capture. "
            "Pass backend='torch' to run the module and func in torch, or pass the module "
            "translated yourself (jablate.translate(module, X)) with a JAX func.") from None
    if not translated.dynamic_batch:
        raise InputError(
            "func could not be translated with a symbolic batch: it must map each row of the "
            "model's outputs to a row of its own (y.sum() sums over the batch; y.sum(-1) "
            "does not); or pass backend='torch' to run the module and func in torch.")
    post = _TranslatedOutputFunc(translated)
    while len(states) >= OUTPUT_FUNC_STATES:
        del states[next(iter(states))]  # the oldest state
    states[key] = post
    return post
