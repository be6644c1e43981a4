"""torch tensors to JAX arrays through DLPack: one function both bridges use (re-exported by
:mod:`jablate.bridges.torch`)."""

import jax
import torch

__all__ = ["from_torch"]


def from_torch(tensor):
    """A JAX array sharing memory with a torch tensor, through DLPack.

    Parameters
    ----------
    tensor: torch.Tensor
        On the CPU or a CUDA device.

    Returns
    -------
    array: jax.Array
        Same shape and values. Zero-copy for contiguous tensors of dtypes JAX
        holds. A copy is made (and said here) when DLPack cannot share:
        a non-contiguous tensor (made contiguous), float64/int64 while JAX's
        x64 mode is off (cast to float32/int32 by torch), a tensor that requires
        grad is detached first (no copy), and a CUDA tensor when JAX has no GPU
        backend (copied through the host).
    """
    t = tensor.detach()
    if not jax.config.jax_enable_x64:
        if t.dtype == torch.float64:
            t = t.to(torch.float32)
        elif t.dtype == torch.int64:
            t = t.to(torch.int32)
    if t.is_cuda and not any(d.platform == "gpu" for d in jax.devices()):
        t = t.cpu()
    if not t.is_contiguous():
        t = t.contiguous()
    return jax.dlpack.from_dlpack(t)
