"""Array families at the front door: JAX, NumPy and torch.

The core never imports torch: a torch tensor is recognised by its type's module
and handed to ``jablate.bridges.torch`` for the zero-copy conversions.
"""

import jax
import jax.numpy as jnp
import numpy


def family(x):
    """'jax', 'numpy', 'torch' or None for anything else."""
    if isinstance(x, jax.Array):
        return "jax"
    if isinstance(x, numpy.ndarray):
        return "numpy"
    if type(x).__module__.split(".")[0] == "torch":
        return "torch"
    return None


def is_torch_module(model):
    """True when ``model`` is a ``torch.nn.Module`` (checked without importing torch)."""
    return any(c.__module__.startswith("torch.nn") and c.__name__ == "Module"
               for c in type(model).__mro__)


def torch_bridge():
    """The ``jablate.bridges.torch`` module, imported on first use (the core never imports torch)."""
    from jablate.bridges import torch as bridge
    return bridge


def to_jax(x, name="X"):
    """Convert a JAX, NumPy or torch array to a JAX array (zero-copy where possible).

    float64 becomes float32 unless JAX runs with x64 enabled; one-hot values
    are exact in either.

    Raises
    ------
    ValueError
        If ``x`` is not an array of one of those families.
    """
    fam = family(x)
    if fam == "jax":
        return x
    if fam == "numpy":
        if x.dtype == numpy.float64 and not jax.config.jax_enable_x64:
            x = x.astype(numpy.float32)
        return jnp.asarray(x)
    if fam == "torch":
        return torch_bridge().from_torch(x)
    raise ValueError(f"{name} must be a JAX array, a numpy.ndarray or a torch.Tensor; "
                     f"got {type(x).__name__}.")


def to_family(y, fam):
    """Convert an output (a JAX, NumPy or torch CPU array) to the array family ``fam``.

    torch results land on the CPU, as tangermeme's ``predict`` returns them.
    """
    src = family(y)
    if src == fam:
        return y.cpu() if fam == "torch" else y
    if fam == "torch":
        return torch_bridge().to_torch(y).cpu()
    if src == "torch":
        y = y.detach().cpu().numpy() if fam == "numpy" else torch_bridge().from_torch(y)
    return numpy.asarray(y) if fam == "numpy" else jnp.asarray(y)


def tree_to_family(ys, fam):
    """Apply :func:`to_family` to an output or a list of outputs."""
    if isinstance(ys, list):
        return [to_family(y, fam) for y in ys]
    return to_family(ys, fam)


def stack(ys):
    """Stack arrays of one family along a new leading axis."""
    fam = family(ys[0])
    if fam == "torch":
        return torch_bridge().torch.stack(ys)
    return numpy.stack(ys) if fam == "numpy" else jnp.stack(ys)
