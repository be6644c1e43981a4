"""ATen softmaxes and reductions (sums, means, extrema, variances, norms)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jablate.bridges._aten_table import OPS, as_float, axes_arg, register


def _over(fn, self, dim, dtype):
    """`fn` along `dim`; a 0-d tensor as a vector of one, as torch does."""
    x = self if dtype is None else self.astype(dtype)
    return fn(x.reshape(1), axis=0).reshape(()) if x.ndim == 0 else fn(x, axis=dim)


@register("softmax", "_softmax")
def _softmax(self, dim, dtype=None, half_to_float=False):
    return _over(jax.nn.softmax, self, dim, dtype)


@register("_safe_softmax")
def _safe_softmax(self, dim, dtype=None):
    x = self if dtype is None else self.astype(dtype)
    out = _over(jax.nn.softmax, x, dim, None)
    if x.ndim == 0:
        return jnp.where(x == -jnp.inf, 0, out)
    return jnp.where(jnp.all(x == -jnp.inf, axis=dim, keepdims=True), 0, out)


@register("log_softmax", "_log_softmax")
def _log_softmax(self, dim, dtype=None, half_to_float=False):
    return _over(jax.nn.log_softmax, self, dim, dtype)


@register("sum")
def _sum(self, dim=None, keepdim=False, dtype=None):
    return jnp.sum(self, axes_arg(dim, self.ndim), dtype=dtype, keepdims=keepdim)


@register("mean")
def _mean(self, dim=None, keepdim=False, dtype=None):
    return jnp.mean(self, axes_arg(dim, self.ndim), dtype=dtype, keepdims=keepdim)


@register("prod")
def _prod(self, dim=None, keepdim=False, dtype=None):
    return jnp.prod(self, axes_arg(dim, self.ndim), dtype=dtype, keepdims=keepdim)


@register("amax")
def _amax(self, dim=(), keepdim=False):
    return jnp.max(self, axes_arg(dim, self.ndim), keepdims=keepdim)


@register("amin")
def _amin(self, dim=(), keepdim=False):
    return jnp.min(self, axes_arg(dim, self.ndim), keepdims=keepdim)


def _as_vector(self, dim):
    """A 0-d tensor reduced over dim 0 or -1 behaves as a vector of one, as in torch."""
    return (self.reshape(1), 0) if self.ndim == 0 and dim is not None else (self, dim)


def _extremum(reduce, arg, pair):
    def impl(self, other=None, dim=None, keepdim=False):
        if other is not None:
            return pair(self, other)
        if dim is None:
            return reduce(self)
        x, axis = _as_vector(self, dim)
        keep = keepdim and self.ndim > 0
        return reduce(x, axis, keepdims=keep), arg(x, axis, keepdims=keep)
    return impl


OPS["max"] = _extremum(jnp.max, jnp.argmax, jnp.maximum)
OPS["min"] = _extremum(jnp.min, jnp.argmin, jnp.minimum)


@register("argmax")
def _argmax(self, dim=None, keepdim=False):
    x, axis = _as_vector(self, dim)
    return jnp.argmax(x, axis, keepdims=keepdim and self.ndim > 0)


@register("argmin")
def _argmin(self, dim=None, keepdim=False):
    x, axis = _as_vector(self, dim)
    return jnp.argmin(x, axis, keepdims=keepdim and self.ndim > 0)


@register("any")
def _any(self, dim=None, keepdim=False):
    return jnp.any(self, axes_arg(dim, self.ndim), keepdims=keepdim)


@register("all")
def _all(self, dim=None, keepdim=False):
    return jnp.all(self, axes_arg(dim, self.ndim), keepdims=keepdim)


@register("logsumexp")
def _logsumexp(self, dim, keepdim=False):
    return jax.scipy.special.logsumexp(as_float(self), axes_arg(dim, self.ndim), keepdims=keepdim)


def _ddof(unbiased, correction):
    if correction is not None:
        return correction
    return 0 if unbiased is False else 1


@register("var")
def _var(self, dim=None, unbiased=None, correction=None, keepdim=False):
    ddof = _ddof(unbiased, correction)
    return jnp.var(self, axes_arg(dim, self.ndim), ddof=ddof, keepdims=keepdim)


@register("std")
def _std(self, dim=None, unbiased=None, correction=None, keepdim=False):
    ddof = _ddof(unbiased, correction)
    return jnp.std(self, axes_arg(dim, self.ndim), ddof=ddof, keepdims=keepdim)


@register("var_mean")
def _var_mean(self, dim=None, unbiased=None, correction=None, keepdim=False):
    return (_var(self, dim, unbiased, correction, keepdim),
            jnp.mean(self, axes_arg(dim, self.ndim), keepdims=keepdim))


@register("linalg_vector_norm")
def _vector_norm(self, ord=2, dim=None, keepdim=False, dtype=None):  # noqa: A002
    x = jnp.abs(self if dtype is None else self.astype(dtype))
    axes = axes_arg(dim, self.ndim)
    if ord == math.inf:
        return jnp.max(x, axes, keepdims=keepdim)
    if ord == -math.inf:
        return jnp.min(x, axes, keepdims=keepdim)
    if ord == 0:  # the number of nonzero entries
        return jnp.sum(x != 0, axes, keepdims=keepdim).astype(x.dtype)
    if ord == 1:
        return jnp.sum(x, axes, keepdims=keepdim)
    if ord == 2:
        return jnp.sqrt(jnp.sum(x * x, axes, keepdims=keepdim))
    return jnp.sum(x ** ord, axes, keepdims=keepdim) ** (1.0 / ord)


@register("cumsum")
def _cumsum(self, dim, dtype=None):
    if dtype is None and not jnp.issubdtype(self.dtype, jnp.inexact):
        # torch sums bool and integers in int64 (int32 without JAX's 64-bit types)
        dtype = jax.dtypes.canonicalize_dtype(jnp.int64)
    if self.ndim == 0:
        return self.astype(dtype or self.dtype)
    return jnp.cumsum(self, axis=dim % self.ndim, dtype=dtype)


@register("topk")
def _topk(self, k, dim=-1, largest=True, sorted=True):  # noqa: A002
    index = jax.dtypes.canonicalize_dtype(jnp.int64)  # int32 without 64-bit types
    if self.ndim == 0:
        return self, jnp.zeros((), index)
    x = jnp.moveaxis(self, dim % self.ndim, -1)
    values, indices = jax.lax.top_k(x if largest else -x, k)  # ties: the first one first
    if not largest:
        values = -values
    return (jnp.moveaxis(values, -1, dim % self.ndim),
            jnp.moveaxis(indices.astype(index), -1, dim % self.ndim))
