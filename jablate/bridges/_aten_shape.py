"""ATen shape and indexing ops: views, slicing, gathers and scatters, padding, splits."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax import lax

from jablate.bridges._aten_table import OPS, register


@register("view", "_unsafe_view", "reshape")
def _reshape(self, size=None, shape=None, dtype=None):
    if dtype is not None:  # aten.view.dtype
        return lax.bitcast_convert_type(self, dtype)
    return jnp.reshape(self, tuple(size if size is not None else shape))


@register("view_as", "reshape_as")
def _view_as(self, other):
    return jnp.reshape(self, other.shape)


@register("permute")
def _permute(self, dims):
    return jnp.transpose(self, tuple(dims))


@register("transpose")
def _transpose(self, dim0, dim1):
    return jnp.swapaxes(self, dim0, dim1) if self.ndim else self


@register("movedim")
def _movedim(self, source, destination):
    return jnp.moveaxis(self, source, destination)


@register("squeeze")
def _squeeze(self, dim=None):
    # `dim` was fixed at translation time from the static shape (see _prepare_squeeze), so a
    # batch of one at run time is never squeezed away.
    dims = [dim] if isinstance(dim, int) else list(dim or ())
    dims = tuple(d % self.ndim for d in dims if self.shape[d] == 1) if self.ndim else ()
    return jnp.squeeze(self, dims) if dims else self


@register("unsqueeze")
def _unsqueeze(self, dim):
    return jnp.expand_dims(self, dim)


@register("flatten")
def _flatten(self, start_dim=0, end_dim=-1):
    if self.ndim == 0:
        return self.reshape(1)
    s, e = start_dim % self.ndim, end_dim % self.ndim
    return self.reshape(self.shape[:s] + (math.prod(self.shape[s:e + 1]),) + self.shape[e + 1:])


@register("unflatten")
def _unflatten(self, dim, sizes):
    d = dim % self.ndim
    return self.reshape(self.shape[:d] + tuple(sizes) + self.shape[d + 1:])


@register("expand")
def _expand(self, size, implicit=False):
    # A dim the tensor already has (size != 1) keeps its size: this is what lets a graph
    # traced at one batch size expand correctly at another.
    lead = len(size) - self.ndim
    shape = [self.shape[i - lead] if i >= lead and (s == -1 or self.shape[i - lead] != 1) else s
             for i, s in enumerate(size)]
    return jnp.broadcast_to(self, tuple(shape))


@register("expand_as")
def _expand_as(self, other):
    return jnp.broadcast_to(self, other.shape)


@register("repeat", "tile")
def _repeat(self, repeats=None, dims=None):
    return jnp.tile(self, tuple(repeats if repeats is not None else dims))


@register("repeat_interleave")
def _repeat_interleave(self=None, repeats=None, dim=None, output_size=None):
    if self is None:
        return jnp.repeat(jnp.arange(repeats.shape[0]), repeats, total_repeat_length=output_size)
    return jnp.repeat(self, repeats, axis=dim, total_repeat_length=output_size)


@register("cat", "concat", "concatenate")
def _cat(tensors, dim=0):
    tensors = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)] or tensors[:1]
    return jnp.concatenate(tensors, axis=dim)


@register("stack")
def _stack(tensors, dim=0):
    return jnp.stack(tensors, axis=dim)


def _index_at(ndim, dim, index):
    return (slice(None),) * (dim % ndim) + (index,)


@register("slice")
def _slice(self, dim=0, start=None, end=None, step=1):
    return self[_index_at(self.ndim, dim, slice(start, end, step))]


@register("narrow")
def _narrow(self, dim, start, length):
    axis = dim % self.ndim
    if isinstance(start, int):
        start = start % self.shape[axis] if start < 0 else start
        return lax.slice_in_dim(self, start, start + length, axis=axis)
    start = jnp.where(start < 0, start + self.shape[axis], start)  # narrow.Tensor
    return lax.dynamic_slice_in_dim(self, start, length, axis=axis)


@register("select")
def _select(self, dim, index):
    return self[_index_at(self.ndim, dim, index)]


@register("index")
def _index(self, indices):
    return self[tuple(slice(None) if i is None else i for i in indices)]


@register("index_select")
def _index_select(self, dim, index):
    if self.ndim == 0:  # torch treats a 0-d tensor as a vector of one here
        return jnp.take(self.reshape(1), index, axis=0).reshape(jnp.shape(index)[1:])
    return jnp.take(self, index, axis=dim)


@register("gather")
def _gather(self, dim, index, sparse_grad=False):
    if index.size == 0:
        return jnp.zeros(index.shape, jnp.result_type(self))
    if self.ndim == 0:  # a 0-d tensor gathers as a vector of one
        return jnp.take(self.reshape(1), index.reshape(-1), axis=0).reshape(index.shape)
    d = dim % self.ndim
    src = self[tuple(slice(None) if i == d else slice(0, index.shape[i]) for i in range(self.ndim))]
    return jnp.take_along_axis(src, index, axis=d)


@register("index_put")
def _index_put(self, indices, values, accumulate=False):
    at = self.at[tuple(slice(None) if i is None else i for i in indices)]
    return at.add(values) if accumulate else at.set(values)


@register("slice_scatter")
def _slice_scatter(self, src, dim=0, start=None, end=None, step=1):
    return self.at[_index_at(self.ndim, dim, slice(start, end, step))].set(src)


@register("select_scatter")
def _select_scatter(self, src, dim, index):
    return self.at[_index_at(self.ndim, dim, index)].set(src)


@register("copy")
def _copy(self, src, non_blocking=False):
    return jnp.broadcast_to(jnp.asarray(src, jnp.result_type(self)), self.shape)


@register("flip")
def _flip(self, dims):
    return jnp.flip(self, tuple(dims))


@register("roll")
def _roll(self, shifts, dims=()):
    if not dims:
        return jnp.roll(self.ravel(), tuple(shifts)).reshape(self.shape)
    return jnp.roll(self, tuple(shifts), tuple(dims))


@register("tril")
def _tril(self, diagonal=0):
    return jnp.tril(self, diagonal)


@register("triu")
def _triu(self, diagonal=0):
    return jnp.triu(self, diagonal)


def _pad_widths(ndim, pad):
    widths = [(0, 0)] * ndim
    for i in range(len(pad) // 2):
        widths[ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return widths


@register("constant_pad_nd")
def _constant_pad_nd(self, pad, value=0):
    config = [(lo, hi, 0) for lo, hi in _pad_widths(self.ndim, pad)]
    return lax.pad(self, jnp.asarray(value, jnp.result_type(self)), config)


def _index_pad(self, pad, mode):
    """Reflect, replicate or circular padding as torch indexes it; negative pads crop."""
    x = self
    for axis, (lo, hi) in enumerate(_pad_widths(self.ndim, pad)):
        if lo == hi == 0:
            continue
        size = x.shape[axis]
        src = np.arange(size + lo + hi) - lo
        if mode == "replicate":
            src = np.clip(src, 0, size - 1)
        elif mode == "reflect":
            src = np.abs(src)
            src = np.where(src > size - 1, 2 * (size - 1) - src, src)
        elif mode == "circular":  # torch crops first, then wraps what is left
            x = lax.slice_in_dim(x, max(-lo, 0), size - max(-hi, 0), axis=axis)
            size, lo, hi = x.shape[axis], max(lo, 0), max(hi, 0)
            src = (np.arange(size + lo + hi) - lo) % size
        else:
            raise NotImplementedError(f"aten.pad with mode {mode!r}")
        x = jnp.take(x, src, axis=axis)
    return x


@register("pad")
def _pad(self, pad, mode="constant", value=None):
    if mode == "constant":
        return _constant_pad_nd(self, pad, 0 if value is None else value)
    return _index_pad(self, pad, mode)


for _n in (1, 2, 3):
    OPS[f"reflection_pad{_n}d"] = lambda self, padding: _index_pad(self, padding, "reflect")
    OPS[f"replication_pad{_n}d"] = lambda self, padding: _index_pad(self, padding, "replicate")


def _split_at(self, sizes, dim):
    return list(jnp.split(self, np.cumsum(sizes)[:-1].tolist(), axis=dim))


def _even_sizes(total, size):
    return [size] * (total // size) + ([total % size] if total % size else [])


@register("split", "unsafe_split", "split_with_sizes", "unsafe_split_with_sizes")
def _split(self, split_size=None, dim=0, split_sizes=None):
    sizes = split_sizes if split_sizes is not None else split_size
    if isinstance(sizes, int):
        sizes = _even_sizes(self.shape[dim], sizes)
    return _split_at(self, sizes, dim)


@register("chunk", "unsafe_chunk")
def _chunk(self, chunks, dim=0):
    total = self.shape[dim]
    return _split_at(self, _even_sizes(total, max(-(-total // chunks), 1)), dim)


@register("unbind")
def _unbind(self, dim=0):
    return [lax.index_in_dim(self, i, dim % self.ndim, keepdims=False)
            for i in range(self.shape[dim])]


@register("embedding")
def _embedding(weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    return jnp.take(weight, indices, axis=0)


@register("unfold")
def _unfold(self, dimension, size, step):
    """Windows of ``size`` every ``step`` along ``dimension``, as a new last axis."""
    if self.ndim == 0:
        return self.reshape(1)
    dim = dimension % self.ndim
    count = (self.shape[dim] - size) // step + 1
    index = np.arange(count)[:, None] * step + np.arange(size)[None, :]
    return jnp.moveaxis(jnp.take(self, index, axis=dim), dim + 1, -1)
