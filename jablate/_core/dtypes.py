"""Dtypes named by numpy, JAX or torch: their kind and their resolution (bfloat16 known)."""

from __future__ import annotations

import numpy


def dtype_kind(name: str) -> str:
    """numpy's kind letter of a dtype named by numpy, JAX or torch (``'f'`` for bfloat16,
    ``'?'`` for a name numpy does not know)."""
    if name == "bfloat16":  # numpy has no bfloat16 of its own
        return "f"
    try:
        return numpy.dtype(name).kind
    except TypeError:
        return "?"


def resolution(name: str) -> float:
    """The machine epsilon of a float dtype named by numpy, JAX or torch (bfloat16's
    ``2**-7`` included); float32's for integers and bool, as
    :func:`jablate.api.effects.float_resolution`."""
    if name == "bfloat16":
        return 2.0 ** -7
    dtype = numpy.dtype(name)
    return float(numpy.finfo(dtype).eps) if dtype.kind == "f" else float(
        numpy.finfo(numpy.float32).eps)
