"""ATen ops applied element by element: arithmetic, comparisons, activations, dropout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jablate.bridges._aten_table import OPS, as_float, is_float, register


def _unary(name, fn):
    OPS[name] = lambda self: fn(self)


for _name, _fn in {
    "abs": jnp.abs, "neg": jnp.negative, "positive": lambda x: x,
    "exp": jnp.exp, "exp2": jnp.exp2, "expm1": jnp.expm1,
    "log": jnp.log, "log2": jnp.log2, "log10": jnp.log10, "log1p": jnp.log1p,
    "sqrt": jnp.sqrt, "rsqrt": lambda x: lax.rsqrt(as_float(x)),
    "reciprocal": lambda x: 1.0 / x, "square": jnp.square, "sign": jnp.sign,
    "floor": jnp.floor, "ceil": jnp.ceil, "trunc": jnp.trunc, "frac": lambda x: x - jnp.trunc(x),
    "sin": jnp.sin, "cos": jnp.cos, "tan": jnp.tan, "asin": jnp.arcsin, "acos": jnp.arccos,
    "atan": jnp.arctan, "sinh": jnp.sinh, "cosh": jnp.cosh, "tanh": jnp.tanh,
    "asinh": jnp.arcsinh, "acosh": jnp.arccosh, "atanh": jnp.arctanh,
    "erf": lambda x: jax.scipy.special.erf(as_float(x)),
    "erfc": lambda x: jax.scipy.special.erfc(as_float(x)),
    "erfinv": lambda x: jax.scipy.special.erfinv(as_float(x)),
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
    OPS[name] = lambda self, other: fn(self, other)


for _name, _fn in {
    "maximum": jnp.maximum, "minimum": jnp.minimum, "fmax": jnp.fmax, "fmin": jnp.fmin,
    "eq": jnp.equal, "ne": jnp.not_equal, "lt": jnp.less, "le": jnp.less_equal,
    "gt": jnp.greater, "ge": jnp.greater_equal,
    "logical_and": jnp.logical_and, "logical_or": jnp.logical_or,
    "logical_xor": jnp.logical_xor, "bitwise_and": jnp.bitwise_and,
    "bitwise_or": jnp.bitwise_or, "bitwise_xor": jnp.bitwise_xor,
    "remainder": jnp.remainder, "fmod": jnp.fmod, "floor_divide": jnp.floor_divide,
    "atan2": lambda a, b: jnp.arctan2(as_float(a), b),
}.items():
    _binary(_name, _fn)


@register("add")
def _add(self, other, alpha=1):
    return self + (other if alpha == 1 else other * alpha)


@register("sub")
def _sub(self, other, alpha=1):
    return self - (other if alpha == 1 else other * alpha)


@register("rsub")
def _rsub(self, other, alpha=1):
    return other - (self if alpha == 1 else self * alpha)


@register("mul")
def _mul(self, other):
    return jnp.multiply(self, other)


@register("div", "true_divide")
def _div(self, other, rounding_mode=None):
    if rounding_mode == "floor":
        return jnp.floor_divide(self, other)
    out = jnp.true_divide(self, other)
    if rounding_mode == "trunc":
        out = jnp.trunc(out)
        if not (is_float(self) or is_float(other)):
            out = out.astype(jnp.result_type(self, other))
    return out


@register("pow")
def _pow(self, exponent):
    return jnp.power(self, exponent)


@register("clamp", "clip")
def _clamp(self, min=None, max=None):  # noqa: A002 - schema names
    if min is not None:
        self = jnp.maximum(self, min)
    if max is not None:
        self = jnp.minimum(self, max)
    return self


@register("clamp_min")
def _clamp_min(self, min):  # noqa: A002
    return jnp.maximum(self, min)


@register("clamp_max")
def _clamp_max(self, max):  # noqa: A002
    return jnp.minimum(self, max)


@register("hardtanh")
def _hardtanh(self, min_val=-1, max_val=1):
    return jnp.clip(self, min_val, max_val)


@register("where")
def _where(condition, self=None, other=None):
    if self is None:
        raise NotImplementedError("aten.where with one argument has a data-dependent shape")
    return jnp.where(condition, self, other)


@register("masked_fill")
def _masked_fill(self, mask, value):
    return jnp.where(mask, jnp.asarray(value, self.dtype), self)


@register("lerp")
def _lerp(self, end, weight):
    return self + weight * (end - self)


@register("round")
def _round(self, decimals=0):
    return jnp.round(self, decimals)


@register("gelu")
def _gelu(self, approximate="none"):
    return jax.nn.gelu(self, approximate=approximate == "tanh")


@register("elu")
def _elu(self, alpha=1, scale=1, input_scale=1):
    neg = alpha * jnp.expm1(jnp.minimum(self, 0) * input_scale)
    return scale * jnp.where(self > 0, self, neg)


@register("celu")
def _celu(self, alpha=1.0):
    return jnp.where(self > 0, self, alpha * jnp.expm1(jnp.minimum(self, 0) / alpha))


@register("softplus")
def _softplus(self, beta=1, threshold=20):
    return jnp.where(self * beta > threshold, self, jax.nn.softplus(self * beta) / beta)


@register("leaky_relu")
def _leaky_relu(self, negative_slope=0.01):
    return jnp.where(self > 0, self, self * negative_slope)


@register("glu")
def _glu(self, dim=-1):
    a, b = jnp.split(self, 2, axis=dim)
    return a * jax.nn.sigmoid(b)



def _inference_only(name, p, train):
    if train is not False and p > 0:
        raise NotImplementedError(
            f"aten.{name} in training mode (p={p}) draws random masks; translate() lowers "
            "inference graphs, where dropout is the identity. Put the module in eval mode, or "
            "use jablate.bridges.torch.wrap(module) to run it in torch.")


@register("dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout")
def _dropout(input, p=0.5, train=False):  # noqa: A002
    _inference_only("dropout", p, train)
    return input


@register("native_dropout")
def _native_dropout(input, p=0.5, train=False):  # noqa: A002
    _inference_only("native_dropout", p, train)
    return input, jnp.ones(jnp.shape(input), bool)
