"""Inputs and small models for the benchmarks, the same weights in torch and in flax.

Everything here is seeded, so a subprocess rebuilds exactly the inputs and weights
of its parent. torch is imported only by the functions that need it.
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy


def one_hot(n, length, seed, alphabet=4):
    """Random one-hot DNA, float32 NumPy array of shape (n, alphabet, length)."""
    codes = numpy.random.RandomState(seed).randint(alphabet, size=(n, length))
    X = numpy.zeros((n, alphabet, length), numpy.float32)
    numpy.put_along_axis(X, codes[:, None, :], 1.0, axis=1)
    return X


def centre(length, width):
    """``(start, end)`` of the ``width`` positions at the centre of a sequence."""
    start = (length - width) // 2
    return start, start + width


class SmallConvFlax(nn.Module):
    """Conv1d(4 -> filters, width, 'same') -> ReLU -> mean over positions -> Dense(1).

    Takes (B, 4, L) as torch does; returns (B, 1).
    """

    filters: int = 32
    width: int = 11

    @nn.compact
    def __call__(self, X):
        pad = self.width // 2
        h = nn.Conv(self.filters, (self.width,), padding=[(pad, pad)], name="conv")(
            jnp.swapaxes(X, 1, 2))
        return nn.Dense(1, name="linear")(jnp.mean(nn.relu(h), axis=1))


def small_conv_torch(filters=32, width=11, seed=0):
    """The torch twin of :class:`SmallConvFlax`, with seeded random weights."""
    import torch

    class SmallConv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(4, filters, width, padding=width // 2)
            self.linear = torch.nn.Linear(filters, 1)

        def forward(self, X):
            return self.linear(torch.relu(self.conv(X)).mean(dim=-1))

    torch.manual_seed(seed)
    return SmallConv().eval()


def small_conv_weights(module):
    """The torch module's weights as NumPy arrays, in flax's layout."""
    return {"conv.kernel": numpy.transpose(module.conv.weight.detach().numpy(), (2, 1, 0)).copy(),
            "conv.bias": module.conv.bias.detach().numpy().copy(),
            "linear.kernel": module.linear.weight.detach().numpy().T.copy(),
            "linear.bias": module.linear.bias.detach().numpy().copy()}


def small_conv_flax(weights, filters, width):
    """A bound :class:`SmallConvFlax` carrying ``weights`` (from :func:`small_conv_weights`)."""
    params = {}
    for name, value in weights.items():
        layer, leaf = name.split(".")
        params.setdefault(layer, {})[leaf] = jnp.asarray(value)
    return SmallConvFlax(filters=filters, width=width).bind({"params": params})


def load_small_conv_torch(weights, filters, width):
    """A torch :func:`small_conv_torch` module carrying ``weights`` (flax layout)."""
    import torch
    module = small_conv_torch(filters, width)
    with torch.no_grad():
        module.conv.weight.copy_(torch.from_numpy(numpy.transpose(weights["conv.kernel"],
                                                                  (2, 1, 0)).copy()))
        module.conv.bias.copy_(torch.from_numpy(weights["conv.bias"]))
        module.linear.weight.copy_(torch.from_numpy(weights["linear.kernel"].T.copy()))
        module.linear.bias.copy_(torch.from_numpy(weights["linear.bias"]))
    return module


def bpnet_torch(n_filters=64, n_layers=8, seed=0):
    """bpnet-lite's ``BPNet`` with random weights, no control tracks, in eval mode."""
    import torch
    from bpnetlite.bpnet import BPNet
    torch.manual_seed(seed)
    return BPNet(n_filters=n_filters, n_layers=n_layers, n_control_tracks=0,
                 verbose=False).eval()
