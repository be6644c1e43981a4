"""The ATen dispatch table of the torch -> JAX translator, and what every family shares.

``OPS`` maps an ATen op name (the overload packet's name: ``"add"``, ``"conv1d"``) to a
JAX implementation that takes the op's schema arguments by name. The families of ops
register themselves in their own modules (``_aten_elementwise``, ``_aten_linalg``,
``_aten_conv_pool``, ``_aten_norm``, ``_aten_reduce``, ``_aten_shape``,
``_aten_attention``, ``_aten_factory``, ``_aten_recurrent``); ``_interpreter`` imports them all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import torch

OPS: dict = {}
"""ATen op name -> JAX implementation."""

_DTYPES = {
    torch.float32: jnp.float32, torch.float64: jnp.float64, torch.float16: jnp.float16,
    torch.bfloat16: jnp.bfloat16, torch.int64: jnp.int64, torch.int32: jnp.int32,
    torch.int16: jnp.int16, torch.int8: jnp.int8, torch.uint8: jnp.uint8,
    torch.bool: jnp.bool_, torch.complex64: jnp.complex64, torch.complex128: jnp.complex128,
}


def jax_dtype(dtype: torch.dtype) -> jnp.dtype:
    """The JAX dtype for a torch dtype (64-bit types narrow unless jax x64 is enabled)."""
    return jax.dtypes.canonicalize_dtype(_DTYPES[dtype])


def to_jax(t: torch.Tensor) -> jax.Array:
    """A torch tensor as a JAX array on the default device (bfloat16 kept)."""
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return jnp.asarray(t.float().numpy(), jnp.bfloat16)
    return jnp.asarray(t.numpy(), jax_dtype(t.dtype))


def is_float(x: object) -> bool:
    """Whether `x` (an array or a Python number) has a floating or complex dtype."""
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def as_float(x: object) -> object:
    """`x` itself when it is floating, else `x` as float32 (torch's promotion for unary ops)."""
    return x if is_float(x) else jnp.asarray(x, jnp.float32)


def register(*names: str) -> Callable[[Callable], Callable]:
    """Decorator: register a JAX implementation under one or more ATen op names.

    The implementation is called with the op's schema arguments by name (see
    ``_interpreter.bind``), tensors as JAX arrays.
    """
    def deco(fn):
        for name in names:
            OPS[name] = fn
        return fn
    return deco


def ntuple(v: int | Sequence[int], n: int) -> tuple:
    """An int or a list of one or `n` ints as a tuple of `n` ints."""
    if isinstance(v, (list, tuple)):
        v = tuple(v)
        return v * n if len(v) == 1 else v
    return (v,) * n


def axes_arg(dim: int | Sequence[int] | None, ndim: int) -> int | tuple | None:
    """Torch reduction dims (None, [], int or list) as a JAX axis argument."""
    if dim is None or ndim == 0:
        return None
    if isinstance(dim, int):
        return dim % ndim
    dim = tuple(dim)
    return tuple(d % ndim for d in dim) if dim else None

