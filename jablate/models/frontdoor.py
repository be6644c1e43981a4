"""The front door: everything a caller passes is checked and converted here, once.

Array families (JAX, NumPy, torch) come in and go back out here; inputs are
validated here, with a ``ValueError`` naming the parameter before any model
runs; devices are resolved here. The engine behind it sees only JAX arrays, a
runner and plain values. The core never imports torch: a torch tensor is
recognised by its type's module and handed to ``jablate.bridges.torch``.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy

from jablate._core.dtypes import dtype_kind
from jablate._core.errors import InputError, outside_stacklevel
from jablate._core.placement import parse_device, readable_in_place

# --- array families --------------------------------------------------------------------


def family(x: Any) -> Optional[str]:
    """'jax', 'numpy', 'torch' or None for anything else."""
    if isinstance(x, jax.Array):
        return "jax"
    if isinstance(x, numpy.ndarray):
        return "numpy"
    if type(x).__module__.split(".")[0] == "torch":
        return "torch"
    return None


def is_torch_module(model: Any) -> bool:
    """True when ``model`` is a ``torch.nn.Module`` instance (checked without importing torch)."""
    return not isinstance(model, type) and any(
        c.__module__.startswith("torch.nn") and c.__name__ == "Module" for c in type(model).__mro__)


def torch_bridge() -> Any:
    """The ``jablate.bridges.torch`` module, imported on first use."""
    from jablate.bridges import torch as bridge
    return bridge


def _fits_in_32_bits(x: Any, name: str) -> None:
    """Refuse 64-bit integers (a numpy array or torch tensor) that JAX without its 64-bit
    types would wrap to 32 bits (an extra input of 2**40 run as 0): a ``ValueError``, not a
    silently different number. Only 64-bit integer arrays are read (an int8 one-hot ``X``
    is not scanned)."""
    dtype = numpy.dtype(str(x.dtype).replace("torch.", ""))
    if dtype.kind not in "iu" or dtype.itemsize < 8 or jax.config.jax_enable_x64:
        return
    if not (x.size if isinstance(x, numpy.ndarray) else x.numel()):
        return
    low, high = int(x.min()), int(x.max())
    limits = numpy.iinfo(numpy.int32 if dtype.kind == "i" else numpy.uint32)
    if low < limits.min or high > limits.max:
        raise InputError(f"{name} holds integers that {limits.dtype} cannot hold ({dtype} "
                         f"values from {low} to {high}, and JAX runs without 64-bit types): "
                         "they would wrap; pass smaller integers or floats, or enable 64-bit "
                         "types (JAX_ENABLE_X64=1).")


def to_jax(x: Any, name: str = "X") -> jax.Array:
    """Convert a JAX, NumPy or torch array to a JAX array (zero-copy where possible).

    float64 becomes float32 unless JAX runs with x64 enabled; one-hot values
    are exact in either.

    Raises
    ------
    ValueError
        If ``x`` is not an array of one of those families.
    """
    fam = family(x)
    if fam == "jax":
        return x
    if fam == "numpy":
        if x.dtype.kind not in "biuf":
            raise InputError(f"{name} must hold numbers (bool, int or float); got dtype "
                             f"{x.dtype}.")
        if x.dtype == numpy.float64 and not jax.config.jax_enable_x64:
            x = x.astype(numpy.float32)
        _fits_in_32_bits(x, name)
        return jnp.asarray(x)
    if fam == "torch":
        if str(x.dtype) == "torch.uint64":  # torch itself can take neither its min nor max
            raise InputError(f"{name} is a torch.uint64 tensor, which torch barely supports; "
                             "pass int64, int32 or a float tensor.")
        if str(x.dtype) == "torch.int64":  # the only one that can wrap
            _fits_in_32_bits(x, name)
        return torch_bridge().from_torch(x)
    raise InputError(f"{name} must be a JAX array, a numpy.ndarray or a torch.Tensor; "
                     f"got {type(x).__name__}.")


def to_family(y: Any, fam: str) -> Any:
    """Convert an output (a JAX, NumPy or torch CPU array) to the array family ``fam``.

    torch results land on the CPU, as tangermeme's ``predict`` returns them.
    """
    src = family(y)
    if src == fam:
        return y.cpu() if fam == "torch" else y
    if fam == "torch":
        return torch_bridge().to_torch(y).cpu()
    if src == "torch":
        y = y.detach().cpu().numpy() if fam == "numpy" else torch_bridge().from_torch(y)
    return numpy.asarray(y) if fam == "numpy" else jnp.asarray(y)


def tree_to_family(ys: Any, fam: str) -> Any:
    """Apply :func:`to_family` to an output or a list of outputs."""
    if isinstance(ys, list):
        return [to_family(y, fam) for y in ys]
    return to_family(ys, fam)


def stack(ys: Sequence[Any]) -> Any:
    """Stack arrays of one family along a new leading axis."""
    fam = family(ys[0])
    if fam == "torch":
        return torch_bridge().torch.stack(ys)
    return numpy.stack(ys) if fam == "numpy" else jnp.stack(ys)


def repeat_rows(a: Any, n: int) -> Any:
    """Repeat every row of ``a`` ``n`` times (``repeat_interleave``), in ``a``'s family."""
    fam = family(a)
    if fam == "torch":
        return a.repeat_interleave(n, dim=0)
    if fam == "numpy":
        return numpy.repeat(a, n, axis=0)
    return jnp.repeat(a, n, axis=0)


