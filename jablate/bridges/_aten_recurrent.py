"""Recurrent layers (``torch.nn.LSTM``, ``GRU``, ``RNN``) as one ``lax.scan`` each.

torch.export traces a recurrent layer step by step to learn its output's shape (its fake
tensors run ATen's per-step decomposition), which costs about 50 ms per step, layer and
direction and grows with the length: 89 s for a bidirectional LSTM at 200 bp. While
:func:`recurrent_as_ops` is active, each recurrent submodule calls a custom op instead
(``jablate::lstm``, ``jablate::gru``, ``jablate::rnn_tanh``, ``jablate::rnn_relu``: ATen's
op without dropout, computing with it in torch), whose shape function is one line, so the
export costs the same at every length.

Lowered to JAX, each layer and direction is a ``lax.scan`` over the time steps: the input
projections of every step are one matrix product before the loop, and the loop carries
only the hidden state, so the compile does not grow with the length either. ATen's own
``aten.lstm.input`` (and ``gru``, ``rnn_tanh``, ``rnn_relu``), from a saved program, is
lowered the same way.

The arguments are ATen's: ``params`` holds, per layer and then per direction,
``w_ih, w_hh[, b_ih, b_hh][, w_hr]`` (``w_hr`` for an LSTM with ``proj_size``);
``hx`` the initial states, shape (num_layers * directions, batch, hidden).
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import torch
from jax import lax

from jablate.bridges._aten_table import register


def _refuse_training(name: str, dropout: float, train: bool) -> None:
    if train and dropout > 0:
        raise NotImplementedError(
            f"aten.{name} with dropout={dropout} in training mode draws random masks; "
            "translate() lowers inference graphs (the module in eval mode).")


def _layers(params: Sequence, has_biases: bool, num_layers: int, directions: int,
            per_direction: int) -> list[list[tuple]]:
    """``params`` as [layer][direction] -> (w_ih, w_hh, b_ih, b_hh, w_hr), missing ones None."""
    if len(params) != num_layers * directions * per_direction:
        raise NotImplementedError(
            f"a recurrent layer with {len(params)} weight tensors for {num_layers} layer(s) "
            f"and {directions} direction(s): not a layout translate() knows.")
    out, i = [], 0
    for _ in range(num_layers):
        row = []
        for _ in range(directions):
            group = list(params[i:i + per_direction])
            i += per_direction
            w_ih, w_hh = group[:2]
            b_ih, b_hh = group[2:4] if has_biases else (None, None)
            w_hr = group[-1] if per_direction in (3, 5) else None
            row.append((w_ih, w_hh, b_ih, b_hh, w_hr))
        out.append(row)
    return out


def _dense_only(name: str) -> Callable[[Callable], Callable]:
    """Register ``fn`` for ``aten.<name>.input``; the packed-sequence overload
    (``aten.<name>.data``, from ``pack_padded_sequence``) shares its name and is refused."""
    def deco(fn):
        def rule(input=None, data=None, batch_sizes=None, **kwargs):  # noqa: A002
            if input is None:
                raise NotImplementedError(
                    f"aten.{name}.data (a packed sequence) has no JAX translation; pass "
                    "padded batches, or run the module with backend='torch'.")
            return fn(input, **kwargs)
        return register(name)(rule)
    return deco


def _affine(x, w, b):
    y = jnp.matmul(x, jnp.swapaxes(w, 0, 1))
    return y if b is None else y + b


def _stack(input, hx: Sequence, params: Sequence, has_biases: bool,  # noqa: A002
           num_layers: int, bidirectional: bool, batch_first: bool, per_direction: int,
           cell: Callable) -> tuple:
    """Run ``cell`` over every layer and direction; returns (output, [final states])."""
    directions = 2 if bidirectional else 1
    layers = _layers(params, has_biases, num_layers, directions, per_direction)
    x = jnp.swapaxes(input, 0, 1) if batch_first else input  # (T, B, features)
    finals = [[] for _ in hx]
    for layer, weights in enumerate(layers):
        outs = []
        for direction, (w_ih, w_hh, b_ih, b_hh, w_hr) in enumerate(weights):
            index = layer * directions + direction
            projected = _affine(x, w_ih, b_ih)  # every step's input projection at once
            state = tuple(h[index] for h in hx)

            def step(carry, xw, w_hh=w_hh, b_hh=b_hh, w_hr=w_hr):
                carry = cell(carry, xw, w_hh, b_hh, w_hr)
                return carry, carry[0]

            state, ys = lax.scan(step, state, projected, reverse=direction == 1)
            outs.append(ys)
            for k, s in enumerate(state):
                finals[k].append(s)
        x = outs[0] if directions == 1 else jnp.concatenate(outs, axis=-1)
    output = jnp.swapaxes(x, 0, 1) if batch_first else x
    return output, [jnp.stack(f) for f in finals]


def _lstm_cell(carry, xw, w_hh, b_hh, w_hr):
    h, c = carry
    i, f, g, o = jnp.split(xw + _affine(h, w_hh, b_hh), 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h if w_hr is None else _affine(h, w_hr, None)), c


def _gru_cell(carry, xw, w_hh, b_hh, w_hr):
    (h,) = carry
    x_r, x_z, x_n = jnp.split(xw, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(_affine(h, w_hh, b_hh), 3, axis=-1)
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * h_n)
    return ((1 - z) * n + z * h,)


def _rnn_cell(nonlinearity):
    def cell(carry, xw, w_hh, b_hh, w_hr):
        return (nonlinearity(xw + _affine(carry[0], w_hh, b_hh)),)
    return cell


@_dense_only("lstm")
def _lstm(input, hx, params, has_biases, num_layers, bidirectional,  # noqa: A002
          batch_first, dropout=0.0, train=False):
    _refuse_training("lstm", dropout, train)
    directions = 2 if bidirectional else 1
    per = len(params) // (num_layers * directions)
    if per not in (2, 3, 4, 5) or (per in (3, 5)) != (hx[0].shape[-1] != hx[1].shape[-1]) \
            or (per >= 4) != bool(has_biases):
        raise NotImplementedError(
            f"aten.lstm with {len(params)} weight tensors, has_biases={has_biases} and states "
            f"of shapes {tuple(hx[0].shape)}, {tuple(hx[1].shape)}: not a layout translate() "
            "knows.")
    output, (h, c) = _stack(input, hx, params, has_biases, num_layers, bidirectional,
                            batch_first, per, _lstm_cell)
    return output, h, c


@_dense_only("gru")
def _gru(input, hx, params, has_biases, num_layers, bidirectional,  # noqa: A002
         batch_first, dropout=0.0, train=False):
    _refuse_training("gru", dropout, train)
    output, (h,) = _stack(input, [hx], params, has_biases, num_layers, bidirectional,
                          batch_first, 4 if has_biases else 2, _gru_cell)
    return output, h


def _register_rnn(name: str, nonlinearity: Callable) -> None:
    """``aten.rnn_tanh`` / ``aten.rnn_relu``: an Elman RNN with ``nonlinearity``."""
    @_dense_only(name)
    def rule(input, hx, params, has_biases, num_layers, bidirectional,  # noqa: A002
             batch_first, dropout=0.0, train=False):
        _refuse_training(name, dropout, train)
        output, (h,) = _stack(input, [hx], params, has_biases, num_layers, bidirectional,
                              batch_first, 4 if has_biases else 2, _rnn_cell(nonlinearity))
        return output, h


_register_rnn("rnn_tanh", jnp.tanh)
_register_rnn("rnn_relu", jax.nn.relu)


# --- the export side: custom ops with a cheap shape function ------------------------------

@torch.library.custom_op("jablate::lstm", mutates_args=())
def lstm_op(input: torch.Tensor, hx: list[torch.Tensor], params: list[torch.Tensor],  # noqa: A002
            has_biases: bool, num_layers: int, bidirectional: bool,
            batch_first: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``aten.lstm.input`` in eval mode, traced as one op."""
    return tuple(torch.ops.aten.lstm.input(input, hx, params, has_biases, num_layers, 0.0,
                                           False, bidirectional, batch_first))


