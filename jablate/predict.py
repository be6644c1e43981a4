"""Batched prediction with one compiled program per batch shape."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Optional

from . import engine
from .frontdoor import Inputs, check_int, inputs, jax_dtype, resolve_device, tree_to_family
from .runner import runner_for


def prepare(model: Any, inp: Inputs, func: Optional[Callable] = None, device: Any = None,
            dtype: Any = None, backend: Optional[str] = None):
    """The engine's view of ``model`` for inputs ``inp``.

    Returns
    -------
    inp: Inputs
        Placed on ``device`` for a JAX model.
    model: engine.Model
        Runner, parameters, post-processing ``func`` and input dtype.
    session: context manager
        Within it a torch model holds its device, dtype and ``func``.

    Raises
    ------
    ValueError
        For a model jablate cannot run (see :func:`jablate.runner.runner_for`),
        or a ``device`` or ``dtype`` the framework does not have.
    """
    runner, params = runner_for(model, backend=backend, example=inp.X)
    if not runner.jittable:
        device = resolve_device(device, "torch")
        return inp, engine.Model(runner), runner.session(device=device, dtype=dtype, func=func)
    jdevice = resolve_device(device, "jax")
    if jdevice is not None:
        import jax
        inp = Inputs(jax.device_put(inp.X, jdevice),
                     tuple(jax.device_put(a, jdevice) for a in inp.args), inp.family, inp.dtype)
    return (inp, engine.Model(runner, params, func, jax_dtype(dtype), jdevice),
            contextlib.nullcontext())


def predict(model: Any, X: Any, args: Optional[Any] = None, func: Optional[Callable] = None,
            batch_size: int = 32, dtype: Any = None, device: Any = None, verbose: bool = False,
            backend: Optional[str] = None) -> Any:
    """Make predictions for ``X`` in batches, as tangermeme's ``predict`` does.

    JAX models run as one ``jit``-compiled program per batch shape: the last
    batch is padded to ``batch_size`` and repeated calls with the same shapes
    never recompile. torch modules run eagerly under ``torch.inference_mode``
    through the DLPack bridge, on ``device``.

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
        One-hot sequences; all-zero columns (unknown bases) are allowed.
    args: tuple or list of arrays or None, optional
        Extra model inputs, each with ``N`` rows. Default is None.
    func: callable or None, optional
        Applied to the raw model output of each batch before it is kept
        (inside the compiled program for JAX models, compiled once per
        ``func`` object: pass a module-level function rather than a new
        lambda on every call). Default is None.
    batch_size: int, optional
        Examples per model call. Default is 32.
    dtype: str, dtype or None, optional
        Input dtype. torch: default is the model's parameter dtype. JAX:
        default keeps a float ``X`` and casts others to float32.
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
    inp, bound, session = prepare(model, inputs(X, args), func, device, dtype, backend)
    plan = engine.Plan.build(range(inp.X.shape[0]), 0, inp.X.shape[-1])
    with session:
        ys, multi = engine.run(bound, inp.X, inp.args, engine.UNCHANGED, engine.no_table(), plan,
                               batch_size, verbose=verbose)
    return tree_to_family(ys if multi else ys[0], inp.family)
