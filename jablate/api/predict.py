"""Batched prediction with one compiled program per batch shape."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from jablate._core import behaviour, placement
from jablate._core.behaviour import PREDICT, carries
from jablate._core.errors import InputError
from jablate.engine import stream as engine
from jablate.models.frontdoor import (
    Inputs,
    check_int,
    inputs,
    is_torch_module,
    jax_dtype,
    resolve_device,
    torch_bridge,
    tree_to_family,
)
from jablate.models.runner import (
    Backend,
    input_dtype,
    refuse_batch_statistics,
    runner_for,
    translated_dtype,
)


def torch_dtype(model: Any, dtype: Any, family: str, device: Any = None,
                name: str = "dtype") -> Any:
    """The torch dtype a torch module runs in for tangermeme's ``dtype``.

    tangermeme casts each batch to ``dtype`` and autocasts to it where torch
    can (float16 and bfloat16 on the CPU); torch has no autocast to float64,
    so float64 inputs need a module whose parameters are float64.

    Parameters
    ----------
    model: torch.nn.Module
    dtype: str, torch/NumPy/JAX dtype or None
    family: str
        The array family of ``X``, which the results come back in.
    device: torch.device or None, optional
    name: str, optional
        The parameter's name for error messages.

    Returns
    -------
    dtype: torch.dtype or None
        None for None (the module's parameter dtype).

    Raises
    ------
    ValueError
        For a name torch does not know; for float64 with a module whose
        parameters are not float64 (torch would fail on the first batch), or
        with a JAX ``X`` while JAX runs without 64-bit types (the results could
        not come back in float64).
    """
    if dtype is None:
        return None
    bridge = torch_bridge()
    torch = bridge.torch
    resolved = bridge._resolve_dtype(model, dtype)
    if resolved == torch.float64:
        kinds = {str(p.dtype).replace("torch.", "") for p in model.parameters()
                 if p.is_floating_point()}
        if kinds - {"float64"}:
            raise InputError(
                f"{name} {dtype!r} feeds the torch module float64 inputs, but its parameters "
                f"are {', '.join(sorted(kinds))}, and torch autocasts only to float16 and "
                "bfloat16 (tangermeme's dtype is an autocast dtype), so the module would "
                f"fail on the first batch; convert it with model.double(), or leave {name}="
                "None.")
        if family == "jax":
            import jax
            if not jax.config.jax_enable_x64:
                from jablate.models.frontdoor import X64_HINT
                raise InputError(f"{name} {dtype!r}: the results come back as JAX arrays "
                                 f"like X, which hold float64 only with 64-bit types: "
                                 f"{X64_HINT}; or pass X as a NumPy array or torch tensor.")
    return resolved


@contextlib.contextmanager
def _torch_session(runner: Any, device: Any, dtype: Any, func: Optional[Callable]):
    """The torch runner's session (device, dtype, ``func``, eval mode) under tangermeme's
    autocast."""
    with runner.session(device=device, dtype=dtype, func=func), _autocast(dtype, device):
        yield runner


def _autocast(dtype: Any, device: Any) -> Any:
    """tangermeme's autocast: to float16/bfloat16 on the CPU, to anything but float32 on
    CUDA; no autocast elsewhere."""
    if dtype is None:
        return contextlib.nullcontext()
    torch = torch_bridge().torch
    kind = (device.type if device is not None else
            "cuda" if torch.cuda.is_available() else "cpu")
    if (kind == "cpu" and dtype in (torch.float16, torch.bfloat16)) or (
            kind == "cuda" and dtype not in (torch.float32, torch.float64)):
        return torch.autocast(device_type=kind, dtype=dtype)
    return contextlib.nullcontext()


def torch_func(func: Callable, runner: Any, params: Any, inp: Inputs, dtype: Any) -> Callable:
    """The ``func`` of a torch module that runs translated, as the engine applies it: a
    func that means the same in both frameworks (:class:`jablate._core.behaviour.OutputFunc`)
    as it is; any other, torch code as tangermeme's are, translated with the module
    (:func:`jablate.bridges.torch.translate_func`), so that ``y.std()`` stays torch's.

    Raises
    ------
    ValueError
        When torch.export cannot capture ``func`` (the message names the ways out).
    """
    found = behaviour.find(func)
    if found is not None and isinstance(found.value, behaviour.OutputFunc):
        return func
    row = lambda a, dt: jax.ShapeDtypeStruct((1,) + tuple(a.shape[1:]), dt)  # noqa: E731
    outputs = jax.eval_shape(runner.apply, params, row(inp.X, input_dtype(inp.X.dtype, dtype)),
                             *(row(a, a.dtype) for a in inp.args))
    leaves = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    if not all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves):
        return func  # outputs jablate cannot run (a dict): the engine refuses them, clearly
    return torch_bridge().translate_func(func, outputs)


def prepare(model: Any, inp: Inputs, func: Optional[Callable] = None, device: Any = None,
            dtype: Any = None, backend: Backend = None, what: Optional[str] = "predict"):
    """The engine's view of ``model`` for inputs ``inp``.

    ``what`` names the caller in the refusal of a model normalised by its batch on the
    JAX path (:func:`jablate.models.runner.refuse_batch_statistics`); None for a caller
    that evaluates nothing (``incremental_report``'s analysis), which is not refused.

    Returns
    -------
    inp: Inputs
        For a JAX model, placed by jablate's one device policy
        (:mod:`jablate._core.placement`): on ``device`` when given, else on JAX's default
        device, whatever device ``X`` arrived on.
    model: engine.Model
        Runner, parameters, post-processing ``func`` and input dtype.
    session: context manager
        Within it a torch model holds its device, dtype and ``func``.

    Raises
    ------
    ValueError
        For a model jablate cannot run (see :func:`jablate.models.runner.runner_for`),
        a ``device`` or ``dtype`` the framework does not have, or a translated model that
        normalises with its batch's statistics (the JAX path makes batches of its own).
    """
    if backend == "jax" and is_torch_module(model):  # it runs in the module's dtype
        jdtype = translated_dtype(model, dtype)
        inp = Inputs(inp.X, tuple(a.astype(jdtype) if jnp.issubdtype(a.dtype, jnp.floating)
                                  else a for a in inp.args), inp.family, inp.dtype)
    else:
        jdtype = None if is_torch_module(model) else jax_dtype(dtype)
    runner, params = runner_for(model, backend=backend, example=inp.X,
                                example_args=inp.args, dtype=jdtype)
    if backend == "jax" and is_torch_module(model) and func is not None:
        func = torch_func(func, runner, params, inp, jdtype)
    if not runner.jittable:
        device = resolve_device(device, "torch")
        dtype = torch_dtype(runner.model, dtype, inp.family, device)
        return inp, engine.Model(runner), _torch_session(runner, device, dtype, func)
    if what is not None:
        refuse_batch_statistics(runner, what)
    jdevice = resolve_device(device, "jax")
    where = placement.current(inp.X, jdevice)
    X, args = placement.place((inp.X, inp.args), where)
    inp = Inputs(X, tuple(args), inp.family, inp.dtype)
    return (inp, engine.Model(runner, params, func, jdtype, jdevice, where),
            contextlib.nullcontext())


@carries(PREDICT)
def predict(model: Any, X: Any, args: Optional[Any] = None, func: Optional[Callable] = None,
            batch_size: int = 32, dtype: Any = None, device: Any = None, verbose: bool = False,
            backend: Backend = None) -> Any:
    """Make predictions for ``X`` in batches, as tangermeme's ``predict`` does.

    JAX models run as one ``jit``-compiled program per batch shape: the last
    batch is padded to ``batch_size`` (a run of fewer than ``batch_size``
    sequences to the power of two that holds them), by repeating a sequence,
    and calls with the same batch shape never recompile, whatever ``N``. torch
    modules run eagerly under ``torch.inference_mode`` through the DLPack
    bridge, on ``device``.

    Models run in evaluation mode, as tangermeme runs them: a torch module is
    put in ``eval()`` for the call and its mode restored after; an nnx module
    runs through an eval view (``nnx.view``: Dropout off, BatchNorm on its
    running statistics) that shares its arrays, so the module itself stays in
    the mode it was in.

    Parameters
    ----------
    model: flax.linen.Module (bound), flax.nnx.Module, callable or torch.nn.Module
        Maps a batch ``(B, A, L)`` (plus ``*args``) to an array or a tuple/list
        of arrays. Flax modules' parameters are arguments of the compiled
        program, re-read on every call, and folds of one architecture share
        one program. A plain callable is compiled once per object, with the
        arrays it closes over as constants: to change its weights, pass a new
        callable. Nothing jablate caches keeps the model alive.
    X: jax.Array, numpy.ndarray or torch.Tensor, shape=(N, A, L)
        The model's inputs: one-hot sequences, usually (all-zero columns for unknown
        bases), but, as in tangermeme's ``predict``, any real values (soft or scaled
        encodings, extra tracks) run as they are.
    args: tuple or list of arrays or None, optional
        Extra model inputs, each with ``N`` rows. Default is None.
    func: callable or None, optional
        Applied to the raw model output of each batch before it is kept
        (inside the compiled program for JAX models, compiled once per
        ``func`` object: pass a module-level function rather than a new
        lambda on every call). It must act on each row alone: a JAX model's
        batch holds padding rows (see above). It is in the model's framework:
        for a torch module, torch code, run in torch, or with ``backend='jax'``
        translated to JAX with the module
        (:func:`jablate.bridges.torch.translate_func`), so that it keeps torch's
        meaning (``y.std(-1)`` stays unbiased). Default is None.
    batch_size: int, optional
        Examples per model call. Default is 32.
    dtype: str, dtype or None, optional
        Input dtype, spelled as JAX, NumPy or torch spell it (``'float16'``,
        ``jnp.bfloat16``, ``numpy.float32``, ``torch.float16``). JAX: default
        keeps a float ``X`` and casts others to float32; float64 needs JAX's
        64-bit mode (``jax.config.update("jax_enable_x64", True)`` before any
        JAX work, or ``JAX_ENABLE_X64=1``), and without it raises
        ``ValueError`` rather than computing in float32. torch: tangermeme's
        autocast dtype (batches cast to it, autocast to float16/bfloat16 on
        the CPU); default is the model's parameter dtype; float64 needs a
        float64 module. A torch module with ``backend='jax'`` (translated) runs in
        ``dtype``, its floating weights cast to it, by default in its own dtype
        (float64 modules need JAX's 64-bit mode).
    device: str, torch.device, jax.Device or None, optional
        torch: default CUDA when available, as tangermeme. JAX: default
        device when None.
    verbose: bool, optional
        Show a tqdm progress bar over batches. Default is False.
    backend: None, 'torch' or 'jax', optional
        ``'jax'`` translates a torch module to JAX first
        (``jablate.bridges.torch.translate``) for XLA speed. Default None runs
        the model in its own framework.

    Returns
    -------
    y: array or list of arrays, each shape=(N, ...)
        In ``X``'s family (torch tensors on the CPU for torch input).

    Raises
    ------
    ValueError
        Bad ``X``, ``args``, ``batch_size``, ``device`` or ``dtype``, or a model
        jablate cannot run (a class instead of an instance, an unbound flax
        module), before any model call.
    """
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    inp, bound, session = prepare(model, inputs(X, args, one_hot=False), func, device, dtype,
                                  backend)
    plan = engine.Plan.build(range(inp.X.shape[0]), 0, inp.X.shape[-1])
    with session:
        ys, multi = engine.run(engine.Stream(bound, inp.X, inp.args, plan,
                                             batch_size=batch_size, verbose=verbose))
    return tree_to_family(ys if multi else ys[0], inp.family)