@lstm_op.register_fake
def _lstm_shape(input, hx, params, has_biases, num_layers, bidirectional,  # noqa: A002
                batch_first):
    width = hx[0].shape[-1] * (2 if bidirectional else 1)
    return (input.new_empty((*input.shape[:-1], width)), hx[0].new_empty(hx[0].shape),
            hx[1].new_empty(hx[1].shape))


def _one_state_op(name: str) -> Callable:
    """A custom op ``jablate::<name>`` for ``aten.<name>.input`` (one hidden state)."""
    aten = getattr(torch.ops.aten, name).input

    @torch.library.custom_op(f"jablate::{name}", mutates_args=())
    def op(input: torch.Tensor, hx: torch.Tensor, params: list[torch.Tensor],  # noqa: A002
           has_biases: bool, num_layers: int, bidirectional: bool,
           batch_first: bool) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(aten(input, hx, params, has_biases, num_layers, 0.0, False,
                          bidirectional, batch_first))

    @op.register_fake
    def _shape(input, hx, params, has_biases, num_layers, bidirectional,  # noqa: A002
               batch_first):
        width = hx.shape[-1] * (2 if bidirectional else 1)
        return input.new_empty((*input.shape[:-1], width)), hx.new_empty(hx.shape)

    return op


_OPS = {"LSTM": lstm_op, "GRU": _one_state_op("gru"), "RNN_TANH": _one_state_op("rnn_tanh"),
        "RNN_RELU": _one_state_op("rnn_relu")}


