"""Where jablate computes: the one device policy of every path.

With ``device=None`` a JAX computation runs on JAX's default backend (the GPU or TPU when
there is one), starting at its default device (``jax_default_device`` when set), and the
paths that shard spread over all of that backend's local devices, whatever the family or
the device of ``X``: a torch CPU tensor is not a reason to compute on the host. ``X``
arrives through DLPack on the device it lives on (a torch CUDA tensor without a host copy)
and is moved once, here, when that is not where the computation runs. ``device=`` names
one device, which then runs everything alone. Outputs go back to ``X``'s family as before
(torch results as CPU tensors, as tangermeme returns them). torch modules run in torch
keep tangermeme's rule (CUDA when available) and are not placed here.

:func:`decide` is the policy as a pure function of device lists, so it can be tested
without the hardware; :func:`current` applies it to JAX's state; :func:`place` moves the
inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import jax

from jablate._core.errors import InputError

__all__ = ["Placement", "decide", "current", "place", "default_device", "parse_device",
           "host_device"]


def readable_in_place(x: Any) -> bool:
    """Whether numpy can read the JAX array ``x`` where it is, without a copy: it lives on
    one CPU device (a numpy array can be read, trivially). An array on an accelerator, or
    spread over several devices, needs a program or a copy instead."""
    if not isinstance(x, jax.Array):
        return True
    devices = x.devices()
    return len(devices) == 1 and next(iter(devices)).platform == "cpu"


def host_device() -> Any:
    """The CPU backend's first device: where bookkeeping on host arrays (counting a
    region's arrangements, say) computes, whatever the default backend, so it neither
    waits for an accelerator's queue nor adds to it."""
    return jax.local_devices(backend="cpu")[0]


@dataclass(frozen=True)
class Placement:
    """Where a run computes.

    Attributes
    ----------
    devices: tuple of jax.Device
        Every device the run may shard over; the first one holds ``X`` (and runs the paths
        that use one device).
    explicit: bool
        Whether the caller named the device (``device=``): then ``devices`` is that one.
    """

    devices: tuple
    explicit: bool = False

    @property
    def primary(self) -> Any:
        """The device that holds ``X`` and runs single-device work."""
        return self.devices[0]


def decide(x_devices: Sequence[Any], requested: Optional[Any], backend_devices: Sequence[Any],
           default: Any) -> Placement:
    """The device policy, as a pure function.

    Parameters
    ----------
    x_devices: sequence of devices
        The devices ``X`` lives on (one, or several for an array the caller sharded).
    requested: device or None
        What ``device=`` resolved to; None when the caller named none.
    backend_devices: sequence of devices
        The local devices of JAX's default backend.
    default: device
        JAX's default device (``jax_default_device``, else the default backend's first).

    Returns
    -------
    Placement
        ``requested`` alone when given. Otherwise the default device first, then the other
        devices of the default backend; except that an ``X`` the caller already sharded
        over several devices of that backend keeps its devices. ``X``'s own device (a
        torch CPU tensor's host, say) never decides by itself.
    """
    if requested is not None:
        return Placement((requested,), explicit=True)
    x_devices = tuple(x_devices)
    backend = tuple(backend_devices)
    if len(x_devices) > 1 and all(d in backend for d in x_devices):
        return Placement(x_devices)
    return Placement((default,) + tuple(d for d in backend if d != default))


def default_device() -> Any:
    """JAX's default device: ``jax_default_device`` when set (a device, or a platform name
    whose first local device it means), else the first local device of the default
    backend."""
    chosen = jax.config.jax_default_device
    if chosen is None:
        return jax.local_devices()[0]
    if isinstance(chosen, str):
        return jax.local_devices(backend=chosen)[0]
    return chosen


def current(X: jax.Array, requested: Optional[Any] = None) -> Placement:
    """:func:`decide` for ``X`` and JAX's state now.

    Parameters
    ----------
    X: jax.Array
        The inputs, where they arrived.
    requested: jax.Device or None
        The resolved ``device=``.

    Returns
    -------
    Placement
    """
    default = default_device()
    return decide(tuple(X.devices()), requested, jax.local_devices(backend=default.platform),
                  default)


def place(tree: Any, where: Placement) -> Any:
    """Every array of ``tree`` committed to ``where.primary``; arrays already there (or, for
    an ``X`` sharded by the caller, on ``where.devices``) are not copied.

    Parameters
    ----------
    tree: pytree of jax.Array
    where: Placement

    Returns
    -------
    The same tree, placed.
    """
    keep = set(where.devices) if not where.explicit and len(where.devices) > 1 else None

    def one(x):
        devices = set(x.devices())
        if keep is not None and len(devices) > 1 and devices <= keep:
            return x  # the caller's own sharding over the devices we run on
        if devices == {where.primary} and getattr(x, "committed", True):
            return x
        return jax.device_put(x, where.primary)

    return jax.tree.map(one, tree)


def parse_device(device: Any, name: str = "device") -> tuple[str, Optional[int]]:
    """Split a device name ('cpu', 'cuda', 'cuda:1', 'gpu', 'tpu', 'mps') into
    ``(kind, index)``; ``index`` is None when not given.

    Raises
    ------
    ValueError
        If it is not of that form.
    """
    text = str(device).strip().lower()
    kind, colon, number = text.partition(":")
    if not kind.isidentifier() or (colon and not number.isdigit()):
        raise InputError(f"{name} {str(device)!r} is not a device name (cpu, cuda, cuda:1, "
                         "gpu, tpu, mps).")
    return kind, int(number) if colon else None
