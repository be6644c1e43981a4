"""Switches that model lowerings read while they are traced.

The torch translator lowers some ops to faster but longer JAX programs (a wide,
few-output conv1d becomes a matmul and one shifted add per tap). That is right for
running a model, and wrong for analysing one: the incremental engine has a rule for
``conv_general_dilated`` (and applies the same matmul trick itself) but sees 75
slices and adds instead. Inside :func:`plain_convolutions` lowerings emit the plain
primitive. The core owns the switch so that it never imports the bridges.
"""

import contextlib
import contextvars
from collections.abc import Iterator

_PLAIN_CONVOLUTIONS = contextvars.ContextVar("jablate_plain_convolutions", default=False)


def plain_convolutions_wanted() -> bool:
    """Whether a lowering should emit plain ``conv_general_dilated`` now."""
    return _PLAIN_CONVOLUTIONS.get()


@contextlib.contextmanager
def plain_convolutions() -> Iterator[None]:
    """Within this context, lowerings traced emit plain convolution primitives."""
    token = _PLAIN_CONVOLUTIONS.set(True)
    try:
        yield
    finally:
        _PLAIN_CONVOLUTIONS.reset(token)