def _forward_as_op(self: torch.nn.RNNBase, input: torch.Tensor,  # noqa: A002
                   hx: object = None) -> tuple:
    """``torch.nn.LSTM/GRU/RNN.forward`` in eval mode (unbatched inputs and default states
    as torch makes them), through one custom op."""
    if not isinstance(input, torch.Tensor):
        raise NotImplementedError(
            f"translate() takes {type(self).__name__} on padded tensors, not packed "
            "sequences; run the module with backend='torch'.")
    batched = input.dim() == 3
    batch_dim = 0 if self.batch_first else 1
    if not batched:
        input = input.unsqueeze(batch_dim)  # noqa: A001
    n = input.shape[batch_dim]
    rows = self.num_layers * (2 if self.bidirectional else 1)
    lstm = self.mode == "LSTM"
    if hx is None:
        width = self.proj_size if lstm and self.proj_size > 0 else self.hidden_size
        hx = [input.new_zeros(rows, n, width)]
        if lstm:
            hx.append(input.new_zeros(rows, n, self.hidden_size))
    else:
        hx = list(hx) if lstm else [hx]
        if not batched:
            hx = [h.unsqueeze(1) for h in hx]
    params = [getattr(self, name) for name in self._flat_weights_names]
    out = _OPS[self.mode](input, hx if lstm else hx[0], params, self.bias, self.num_layers,
                          self.bidirectional, self.batch_first)
    output, states = out[0], list(out[1:])
    if not batched:
        output = output.squeeze(batch_dim)
        states = [h.squeeze(1) for h in states]
    return output, (tuple(states) if lstm else states[0])


@contextlib.contextmanager
def recurrent_as_ops(module: torch.nn.Module) -> Iterator[None]:
    """While active, every ``torch.nn.LSTM``, ``GRU`` and ``RNN`` in ``module`` (of exactly
    those classes, whose ``forward`` was not replaced: a subclass may change it) runs
    through one custom op, for ``torch.export``; the original ``forward`` is back
    afterwards."""
    patched = [m for m in module.modules() if type(m) in (torch.nn.LSTM, torch.nn.GRU,
                                                           torch.nn.RNN)
               and "forward" not in vars(m)]
    for m in patched:
        m.forward = types.MethodType(_forward_as_op, m)
    try:
        yield
    finally:
        for m in patched:
            del m.forward
