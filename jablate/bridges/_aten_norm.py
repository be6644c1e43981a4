"""ATen normalisations: batch, layer, RMS, group and instance norm."""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

from jablate.bridges._aten_table import register


def _channel_shape(x):
    return (1, -1) + (1,) * (x.ndim - 2)


def _affine(out, weight, bias, shape):
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


@register("batch_norm")
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


@register("native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training")
def _native_batch_norm(**kwargs):
    # The saved mean and inverse std (for a backward pass) are not computed: a graph that
    # used them would fail on None rather than get wrong values.
    return _batch_norm(**kwargs), None, None


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


@register("layer_norm")
def _layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5,  # noqa: A002
                cudnn_enable=None):
    return _layer_norm_stats(input, normalized_shape, weight, bias, eps)[0]


@register("native_layer_norm")
def _native_layer_norm(input, normalized_shape, weight, bias, eps):  # noqa: A002
    return _layer_norm_stats(input, normalized_shape, weight, bias, eps)


@register("rms_norm")
def _rms_norm(input, normalized_shape, weight=None, eps=None):  # noqa: A002
    axes = tuple(range(input.ndim - len(normalized_shape), input.ndim))
    eps = jnp.finfo(jnp.result_type(input)).eps if eps is None else eps
    out = input * lax.rsqrt(jnp.mean(jnp.square(input), axes, keepdims=True) + eps)
    return out if weight is None else out * weight


def _group_norm_stats(input, num_groups, weight, bias, eps):  # noqa: A002
    n = input.shape[0]
    xg = input.reshape(n, num_groups, math.prod(input.shape[1:]) // num_groups)
    mean = jnp.mean(xg, -1, keepdims=True)
    rstd = lax.rsqrt(jnp.mean(jnp.square(xg - mean), -1, keepdims=True) + eps)
    out = ((xg - mean) * rstd).reshape(input.shape)
    return _affine(out, weight, bias, _channel_shape(input)), mean[..., 0], rstd[..., 0]


@register("group_norm")
def _group_norm(input, num_groups, weight=None, bias=None, eps=1e-5,  # noqa: A002
                cudnn_enabled=None):
    return _group_norm_stats(input, num_groups, weight, bias, eps)[0]


@register("native_group_norm")
def _native_group_norm(input, weight, bias, N, C, HxW, group, eps):  # noqa: A002, N803
    return _group_norm_stats(input, group, weight, bias, eps)


@register("instance_norm")
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
