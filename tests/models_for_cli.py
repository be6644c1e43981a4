"""Tiny models that tests/test_cli.py names by import path (``models_for_cli:...``).

torch is imported only by the torch models, so a run with a JAX model stays light.
"""

import os
import time

import numpy

# Dinucleotide weights W[a, b] for the pair (a, b), a followed by b; GA and AG score high.
_PAIR_WEIGHTS = numpy.random.RandomState(1).normal(size=(4, 4)).astype(numpy.float32)
_PAIR_WEIGHTS[2, 0] += 2.0
_PAIR_WEIGHTS[0, 2] += 1.0


def jax_model(X):
    """A JAX function: dinucleotide scores weighted by position, (N, 4, L) -> (N, 1)."""

    import jax.numpy as jnp

    pairs = jnp.einsum("nal,ab,nbl->nl", X[:, :, :-1], jnp.asarray(_PAIR_WEIGHTS),
        X[:, :, 1:])
    return (pairs * jnp.linspace(0.5, 1.5, pairs.shape[-1])).sum(axis=-1)[:, None]


def jax_two_heads(X):
    """A JAX function with two outputs: a scalar (N, 1) and a profile (N, L)."""

    import jax.numpy as jnp

    profile = jnp.einsum("nal,a->nl", X, jnp.arange(1.0, 5.0)) * jnp.linspace(0, 1,
        X.shape[-1])
    return jax_model(X), profile


def jax_three_tasks(X):
    """A JAX multi-task classifier's shape: (N, 3), the tasks jax_model scaled by 1, -1, 0.5."""

    import jax.numpy as jnp

    return jax_model(X) * jnp.array([1.0, -1.0, 0.5])


_CONV_WEIGHTS = numpy.random.RandomState(2).normal(size=(2, 4, 9)).astype(numpy.float32)


def jax_conv_heads(X):
    """A JAX function with two outputs: a scalar (N, 1) and a two-strand profile (N, 2, L)
    from a convolution, as a BPNet's profile head ends."""

    import jax

    return jax_model(X), jax.lax.conv(X, _CONV_WEIGHTS, (1,), "SAME")


def jax_flat_heads(X):
    """jax_conv_heads with its scalar as (N,), without the task axis."""

    scalar, profile = jax_conv_heads(X)
    return scalar[:, 0], profile


def jax_big_integers(X):
    """jax_conv_heads' profile times 10**7, as int32: integers beyond float32's 2**24."""

    import jax.numpy as jnp

    return (jax_conv_heads(X)[1] * 1e7).astype(jnp.int32)


def jax_bfloat16(X):
    """jax_conv_heads' two outputs in bfloat16."""

    import jax.numpy as jnp

    return tuple(y.astype(jnp.bfloat16) for y in jax_conv_heads(X))


def jax_with_inf(X):
    """jax_conv_heads' profile with +inf at its first position for sequences that start
    with A (and their shuffles, which keep the first base outside the region)."""

    import jax.numpy as jnp

    profile = jax_conv_heads(X)[1]
    return profile.at[:, 0, 0].set(jnp.where(X[:, 0, 0] > 0, jnp.inf, profile[:, 0, 0]))


def jax_scalar(X):
    """A JAX function returning one number for the whole batch (no batch axis)."""

    return jax_model(X).sum()


def jax_empty(X):
    """A JAX function returning an empty tuple."""

    return ()


def complex_model(X):
    """A JAX function whose complex output cannot be summarised."""

    return (jax_model(X) * 1j).astype("complex64")


def raising_model(X):
    """A JAX function that rejects its input with a ValueError."""

    raise ValueError("raising_model rejects every input")


def jax_wrong_shape(X):
    """A JAX function whose dense layer expects another length: it fails on every input."""

    import jax.numpy as jnp

    return X.reshape(X.shape[0], -1) @ jnp.ones((4 * 100, 1))


def jax_out_of_memory(X):
    """A JAX function whose program needs a 256 TiB buffer, more than a 48-bit address
    space holds whatever the host's overcommit policy: XLA raises RESOURCE_EXHAUSTED when
    it runs, at once (the buffer is refused, never touched)."""

    import jax.numpy as jnp

    rows = jnp.arange(2**26, dtype=jnp.float32)[:, None] * X.sum()
    sorted_ = jnp.sort(rows * jnp.arange(2**20, dtype=jnp.float32), axis=1)  # not folded
    return X.sum(axis=(1, 2))[:, None] + sorted_[0, 0]


