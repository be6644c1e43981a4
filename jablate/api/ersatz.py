"""Batch shuffles with tangermeme's signatures, built on :mod:`jablate.functional`."""

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy

from jablate import functional
from jablate._core import random as jrandom
from jablate._core.behaviour import KeyFirstShuffle, PartialFallbackWarning, carries, describe, find
from jablate._core.errors import InputError, outside_stacklevel
from jablate._core.placement import host_device, readable_in_place
from jablate.engine import stream as engine
from jablate.models.frontdoor import (
    check_flag,
    check_int,
    family,
    has_unknown_bases,
    inputs,
    region,
    to_family,
)


@dataclass(frozen=True)
class ShuffleMethod:
    """One of jablate's own shuffles, as the engine sees it.

    Attributes
    ----------
    name: str
        For messages.
    key_fn: callable
        The key-first single-sequence shuffle ``key_fn(key, x, start, end)`` of
        :mod:`jablate.functional`.
    min_width: int
        The shortest region it accepts.
    tangermeme_permutations: bool
        Whether an int or RandomState ``random_state`` draws tangermeme's exact
        permutations (True for the mono shuffle) rather than seeding a key.
    count_arrangements: callable
        ``count_arrangements(X, seq_idx, starts, ends) -> (G,) float`` — the
        number of distinct sequences the shuffle can give each region
        (1 means it cannot change the region).
    honours: tuple of str
        Keywords a ``functools.partial`` of the shuffle may bind and still run on
        the fast path (they change nothing there). Any other bound argument sends
        the partial to the materialised path (see :func:`method_of`).
    """

    name: str
    key_fn: Callable
    min_width: int
    tangermeme_permutations: bool
    count_arrangements: Callable
    honours: tuple = ()


def _log_factorials(n):
    return numpy.concatenate([[0.0], numpy.cumsum(numpy.log(numpy.arange(1, n + 1)))])


@jax.jit
def _symbol_counts_in(x, starts, ends, offsets):
    """Symbol counts of regions from windows ``x`` (G, A, W) around them, window ``g``
    starting at position ``offsets[g]`` of its sequence."""
    def one(xw, s, e, o):
        pos = o + jnp.arange(xw.shape[-1])
        inside = (pos >= s) & (pos < e)
        sym = functional.symbols(xw)
        return jnp.sum((sym[None, :] == jnp.arange(x.shape[1] + 1)[:, None]) & inside, axis=1)
    return jax.vmap(one)(x, starts, ends, offsets)


@jax.jit
def _dinucleotide_counts_in(x, starts, ends, offsets):
    """Dinucleotide counts and last symbols of regions from windows ``x`` around them (as
    :func:`_symbol_counts_in`)."""
    return jax.vmap(lambda xw, s, e, o: functional.dinucleotide_counts(xw, s - o, e - o))(
        x, starts, ends, offsets)


def _windows(X: jax.Array, seq_idx: numpy.ndarray, offsets: numpy.ndarray,
             width: int) -> Any:
    """Positions ``[offsets[g], offsets[g] + width)`` of sequences ``seq_idx[g]`` of ``X``
    (G, A, width): cut by numpy where ``X`` is on one CPU device (nothing compiled for each
    new ``N``), else gathered where ``X`` is (a JAX array)."""
    if readable_in_place(X):
        if len(offsets) and (offsets == offsets[0]).all():  # one region for all: whole rows
            return numpy.asarray(X)[seq_idx, :, int(offsets[0]):int(offsets[0]) + width]
        at = offsets[:, None] + numpy.arange(width)
        return numpy.asarray(X)[seq_idx[:, None], :, at].transpose(0, 2, 1)
    return engine.batch_windows(X, (seq_idx, offsets), width)


def _window_width(X: Any, starts: Any, ends: Any) -> int:
    """The width of the windows that region counts read: the widest region's, rounded up to
    a power of two (few shapes), at most ``L``."""
    widest = int(numpy.max(numpy.asarray(ends) - numpy.asarray(starts)))
    return min(X.shape[2], engine.power_of_two_holding(widest))


