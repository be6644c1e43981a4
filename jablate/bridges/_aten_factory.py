"""ATen tensor factories, casts, symbolic sizes and the assertions that lower to nothing.

The ``dtype`` of the factories is filled in from the traced output at translation time
(``_interpreter.prepare``).
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from jablate.bridges._aten_table import register


@register("full")
def _full(size, fill_value, dtype=None):
    return jnp.full(tuple(size), fill_value, dtype)


@register("zeros", "empty", "empty_strided", "empty_permuted")
def _zeros(size, stride=None, physical_layout=None, dtype=None, names=None):
    return jnp.zeros(tuple(size), dtype)


@register("ones")
def _ones(size, dtype=None, names=None):
    return jnp.ones(tuple(size), dtype)


@register("zeros_like", "empty_like")
def _zeros_like(self, dtype=None):
    return jnp.zeros_like(self, dtype)


@register("ones_like")
def _ones_like(self, dtype=None):
    return jnp.ones_like(self, dtype)


@register("full_like")
def _full_like(self, fill_value, dtype=None):
    return jnp.full_like(self, fill_value, dtype)


@register("fill")
def _fill(self, value):
    return jnp.full_like(self, value)


@register("new_zeros", "new_empty", "new_empty_strided")
def _new_zeros(self, size, stride=None, dtype=None):
    return jnp.zeros(tuple(size), dtype or jnp.result_type(self))


@register("new_ones")
def _new_ones(self, size, dtype=None):
    return jnp.ones(tuple(size), dtype or jnp.result_type(self))


@register("new_full")
def _new_full(self, size, fill_value, dtype=None):
    return jnp.full(tuple(size), fill_value, dtype or jnp.result_type(self))


@register("arange")
def _arange(start=0, end=None, step=1, dtype=None):
    return jnp.arange(start, end, step, dtype=dtype)


@register("linspace")
def _linspace(start, end, steps, dtype=None):
    return jnp.linspace(start, end, steps, dtype=dtype)


@register("eye")
def _eye(n, m=None, dtype=None):
    return jnp.eye(n, m, dtype=dtype)


@register("scalar_tensor")
def _scalar_tensor(s, dtype=None):
    return jnp.asarray(s, dtype)


@register("_to_copy", "to")
def _to(self, dtype=None, other=None):
    dtype = jnp.result_type(other) if other is not None else dtype
    return self if dtype is None else self.astype(dtype)


@register("type_as")
def _type_as(self, other):
    return self.astype(jnp.result_type(other))


@register("sym_size")
def _sym_size(self, dim=None):
    return self.shape if dim is None else self.shape[dim]


@register("sym_numel")
def _sym_numel(self):
    return math.prod(self.shape)


# Assertions whose operands are static here (sizes are Python ints at evaluation time)
# are checked; assertions on tensor values (_assert_async, and the functional forms that
# need dependency tokens) are not in the table, so graphs holding them are refused.

@register("_assert_scalar")
def _assert_scalar(self, assert_msg=None):
    if isinstance(self, (bool, int, float)) and not self:
        raise RuntimeError(assert_msg or "assertion failed")


@register("_assert_tensor_metadata")
def _assert_tensor_metadata(a, size=None, stride=None, dtype=None):
    if size is not None and tuple(jnp.shape(a)) != tuple(size):
        raise RuntimeError(f"tensor of shape {tuple(jnp.shape(a))} where the graph was traced "
                           f"with shape {tuple(size)}")
    if dtype is not None and jnp.result_type(a) != jnp.dtype(dtype):
        raise RuntimeError(f"tensor of dtype {jnp.result_type(a)} where the graph was traced "
                           f"with dtype {jnp.dtype(dtype)}")


@register("sym_constrain_range", "sym_constrain_range_for_size")
def _sym_constrain_range(size, min=None, max=None):  # noqa: A002
    low = -math.inf if min is None else min
    high = math.inf if max is None else max
    if isinstance(size, (int, float)) and not low <= size <= high:
        raise RuntimeError(f"Invalid value range for {size} between [{min}, {max}].")


@register("_print")
def _print(s):
    print(s)