def jax_inf_after_a(X):
    """jax_model, +inf for sequences that start with A (their references too: a
    dinucleotide shuffle keeps the first base)."""

    import jax.numpy as jnp

    return jax_model(X) + jnp.log1p(-X[:, 0, :1])


def jax_trimmed_profile(X):
    """A count and a profile trimmed to nothing, as a BPNet's is on windows no longer than
    its trimming."""

    return jax_model(X), X[:, :2, :0]


def jax_constant_nan(X):
    """NaN for every sequence, as a mean over an empty slice makes it (a BPNet whose
    trimming leaves nothing of a short input): no base changes it."""

    import jax.numpy as jnp

    return jnp.mean(X[:, :, :0], axis=(1, 2))[:, None] + 0 * X.sum(axis=(1, 2))[:, None]


def jax_sine(X):
    """jax_model through a sine: an operation deep_lift_shap has no rule for."""

    import jax.numpy as jnp

    return jnp.sin(jax_model(X))


def jax_swallowed_interrupt(X):
    """jax_model, noting a Ctrl-C as the command line's handler does when Python swallows
    the KeyboardInterrupt it raised (inside a garbage-collection callback): at trace time,
    so in the middle of a run."""

    from jablate._core import interrupts

    interrupts.note()
    return jax_model(X)


def jax_model_factory():
    """A function that returns a JAX model (``jax_model``)."""

    return jax_model


class JaxModelClass:
    """A callable class: naming the class rather than an instance is refused."""

    def __call__(self, X):
        return jax_model(X)


NOT_A_MODEL = 3


def _torch_module(slow=False):
    import torch

    class TinyConv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(4, 3, kernel_size=5)
            self.linear = torch.nn.Linear(3, 1)
            rs = numpy.random.RandomState(0)
            with torch.no_grad():
                for parameter in self.parameters():
                    parameter.copy_(torch.from_numpy(
                        rs.normal(size=tuple(parameter.shape)).astype(numpy.float32)))

        def forward(self, X):
            if slow:
                marker = os.environ.get("JABLATE_TEST_MARKER")
                if marker and not os.path.exists(marker):
                    # how this process treats SIGINT, for the test's message should the
                    # interrupt not arrive (SigIgn: ignored; SigBlk: this thread's mask)
                    status = "/proc/self/status"  # Linux only
                    with open(marker, "a") as out:
                        if os.path.exists(status):
                            out.writelines(line for line in open(status)
                                           if line.startswith("Sig"))
                time.sleep(0.2)
            return self.linear(torch.relu(self.conv(X)).mean(dim=-1))

    return TinyConv().eval()


def torch_two_heads():
    """A torch module with two outputs: the tiny module's (N, 1) and its convolution's
    (N, 3, L - 4), a profile."""

    import torch

    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.tiny = _torch_module()

        def forward(self, X):
            return self.tiny(X), self.tiny.conv(X)

    return TwoHeads().eval()


def torch_bpnet():
    """bpnet-lite's BPNet, 8 filters, 2 dilated layers, random weights (seed 0): outputs
    (profile (N, 1, L - 106), log counts (N, 1))."""

    import torch
    from bpnetlite import BPNet

    torch.manual_seed(0)
    return BPNet(n_filters=8, n_layers=2, n_outputs=1, n_control_tracks=0,
                 verbose=False).eval()


def torch_model():
    """A tiny torch.nn.Module: Conv1d(4, 3, 5) -> ReLU -> mean -> Linear(3, 1)."""

    return _torch_module()


def slow_torch_model():
    """The same module, sleeping 0.2 s per call and touching $JABLATE_TEST_MARKER."""

    return _torch_module(slow=True)


def torch_wrong_length():
    """A torch module whose Linear layer expects sequences of length 100, not 40."""

    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv1d(4, 3, kernel_size=5), torch.nn.Flatten(),
        torch.nn.Linear(3 * 96, 1)).eval()


def __getattr__(name):
    # TorchTinyConv: a torch.nn.Module class, built on first access so that importing
    # this file does not import torch.
    if name == "TorchTinyConv":
        return type(_torch_module())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