def _widths(counts_in):
    """``counts_in`` over windows as wide as the widest region, rounded up to a power of
    two (few shapes; the counts' program does not depend on ``X``'s number of sequences),
    computed on the host backend (:func:`counted_on_host` put ``X`` there)."""
    def counts(X, seq_idx, starts, ends):
        width = _window_width(X, starts, ends)
        offsets = engine.window_start(numpy.asarray(starts), X.shape[2], width)
        with jax.default_device(host_device()):  # where numpy windows compute
            return counts_in(_windows(X, seq_idx, offsets, width), starts, ends, offsets)
    return counts


_symbol_counts = _widths(_symbol_counts_in)
_dinucleotide_counts = _widths(_dinucleotide_counts_in)


def counted_on_host(X: Any) -> jax.Array:
    """``X`` where region counts compute: on JAX's CPU backend.

    Parameters
    ----------
    X : array-like or jax.Array, shape (N, A, L)

    Returns
    -------
    X : jax.Array
        ``X`` itself when it is a JAX array on CPU devices, or one spread over devices of
        several processes (it cannot be copied here); otherwise a copy on
        :func:`jablate._core.placement.host_device`.
    """
    if isinstance(X, jax.Array):
        if all(d.platform == "cpu" for d in X.devices()) or not X.is_fully_addressable:
            return X
        return jax.device_put(X, host_device())
    return jax.device_put(numpy.asarray(X), host_device())


