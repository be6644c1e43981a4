"""Batched prediction with one compiled program per batch shape."""

from . import engine, validate
from .arrays import tree_to_family
from .frontdoor import inputs, jax_dtype, model_runner, place, session


def predict(model, X, args=None, func=None, batch_size=32, dtype=None, device=None,
            verbose=False, backend=None):
    """Make predictions for ``X`` in batches, as tangermeme's ``predict`` does.

    JAX models run as one ``jit``-compiled program per batch shape: the last
    batch is padded to ``batch_size`` and repeated calls with the same shapes
    never recompile. torch modules run eagerly under ``torch.inference_mode``
    through the DLPack bridge, on ``device``.

    Parameters
    ----------
    model: flax.linen.Module (bound), flax.nnx.Module, callable or torch.nn.Module
        Maps a batch ``(B, A, L)`` (plus ``*args``) to an array or a tuple/list
        of arrays.
    X: jax.Array, numpy.ndarray or torch.Tensor, shape=(N, A, L)
        One-hot sequences; all-zero columns (unknown bases) are allowed.
    args: tuple or list of arrays or None, optional
        Extra model inputs, each with ``N`` rows. Default is None.
    func: callable or None, optional
        Applied to the raw model output of each batch before it is kept
        (inside the compiled program for JAX models). Default is None.
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
        (``jablate.bridges.torch.translate``) for XLA speed. Default None runs the
        model in its own framework.

    Returns
    -------
    y: array or list of arrays, each shape=(N, ...)
        In ``X``'s family (torch tensors on the CPU for torch input).

    Raises
    ------
    ValueError
        Bad ``X``, ``args``, ``batch_size``, ``device`` or ``dtype``, before
        any model call.
    """
    batch_size = validate.check_int(batch_size, "batch_size", minimum=1)
    inp = inputs(X, args)
    runner = model_runner(model, inp.X, post=func, backend=backend)
    inp = place(inp, runner, device)
    plan = engine.Plan.build(range(inp.X.shape[0]), 0, inp.X.shape[-1])
    with session(runner, device=device, dtype=dtype, post=func):
        ys, multi = engine.run(runner, inp.X, inp.args, engine.Shuffler.make("none"), plan,
                               batch_size, dtype=jax_dtype(dtype, runner), verbose=verbose)
    return tree_to_family(ys if multi else ys[0], inp.family)
