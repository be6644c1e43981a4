"""Translate a torch module into a JAX function, for XLA speed.

``translate(module, x)`` captures ``module.forward`` with :func:`torch.export.export`
(in eval mode, with a free batch dimension) and evaluates the captured ATen graph with
``jax.numpy`` and ``lax``. The module's parameters and buffers travel as a pytree argument,
so the result composes with ``jax.jit``, ``jax.vmap`` and ``jax.grad`` like any JAX function,
and XLA compiles the whole network instead of calling into torch op by op.

Ops are looked up in a dispatch table keyed by ATen op name (``SUPPORTED_OPS``). Graphs
are first taken as exported (high-level ops such as ``conv1d``, ``linear``, ``layer_norm``
and ``scaled_dot_product_attention`` map straight onto ``lax``); when a graph holds an op
outside the table, an in-place op or a higher-order op, it is decomposed towards core ATen
(keeping every op the table knows) and looked at again. Whatever is still unknown is
reported at once in a ``NotImplementedError``; ``jablate.bridges.torch.wrap`` is the fallback that
runs any module in torch through DLPack.
"""

from __future__ import annotations

import logging
import math
import operator
import time
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.utils._pytree as torch_pytree
from jax import lax

__all__ = ["translate", "TranslatedModel", "SUPPORTED_OPS"]


# ---------------------------------------------------------------------------------------
# dtypes and conversions

_DTYPES = {
    torch.float32: jnp.float32, torch.float64: jnp.float64, torch.float16: jnp.float16,
    torch.bfloat16: jnp.bfloat16, torch.int64: jnp.int64, torch.int32: jnp.int32,
    torch.int16: jnp.int16, torch.int8: jnp.int8, torch.uint8: jnp.uint8,
    torch.bool: jnp.bool_, torch.complex64: jnp.complex64, torch.complex128: jnp.complex128,
}


def _jax_dtype(dtype):
    """The JAX dtype for a torch dtype (64-bit types narrow unless jax x64 is enabled)."""
    return jax.dtypes.canonicalize_dtype(_DTYPES[dtype])


def _to_jax(t):
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return jnp.asarray(t.float().numpy(), jnp.bfloat16)
    return jnp.asarray(t.numpy(), _jax_dtype(t.dtype))


def _is_float(x):
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _as_float(x):
    return x if _is_float(x) else jnp.asarray(x, jnp.float32)


# ---------------------------------------------------------------------------------------
# the dispatch table: ATen op name -> JAX implementation taking the schema's argument names

_OPS = {}


def _register(*names):
    def deco(fn):
        for name in names:
            _OPS[name] = fn
        return fn
    return deco


def _ntuple(v, n):
    if isinstance(v, (list, tuple)):
        v = tuple(v)
        return v * n if len(v) == 1 else v
    return (v,) * n


def _axes(dim, ndim):
    """Torch reduction dims (None, [], int or list) as a JAX axis argument."""
    if dim is None or ndim == 0:
        return None
    if isinstance(dim, int):
        return dim % ndim
    dim = tuple(dim)
    return tuple(d % ndim for d in dim) if dim else None


def _unary(name, fn):
    _OPS[name] = lambda self: fn(self)


for _name, _fn in {
    "abs": jnp.abs, "neg": jnp.negative, "positive": lambda x: x,
    "exp": jnp.exp, "exp2": jnp.exp2, "expm1": jnp.expm1,
    "log": jnp.log, "log2": jnp.log2, "log10": jnp.log10, "log1p": jnp.log1p,
    "sqrt": jnp.sqrt, "rsqrt": lambda x: lax.rsqrt(_as_float(x)),
    "reciprocal": lambda x: 1.0 / x, "square": jnp.square, "sign": jnp.sign,
    "floor": jnp.floor, "ceil": jnp.ceil, "trunc": jnp.trunc, "frac": lambda x: x - jnp.trunc(x),
    "sin": jnp.sin, "cos": jnp.cos, "tan": jnp.tan, "asin": jnp.arcsin, "acos": jnp.arccos,
    "atan": jnp.arctan, "sinh": jnp.sinh, "cosh": jnp.cosh, "tanh": jnp.tanh,
    "asinh": jnp.arcsinh, "acosh": jnp.arccosh, "atanh": jnp.arctanh,
    "erf": lambda x: jax.scipy.special.erf(_as_float(x)),
    "erfc": lambda x: jax.scipy.special.erfc(_as_float(x)),
    "erfinv": lambda x: jax.scipy.special.erfinv(_as_float(x)),
    "sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu, "relu6": jax.nn.relu6,
    "silu": jax.nn.silu, "selu": jax.nn.selu, "log_sigmoid": jax.nn.log_sigmoid,
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
    "hardsigmoid": lambda x: jnp.clip(x / 6 + 0.5, 0, 1),
    "hardswish": lambda x: x * jnp.clip(x / 6 + 0.5, 0, 1),
    "logical_not": jnp.logical_not, "bitwise_not": jnp.invert,
    "isnan": jnp.isnan, "isinf": jnp.isinf, "isfinite": jnp.isfinite,
    "clone": lambda x: x, "contiguous": lambda x: x, "alias": lambda x: x,
    "detach": lambda x: x, "lift_fresh_copy": lambda x: x, "lift_fresh": lambda x: x,
    "resolve_conj": lambda x: x, "resolve_neg": lambda x: x,
}.items():
    _unary(_name, _fn)


def _binary(name, fn):
    _OPS[name] = lambda self, other: fn(self, other)


for _name, _fn in {
    "maximum": jnp.maximum, "minimum": jnp.minimum, "fmax": jnp.fmax, "fmin": jnp.fmin,
    "eq": jnp.equal, "ne": jnp.not_equal, "lt": jnp.less, "le": jnp.less_equal,
    "gt": jnp.greater, "ge": jnp.greater_equal,
    "logical_and": jnp.logical_and, "logical_or": jnp.logical_or,
    "logical_xor": jnp.logical_xor, "bitwise_and": jnp.bitwise_and,
    "bitwise_or": jnp.bitwise_or, "bitwise_xor": jnp.bitwise_xor,
    "remainder": jnp.remainder, "fmod": jnp.fmod, "floor_divide": jnp.floor_divide,
    "atan2": lambda a, b: jnp.arctan2(_as_float(a), b),
}.items():
    _binary(_name, _fn)


@_register("add")
def _add(self, other, alpha=1):
    return self + (other if alpha == 1 else other * alpha)


@_register("sub")
def _sub(self, other, alpha=1):
    return self - (other if alpha == 1 else other * alpha)


@_register("rsub")
def _rsub(self, other, alpha=1):
    return other - (self if alpha == 1 else self * alpha)


@_register("mul")
def _mul(self, other):
    return jnp.multiply(self, other)


@_register("div", "true_divide")
def _div(self, other, rounding_mode=None):
    if rounding_mode == "floor":
        return jnp.floor_divide(self, other)
    out = jnp.true_divide(self, other)
    if rounding_mode == "trunc":
        out = jnp.trunc(out)
        if not (_is_float(self) or _is_float(other)):
            out = out.astype(jnp.result_type(self, other))
    return out


@_register("pow")
def _pow(self, exponent):
    return jnp.power(self, exponent)


@_register("clamp", "clip")
def _clamp(self, min=None, max=None):  # noqa: A002 - schema names
    if min is not None:
        self = jnp.maximum(self, min)
    if max is not None:
        self = jnp.minimum(self, max)
    return self


@_register("clamp_min")
def _clamp_min(self, min):  # noqa: A002
    return jnp.maximum(self, min)


@_register("clamp_max")
def _clamp_max(self, max):  # noqa: A002
    return jnp.minimum(self, max)


