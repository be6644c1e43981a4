"""bpnet-lite's ``BPNet`` as a ``flax.linen`` module, loadable with the torch weights.

A line-by-line port of ``bpnetlite.bpnet.BPNet.forward`` (bpnet-lite 0.8): a wide
input convolution with ReLU, ``n_layers`` dilated residual convolutions
(``X = X + relu(conv_i(X))``, dilation ``2**i``), a profile head ``fconv``
(width 75) trimmed by ``trimming`` on both sides, and a count head: the mean of
the residual features over ``[max(trimming - 37, 0), L - trimming + 37)`` then a
dense layer. Control tracks (``X_ctl``) are concatenated to the features for the
profile head and enter the count head as ``log(sum + 1)``, as in bpnet-lite.

Inputs and outputs keep torch's layout: ``X`` is ``(B, 4, L)``, the profile is
``(B, n_outputs, L - 2 * trimming)``, the counts ``(B, 1)``.
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy


def default_trimming(n_layers):
    """bpnet-lite's default: ``47 + sum(2**i for i in 1..n_layers)``."""
    return 47 + sum(2 ** i for i in range(1, n_layers + 1))


class BPNetFlax(nn.Module):
    """BPNet with bpnet-lite's architecture; see the module docstring for shapes."""

    n_filters: int = 64
    n_layers: int = 8
    n_outputs: int = 2
    n_control_tracks: int = 2
    profile_output_bias: bool = True
    count_output_bias: bool = True
    trimming: int | None = None

    @nn.compact
    def __call__(self, X, X_ctl=None):
        trimming = default_trimming(self.n_layers) if self.trimming is None else self.trimming
        start, end = trimming, X.shape[2] - trimming
        h = jnp.swapaxes(X, 1, 2)  # (B, L, A): flax convolves channels-last
        h = nn.relu(nn.Conv(self.n_filters, (21,), padding=[(10, 10)], name="iconv")(h))
        for i in range(1, self.n_layers + 1):
            d = 2 ** i
            conv = nn.Conv(self.n_filters, (3,), padding=[(d, d)], kernel_dilation=(d,),
                           name=f"rconvs_{i - 1}")
            h = h + nn.relu(conv(h))
        ctl = None if X_ctl is None else jnp.swapaxes(X_ctl, 1, 2)
        h_w_ctl = h if ctl is None else jnp.concatenate([h, ctl], axis=-1)
        profile = nn.Conv(self.n_outputs, (75,), padding=[(37, 37)],
                          use_bias=self.profile_output_bias, name="fconv")(h_w_ctl)
        y_profile = jnp.swapaxes(profile[:, start:end], 1, 2)
        lo, hi = max(start - 37, 0), end + 37
        pooled = jnp.mean(h[:, lo:hi], axis=1)
        if ctl is not None:
            ctl_sum = jnp.sum(ctl[:, lo:hi], axis=(1, 2))[:, None]
            pooled = jnp.concatenate([pooled, jnp.log(ctl_sum + 1)], axis=-1)
        y_counts = nn.Dense(1, use_bias=self.count_output_bias, name="linear")(pooled)
        return y_profile, y_counts.reshape(X.shape[0], 1)


def _conv(module):
    out = {"kernel": numpy.transpose(module.weight.detach().cpu().numpy(), (2, 1, 0))}
    if module.bias is not None:
        out["bias"] = module.bias.detach().cpu().numpy()
    return out


def from_torch(bpnet):
    """A bound ``BPNetFlax`` carrying the weights of a ``bpnetlite.bpnet.BPNet``.

    Parameters
    ----------
    bpnet: bpnetlite.bpnet.BPNet

    Returns
    -------
    model: BPNetFlax, bound to ``{'params': ...}`` (float32 NumPy weights copied)
    """
    params = {"iconv": _conv(bpnet.iconv), "fconv": _conv(bpnet.fconv)}
    for i, conv in enumerate(bpnet.rconvs):
        params[f"rconvs_{i}"] = _conv(conv)
    linear = {"kernel": bpnet.linear.weight.detach().cpu().numpy().T}
    if bpnet.linear.bias is not None:
        linear["bias"] = bpnet.linear.bias.detach().cpu().numpy()
    params["linear"] = linear
    module = BPNetFlax(n_filters=bpnet.n_filters, n_layers=bpnet.n_layers,
                       n_outputs=bpnet.fconv.out_channels,
                       n_control_tracks=bpnet.n_control_tracks,
                       profile_output_bias=bpnet.fconv.bias is not None,
                       count_output_bias=bpnet.linear.bias is not None,
                       trimming=bpnet.trimming)
    params = {k: {n: jnp.asarray(v) for n, v in d.items()} for k, d in params.items()}
    return module.bind({"params": params})


def to_arrays(model):
    """A bound ``BPNetFlax`` as ``(config, arrays)``: its fields (JSON-able) and its
    parameters as ``{'layer.leaf': numpy array}`` (for ``numpy.savez``), so that a
    subprocess rebuilds it with :func:`from_arrays` without importing torch."""
    config = {f: getattr(model, f) for f in ("n_filters", "n_layers", "n_outputs",
                                             "n_control_tracks", "profile_output_bias",
                                             "count_output_bias", "trimming")}
    params = model.variables["params"]
    arrays = {f"{layer}.{leaf}": numpy.asarray(value)
              for layer, leaves in params.items() for leaf, value in leaves.items()}
    return config, arrays


def from_arrays(config, arrays):
    """The bound ``BPNetFlax`` that :func:`to_arrays` took apart."""
    params = {}
    for name, value in arrays.items():
        layer, leaf = name.split(".")
        params.setdefault(layer, {})[leaf] = jnp.asarray(value)
    return BPNetFlax(**config).bind({"params": params})
