"""ATen linear algebra: linear layers, matrix products, einsum."""

from __future__ import annotations

import jax.numpy as jnp

from jablate.bridges._aten_table import register


@register("linear")
def _linear(input, weight, bias=None):  # noqa: A002
    out = jnp.matmul(input, weight.T)
    return out if bias is None else out + bias


@register("addmm", "baddbmm", "addmv")
def _addmm(self, mat1=None, mat2=None, batch1=None, batch2=None, mat=None, vec=None,
           beta=1, alpha=1, out_dtype=None):
    pairs = ((mat1, mat2), (batch1, batch2), (mat, vec))
    prod = jnp.matmul(*next(p for p in pairs if p[0] is not None))
    prod = prod if alpha == 1 else alpha * prod
    if beta == 0:
        return prod
    return prod + (self if beta == 1 else beta * self)


@register("mm", "bmm", "matmul", "mv", "dot")
def _matmul(self, mat2=None, other=None, vec=None, tensor=None, out_dtype=None):
    b = next(v for v in (mat2, other, vec, tensor) if v is not None)
    return jnp.matmul(self, b)


@register("t")
def _t(self):
    return self.T if self.ndim == 2 else self


@register("einsum")
def _einsum(equation, tensors, path=None):
    return jnp.einsum(equation, *tensors)
