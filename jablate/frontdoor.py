"""Normalising what callers pass (arrays of any family, models, devices) for the engine."""

import contextlib
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from . import validate
from .arrays import family, to_jax
from .runner import JaxRunner, _as_tuple, resolve_jax_device, runner_for


@dataclass
class Inputs:
    """``X`` and ``args`` as JAX arrays, with what is needed to answer in the caller's family."""

    X: jax.Array
    args: tuple
    family: str
    dtype: object  # X's dtype in its own family


def inputs(X, args=None):
    """Validate and convert ``X`` (N, A, L) and ``args`` to JAX arrays.

    Raises
    ------
    ValueError
        For anything :func:`validate.check_X` or :func:`validate.args_batch`
        rejects, and for ``args`` on another torch device than ``X``.
    """
    fam = family(X)
    if fam == "torch":
        _check_torch_X(X)
    Xj = to_jax(X, "X")
    validate.check_X(Xj)
    args = validate.args_batch(args, Xj.shape[0]) or ()
    if fam == "torch":
        for i, a in enumerate(args):
            if family(a) == "torch" and a.device != X.device:
                raise ValueError(f"args[{i}] and X must be on the same device; got args[{i}] "
                                 f"on {a.device} and X on {X.device}.")
    argsj = tuple(_committed(to_jax(a, f"args[{i}]")) for i, a in enumerate(args))
    return Inputs(_committed(Xj), argsj, fam, X.dtype)


def _committed(x):
    """Commit ``x`` to the device it is on (no copy). DLPack imports arrive committed and
    ``jnp.asarray`` ones do not; compiled programs are cached apart for the two, so making
    every input committed lets NumPy, JAX and torch callers share one program."""
    return jax.device_put(x, next(iter(x.devices()))) if len(x.devices()) == 1 else x


def place(inp, runner, device):
    """Put ``X`` and ``args`` on ``device`` for a JAX runner (torch runners move batches)."""
    if device is None or not isinstance(runner, (JaxRunner, _PostRunner)):
        return inp
    dev = resolve_jax_device(device if isinstance(device, (str, jax.Device)) else str(device))
    return Inputs(jax.device_put(inp.X, dev), tuple(jax.device_put(a, dev) for a in inp.args),
                  inp.family, inp.dtype)


def _check_torch_X(X):
    kind = str(X.dtype)
    if not (X.is_floating_point() or kind in ("torch.int8", "torch.uint8", "torch.bool")):
        raise ValueError(f"X must be a float, int8, uint8 or bool tensor; got {X.dtype}.")


_post_runners = {}


class _PostRunner:
    """A JAX runner followed by tangermeme's ``predict(func=...)`` post-processing."""

    jittable = True

    def __init__(self, inner, post):
        self.inner, self.post, self.multi = inner, post, None

    @property
    def params(self):
        return self.inner.params

    def apply(self, params, x, *args):
        ys = self.inner.apply(params, x, *args)
        ys, self.multi = _as_tuple(self.post(ys if self.inner.multi else ys[0]))
        return ys


def model_runner(model, example, post=None, backend=None):
    """The runner for ``model``, with ``post`` applied to its raw outputs."""
    runner = runner_for(model, backend=backend, example=example)
    if post is None or not isinstance(runner, JaxRunner):
        return runner
    key = (id(runner), post)
    entry = _post_runners.get(key)
    if entry is None or entry[0] is not runner:
        entry = _post_runners[key] = (runner, _PostRunner(runner, post))
    return entry[1]


def session(runner, device=None, dtype=None, post=None):
    """Context in which a torch runner holds its device, dtype and post-processing."""
    if isinstance(runner, (JaxRunner, _PostRunner)):
        return contextlib.nullcontext()
    return runner.session(device=device, dtype=dtype, func=post)


def jax_dtype(dtype, runner):
    """A JAX input dtype for JAX models from tangermeme's ``dtype`` (str, numpy/JAX dtype)."""
    if dtype is None or not isinstance(runner, (JaxRunner, _PostRunner)):
        return None
    name = str(dtype).replace("torch.", "")
    try:
        return jnp.dtype(name)
    except TypeError:
        raise ValueError(f"dtype {dtype!r} is not a dtype JAX knows.") from None