@_register("hardtanh")
def _hardtanh(self, min_val=-1, max_val=1):
    return jnp.clip(self, min_val, max_val)


@_register("where")
def _where(condition, self=None, other=None):
    if self is None:
        raise NotImplementedError("aten.where with one argument has a data-dependent shape")
    return jnp.where(condition, self, other)


@_register("masked_fill")
def _masked_fill(self, mask, value):
    return jnp.where(mask, jnp.asarray(value, self.dtype), self)


@_register("lerp")
def _lerp(self, end, weight):
    return self + weight * (end - self)


@_register("round")
def _round(self, decimals=0):
    return jnp.round(self, decimals)


@_register("gelu")
def _gelu(self, approximate="none"):
    return jax.nn.gelu(self, approximate=approximate == "tanh")


@_register("elu")
def _elu(self, alpha=1, scale=1, input_scale=1):
    neg = alpha * jnp.expm1(jnp.minimum(self, 0) * input_scale)
    return scale * jnp.where(self > 0, self, neg)


@_register("celu")
def _celu(self, alpha=1.0):
    return jnp.where(self > 0, self, alpha * jnp.expm1(jnp.minimum(self, 0) / alpha))


@_register("softplus")
def _softplus(self, beta=1, threshold=20):
    return jnp.where(self * beta > threshold, self, jax.nn.softplus(self * beta) / beta)


@_register("leaky_relu")
def _leaky_relu(self, negative_slope=0.01):
    return jnp.where(self > 0, self, self * negative_slope)


@_register("glu")
def _glu(self, dim=-1):
    a, b = jnp.split(self, 2, axis=dim)
    return a * jax.nn.sigmoid(b)


# --- linear algebra ---------------------------------------------------------------------

@_register("linear")
def _linear(input, weight, bias=None):  # noqa: A002
    out = jnp.matmul(input, weight.T)
    return out if bias is None else out + bias


@_register("addmm", "baddbmm", "addmv")
def _addmm(self, mat1=None, mat2=None, batch1=None, batch2=None, mat=None, vec=None,
           beta=1, alpha=1, out_dtype=None):
    pairs = ((mat1, mat2), (batch1, batch2), (mat, vec))
    prod = jnp.matmul(*next(p for p in pairs if p[0] is not None))
    prod = prod if alpha == 1 else alpha * prod
    if beta == 0:
        return prod
    return prod + (self if beta == 1 else beta * self)


@_register("mm", "bmm", "matmul", "mv", "dot")
def _matmul(self, mat2=None, other=None, vec=None, tensor=None, out_dtype=None):
    b = next(v for v in (mat2, other, vec, tensor) if v is not None)
    return jnp.matmul(self, b)


@_register("t")
def _t(self):
    return self.T if self.ndim == 2 else self


@_register("einsum")
def _einsum(equation, tensors, path=None):
    return jnp.einsum(equation, *tensors)


# --- convolution --------------------------------------------------------------------------

_CONV_DIMS = {1: ("NCH", "OIH", "NCH"), 2: ("NCHW", "OIHW", "NCHW"), 3: ("NCDHW", "OIDHW", "NCDHW")}


