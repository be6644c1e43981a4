"""ATen convolutions, pooling and nearest upsampling, on ``lax``."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax import lax

from jablate.bridges._aten_table import OPS, ntuple, register

_CONV_DIMS = {1: ("NCH", "OIH", "NCH"), 2: ("NCHW", "OIHW", "NCHW"), 3: ("NCDHW", "OIDHW", "NCDHW")}


def _conv(input, weight, bias=None, stride=1, padding=0, dilation=1, transposed=False,  # noqa: A002
          output_padding=0, groups=1):
    n = weight.ndim - 2
    unbatched = input.ndim == n + 1
    x = input[None] if unbatched else input
    stride, dilation = ntuple(stride, n), ntuple(dilation, n)
    kernel = weight.shape[2:]
    if isinstance(padding, str):
        if padding == "valid":
            pads = [(0, 0)] * n
        else:  # "same": torch puts the odd element on the right
            totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
            pads = [(t // 2, t - t // 2) for t in totals]
    else:
        pads = [(p, p) for p in ntuple(padding, n)]
    if transposed:
        # (C_in, C_out/g, *k) -> (C_out, C_in/g, *k), flipped: a transposed conv is a conv
        # over the input dilated by the stride.
        c_in, c_out_g = weight.shape[:2]
        w = weight.reshape((groups, c_in // groups, c_out_g) + kernel)
        w = jnp.swapaxes(w, 1, 2).reshape((groups * c_out_g, c_in // groups) + kernel)
        w = jnp.flip(w, axis=tuple(range(2, 2 + n)))
        extra = ntuple(output_padding, n)
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
    from jablate._core.lowering import plain_convolutions_wanted
    if plain_convolutions_wanted():  # an analysis is tracing: keep the primitive
        return False
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


@register("convolution", "_convolution")
def _convolution(input, weight, bias, stride, padding, dilation, transposed,  # noqa: A002
                 output_padding, groups, benchmark=None, deterministic=None,
                 cudnn_enabled=None, allow_tf32=None):
    return _conv(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)


@register("conv1d", "conv2d", "conv3d")
def _convnd(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # noqa: A002
    return _conv(input, weight, bias, stride, padding, dilation, groups=groups)


@register("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
def _conv_transpose(input, weight, bias=None, stride=1, padding=0, output_padding=0,  # noqa: A002
                    groups=1, dilation=1):
    return _conv(input, weight, bias, stride, padding, dilation, True, output_padding, groups)



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
    k = ntuple(kernel_size, n)
    s = ntuple(stride, n) if stride not in (None, [], ()) else k
    return k, s, ntuple(padding, n), ntuple(dilation, n), x.ndim - n


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
    for size, ki, si, pi, out in zip(self.shape[lead:], k, s, p, summed.shape[lead:]):
        start = np.arange(out) * si - pi
        end = np.minimum(start + ki, size + pi)
        count = end - start
        if not count_include_pad:
            count = np.minimum(end, size) - np.maximum(start, 0)
        divisor = np.multiply.outer(divisor, count)
    return summed / divisor.astype(dtype)


def _adaptive_matrix(size, out):
    """Averaging weights of an adaptive pool, (size, out), in float64 (cast to the input's
    dtype after: a float32 matrix lost float64 inputs' precision, 9e-9 relative)."""
    m = np.zeros((size, out), np.float64)
    for j in range(out):
        lo, hi = (j * size) // out, -(-((j + 1) * size) // out)
        m[lo:hi, j] = 1.0 / (hi - lo)
    return m


def _adaptive_avg_pool(self, output_size, *, n):
    out_sizes = ntuple(output_size, n)
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
            # full precision: a GPU's default float32 matmul (TF32) would round the inputs
            x = jnp.moveaxis(jnp.tensordot(x, m, axes=[[axis], [0]],
                                           precision=lax.Precision.HIGHEST), -1, axis)
    return x


def _adaptive_max_pool(self, output_size, *, n):
    x = self
    for i, out in enumerate(ntuple(output_size, n)):
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


def _upsample_nearest(self=None, output_size=None, scales=None, scale_factors=None, *, n,
                      input=None, **more):  # noqa: A002
    """Nearest upsampling as torch computes it: output index j reads input index
    ``min(floor(j * r), size - 1)`` with ``r = 1 / scale`` when a scale is given, else
    ``size / out``, in float32."""
    x = self if self is not None else input
    if scale_factors is not None:        # the .vec overload
        per_dim = list(scale_factors)
    elif more:                           # scales_d, scales_h, scales_w in schema order
        per_dim = [more[k] for k in more if k.startswith("scales")]
    else:                                # upsample_nearest1d's `scales`
        per_dim = [scales]
    per_dim = [per_dim[i] if i < len(per_dim) else None for i in range(n)]
    for i in range(n):
        axis = x.ndim - n + i
        size, scale = x.shape[axis], per_dim[i]
        out = output_size[i] if output_size else int(math.floor(size * scale))
        ratio = np.float32(1.0 / scale) if scale else np.float32(size) / np.float32(out)
        idx = np.floor(np.arange(out, dtype=np.float32) * ratio).astype(np.int64)
        x = jnp.take(x, np.minimum(idx, size - 1), axis=axis)
    return x


for _n in (1, 2, 3):
    OPS[f"max_pool{_n}d"] = (lambda n: lambda **kw: _max_pool(**kw, n=n))(_n)
    OPS[f"max_pool{_n}d_with_indices"] = (
        lambda n: lambda **kw: (_max_pool(**kw, n=n), None))(_n)
    OPS[f"avg_pool{_n}d"] = (lambda n: lambda **kw: _avg_pool(**kw, n=n))(_n)
    OPS[f"adaptive_avg_pool{_n}d"] = (lambda n: lambda **kw: _adaptive_avg_pool(**kw, n=n))(_n)
    if _n > 1:  # ATen has no _adaptive_avg_pool1d
        OPS[f"_adaptive_avg_pool{_n}d"] = OPS[f"adaptive_avg_pool{_n}d"]
    OPS[f"adaptive_max_pool{_n}d"] = (lambda n: lambda **kw: _adaptive_max_pool(**kw, n=n))(_n)
    OPS[f"upsample_nearest{_n}d"] = (lambda n: lambda **kw: _upsample_nearest(**kw, n=n))(_n)
