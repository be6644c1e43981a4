"""Input checks: a ``ValueError`` naming the parameter, before any model runs."""

import numbers

import jax
import jax.numpy as jnp
import numpy


def _is_int(v):
    return isinstance(v, (numbers.Integral, numpy.integer)) and not isinstance(v, bool)


def check_int(value, name, minimum=None):
    """Return ``value`` as an int, or raise ``ValueError`` naming ``name``."""
    if not _is_int(value):
        raise ValueError(f"{name} must be an integer; got {value!r}.")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {value}.")
    return value


@jax.jit
def _one_hot_flags(X):
    binary = jnp.all((X == 0) | (X == 1))
    at_most_one = jnp.all(jnp.sum(X, axis=1) <= 1)
    return binary, at_most_one


def check_X(X, name="X"):
    """Check a JAX array ``X`` of shape (N, A, L) is one-hot (all-zero columns allowed).

    Raises
    ------
    ValueError
        If ``X`` is not 3-D, is empty, or holds values other than 0 and 1 or a
        column that sums above 1.
    """
    if X.ndim != 3:
        raise ValueError(f"{name} must have shape (N, A, L) (3 dimensions); got shape "
                         f"{tuple(X.shape)}.")
    if 0 in X.shape:
        raise ValueError(f"{name} must not be empty; got shape {tuple(X.shape)}.")
    if jnp.issubdtype(X.dtype, jnp.complexfloating):
        raise ValueError(f"{name} must be a real one-hot array; got dtype {X.dtype}.")
    binary, at_most_one = _one_hot_flags(X)
    if not bool(binary):
        raise ValueError(f"{name} must be one-hot encoded: it holds values other than 0 and 1.")
    if not bool(at_most_one):
        raise ValueError(f"{name} must be one-hot encoded: a column along axis 1 sums above 1 "
                         "(unknown bases are all-zero columns).")


def region(start, end, length, min_width=1):
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
        raise ValueError(f"start must be >= 0; got {start}.")
    if end > length:
        raise ValueError(f"end must be <= the sequence length {length}; got {end}.")
    if end <= start:
        raise ValueError(f"end must come after start; got start={start}, end={end}.")
    if end - start < min_width:
        raise ValueError(f"the region [start, end) must be at least {min_width} long for this "
                         f"shuffle; got start={start}, end={end}.")
    return start, end


def annotations(annotations, n_examples, length, min_width=1):
    """Check and convert ``annotations`` to an int array of shape (k, 3).

    Each row is ``(example_idx, start, end)`` with ``end`` exclusive.

    Raises
    ------
    ValueError
        If it is not a (k, 3) integer array, is empty, names an example outside
        ``X``, or holds a region outside the sequence (or ``end <= start``).
    """
    from .arrays import family
    fam = family(annotations)
    if fam == "torch":
        annotations = annotations.detach().cpu().numpy()
    a = numpy.asarray(annotations)
    if a.dtype == object or not (a.size == 0 or numpy.issubdtype(a.dtype, numpy.integer)):
        if a.size and numpy.issubdtype(a.dtype, numpy.floating) and numpy.all(a == numpy.round(a)):
            a = a.astype(numpy.int64)
        else:
            raise ValueError(f"annotations must be integers (example_idx, start, end); got "
                             f"dtype {a.dtype}.")
    if a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"annotations must have shape (k, 3): rows of (example_idx, start, "
                         f"end); got shape {a.shape}.")
    if a.shape[0] == 0:
        raise ValueError("annotations must hold at least one annotation; got none.")
    idx, starts, ends = a[:, 0], a[:, 1], a[:, 2]
    bad = numpy.flatnonzero((idx < 0) | (idx >= n_examples))
    if bad.size:
        raise ValueError(f"annotations[{bad[0]}] names example {idx[bad[0]]}, outside X with "
                         f"{n_examples} sequences.")
    bad = numpy.flatnonzero((starts < 0) | (ends > length) | (ends - starts < min_width))
    if bad.size:
        i = bad[0]
        raise ValueError(f"annotations[{i}] has region [{starts[i]}, {ends[i]}), which must "
                         f"satisfy 0 <= start, start + {min_width} <= end <= {length}.")
    return a.astype(numpy.int64)


def args_batch(args, n_examples):
    """Check extra model inputs: a tuple/list of arrays with ``n_examples`` rows each.

    Raises
    ------
    ValueError
        If ``args`` is not a tuple or list, or ``args[i]`` has another batch size.
    """
    if args is None:
        return None
    if not isinstance(args, (tuple, list)):
        raise ValueError(f"args must be a tuple or list of arrays; got {type(args).__name__}.")
    for i, a in enumerate(args):
        shape = getattr(a, "shape", None)
        if shape is None or len(shape) == 0 or shape[0] != n_examples:
            raise ValueError(f"args[{i}] must have the batch size of X ({n_examples}) as its "
                             f"first dimension; got shape {None if shape is None else tuple(shape)}.")
    return tuple(args)