# --- validation ------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    """An int, a numpy integer, or a 0-d integer array of any family (JAX, numpy, torch:
    ``jnp.int32(10)``, ``torch.tensor(10)``, which tangermeme's slicing takes too)."""
    if isinstance(v, (bool, numpy.bool_)):
        return False
    if isinstance(v, (numbers.Integral, numpy.integer)):
        return True
    if isinstance(v, jax.core.Tracer):  # no value to read: not an integer here
        return False
    return getattr(v, "ndim", None) == 0 and dtype_kind(
        str(getattr(v, "dtype", "")).replace("torch.", "")) in ("i", "u")


def check_int(value: Any, name: str, minimum: Optional[int] = None) -> int:
    """Return ``value`` as an int, or raise ``ValueError`` naming ``name``."""
    if not _is_int(value):
        raise InputError(f"{name} must be an integer; got {value!r}.")
    value = int(value)
    if minimum is not None and value < minimum:
        raise InputError(f"{name} must be at least {minimum}; got {value}.")
    return value


def check_flag(value: Any, name: str) -> bool:
    """Return a flag as a bool: True, False, 1, 0, a 0-d boolean or 0/1 integer array
    (numpy, JAX or torch), or None (False, as tangermeme's ``if flag`` reads it); anything
    else raises ``ValueError`` naming ``name``."""
    if value is None:
        return False
    if getattr(value, "ndim", 0) == 0 and not isinstance(value, (str, bytes)):
        kind = "b" if isinstance(value, (bool, numpy.bool_)) else dtype_kind(
            str(getattr(value, "dtype", type(value).__name__)).replace("torch.", ""))
        if kind == "b" or (kind in ("i", "u") and int(value) in (0, 1)):
            return bool(value)
    raise InputError(f"{name} must be True or False; got {value!r}.")


@jax.jit
def _one_hot_flags_jitted(X):
    binary = jnp.all((X == 0) | (X == 1))
    at_most_one = jnp.all(jnp.sum(X, axis=1) <= 1)
    return binary, at_most_one


#: Bytes of ``X`` the host one-hot check reads at a time: its temporaries stay this small,
#: and blocks that fit in a cache check faster (20,000 × 4 × 2,114 float32: 0.08 s, 0.18 s at once).
ONE_HOT_CHECK_BYTES = 2 ** 20


def _one_hot_flags(X: Any, floats_as: Any = None) -> tuple:
    """Whether ``X`` (a numpy or JAX array) holds only 0 and 1, and whether no column sums
    above 1. A numpy array, or a JAX array on one CPU device, is read in place by numpy,
    :data:`ONE_HOT_CHECK_BYTES` at a time: as fast as a compiled check, with no program to
    compile for each new ``N``; elsewhere (an accelerator, several devices) it computes
    where ``X`` is, without a copy. ``floats_as``: the dtype a float numpy ``X`` is checked
    in (the values the model gets: float64 as float32 without JAX's 64-bit mode)."""
    if not readable_in_place(X):
        return _one_hot_flags_jitted(X)
    binary = at_most_one = True
    for block in _host_blocks(X):
        if floats_as is not None and block.dtype.kind == "f":
            block = block.astype(floats_as, copy=False)
        binary = binary and bool(((block == 0) | (block == 1)).all())
        at_most_one = at_most_one and bool((block.sum(axis=1) <= 1).all())
    return binary, at_most_one