def _chunked(fn, X, seq_idx, starts, ends, budget=64 * 2**20):
    """``fn`` over groups in chunks of one shape; host (numpy) arrays of the results.

    It computes on JAX's CPU backend, so that counting never queues behind an
    accelerator's work, nor waits for it: a host array (numpy) and a JAX array on the CPU
    are counted as they are; a JAX array on an accelerator is copied to the host first
    (the copy waits for ``X`` alone, where a count queued on the accelerator, read back,
    would wait for all the work queued there before it). A chunk is a power of two of at
    most 512 groups, and small enough that its gathered windows (and the per-position
    work on them) stay near ``budget`` bytes.
    """
    X = counted_on_host(X)
    G = len(seq_idx)
    per_group = 16 * (X.shape[1] + 1) * _window_width(X, starts, ends)
    chunk = 1 << max(0, min(9, (G - 1).bit_length(), (budget // per_group).bit_length() - 1))
    outs = []
    for lo in range(0, G, chunk):
        take = engine.padded_rows(lo, chunk, G)
        out = fn(X, *(numpy.asarray(a)[take].astype(numpy.int32)  # host ints: they go
                      for a in (seq_idx, starts, ends)))            # where X is
        valid = min(chunk, G - lo)
        outs.append(jax.tree.map(lambda a, valid=valid: numpy.asarray(a)[:valid], out))
    return jax.tree.map(lambda *a: numpy.concatenate(a), *outs)


def count_mono_arrangements(X: jax.Array, seq_idx: Any, starts: Any, ends: Any) -> numpy.ndarray:
    """Distinct arrangements of each region's symbols (unknown bases a symbol of their own):
    ``W! / prod_a c_a!``, in float64 (``inf`` when it overflows)."""
    counts = _chunked(_symbol_counts, X, seq_idx, starts, ends).astype(numpy.int64)
    lf = _log_factorials(int(counts.sum(1).max()))
    log = lf[counts.sum(1)] - lf[counts].sum(1)
    with numpy.errstate(over="ignore"):
        return numpy.round(numpy.exp(log))


def count_dinucleotide_arrangements(X: jax.Array, seq_idx: Any, starts: Any,
                                    ends: Any) -> numpy.ndarray:
    """Distinct sequences with each region's first and last symbols and dinucleotide
    counts, in float64 (``inf`` when it overflows).

    By the BEST theorem for Eulerian trails ending at the last symbol ``t``:
    ``tau_t * prod_{v != t, r_v > 0} (r_v - 1)! * r_t! / prod_{u,v} E[u, v]!``, with
    ``r_v`` the out-degree of symbol ``v`` and ``tau_t`` the number of
    arborescences into ``t`` (the matrix-tree theorem on the edge counts).
    """
    E, last = _chunked(_dinucleotide_counts, X, seq_idx, starts, ends)
    E = E.astype(numpy.int64)
    G, S, _ = E.shape
    lf = _log_factorials(int(E.sum((1, 2)).max()) + 1)
    r = E.sum(2)
    is_root = numpy.arange(S)[None, :] == last[:, None]
    W = numpy.where(numpy.eye(S, dtype=bool)[None], 0, E).astype(numpy.float64)
    W = numpy.where((r[:, :, None] == 0) & ~is_root[:, :, None], is_root[:, None, :], W)
    lap = numpy.eye(S)[None] * W.sum(2)[:, :, None] - W
    lap = numpy.where(is_root[:, :, None] | is_root[:, None, :], numpy.eye(S)[None], lap)
    tau = numpy.linalg.det(lap)
    exits = numpy.where(is_root, r, numpy.maximum(r - 1, 0))
    log = numpy.log(numpy.maximum(tau, 1e-300)) + lf[exits].sum(1) - lf[E].sum((1, 2))
    with numpy.errstate(over="ignore"):
        return numpy.where(tau < 0.5, 0.0, numpy.round(numpy.exp(log)))


def _method(key_fn: Callable, tangermeme_permutations: bool, count_arrangements: Callable,
            honours: tuple = ()) -> ShuffleMethod:
    """The batch method over the key-first shuffle ``key_fn`` (its name and width)."""
    key = find(key_fn).value
    return ShuffleMethod(key.name, key.key_fn, key.min_width, tangermeme_permutations,
                         count_arrangements, honours)


MONO = _method(functional.shuffle, True, count_mono_arrangements)
DINUCLEOTIDE = _method(functional.dinucleotide_shuffle, False, count_dinucleotide_arrangements,
                       honours=("verbose",))

#: The keywords ``ablate`` passes a ``shuffle_fn`` itself; a value bound by a
#: ``functools.partial`` would be overridden by them.
CALL_KEYWORDS = ("start", "end", "n", "random_state")


def _unhonoured(found: Any, honours: tuple) -> list:
    return ([f"positional argument {i + 1}" for i in range(len(found.args))]
            + [k for k in found.keywords if k not in honours])


def method_of(fn: Any, role: str = "shuffle_fn", refuse: bool = False
              ) -> Optional[ShuffleMethod]:
    """The :class:`ShuffleMethod` the engine runs for ``fn``, or None to call ``fn`` itself.

    The one lookup of a batch shuffle: ``fn`` is jablate's ``shuffle`` or
    ``dinucleotide_shuffle`` (by the value it carries, not by identity), or a
    ``functools.partial`` of one. A partial binding only keywords in
    ``method.honours`` runs on the fast path. One binding anything else (positional
    arguments; ``start``, ``end``, ``n`` or ``random_state``, which the engine passes
    itself and would override; any other keyword) is called as it is: None, with a
    :class:`~jablate._core.behaviour.PartialFallbackWarning` naming the arguments (or, with
    ``refuse``, an ``InputError``). The warning names the user's line (the first frame
    outside jablate).

    Parameters
    ----------
    fn: any
    role: str, optional
        The parameter's name, for messages. Default 'shuffle_fn'.
    refuse: bool, optional
        Raise rather than fall back (where no materialised path exists).

    Returns
    -------
    method: ShuffleMethod or None
        None for a foreign function (or a partial that falls back).
    """
    found = find(fn)
    if found is None or not isinstance(found.value, ShuffleMethod):
        return None
    method = found.value
    unhonoured = _unhonoured(found, method.honours)
    if not unhonoured:
        return method
    overridden = [k for k in unhonoured if k in CALL_KEYWORDS] if role == "shuffle_fn" else []
    message = (f"{role}={describe(fn, found)} binds {', '.join(unhonoured)}; the fast path "
               f"honours {' and '.join(method.honours) or 'no bound argument'}"
               + (f" ({', '.join(overridden)}: ablate passes start, end, n and random_state "
                  "itself, which override a bound value)" if overridden else ""))
    if refuse:
        raise InputError(f"{message}; pass jablate.{method.name} itself.")
    warnings.warn(f"{message}, so the partial is called as it is, on the materialised "
                  "path (tangermeme's), not the fast path.", PartialFallbackWarning,
                  stacklevel=outside_stacklevel())
    return None


def key_shuffle_of(fn: Any, role: str = "references") -> Optional[KeyFirstShuffle]:
    """The key-first shuffle the engine draws with for ``fn``, or None to call ``fn`` itself.

    The one lookup of a shuffle drawn per sequence inside compiled steps (as
    ``deep_lift_shap``'s ``references``): jablate's batch shuffles (their key-first
    core; a ``functools.partial`` of one as :func:`method_of` says, falling back with a
    warning) and the key-first shuffles of :mod:`jablate.functional` themselves (a
    partial of one binding anything is refused: jablate calls them
    ``key_fn(key, x, start, end)`` and has no other path for them).

    Raises
    ------
    ValueError
        ``InputError`` for a partial of a key-first shuffle that binds arguments.
    """
    found = find(fn)
    if found is None:
        return None
    if isinstance(found.value, KeyFirstShuffle):
        unhonoured = _unhonoured(found, ())
        if unhonoured:
            raise InputError(f"{role}={describe(fn, found)} binds {', '.join(unhonoured)}; "
                             "jablate calls its key-first shuffles as key_fn(key, x, start, "
                             "end) and cannot honour bound arguments: pass "
                             f"jablate.functional.{found.value.name} itself.")
        return found.value
    method = method_of(fn, role)
    if method is None:
        return None
    return KeyFirstShuffle(method.name, method.key_fn, method.min_width)


class UnchangedRegionWarning(UserWarning):
    """Some regions have a single arrangement under the shuffle: ablating them measures nothing."""


def warn_unchangeable(method: ShuffleMethod, X: jax.Array, seq_idx: Any, starts: Any, ends: Any
                      ) -> int:
    """Warn when the shuffle cannot change some regions; return how many.

    A homopolymer under the mono shuffle, or a region whose dinucleotide counts
    allow only one sequence (``AAAA``, ``ACAC``) under the dinucleotide shuffle,
    comes back unchanged: its ``y_after`` equals ``y_before``. The warning names the
    first frame outside jablate (the user's call).
    """
    count = method.count_arrangements(X, seq_idx, starts, ends)
    which = numpy.flatnonzero(numpy.asarray(count) <= 1)
    if len(which):
        shown = ", ".join(map(str, which[:5])) + (", ..." if len(which) > 5 else "")
        warnings.warn(
            f"{len(which)} of {len(count)} regions cannot be changed by {method.name} "
            f"(0-based, in the order given: {shown}): each has a single arrangement (e.g. "
            "a homopolymer, or a short tandem repeat under the dinucleotide shuffle), so "
            "every shuffle of it equals the original and ablating it measures nothing.",
            UnchangedRegionWarning, stacklevel=outside_stacklevel())
    return len(which)


def plan_shuffles(method: ShuffleMethod, random_state: Any, seq_idx: Any, starts: Any, ends: Any,
                  n: int, per_annotation: bool = False) -> tuple:
    """Plan ``n`` shuffles for each of ``G`` groups (a sequence, or an annotation).

    Item ``g * n + i`` is shuffle ``i`` of group ``g``: sequence ``seq_idx[g]``,
    region ``[starts[g], ends[g])``.

    With ``method.tangermeme_permutations`` an int or RandomState draws
    tangermeme's permutations (for annotations, an int re-seeds per annotation,
    a RandomState is shared, as tangermeme's loop does). Otherwise the stream is
    a JAX key: shuffle ``i`` of sequence ``j`` from ``fold_in(fold_in(key, j),
    i)``; for annotations ``j = 0`` as in ``ablate(X[idx:idx+1])``, except that
    None gives every annotation fresh randomness and a RandomState a seed of its own.

    Returns
    -------
    draw: engine.KeyShuffle or engine.PermutationShuffle
    table: jax.Array
        Its keys (K,) or permutations (P, W).
    plan: engine.Plan with G * n items
    """
    seq_idx, starts, ends = (numpy.asarray(a, numpy.int64) for a in (seq_idx, starts, ends))
    G = len(seq_idx)
    g = numpy.repeat(numpy.arange(G), n)
    i = numpy.tile(numpy.arange(n), G)
    item = dict(seq_idx=seq_idx[g], starts=starts[g], ends=ends[g])
    rs = jrandom.tangermeme_stream(random_state) if method.tangermeme_permutations else None
    if rs is not None:
        widths = ends - starts
        if not per_annotation:
            perms = jrandom.tangermeme_permutations(rs, n, int(widths[0]))
            return (engine.PermutationShuffle(), jnp.asarray(perms),
                    engine.Plan.build(draws=i, **item))
        pad = engine.power_of_two_holding(int(widths.max()))  # fewer table shapes, compiles
        if isinstance(random_state, numpy.random.RandomState):  # one shared stream, in order
            table = numpy.concatenate([jrandom.tangermeme_permutations(rs, n, int(w), pad)
                                       for w in widths])
            rows = g * n + i
        else:  # an int: every annotation starts from RandomState(seed) again, so one block
            # of n permutations per distinct width serves every annotation of that width
            uniq, block = numpy.unique(widths, return_inverse=True)
            table = numpy.concatenate([jrandom.seeded_permutations(
                int(random_state), n, int(w), pad) for w in uniq])
            rows = block[g] * n + i
        table = numpy.pad(table, ((0, engine.power_of_two_holding(len(table)) - len(table)),
                                  (0, 0)), mode="edge")
        return (engine.PermutationShuffle(), jnp.asarray(table),
                engine.Plan.build(draws=rows, **item))
    zeros = numpy.zeros_like(g)
    if not per_annotation:
        key, ids = jrandom.key_from(random_state), (zeros, g, i)
    elif isinstance(random_state, numpy.random.RandomState):
        key = jnp.stack([jrandom.key_from(random_state) for _ in range(G)])
        ids = (g, zeros, i)
    elif random_state is None:
        key, ids = jrandom.key_from(None), (zeros, g, i)
    else:
        key, ids = jrandom.key_from(random_state), (zeros, zeros, i)
    return (engine.KeyShuffle(method.key_fn), engine.key_table(key),
            engine.Plan.build(draws=numpy.stack(ids, 1), **item))


def _device(X):
    """A torch ``X``'s device (None for other families)."""
    return X.device if family(X) == "torch" else None


def _shuffle(method, inp, start, end, n, random_state, seeds=None, verbose=False,
             device=None):
    """``n`` shuffles of each sequence of ``inp`` (:func:`inputs`); ``seeds``: an int seed
    per sequence (each sequence shuffled as it would be alone with its seed), instead of
    ``random_state``. ``verbose``: tangermeme's warning when a position of a region is the
    same in all of its sequence's shuffles. ``device``: a torch X's device, where a torch
    result goes."""
    n = check_int(n, "n", minimum=1)
    start, end = region(start, end, inp.X.shape[-1], min_width=method.min_width)
    warn_unchangeable(method, inp.X, numpy.arange(inp.X.shape[0]), [start] * inp.X.shape[0],
                      [end] * inp.X.shape[0])
    if seeds is None:
        draw, table, _ = plan_shuffles(method, random_state, [0], [start], [end], n)
    else:
        draw = engine.KeyShuffle(method.key_fn)
        table = jnp.stack([jrandom.key_from(int(s)) for s in seeds])
    Y = engine.shuffle_all(inp.X, table, start, end, draw, n,
                           key_per_sequence=seeds is not None)
    if verbose:
        inside = Y[..., start:end]
        if bool(jnp.any(jnp.all(inside == inside[:, :1], axis=(1, 2)))):
            warnings.warn("At least one position in dinucleotide shuffle is identical across "
                          "all shuffles (tangermeme's verbose warning).", UserWarning,
                          stacklevel=outside_stacklevel())
    Y = to_family(Y, inp.family)
    if inp.family == "torch":  # on X's device, as tangermeme's shuffles are
        return Y.to(device=device, dtype=inp.dtype)
    return Y if Y.dtype == inp.dtype else Y.astype(inp.dtype)


@carries(MONO)
def shuffle(X: Any, start: int = 0, end: int = -1, n: int = 1, random_state: Any = None,
            return_packed: Optional[bool] = None) -> Any:
    """Shuffle a region of each sequence ``n`` times, keeping its symbol counts.

    Parameters
    ----------
    X: jax.Array, numpy.ndarray or torch.Tensor, shape=(N, A, L)
        One-hot sequences; all-zero columns (unknown bases) are allowed and
        are shuffled like any other symbol.
    start: int, optional
        Start of the region, inclusive. Default is 0.
    end: int, optional
        End of the region, exclusive when ``>= 0``; negative counts from the
        end inclusively (``-1`` is the whole sequence). Default is -1.
    n: int, optional
        Shuffles per sequence. Default is 1.
    random_state: JAX key, int, numpy.random.RandomState or None, optional
        An int or RandomState draws exactly tangermeme's permutations (the same
        permutation for every sequence in shuffle ``i``), so results equal
        ``tangermeme.ersatz.shuffle``'s. A JAX key gives every sequence its own
        permutations, shuffle ``i`` of sequence ``j`` drawn from
        ``fold_in(fold_in(key, j), i)``. None uses fresh entropy. Default None.
    return_packed: None or False, optional
        tangermeme's option to return a ``PackedSequence``: jablate returns one-hot
        arrays only, so None and False are accepted and True raises. Default None.

    Returns
    -------
    Y: array, shape=(N, n, A, L)
        In ``X``'s family and dtype.

    Raises
    ------
    ValueError
        If ``X`` is not one-hot (N, A, L), the region is outside the sequence or
        empty, ``n < 1``, ``random_state`` is of an unknown kind, or
        ``return_packed=True``.
    """
    _check_packed(return_packed)
    return _shuffle(MONO, inputs(X), start, end, n, random_state, device=_device(X))


def _check_packed(return_packed: Any) -> None:
    if return_packed is not None and return_packed is not False:
        raise InputError(f"return_packed must be None or False: jablate returns one-hot arrays, "
                         f"not tangermeme's PackedSequence; got {return_packed!r}.")


@carries(DINUCLEOTIDE)
def dinucleotide_shuffle(X: Any, start: int = 0, end: int = -1, n: int = 20,
                         random_state: Any = None, verbose: bool = False,
                         allow_N: bool = False, return_packed: Optional[bool] = None,
                         n_jobs: int = 1) -> Any:
    """Shuffle a region of each sequence ``n`` times, keeping its dinucleotide counts.

    Each shuffle is drawn uniformly from all sequences with the region's first
    and last symbols and dinucleotide counts (the Altschul-Erickson/uShuffle
    method), unlike tangermeme's sampler which misses some of them. With
    ``allow_N=True`` an unknown base (all-zero column) is a symbol of its own.

    Parameters
    ----------
    X: jax.Array, numpy.ndarray or torch.Tensor, shape=(N, A, L)
        One-hot sequences.
    start: int, optional
        Start of the region, inclusive. Default is 0.
    end: int, optional
        End of the region, exclusive when ``>= 0``, negative from the end
        inclusively. Default is -1.
    n: int, optional
        Shuffles per sequence. Default is 20.
    random_state: JAX key, int, sequence of N ints, numpy.random.RandomState or None, optional
        Shuffle ``i`` of sequence ``j`` is drawn from ``fold_in(fold_in(key,
        j), i)``; an int seeds the key, a RandomState gives one seed. A sequence
        of ``N`` ints gives each sequence its own seed, as in tangermeme: sequence
        ``j`` gets the shuffles ``dinucleotide_shuffle(X[j:j+1], ...,
        random_state=random_state[j])`` would give it, whatever else is in the
        batch. Default None.
    verbose: bool, optional
        As tangermeme: a ``UserWarning`` when some position of a sequence's region
        is the same in all of its ``n`` shuffles. Default False.
    allow_N: bool, optional
        Whether ``X`` may hold unknown bases (all-zero columns), as in tangermeme:
        each is then shuffled as a symbol of its own, so every shuffle keeps the
        count of every dinucleotide, those with an unknown base included. Default
        False: an unknown base anywhere in ``X`` raises ``ValueError``.
    return_packed: None or False, optional
        As for :func:`shuffle`: True (a ``PackedSequence``) raises. Default None.
    n_jobs: int, optional
        tangermeme's thread count; accepted (an int, ``-1`` or at least 1) and
        without effect: the shuffles run as one compiled program on JAX's device.
        Default 1.

    Returns
    -------
    Y: array, shape=(N, n, A, L), in ``X``'s family and dtype.

    Raises
    ------
    ValueError
        As :func:`shuffle`; for a region shorter than 3; for an unknown base
        without ``allow_N=True``; for seeds not one per sequence; for
        ``return_packed=True`` or a bad ``n_jobs``.
    """
    _check_packed(return_packed)
    if isinstance(n_jobs, bool) or check_int(n_jobs, "n_jobs", minimum=-1) == 0:
        raise InputError(f"n_jobs must be -1 or a positive int; got {n_jobs!r}.")
    if not isinstance(allow_N, (bool, numpy.bool_)):
        raise InputError(f"allow_N must be True or False; got {allow_N!r}.")
    shown = dict(verbose=check_flag(verbose, "verbose"), device=_device(X))
    inp = inputs(X)
    if not allow_N and has_unknown_bases(inp.X):
        raise InputError("X holds unknown bases (all-zero columns), which dinucleotide_shuffle "
                         "refuses unless allow_N=True (as tangermeme): each is then shuffled "
                         "as a symbol of its own.")
    if isinstance(random_state, (list, tuple)) or (  # a numpy array or torch tensor of seeds
            family(random_state) in ("numpy", "torch") and random_state.ndim == 1):
        return _shuffle(DINUCLEOTIDE, inp, start, end, n, None,
                        seeds=_checked_seeds(random_state, len(inp.X)), **shown)
    return _shuffle(DINUCLEOTIDE, inp, start, end, n, random_state, **shown)


def _checked_seeds(seeds, N):
    """tangermeme's seed per sequence, checked: ``N`` ints."""
    if family(seeds) == "torch":
        seeds = seeds.detach().cpu().numpy()
    seeds = list(seeds) if isinstance(seeds, (list, tuple)) else list(
        numpy.asarray(seeds).reshape(-1))
    if len(seeds) != N or not all(isinstance(s, (int, numpy.integer)) and
                                  not isinstance(s, (bool, numpy.bool_)) for s in seeds):
        raise InputError(f"random_state as a sequence must hold one int seed per sequence "
                         f"({N}); got {len(seeds)} value(s) of type(s) "
                         f"{sorted({type(s).__name__ for s in seeds})}.")
    return seeds