def _conv(input, weight, bias=None, stride=1, padding=0, dilation=1, transposed=False,  # noqa: A002
          output_padding=0, groups=1):
    n = weight.ndim - 2
    unbatched = input.ndim == n + 1
    x = input[None] if unbatched else input
    stride, dilation = _ntuple(stride, n), _ntuple(dilation, n)
    kernel = weight.shape[2:]
    if isinstance(padding, str):
        if padding == "valid":
            pads = [(0, 0)] * n
        else:  # "same": torch puts the odd element on the right
            totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
            pads = [(t // 2, t - t // 2) for t in totals]
    else:
        pads = [(p, p) for p in _ntuple(padding, n)]
    if transposed:
        # (C_in, C_out/g, *k) -> (C_out, C_in/g, *k), flipped: a transposed conv is a conv
        # over the input dilated by the stride.
        c_in, c_out_g = weight.shape[:2]
        w = weight.reshape((groups, c_in // groups, c_out_g) + kernel)
        w = jnp.swapaxes(w, 1, 2).reshape((groups * c_out_g, c_in // groups) + kernel)
        w = jnp.flip(w, axis=tuple(range(2, 2 + n)))
        extra = _ntuple(output_padding, n)
        pads = [(d * (k - 1) - lo, d * (k - 1) - lo + e)
                for (lo, _), k, d, e in zip(pads, kernel, dilation, extra)]
        y = lax.conv_general_dilated(x, w, (1,) * n, pads, lhs_dilation=stride,
                                     rhs_dilation=dilation, dimension_numbers=_CONV_DIMS[n],
                                     feature_group_count=groups)
    elif n == 1 and stride == (1,) and groups == 1 and _few_wide_taps(weight):
        y = _conv1d_by_taps(x, weight, pads[0], dilation[0])
    else:
        y = lax.conv_general_dilated(x, weight, stride, pads, rhs_dilation=dilation,
                                     dimension_numbers=_CONV_DIMS[n], feature_group_count=groups)
    if bias is not None:
        y = y + bias.reshape((1, -1) + (1,) * n)
    return y[0] if unbatched else y


def _few_wide_taps(weight):
    """A wide kernel with few outputs (a profile head: 75 taps, 2 outputs): XLA's CPU
    convolution runs these at a fraction of matmul speed."""
    out_channels, _, width = weight.shape
    return width >= 8 and out_channels * width <= 256


def _conv1d_by_taps(x, weight, pad, dilation):
    """conv1d as one matmul to every (tap, output) pair, then a shifted sum over taps.

    ``x`` (B, C, L), ``weight`` (O, C, K); the same result as
    ``lax.conv_general_dilated`` up to float summation order, about twice as fast
    on CPU for kernels that :func:`_few_wide_taps` accepts.
    """
    width = weight.shape[2]
    taps = jnp.einsum("ock,bcl->bkol", weight, x)
    taps = jnp.pad(taps, ((0, 0), (0, 0), (0, 0), pad))
    length = taps.shape[-1] - dilation * (width - 1)
    return sum(taps[:, k, :, k * dilation:k * dilation + length] for k in range(width))


@_register("convolution", "_convolution")
def _convolution(input, weight, bias, stride, padding, dilation, transposed,  # noqa: A002
                 output_padding, groups, benchmark=None, deterministic=None,
                 cudnn_enabled=None, allow_tf32=None):
    return _conv(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)


@_register("conv1d", "conv2d", "conv3d")
def _convnd(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # noqa: A002
    return _conv(input, weight, bias, stride, padding, dilation, groups=groups)


@_register("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
def _conv_transpose(input, weight, bias=None, stride=1, padding=0, output_padding=0,  # noqa: A002
                    groups=1, dilation=1):
    return _conv(input, weight, bias, stride, padding, dilation, True, output_padding, groups)


# --- normalisation -------------------------------------------------------------------------

def _channel_shape(x):
    return (1, -1) + (1,) * (x.ndim - 2)


def _affine(out, weight, bias, shape):
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


@_register("batch_norm", "native_batch_norm", "_native_batch_norm_legit",
           "_native_batch_norm_legit_no_training")
def _batch_norm(input, weight=None, bias=None, running_mean=None, running_var=None,  # noqa: A002
                training=False, momentum=0.1, eps=1e-5, cudnn_enabled=None):
    shape = _channel_shape(input)
    if training or running_mean is None:
        axes = (0,) + tuple(range(2, input.ndim))
        mean, var = jnp.mean(input, axes), jnp.var(input, axes)
    else:
        mean, var = running_mean, running_var
    scale = lax.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    return input * scale.reshape(shape) + shift.reshape(shape)


def _tuple3(out, *rest):
    return (out,) + tuple(rest)


_OPS["native_batch_norm"] = lambda **kw: _tuple3(_batch_norm(**kw), None, None)
_OPS["_native_batch_norm_legit"] = lambda **kw: _tuple3(_batch_norm(**kw), None, None)
_OPS["_native_batch_norm_legit_no_training"] = lambda **kw: _tuple3(_batch_norm(**kw), None, None)


def _layer_norm_stats(input, normalized_shape, weight, bias, eps):  # noqa: A002
    axes = tuple(range(input.ndim - len(normalized_shape), input.ndim))
    mean = jnp.mean(input, axes, keepdims=True)
    var = jnp.mean(jnp.square(input - mean), axes, keepdims=True)
    rstd = lax.rsqrt(var + eps)
    out = (input - mean) * rstd
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out, mean, rstd


@_register("layer_norm")
def _layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5,  # noqa: A002
                cudnn_enable=None):
    return _layer_norm_stats(input, normalized_shape, weight, bias, eps)[0]


@_register("native_layer_norm")
def _native_layer_norm(input, normalized_shape, weight, bias, eps):  # noqa: A002
    return _layer_norm_stats(input, normalized_shape, weight, bias, eps)


@_register("rms_norm")
def _rms_norm(input, normalized_shape, weight=None, eps=None):  # noqa: A002
    axes = tuple(range(input.ndim - len(normalized_shape), input.ndim))
    eps = jnp.finfo(jnp.result_type(input)).eps if eps is None else eps
    out = input * lax.rsqrt(jnp.mean(jnp.square(input), axes, keepdims=True) + eps)
    return out if weight is None else out * weight


def _group_norm_stats(input, num_groups, weight, bias, eps):  # noqa: A002
    n = input.shape[0]
    xg = input.reshape(n, num_groups, -1)
    mean = jnp.mean(xg, -1, keepdims=True)
    rstd = lax.rsqrt(jnp.mean(jnp.square(xg - mean), -1, keepdims=True) + eps)
    out = ((xg - mean) * rstd).reshape(input.shape)
    return _affine(out, weight, bias, _channel_shape(input)), mean[..., 0], rstd[..., 0]


@_register("group_norm")
def _group_norm(input, num_groups, weight=None, bias=None, eps=1e-5,  # noqa: A002
                cudnn_enabled=None):
    return _group_norm_stats(input, num_groups, weight, bias, eps)[0]


@_register("native_group_norm")
def _native_group_norm(input, weight, bias, N, C, HxW, group, eps):  # noqa: A002, N803
    return _group_norm_stats(input, group, weight, bias, eps)


@_register("instance_norm")
def _instance_norm(input, weight, bias, running_mean, running_var, use_input_stats,  # noqa: A002
                   momentum, eps, cudnn_enabled=None):
    shape = _channel_shape(input)
    if use_input_stats or running_mean is None:
        axes = tuple(range(2, input.ndim))
        mean = jnp.mean(input, axes, keepdims=True)
        var = jnp.var(input, axes, keepdims=True)
    else:
        mean, var = running_mean.reshape(shape), running_var.reshape(shape)
    return _affine((input - mean) * lax.rsqrt(var + eps), weight, bias, shape)


# --- pooling -----------------------------------------------------------------------------

def _pool_padding(spatial, kernel, stride, padding, dilation, ceil_mode):
    """(low, high) padding per spatial dim giving torch's output length."""
    pads = []
    for size, k, s, p, d in zip(spatial, kernel, stride, padding, dilation):
        span = size + 2 * p - (d * (k - 1) + 1)
        out = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (out - 1) * s >= size + p:
            out -= 1
        pads.append((p, max((out - 1) * s + d * (k - 1) + 1 - size - p, 0)))
    return pads


def _pool_args(x, n, kernel_size, stride, padding, dilation=1):
    k = _ntuple(kernel_size, n)
    s = _ntuple(stride, n) if stride not in (None, [], ()) else k
    return k, s, _ntuple(padding, n), _ntuple(dilation, n), x.ndim - n


def _max_pool(self, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False, *, n):
    k, s, p, d, lead = _pool_args(self, n, kernel_size, stride, padding, dilation)
    pads = _pool_padding(self.shape[lead:], k, s, p, d, ceil_mode)
    dtype = jnp.result_type(self)
    init = -np.inf if jnp.issubdtype(dtype, jnp.inexact) else jnp.iinfo(dtype).min
    return lax.reduce_window(self, np.array(init, dtype), lax.max, (1,) * lead + k,
                             (1,) * lead + s, ((0, 0),) * lead + tuple(pads),
                             window_dilation=(1,) * lead + d)


def _avg_pool(self, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
              divisor_override=None, *, n):
    k, s, p, _, lead = _pool_args(self, n, kernel_size, stride, padding)
    pads = _pool_padding(self.shape[lead:], k, s, p, (1,) * n, ceil_mode)
    dtype = jnp.result_type(self)
    summed = lax.reduce_window(self, np.array(0, dtype), lax.add, (1,) * lead + k,
                               (1,) * lead + s, ((0, 0),) * lead + tuple(pads))
    if divisor_override:
        return summed / divisor_override
    divisor = np.ones(())
    for size, ki, si, pi, (lo, hi), out in zip(self.shape[lead:], k, s, p, pads,
                                                summed.shape[lead:]):
        start = np.arange(out) * si - pi
        end = np.minimum(start + ki, size + pi)
        count = end - start
        if not count_include_pad:
            count = np.minimum(end, size) - np.maximum(start, 0)
        divisor = np.multiply.outer(divisor, count)
    return summed / divisor.astype(dtype)


def _adaptive_matrix(size, out):
    m = np.zeros((size, out), np.float32)
    for j in range(out):
        lo, hi = (j * size) // out, -(-((j + 1) * size) // out)
        m[lo:hi, j] = 1.0 / (hi - lo)
    return m


def _adaptive_avg_pool(self, output_size, *, n):
    out_sizes = _ntuple(output_size, n)
    x = self
    for i, out in enumerate(out_sizes):
        axis = self.ndim - n + i
        size = x.shape[axis]
        if out is None or out == size:
            continue
        if size % out == 0:
            shape = x.shape[:axis] + (out, size // out) + x.shape[axis + 1:]
            x = jnp.mean(x.reshape(shape), axis + 1)
        else:
            m = _adaptive_matrix(size, out).astype(jnp.result_type(x))
            x = jnp.moveaxis(jnp.tensordot(x, m, axes=[[axis], [0]]), -1, axis)
    return x


def _adaptive_max_pool(self, output_size, *, n):
    x = self
    for i, out in enumerate(_ntuple(output_size, n)):
        axis = self.ndim - n + i
        size = x.shape[axis]
        if out is None or out == size:
            continue
        pieces = []
        for j in range(out):
            lo, hi = (j * size) // out, -(-((j + 1) * size) // out)
            pieces.append(jnp.max(lax.slice_in_dim(x, lo, hi, axis=axis), axis, keepdims=True))
        x = jnp.concatenate(pieces, axis)
    return x, None


def _upsample_nearest(input, output_size=None, scales=None, scale_factors=None, *, n,  # noqa: A002
                      **more):
    scales = scale_factors if scale_factors is not None else (
        [more[k] for k in sorted(more) if k.startswith("scales")] or scales)
    x = input
    for i in range(n):
        axis = input.ndim - n + i
        size = input.shape[axis]
        if output_size:
            out = output_size[i]
            ratio = size / out
        else:
            scale = _ntuple(scales, n)[i]
            out, ratio = int(math.floor(size * scale)), 1.0 / scale
        idx = np.minimum(np.floor(np.arange(out) * ratio).astype(np.int64), size - 1)
        x = jnp.take(x, idx, axis=axis)
    return x


for _n in (1, 2, 3):
    _OPS[f"max_pool{_n}d"] = (lambda n: lambda **kw: _max_pool(**kw, n=n))(_n)
    _OPS[f"max_pool{_n}d_with_indices"] = (
        lambda n: lambda **kw: (_max_pool(**kw, n=n), None))(_n)
    _OPS[f"avg_pool{_n}d"] = (lambda n: lambda **kw: _avg_pool(**kw, n=n))(_n)
    _OPS[f"adaptive_avg_pool{_n}d"] = (lambda n: lambda **kw: _adaptive_avg_pool(**kw, n=n))(_n)
    _OPS[f"_adaptive_avg_pool{_n}d"] = _OPS[f"adaptive_avg_pool{_n}d"]
    _OPS[f"adaptive_max_pool{_n}d"] = (lambda n: lambda **kw: _adaptive_max_pool(**kw, n=n))(_n)
    _OPS[f"upsample_nearest{_n}d"] = (lambda n: lambda **kw: _upsample_nearest(**kw, n=n))(_n)


# --- softmax, reductions -----------------------------------------------------------------

@_register("softmax", "_softmax")
def _softmax(self, dim, dtype=None, half_to_float=False):
    return jax.nn.softmax(self if dtype is None else self.astype(dtype), axis=dim)


@_register("_safe_softmax")
def _safe_softmax(self, dim, dtype=None):
    x = self if dtype is None else self.astype(dtype)
    out = jax.nn.softmax(x, axis=dim)
    return jnp.where(jnp.all(x == -jnp.inf, axis=dim, keepdims=True), 0, out)


@_register("log_softmax", "_log_softmax")
def _log_softmax(self, dim, dtype=None, half_to_float=False):
    return jax.nn.log_softmax(self if dtype is None else self.astype(dtype), axis=dim)


@_register("sum")
def _sum(self, dim=None, keepdim=False, dtype=None):
    return jnp.sum(self, _axes(dim, self.ndim), dtype=dtype, keepdims=keepdim)


@_register("mean")
def _mean(self, dim=None, keepdim=False, dtype=None):
    return jnp.mean(self, _axes(dim, self.ndim), dtype=dtype, keepdims=keepdim)


@_register("prod")
def _prod(self, dim=None, keepdim=False, dtype=None):
    return jnp.prod(self, _axes(dim, self.ndim), dtype=dtype, keepdims=keepdim)


@_register("amax")
def _amax(self, dim=(), keepdim=False):
    return jnp.max(self, _axes(dim, self.ndim), keepdims=keepdim)


@_register("amin")
def _amin(self, dim=(), keepdim=False):
    return jnp.min(self, _axes(dim, self.ndim), keepdims=keepdim)


def _extremum(reduce, arg, pair):
    def impl(self, other=None, dim=None, keepdim=False):
        if other is not None:
            return pair(self, other)
        if dim is None:
            return reduce(self)
        return reduce(self, dim, keepdims=keepdim), arg(self, dim, keepdims=keepdim)
    return impl


_OPS["max"] = _extremum(jnp.max, jnp.argmax, jnp.maximum)
_OPS["min"] = _extremum(jnp.min, jnp.argmin, jnp.minimum)


@_register("argmax")
def _argmax(self, dim=None, keepdim=False):
    return jnp.argmax(self, dim, keepdims=keepdim)


@_register("argmin")
def _argmin(self, dim=None, keepdim=False):
    return jnp.argmin(self, dim, keepdims=keepdim)


@_register("any")
def _any(self, dim=None, keepdim=False):
    return jnp.any(self, _axes(dim, self.ndim), keepdims=keepdim)


@_register("all")
def _all(self, dim=None, keepdim=False):
    return jnp.all(self, _axes(dim, self.ndim), keepdims=keepdim)


@_register("logsumexp")
def _logsumexp(self, dim, keepdim=False):
    return jax.scipy.special.logsumexp(_as_float(self), _axes(dim, self.ndim), keepdims=keepdim)


def _ddof(unbiased, correction):
    if correction is not None:
        return correction
    return 0 if unbiased is False else 1


@_register("var")
def _var(self, dim=None, unbiased=None, correction=None, keepdim=False):
    return jnp.var(self, _axes(dim, self.ndim), ddof=_ddof(unbiased, correction), keepdims=keepdim)


@_register("std")
def _std(self, dim=None, unbiased=None, correction=None, keepdim=False):
    return jnp.std(self, _axes(dim, self.ndim), ddof=_ddof(unbiased, correction), keepdims=keepdim)


@_register("var_mean")
def _var_mean(self, dim=None, unbiased=None, correction=None, keepdim=False):
    return (_var(self, dim, unbiased, correction, keepdim),
            jnp.mean(self, _axes(dim, self.ndim), keepdims=keepdim))


@_register("linalg_vector_norm")
def _vector_norm(self, ord=2, dim=None, keepdim=False, dtype=None):  # noqa: A002
    x = jnp.abs(self if dtype is None else self.astype(dtype))
    axes = _axes(dim, self.ndim)
    if ord == math.inf:
        return jnp.max(x, axes, keepdims=keepdim)
    if ord == 2:
        return jnp.sqrt(jnp.sum(x * x, axes, keepdims=keepdim))
    return jnp.sum(x ** ord, axes, keepdims=keepdim) ** (1.0 / ord)


# --- shapes ------------------------------------------------------------------------------

@_register("view", "_unsafe_view", "reshape")
def _reshape(self, size=None, shape=None, dtype=None):
    if dtype is not None:  # aten.view.dtype
        return lax.bitcast_convert_type(self, dtype)
    return jnp.reshape(self, tuple(size if size is not None else shape))


@_register("view_as", "reshape_as")
def _view_as(self, other):
    return jnp.reshape(self, other.shape)


@_register("permute")
def _permute(self, dims):
    return jnp.transpose(self, tuple(dims))


@_register("transpose")
def _transpose(self, dim0, dim1):
    return jnp.swapaxes(self, dim0, dim1)


@_register("movedim")
def _movedim(self, source, destination):
    return jnp.moveaxis(self, source, destination)


@_register("squeeze")
def _squeeze(self, dim=None):
    # `dim` was fixed at translation time from the static shape (see _prepare_squeeze), so a
    # batch of one at run time is never squeezed away.
    dims = [dim] if isinstance(dim, int) else list(dim or ())
    dims = tuple(d % self.ndim for d in dims if self.shape[d] == 1) if self.ndim else ()
    return jnp.squeeze(self, dims) if dims else self


@_register("unsqueeze")
def _unsqueeze(self, dim):
    return jnp.expand_dims(self, dim)


@_register("flatten")
def _flatten(self, start_dim=0, end_dim=-1):
    if self.ndim == 0:
        return self.reshape(1)
    s, e = start_dim % self.ndim, end_dim % self.ndim
    return self.reshape(self.shape[:s] + (math.prod(self.shape[s:e + 1]),) + self.shape[e + 1:])


@_register("unflatten")
def _unflatten(self, dim, sizes):
    d = dim % self.ndim
    return self.reshape(self.shape[:d] + tuple(sizes) + self.shape[d + 1:])


@_register("expand")
def _expand(self, size, implicit=False):
    # A dim the tensor already has (size != 1) keeps its size: this is what lets a graph
    # traced at one batch size expand correctly at another.
    lead = len(size) - self.ndim
    shape = [self.shape[i - lead] if i >= lead and (s == -1 or self.shape[i - lead] != 1) else s
             for i, s in enumerate(size)]
    return jnp.broadcast_to(self, tuple(shape))


@_register("expand_as")
def _expand_as(self, other):
    return jnp.broadcast_to(self, other.shape)


@_register("repeat", "tile")
def _repeat(self, repeats=None, dims=None):
    return jnp.tile(self, tuple(repeats if repeats is not None else dims))


@_register("repeat_interleave")
def _repeat_interleave(self=None, repeats=None, dim=None, output_size=None):
    if self is None:
        return jnp.repeat(jnp.arange(repeats.shape[0]), repeats, total_repeat_length=output_size)
    return jnp.repeat(self, repeats, axis=dim, total_repeat_length=output_size)


@_register("cat", "concat", "concatenate")
def _cat(tensors, dim=0):
    tensors = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)] or tensors[:1]
    return jnp.concatenate(tensors, axis=dim)


@_register("stack")
def _stack(tensors, dim=0):
    return jnp.stack(tensors, axis=dim)


def _index_at(ndim, dim, index):
    return (slice(None),) * (dim % ndim) + (index,)


@_register("slice")
def _slice(self, dim=0, start=None, end=None, step=1):
    return self[_index_at(self.ndim, dim, slice(start, end, step))]


@_register("narrow")
def _narrow(self, dim, start, length):
    return lax.slice_in_dim(self, start, start + length, axis=dim % self.ndim)


@_register("select")
def _select(self, dim, index):
    return self[_index_at(self.ndim, dim, index)]


@_register("index")
def _index(self, indices):
    return self[tuple(slice(None) if i is None else i for i in indices)]


@_register("index_select")
def _index_select(self, dim, index):
    return jnp.take(self, index, axis=dim)


@_register("gather")
def _gather(self, dim, index, sparse_grad=False):
    d = dim % self.ndim
    src = self[tuple(slice(None) if i == d else slice(0, index.shape[i]) for i in range(self.ndim))]
    return jnp.take_along_axis(src, index, axis=d)


@_register("index_put")
def _index_put(self, indices, values, accumulate=False):
    at = self.at[tuple(slice(None) if i is None else i for i in indices)]
    return at.add(values) if accumulate else at.set(values)


@_register("slice_scatter")
def _slice_scatter(self, src, dim=0, start=None, end=None, step=1):
    return self.at[_index_at(self.ndim, dim, slice(start, end, step))].set(src)


@_register("select_scatter")
def _select_scatter(self, src, dim, index):
    return self.at[_index_at(self.ndim, dim, index)].set(src)


@_register("copy")
def _copy(self, src, non_blocking=False):
    return jnp.broadcast_to(jnp.asarray(src, jnp.result_type(self)), self.shape)


@_register("flip")
def _flip(self, dims):
    return jnp.flip(self, tuple(dims))


@_register("roll")
def _roll(self, shifts, dims=()):
    if not dims:
        return jnp.roll(self.ravel(), tuple(shifts)).reshape(self.shape)
    return jnp.roll(self, tuple(shifts), tuple(dims))


@_register("tril")
def _tril(self, diagonal=0):
    return jnp.tril(self, diagonal)


@_register("triu")
def _triu(self, diagonal=0):
    return jnp.triu(self, diagonal)


def _pad_widths(ndim, pad):
    widths = [(0, 0)] * ndim
    for i in range(len(pad) // 2):
        widths[ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return widths


@_register("constant_pad_nd")
def _constant_pad_nd(self, pad, value=0):
    config = [(lo, hi, 0) for lo, hi in _pad_widths(self.ndim, pad)]
    return lax.pad(self, jnp.asarray(value, jnp.result_type(self)), config)


_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


@_register("pad")
def _pad(self, pad, mode="constant", value=None):
    if mode == "constant":
        return _constant_pad_nd(self, pad, 0 if value is None else value)
    return jnp.pad(self, _pad_widths(self.ndim, pad), mode=_PAD_MODES[mode])


for _n in (1, 2, 3):
    _OPS[f"reflection_pad{_n}d"] = lambda self, padding: jnp.pad(
        self, _pad_widths(self.ndim, padding), mode="reflect")
    _OPS[f"replication_pad{_n}d"] = lambda self, padding: jnp.pad(
        self, _pad_widths(self.ndim, padding), mode="edge")


def _split_at(self, sizes, dim):
    return list(jnp.split(self, np.cumsum(sizes)[:-1].tolist(), axis=dim))


def _even_sizes(total, size):
    return [size] * (total // size) + ([total % size] if total % size else [])


@_register("split", "unsafe_split", "split_with_sizes", "unsafe_split_with_sizes")
def _split(self, split_size=None, dim=0, split_sizes=None):
    sizes = split_sizes if split_sizes is not None else split_size
    if isinstance(sizes, int):
        sizes = _even_sizes(self.shape[dim], sizes)
    return _split_at(self, sizes, dim)


@_register("chunk", "unsafe_chunk")
def _chunk(self, chunks, dim=0):
    total = self.shape[dim]
    return _split_at(self, _even_sizes(total, max(-(-total // chunks), 1)), dim)


@_register("unbind")
def _unbind(self, dim=0):
    return [lax.index_in_dim(self, i, dim % self.ndim, keepdims=False)
            for i in range(self.shape[dim])]


@_register("embedding")
def _embedding(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    return jnp.take(weight, indices, axis=0)


@_register("dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout")
def _dropout(input, p=0.5, train=False):  # noqa: A002
    return input  # translation is for inference: dropout is the identity


@_register("native_dropout")
def _native_dropout(input, p=0.5, train=False):  # noqa: A002
    return input, jnp.ones(jnp.shape(input), bool)


# --- attention -----------------------------------------------------------------------------

def _attention(query, key, value, attn_mask=None, is_causal=False, scale=None):
    if query.ndim >= 3 and key.shape[-3] != query.shape[-3]:  # grouped-query attention
        rep = query.shape[-3] // key.shape[-3]
        key, value = jnp.repeat(key, rep, axis=-3), jnp.repeat(value, rep, axis=-3)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = jnp.einsum("...qd,...kd->...qk", query, key) * scale
    keep = None
    if is_causal:
        keep = jnp.tril(jnp.ones((query.shape[-2], key.shape[-2]), bool))
    if attn_mask is not None:
        if attn_mask.dtype == jnp.bool_:
            keep = attn_mask if keep is None else keep & attn_mask
        else:
            scores = scores + attn_mask
    if keep is not None:
        scores = jnp.where(keep, scores, -jnp.inf)
    weights = jax.nn.softmax(scores, axis=-1)
    if keep is not None or attn_mask is not None:  # fully masked rows give 0, as torch does
        weights = jnp.where(jnp.all(scores == -jnp.inf, -1, keepdims=True), 0, weights)
    return jnp.einsum("...qk,...kd->...qd", weights, value), weights


@_register("scaled_dot_product_attention")
def _sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
          enable_gqa=False):
    return _attention(query, key, value, attn_mask, is_causal, scale)[0]


@_register("_scaled_dot_product_flash_attention_for_cpu")
def _sdpa_flash_cpu(query, key, value, dropout_p=0.0, is_causal=False, attn_mask=None,
                    scale=None):
    return _attention(query, key, value, attn_mask, is_causal, scale)[0], None


@_register("_scaled_dot_product_attention_math")
def _sdpa_math(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
               dropout_mask=None, scale=None, enable_gqa=False):
    return _attention(query, key, value, attn_mask, is_causal, scale)


# --- creation and casting -------------------------------------------------------------------
# `dtype` of the factories is filled in from the traced output at translation time.

@_register("full")
def _full(size, fill_value, dtype=None):
    return jnp.full(tuple(size), fill_value, dtype)


@_register("zeros", "empty", "empty_strided", "empty_permuted")
def _zeros(size, stride=None, physical_layout=None, dtype=None, names=None):
    return jnp.zeros(tuple(size), dtype)


@_register("ones")
def _ones(size, dtype=None, names=None):
    return jnp.ones(tuple(size), dtype)


@_register("zeros_like", "empty_like")
def _zeros_like(self, dtype=None):
    return jnp.zeros_like(self, dtype)


@_register("ones_like")
def _ones_like(self, dtype=None):
    return jnp.ones_like(self, dtype)


@_register("full_like")
def _full_like(self, fill_value, dtype=None):
    return jnp.full_like(self, fill_value, dtype)


@_register("fill")
def _fill(self, value):
    return jnp.full_like(self, value)


@_register("new_zeros", "new_empty", "new_empty_strided")
def _new_zeros(self, size, stride=None, dtype=None):
    return jnp.zeros(tuple(size), dtype or jnp.result_type(self))


@_register("new_ones")
def _new_ones(self, size, dtype=None):
    return jnp.ones(tuple(size), dtype or jnp.result_type(self))


@_register("new_full")
def _new_full(self, size, fill_value, dtype=None):
    return jnp.full(tuple(size), fill_value, dtype or jnp.result_type(self))


@_register("arange")
def _arange(start=0, end=None, step=1, dtype=None):
    return jnp.arange(start, end, step, dtype=dtype)


@_register("linspace")
def _linspace(start, end, steps, dtype=None):
    return jnp.linspace(start, end, steps, dtype=dtype)


@_register("eye")
def _eye(n, m=None, dtype=None):
    return jnp.eye(n, m, dtype=dtype)


@_register("scalar_tensor")
def _scalar_tensor(s, dtype=None):
    return jnp.asarray(s, dtype)


@_register("_to_copy", "to")
def _to(self, dtype=None, other=None):
    dtype = jnp.result_type(other) if other is not None else dtype
    return self if dtype is None else self.astype(dtype)


@_register("type_as")
def _type_as(self, other):
    return self.astype(jnp.result_type(other))


@_register("sym_size")
def _sym_size(self, dim=None):
    return self.shape if dim is None else self.shape[dim]


@_register("sym_numel")
def _sym_numel(self):
    return math.prod(self.shape)


def _noop(*args, **kwargs):
    return None


for _name in ("_assert_tensor_metadata", "_assert_scalar", "_assert_async",
              "_functional_assert_async", "_functional_assert_scalar",
              "sym_constrain_range", "sym_constrain_range_for_size", "_print"):
    _OPS[_name] = _noop


# Arguments that only concern torch's memory and devices.
_IGNORED_ARGS = frozenset({"layout", "device", "pin_memory", "memory_format", "non_blocking",
                           "copy", "cudnn_enable", "cudnn_enabled", "implicit"})

_FACTORIES = frozenset({"full", "zeros", "ones", "empty", "empty_strided", "empty_permuted",
                        "arange", "linspace", "eye", "scalar_tensor"})

# Ops whose size lists may hold the batch size when the graph had to be traced with a fixed
# batch: the argument holding the list, and whether -1 may stand in for one entry.
_SIZE_ARGS = {"view": ("size", True), "_unsafe_view": ("size", True),
              "reshape": ("shape", True), "unflatten": ("sizes", True),
              **{name: ("size", False) for name in (
                  "full", "zeros", "ones", "empty", "empty_strided", "new_zeros", "new_ones",
                  "new_full", "new_empty")}}

_PY_OPS = {
    operator.getitem: operator.getitem, operator.add: operator.add, operator.sub: operator.sub,
    operator.mul: operator.mul, operator.floordiv: operator.floordiv,
    operator.truediv: operator.truediv, operator.mod: operator.mod, operator.pow: operator.pow,
    operator.neg: operator.neg, operator.pos: operator.pos, operator.abs: operator.abs,
    operator.eq: operator.eq, operator.ne: operator.ne, operator.lt: operator.lt,
    operator.le: operator.le, operator.gt: operator.gt, operator.ge: operator.ge,
    operator.and_: operator.and_, operator.or_: operator.or_, operator.not_: operator.not_,
    math.ceil: math.ceil, math.floor: math.floor, math.sqrt: math.sqrt, math.trunc: math.trunc,
    torch.sym_float: float, torch.sym_int: int, torch.sym_max: max, torch.sym_min: min,
    torch.sym_not: operator.not_,
}

SUPPORTED_OPS = tuple(sorted(f"aten.{name}" for name in _OPS))
"""ATen ops (by overload packet name) that ``translate`` lowers to JAX."""


# ---------------------------------------------------------------------------------------
# graph -> program

class _Ref:
    """A reference to the value of an earlier graph node."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name


def _template(arg):
    return torch.fx.node.map_aggregate(
        arg, lambda a: _Ref(a.name) if isinstance(a, torch.fx.Node) else
        _jax_dtype(a) if isinstance(a, torch.dtype) else a)


def _resolve(t, env):
    if isinstance(t, _Ref):
        return env[t.name]
    if isinstance(t, list):
        return [_resolve(a, env) for a in t]
    if isinstance(t, tuple):
        return tuple(_resolve(a, env) for a in t)
    if isinstance(t, dict):
        return {k: _resolve(v, env) for k, v in t.items()}
    return t


def _op_key(target):
    """The dispatch-table name of a node target, or None when the table has no entry."""
    if isinstance(target, torch._ops.OpOverload):
        if target.namespace == "aten" and target.overloadpacket.__name__ in _OPS:
            return target.overloadpacket.__name__
        return None
    return "py" if target in _PY_OPS else None


def _op_name(target):
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    if isinstance(target, torch._ops.HigherOrderOperator):
        return f"higher_order.{target.name()}"
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', target)}"


def _unsupported(graph):
    """Names of the ops in `graph` outside the table, and whether it mutates anything."""
    missing, mutates = set(), False
    for node in graph.nodes:
        if node.op in ("call_module", "call_method"):
            missing.add(f"{node.op}:{node.target}")
        if node.op != "call_function":
            continue
        if isinstance(node.target, torch._ops.OpOverload) and node.target._schema.is_mutable:
            mutates = True
        if _op_key(node.target) is None:
            missing.add(_op_name(node.target))
    return sorted(missing), mutates


def _bind(target, args, kwargs):
    """Every schema argument by name, defaults filled in."""
    bound = {}
    positional = [a for a in target._schema.arguments if not a.kwarg_only]
    for a, v in zip(positional, args):
        bound[a.name] = v
    for a in target._schema.arguments:
        if a.name in kwargs:
            bound[a.name] = kwargs[a.name]
        elif a.name not in bound and a.has_default_value():
            bound[a.name] = a.default_value
        elif a.name not in bound:
            bound[a.name] = None
    return {k: v for k, v in bound.items() if k not in _IGNORED_ARGS}


def _meta_shape(node):
    val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return tuple(val.shape) if val is not None and hasattr(val, "shape") else None


def _prepare(name, kwargs, node):
    """Decisions made once from the traced shapes and dtypes."""
    if name in _FACTORIES and kwargs.get("dtype") is None and "val" in node.meta:
        kwargs["dtype"] = _jax_dtype(node.meta["val"].dtype)
    if name == "squeeze" and _meta_shape(node.args[0]) is not None:
        shape = _meta_shape(node.args[0])
        dim = kwargs.get("dim")
        dims = range(len(shape)) if dim is None else [dim] if isinstance(dim, int) else dim
        # Only dims that are statically 1: never the symbolic batch dimension.
        kwargs["dim"] = [d for d in dims if isinstance(shape[d], int) and shape[d] == 1]
    return kwargs


def _fix_batch(sizes, traced, batch, reshape):
    """Rewrite a size list traced at batch size `traced` for batch size `batch`.

    The first entry equal to `traced`, else the first multiple of it, is taken to hold the
    batch: a reshape with no -1 gets -1 there (jnp infers it), anything else gets the entry
    scaled to `batch`.
    """
    sizes = list(sizes)
    ints = [(i, s) for i, s in enumerate(sizes) if isinstance(s, int) and s > 0]
    hits = [i for i, s in ints if s == traced] + [i for i, s in ints if s % traced == 0]
    if hits:
        i = hits[0]
        sizes[i] = -1 if reshape and -1 not in sizes else sizes[i] // traced * batch
    return sizes


class _Step:
    __slots__ = ("out", "fn", "args", "kwargs", "size_arg", "label")

    def __init__(self, out, fn, args, kwargs, size_arg, label):
        self.out, self.fn, self.args, self.kwargs = out, fn, args, kwargs
        self.size_arg, self.label = size_arg, label


def _compile(graph):
    steps = []
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        key = _op_key(node.target)
        if key == "py":
            steps.append(_Step(node.name, _PY_OPS[node.target], _template(node.args),
                               _template(node.kwargs), None, _op_name(node.target)))
            continue
        kwargs = _prepare(key, _bind(node.target, node.args, node.kwargs), node)
        steps.append(_Step(node.name, _OPS[key], (), _template(kwargs), _SIZE_ARGS.get(key),
                           _op_name(node.target)))
    return steps


# ---------------------------------------------------------------------------------------
# export

_NOISY_LOGGERS = ("torch._subclasses.fake_tensor", "torch._export", "torch.export",
                  "torch.fx.experimental.symbolic_shapes", "torch._dynamo")
_STATIC_BATCHES = (7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71)


def _as_torch(value, name, device):
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, torch.Tensor):
        return value.to(device)
    try:
        return torch.as_tensor(np.array(value), device=device)
    except Exception as e:  # noqa: BLE001
        raise TypeError(f"translate(): {name} must be an array or None, got "
                        f"{type(value).__name__}.") from e


def _tile(t, n):
    return t[torch.arange(n, device=t.device) % t.shape[0]]


def _export(module, inputs, batched):
    """Export `module` with a dynamic batch, or a fixed odd one when it refuses."""
    n = inputs[0].shape[0]
    examples = [_tile(t, 2) if b and n < 2 else t for t, b in zip(inputs, batched)]
    batch = torch.export.Dim("batch")
    dynamic = tuple({0: batch} if b else None for b in batched)
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:  # a refusal is expected here; torch logs it at length
            logger.setLevel(logging.CRITICAL)
        return torch.export.export(module, tuple(examples), dynamic_shapes=dynamic), None
    except Exception:  # noqa: BLE001 - any refusal falls back to a static batch
        pass
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
    dims = {d for t in inputs if isinstance(t, torch.Tensor) for d in t.shape}
    dims |= {d for p in module.state_dict().values() for d in p.shape}
    traced = next((b for b in _STATIC_BATCHES if b not in dims), 73)
    examples = [_tile(t, traced) if b else t for t, b in zip(inputs, batched)]
    return torch.export.export(module, tuple(examples)), traced


def _preserving_decompositions():
    table = torch.export.default_decompositions()
    for op in list(table.keys()):
        if _op_key(op) is not None:
            table.pop(op)
    return table


def _state_tensors(module):
    state = dict(module.named_parameters())
    state.update(module.named_buffers())
    return state


def _fingerprint(state):
    return tuple((k, id(t), t._version, t.data_ptr()) for k, t in state.items())


# ---------------------------------------------------------------------------------------
# the translated model

class TranslatedModel:
    """A torch module translated to a JAX function.

    Made by :func:`translate`; evaluates the module's exported ATen graph with
    ``jax.numpy``/``lax``.

    Attributes
    ----------
    params: dict of str to jax.Array
        The module's parameters and buffers, keyed by their torch state names
        (``"iconv.weight"``, ``"bn.running_mean"``, ...). Integer buffers such as
        ``num_batches_tracked`` are included; pass ``allow_int=True`` to ``jax.grad`` when
        differentiating with respect to the whole dictionary.

    apply: callable
        ``apply(params, x, *args)``, the pure function: usable under ``jax.jit``,
        ``jax.vmap`` and ``jax.grad``.

    dynamic_batch: bool
        True when torch.export traced the batch dimension symbolically. When False, the
        graph was traced at a fixed batch size and size lists holding that batch size are
        rewritten at call time; outputs are still checked against torch by the tests, but
        a model that reshapes across the batch dimension may need ``jablate.bridges.torch.wrap``.

    translation_seconds: float
        Wall time spent exporting and translating.
    """

    def __init__(self, *, name, placeholders, user_inputs, steps, outputs, out_spec, params,
                 consts, traced_batch, seconds, fingerprint):
        self.name = name
        self._placeholders = placeholders  # [(placeholder, kind, target)]
        self._user_inputs = user_inputs      # [(placeholder, batched, shape or None)]
        self._steps = steps
        self._outputs = outputs
        self._out_spec = out_spec
        self._consts = consts
        self._traced_batch = traced_batch
        self._fingerprint = fingerprint
        self.params = params
        self.dynamic_batch = traced_batch is None
        self.translation_seconds = seconds
        self._jit_apply = jax.jit(self.apply)

    def __call__(self, x, *args):
        """Run the translated model with its own parameters (jit-compiled).

        Parameters
        ----------
        x: jax.Array or numpy.ndarray, shape=(batch_size, ...)
            The first input, any batch size; the other dimensions as at translation.

        *args: arrays or None
            The module's other forward arguments, as given to :func:`translate`.

        Returns
        -------
        y: jax.Array or tuple/list of jax.Array
            The module's outputs, in the structure the module returns them.
        """
        return self._jit_apply(self.params, x, *args)

    def apply(self, params, x, *args):
        """Evaluate the graph with explicit parameters: ``apply(params, x, *args)``.

        Parameters
        ----------
        params: dict of str to jax.Array
            Parameters and buffers keyed by torch state name, as in ``self.params``.

        x: jax.Array, shape=(batch_size, ...)
            The first input.

        *args: arrays or None
            The other forward arguments.

        Returns
        -------
        y: jax.Array or tuple/list of jax.Array
            The module's outputs.

        Raises
        ------
        ValueError
            When the number of inputs or a non-batch dimension differs from translation.
        """
        leaves = torch_pytree.tree_flatten(((x,) + tuple(args), {}))[0]
        if len(leaves) != len(self._user_inputs):
            raise ValueError(f"{self.name} was translated with {len(self._user_inputs)} "
                             f"input(s); got {len(leaves)}. Pass the same arguments as to "
                             "translate() (None where the example had None).")
        env = {}
        for (placeholder, batched, shape), value in zip(self._user_inputs, leaves):
            if shape is not None:
                got = tuple(jnp.shape(value))
                want = shape[1:] if batched else shape
                if (got[1:] if batched else got) != want or len(got) != len(shape):
                    raise ValueError(
                        f"input '{placeholder}' of {self.name} has shape {got}; it was "
                        f"translated for shape {('batch',) + want if batched else want}. "
                        "Translate again for other non-batch dimensions.")
            env[placeholder] = value
        for placeholder, kind, target in self._placeholders:
            env[placeholder] = params[target] if kind == "param" else self._consts[target]
        fix = None
        if self._traced_batch is not None and leaves and jnp.ndim(leaves[0]):
            batch = jnp.shape(leaves[0])[0]
            fix = (self._traced_batch, batch) if batch != self._traced_batch else None
        for step in self._steps:
            kwargs = _resolve(step.kwargs, env)
            if fix is not None and step.size_arg is not None:
                arg, reshape = step.size_arg
                kwargs[arg] = _fix_batch(kwargs[arg], *fix, reshape)
            try:
                env[step.out] = step.fn(*_resolve(step.args, env), **kwargs)
            except Exception as e:
                if hasattr(e, "add_note"):
                    e.add_note(f"(while evaluating node '{step.out}', {step.label}, "
                               f"of the graph translated from {self.name})")
                raise
        outputs = [env[name] if name is not None else const for name, const in self._outputs]
        return torch_pytree.tree_unflatten(outputs, self._out_spec)

    def _refresh(self, module):
        state = _state_tensors(module)
        fingerprint = _fingerprint(state)
        if fingerprint != self._fingerprint:
            params = dict(self.params)
            params.update({k: _to_jax(t) for k, t in state.items()})
            self.params, self._fingerprint = params, fingerprint

    def __repr__(self):
        batch = "dynamic batch" if self.dynamic_batch else f"traced at batch {self._traced_batch}"
        return (f"TranslatedModel({self.name}: {len(self._steps)} ops, {len(self.params)} "
                f"parameters and buffers, {batch}, translated in "
                f"{self.translation_seconds:.2f} s)")


_CACHE = weakref.WeakKeyDictionary()


def _cache_key(inputs, batched):
    key = []
    for t, b in zip(inputs, batched):
        if isinstance(t, torch.Tensor):
            key.append((tuple(t.shape[1:]) if b else ("static",) + tuple(t.shape), str(t.dtype)))
        else:
            key.append(repr(t))
    return tuple(key)


def translate(module, example_input, *example_args):
    """Translate a torch module into a JAX function evaluated by XLA.

    The module is exported in eval mode with :func:`torch.export.export`, its batch
    dimension symbolic, and the ATen graph is evaluated with ``jax.numpy`` and ``lax``.
    Parameters and buffers are not baked into the program: they are the ``params``
    argument of ``apply``, so one compiled program serves new weights too. The module's
    training mode (of every submodule) is restored afterwards.

    Translations are cached per module (weakly) and per input shape without the batch
    dimension and dtype: translating again returns the same object, with its ``params``
    refreshed if the module's tensors changed in the meantime.

    Parameters
    ----------
    module: torch.nn.Module
        The model. Dropout becomes the identity and batch norm uses running statistics.

    example_input: torch.Tensor or array, shape=(batch_size, ...)
        An example first input, e.g. one-hot sequences of shape (N, 4, L). Only its shape
        and dtype matter; the translation accepts any batch size but these other
        dimensions.

    *example_args: torch.Tensor, array or None
        Examples of the module's other forward arguments. A tensor whose first dimension
        equals the batch size of `example_input` is batched with it; None stays None.

    Returns
    -------
    model: TranslatedModel
        Call it as ``model(x, *args)`` on JAX arrays, or use the pure
        ``model.apply(params, x, *args)`` with ``model.params``. Outputs have the structure
        the module returns (an array, a tuple or a list of arrays).

    Raises
    ------
    NotImplementedError
        When the graph holds ops that have no JAX translation: all of them are named, and
        ``jablate.bridges.torch.wrap(module)`` runs such a module in torch through DLPack instead.
    RuntimeError
        When torch.export cannot capture the module at all (e.g. data-dependent Python
        control flow).

    Examples
    --------
    >>> from bpnetlite import BPNet
    >>> model = BPNet(n_filters=64, n_layers=8, n_control_tracks=0)
    >>> tm = translate(model, torch.zeros(1, 4, 2114))     # ~1 s after torch.export warms up
    >>> X = jax.numpy.zeros((64, 4, 2114))
    >>> profile, counts = tm(X)                              # (64, 2, 1000), (64, 1)
    >>> grads = jax.grad(lambda x: tm.apply(tm.params, x)[1].sum())(X)
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"translate(): module must be a torch.nn.Module, got "
                        f"{type(module).__name__}.")
    first = next(iter(module.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    inputs = [_as_torch(example_input, "example_input", device)]
    inputs += [_as_torch(a, f"example_args[{i}]", device) for i, a in enumerate(example_args)]
    if not isinstance(inputs[0], torch.Tensor) or inputs[0].ndim == 0:
        raise ValueError("translate(): example_input must be an array with a batch "
                         "dimension, e.g. shape (N, 4, L).")
    n = inputs[0].shape[0]
    batched = [isinstance(t, torch.Tensor) and t.ndim > 0 and t.shape[0] == n for t in inputs]

    key = _cache_key(inputs, batched)
    cached = _CACHE.get(module, {}).get(key)
    if cached is not None:
        cached._refresh(module)
        return cached

    start = time.perf_counter()
    name = type(module).__name__
    modes = {m: m.training for m in module.modules()}
    for m in modes:  # as module.eval(), which torch.export.load(...).module() refuses
        m.training = False
    try:
        try:
            ep, traced_batch = _export(module, inputs, batched)
        except Exception as e:  # noqa: BLE001
            raise RuntimeError(
                f"torch.export could not capture {name}: {e}\nUse jablate.bridges.torch.wrap(module) "
                "to run it in torch through DLPack instead.") from e
        missing, mutates = _unsupported(ep.graph)
        if missing or mutates:
            # Decompose towards core ATen, keeping every op the table knows; this also
            # removes in-place ops and inlines higher-order ops.
            ep = ep.run_decompositions(_preserving_decompositions())
            missing, _ = _unsupported(ep.graph)
    finally:
        for m, training in modes.items():
            m.training = training
    if missing:
        raise NotImplementedError(
            f"translate() cannot lower {len(missing)} op(s) of {name} to JAX: "
            f"{', '.join(missing)}.\nThe ops it knows are listed in "
            f"jablate.bridges.torch_export.SUPPORTED_OPS ({len(SUPPORTED_OPS)} ATen ops). Use "
            "jablate.bridges.torch.wrap(module) to run this module in torch through DLPack instead.")

    state = _state_tensors(module)
    params = {k: _to_jax(t) for k, t in state.items()}
    consts, placeholders, user_inputs = {}, [], []
    spec_kinds = torch.export.graph_signature.InputKind
    nodes = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    for spec in ep.graph_signature.input_specs:
        arg_name = getattr(spec.arg, "name", None)
        if spec.kind in (spec_kinds.PARAMETER, spec_kinds.BUFFER):
            if spec.target not in params:
                params[spec.target] = _to_jax(ep.state_dict.get(spec.target,
                                                                ep.constants.get(spec.target)))
            placeholders.append((arg_name, "param", spec.target))
        elif spec.kind == spec_kinds.CONSTANT_TENSOR:
            consts[spec.target] = _to_jax(ep.constants[spec.target])
            placeholders.append((arg_name, "const", spec.target))
        elif spec.kind == spec_kinds.USER_INPUT:
            shape = _meta_shape(nodes.get(arg_name))
            is_batched = bool(shape) and (not isinstance(shape[0], int) or traced_batch is not None
                                          and shape[0] == traced_batch)
            shape = None if shape is None else tuple(
                s if isinstance(s, int) else -1 for s in shape)
            user_inputs.append((arg_name, is_batched, shape))
        else:
            raise NotImplementedError(f"translate(): {name} has a {spec.kind.name} input "
                                      f"({spec.target}); use jablate.bridges.torch.wrap(module).")
    node_names = {n.name for n in ep.graph.nodes}
    outputs = []  # (node name, None), or (None, constant) for a constant output
    for spec in ep.graph_signature.output_specs:
        if spec.kind == torch.export.graph_signature.OutputKind.USER_OUTPUT:
            arg_name = getattr(spec.arg, "name", None)
            outputs.append((arg_name, None) if arg_name in node_names
                           else (None, getattr(spec.arg, "value", None)))

    tm = TranslatedModel(
        name=name, placeholders=placeholders, user_inputs=user_inputs,
        steps=_compile(ep.graph), outputs=outputs, out_spec=ep.call_spec.out_spec,
        params=params, consts=consts, traced_batch=traced_batch,
        seconds=time.perf_counter() - start, fingerprint=_fingerprint(state))
    _CACHE.setdefault(module, {})[key] = tm
    return tm