def _host_blocks(X: Any):
    """``X`` read in place by numpy, :data:`ONE_HOT_CHECK_BYTES` of rows at a time."""
    x = numpy.asarray(X)
    rows = max(1, ONE_HOT_CHECK_BYTES // max(1, x[0].nbytes))
    for lo in range(0, len(x), rows):
        yield x[lo:lo + rows]


@jax.jit
def _has_unknown_bases_jitted(X):
    return jnp.any(jnp.sum(X, axis=1) == 0)


def has_unknown_bases(X: Any) -> bool:
    """Whether one-hot ``X`` (N, A, L), a numpy or JAX array, has an all-zero column (an
    unknown base): read in place by numpy where it can be (as :func:`_one_hot_flags`), else
    computed where ``X`` is."""
    if not readable_in_place(X):
        return bool(_has_unknown_bases_jitted(X))
    return any(bool((block.sum(axis=1) == 0).any()) for block in _host_blocks(X))


def check_X(X: jax.Array, name: str = "X", only_warn: bool = False,
            host: Optional[numpy.ndarray] = None, one_hot: bool = True) -> None:
    """Check a JAX array ``X`` of shape (N, A, L) is one-hot (all-zero columns allowed).

    Parameters
    ----------
    X: jax.Array
    host: numpy.ndarray, optional
        ``X``'s values on the host, when the caller has them (a numpy input): they are
        checked there, without a program on the device wherever ``X`` is; floats as ``X``
        holds them (float64 as float32 without JAX's 64-bit mode), integers as given (an
        int64 value that ``X``'s int32 wrapped to 0 or 1 is refused).
    name: str, optional
        The parameter's name for messages. Default 'X'.
    only_warn: bool, optional
        tangermeme's ``only_warn``: values that are not one-hot give a
        ``UserWarning`` instead of the ``ValueError`` (the shape checks still
        raise: nothing can run on another shape). Default False.
    one_hot: bool, optional
        Whether the values must be one-hot; False checks the shape only (``predict``,
        which, as tangermeme's, runs a model on any values). Default True.

    Raises
    ------
    ValueError
        If ``X`` is not 3-D, holds no example (the message says "at least one
        example", as tangermeme's), has no symbols or positions, holds values
        other than 0 and 1, or a column that sums above 1.
    """
    if X.ndim != 3:
        raise InputError(f"{name} must have shape (N, A, L) (3 dimensions); got shape "
                         f"{tuple(X.shape)}.")
    if X.shape[0] == 0:
        raise InputError(f"{name} must hold at least one example; got shape {tuple(X.shape)}.")
    if 0 in X.shape:
        raise InputError(f"{name} must not be empty; got shape {tuple(X.shape)}.")
    if jnp.issubdtype(X.dtype, jnp.complexfloating):
        raise InputError(f"{name} must be a real one-hot array; got dtype {X.dtype}.")
    if not one_hot:
        _check_any_values(X, name, host)
        return
    binary, at_most_one = _one_hot_flags(X, None) if host is None else \
        _one_hot_flags(host, numpy.dtype(X.dtype))
    if not bool(binary):
        not_one_hot(f"{name} must be one-hot encoded: it holds values other than 0 and 1.",
                    only_warn)
    if not bool(at_most_one):
        not_one_hot(f"{name} must be one-hot encoded: a column along axis 1 sums above 1 "
                    "(unknown bases are all-zero columns)." + _swapped(X, name), only_warn)


def _check_any_values(X: jax.Array, name: str, host: Optional[numpy.ndarray]) -> None:
    """For inputs of any values (``predict``; integers that would wrap are refused by
    :func:`to_jax`): an array that is one-hot along its last axis but not along axis 1,
    of a shape that looks like (N, L, A), gets :func:`_swapped`'s hint as a warning (a
    model would fail on it, or run on its transpose; a binary feature array of that shape
    may be meant, so it runs)."""
    hint = _swapped(X, name)
    if hint:
        binary, along_last = _one_hot_flags(jnp.swapaxes(X, 1, 2) if host is None
                                            else host.swapaxes(1, 2))
        if bool(binary) and bool(along_last) and not bool(_one_hot_flags(
                X if host is None else host)[1]):
            warnings.warn(f"{name} is one-hot along its last axis, not along axis 1." + hint,
                          UserWarning, stacklevel=outside_stacklevel())


def _swapped(X, name):
    """A hint when ``X`` looks like (N, L, A): an alphabet-sized last axis, a longer middle."""
    N, middle, last = X.shape
    if last <= 20 < middle or (last in (4, 5) and middle > last):
        return (f" {name} has shape {tuple(X.shape)}: the axes look swapped, (N, L, A) "
                f"instead of (N, A, L); pass {name}.transpose(0, 2, 1) (numpy, JAX) or "
                f"{name}.permute(0, 2, 1) (torch).")
    return ""


def not_one_hot(message: str, only_warn: bool) -> None:
    """Raise ``ValueError(message)``, or with ``only_warn`` (tangermeme's) warn and go on."""
    if only_warn:
        warnings.warn(message + " (only_warn=True: continuing with these values.)",
                      UserWarning, stacklevel=outside_stacklevel())
    else:
        raise InputError(message)


def region(start: Any, end: Any, length: int, min_width: int = 1) -> tuple[int, int]:
    """Normalise ``(start, end)`` against a sequence of ``length`` as tangermeme does.

    ``start`` is inclusive; ``end`` is exclusive when ``>= 0`` and counts from
    the end inclusively when negative (``-1`` is the whole sequence).

    Returns
    -------
    start, end: int
        With ``0 <= start < end <= length``.

    Raises
    ------
    ValueError
        If either is not an integer, ``start < 0``, ``end > length``,
        ``end <= start``, or the region is shorter than ``min_width``.
    """
    start = check_int(start, "start")
    end = check_int(end, "end")
    if end < 0:
        end = length + 1 + end
    if start < 0:
        raise InputError(f"start must be >= 0; got {start}.")
    if end > length:
        raise InputError(f"end must be <= the sequence length {length}; got {end}.")
    if end <= start:
        raise InputError(f"end must come after start; got start={start}, end={end}.")
    if end - start < min_width:
        raise InputError(f"the region [start, end) must be at least {min_width} long for this "
                         f"shuffle; got start={start}, end={end}.")
    return start, end


def annotations(annotations: Any, n_examples: int, length: int,
                min_width: int = 1, as_given: bool = False) -> numpy.ndarray:
    """Check and convert ``annotations`` to an int64 array of shape (k, 3).

    Each row is ``(example_idx, start, end)`` with ``end`` exclusive, or, when negative,
    counting from the end inclusively as in :func:`region` (``-1``: to the end of the
    sequence), as tangermeme's ``ablate_annotations`` passes each row to ``ablate``; the
    rows come back with such ends resolved (``length + 1 + end``), or with ``as_given``
    as they were given (for a foreign shuffle, which tangermeme hands them as given).

    Raises
    ------
    ValueError
        If it is not a (k, 3) integer array, is empty, names an example outside
        ``X``, or holds a region outside the sequence (or ``end <= start``).
    """
    if family(annotations) == "torch":
        annotations = annotations.detach().cpu().numpy()
    a = numpy.asarray(annotations)
    if a.dtype == object or not (a.size == 0 or numpy.issubdtype(a.dtype, numpy.integer)):
        floats = a.size and numpy.issubdtype(a.dtype, numpy.floating)
        whole = floats and numpy.isfinite(a).all() and numpy.all(a == numpy.round(a))
        if whole:
            a = a.astype(numpy.int64)
        elif floats:
            not_whole = ~numpy.isfinite(a) | (a != numpy.round(a))
            bad = tuple(int(i) for i in numpy.argwhere(not_whole)[0])
            cell = f"annotations[{', '.join(map(str, bad))}]" if bad else "annotations"
            raise InputError(f"annotations must be integers (example_idx, start, end); "
                             f"{cell} is {float(a[bad])}.")
        else:
            raise InputError(f"annotations must be integers (example_idx, start, end); got "
                             f"dtype {a.dtype}.")
    if a.ndim != 2 or a.shape[1] != 3:
        raise InputError(f"annotations must have shape (k, 3): rows of (example_idx, start, "
                         f"end); got shape {a.shape}.")
    if a.shape[0] == 0:
        raise InputError("annotations must hold at least one annotation; got none.")
    if a.dtype.kind == "u" and a.size and int(a.max()) > numpy.iinfo(numpy.int64).max:
        raise InputError(f"annotations hold {int(a.max())}, beyond any sequence.")
    given = a.astype(numpy.int64)
    a = given.copy()  # the caller's array is left as it was
    a[:, 2] = numpy.where(a[:, 2] < 0, length + 1 + a[:, 2], a[:, 2])
    idx, starts, ends = a[:, 0], a[:, 1], a[:, 2]
    bad = numpy.flatnonzero((idx < 0) | (idx >= n_examples))
    if bad.size:
        raise InputError(f"annotations[{bad[0]}] names example {idx[bad[0]]}, outside X with "
                         f"{n_examples} sequences.")
    bad = numpy.flatnonzero((starts < 0) | (ends > length) | (ends - starts < min_width))
    if bad.size:
        i = bad[0]
        shown = f"[{starts[i]}, {given[i, 2]})" + (f" (end {ends[i]})" if given[i, 2] < 0 else "")
        raise InputError(f"annotations[{i}] has region {shown}, which must satisfy 0 <= "
                         f"start, start + {min_width} <= end <= {length} (a negative end "
                         "counts back from the sequence's end: -1 is the end itself).")
    return given if as_given else a


def args_batch(args: Any, n_examples: int) -> tuple:
    """Check extra model inputs: a tuple/list of arrays with ``n_examples`` rows each.

    Returns
    -------
    args: tuple
        Empty for None.

    Raises
    ------
    ValueError
        If ``args`` is not a tuple or list, or ``args[i]`` has another batch size.
    """
    if args is None:
        return ()
    if not isinstance(args, (tuple, list)):
        raise InputError(f"args must be a tuple or list of arrays; got {type(args).__name__}.")
    for i, a in enumerate(args):
        shape = getattr(a, "shape", None)
        if shape is None or len(shape) == 0 or shape[0] != n_examples:
            got = None if shape is None else tuple(shape)
            raise InputError(f"args[{i}] must have the batch size of X ({n_examples}) as its "
                             f"first dimension; got shape {got}.")
    return tuple(args)


# --- inputs ------------------------------------------------------------------------------


#: torch's integer and bool dtypes, by name (tangermeme accepts every one of them as ``X``;
#: 64-bit ones are checked by :func:`_fits_in_32_bits`).
_TORCH_INTEGERS = frozenset(f"torch.{name}" for name in (
    "bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64"))


@dataclass(frozen=True)
class Inputs:
    """``X`` and ``args`` as JAX arrays, with what is needed to answer in the caller's family."""

    X: jax.Array
    args: tuple
    family: str
    dtype: Any  # X's dtype in its own family


def inputs(X: Any, args: Any = None, only_warn: bool = False, one_hot: bool = True) -> Inputs:
    """Validate and convert ``X`` (N, A, L) and ``args`` to JAX arrays.

    Parameters
    ----------
    X: jax.Array, numpy.ndarray or torch.Tensor, shape=(N, A, L)
    args: tuple or list of arrays with N rows, or None
    only_warn: bool, optional
        Warn rather than raise when ``X`` is not one-hot (see :func:`check_X`).
        Default False.
    one_hot: bool, optional
        False accepts any real values of that shape (see :func:`check_X`). Default True.

    Raises
    ------
    ValueError
        For anything :func:`check_X` or :func:`args_batch` rejects, and for
        ``args`` on another torch device than ``X``.
    """
    fam = family(X)
    if fam == "torch":
        if not (X.is_floating_point() or str(X.dtype) in _TORCH_INTEGERS):
            raise InputError(f"X must be a float, integer or bool tensor; got {X.dtype}.")
    Xj = to_jax(X, "X")
    check_X(Xj, only_warn=only_warn, host=X if fam == "numpy" else None, one_hot=one_hot)
    args = args_batch(args, Xj.shape[0])
    if fam == "torch":
        for i, a in enumerate(args):
            if family(a) == "torch" and a.device != X.device:
                raise InputError(f"args[{i}] and X must be on the same device; got args[{i}] "
                                 f"on {a.device} and X on {X.device}.")
    argsj = tuple(to_jax(a, f"args[{i}]") for i, a in enumerate(args))
    return Inputs(_committed(Xj), tuple(_committed(a) for a in argsj), fam, X.dtype)


def _committed(x):
    """Commit ``x`` to the device it is on (no copy). DLPack imports arrive committed and
    ``jnp.asarray`` ones do not; compiled programs are cached apart for the two, so making
    every input committed lets NumPy, JAX and torch callers share one program."""
    return jax.device_put(x, next(iter(x.devices()))) if len(x.devices()) == 1 else x


#: How to turn on JAX's 64-bit types (without them JAX computes float64 requests in float32).
X64_HINT = ('turn 64-bit types on before any JAX work: jax.config.update("jax_enable_x64", '
             'True), or set JAX_ENABLE_X64=1 in the environment')


def jax_dtype(dtype: Any, name: str = "dtype") -> Any:
    """A JAX input dtype from tangermeme's ``dtype``.

    Accepts every spelling ``jnp.dtype`` accepts (``'float16'``, ``numpy.float32``,
    ``jnp.bfloat16``, ``numpy.dtype('float64')``, ...), torch dtypes
    (``torch.float16``) and their names (``'torch.float16'``). Python's ``float``,
    ``int`` and ``complex`` mean JAX's default types, as in ``jnp.zeros(3, float)``.

    Returns
    -------
    dtype: numpy.dtype or None
        None for None.

    Raises
    ------
    ValueError
        If it is not a numeric dtype JAX knows, or a 64-bit one (``float64``,
        ``int64``, ...) while JAX runs without 64-bit types (``jax_enable_x64``
        off), where JAX would silently compute in 32 bits instead.
    """
    if dtype is None:
        return None
    spelling = dtype
    if type(dtype).__module__.split(".")[0] == "torch":  # a torch.dtype, without torch
        dtype = str(dtype)
    if isinstance(dtype, str) and dtype.startswith("torch."):
        dtype = dtype[len("torch."):]
    try:
        resolved = jnp.dtype(dtype)
    except (TypeError, ValueError):
        raise InputError(f"{name} {spelling!r} is not a dtype JAX knows (for example "
                         "'float32', jnp.bfloat16, numpy.float16 or torch.float16).") from None
    if not (jnp.issubdtype(resolved, jnp.number) or resolved == numpy.bool_):
        raise InputError(f"{name} {spelling!r} is not a numeric dtype; got {resolved}.")
    if any(dtype is t for t in (float, int, complex)):  # Python's types: JAX's defaults
        return jax.dtypes.canonicalize_dtype(resolved)
    if jax.dtypes.canonicalize_dtype(resolved) != resolved:
        raise InputError(f"{name} {spelling!r} asks for {resolved}, but JAX runs without "
                         f"64-bit types and would compute in "
                         f"{jax.dtypes.canonicalize_dtype(resolved)} instead: {X64_HINT}; "
                         f"or pass {name}=None or 'float32'.")
    return resolved


# --- devices -----------------------------------------------------------------------------

_PLATFORM_ALIASES = {"cuda": "gpu", "rocm": "gpu"}


def resolve_device(device: Any, framework: str = "jax", name: str = "device") -> Any:
    """The device ``device`` names, for the framework the model runs in.

    The one device resolver of jablate: the API (``device=``), the torch
    bridge and the command line (``--device``) all use it.

    Parameters
    ----------
    device: str, jax.Device, torch.device or None
        ``None`` gives None (the framework's default: JAX's default device;
        for torch, CUDA when available, as tangermeme).
    framework: 'jax' or 'torch'
        Which framework's devices to look among.
    name: str
        The parameter's name for error messages.

    Returns
    -------
    device: jax.Device, torch.device or None

    Raises
    ------
    ValueError
        If the name is malformed or the framework sees no such device.
    """
    if device is None:
        return None
    if isinstance(device, jax.Device):
        if framework == "jax":
            return device
        device = f"{device.platform}:{device.id}"
    if framework == "torch":
        return torch_bridge().torch_device(*parse_device(device, name), name=name)
    kind, index = parse_device(device, name)
    platform = _PLATFORM_ALIASES.get(kind, kind)
    try:
        devices = jax.devices(platform)
    except RuntimeError:
        devices = []
    if not devices:
        available = sorted({d.platform for d in jax.devices()})
        raise InputError(f"{name} {str(device)!r} is not available to JAX: it sees no "
                         f"{platform} device (available: {', '.join(available)}).")
    index = 0 if index is None else index
    if index >= len(devices):
        raise InputError(f"{name} {str(device)!r} was requested but JAX sees only "
                         f"{len(devices)} {platform} device(s).")
    return devices[index]
