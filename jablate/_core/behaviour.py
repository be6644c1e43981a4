"""Behaviour as values: how the engine runs jablate's own shuffles and funcs.

Each of jablate's shuffles and funcs carries, from its definition, a small frozen value
that says how the engine runs it, in the way an optax ``GradientTransformation`` is a
value describing an optimiser: :class:`jablate.api.ersatz.ShuffleMethod` for the batch
shuffles (``jablate.shuffle``, ``jablate.dinucleotide_shuffle``),
:class:`KeyFirstShuffle` for the key-first shuffles of :mod:`jablate.functional`,
:class:`PredictFunc` for ``jablate.predict`` and
:class:`jablate.engine.per_sequence.SequenceFunc` for ``deep_lift_shap`` and
``saturation_mutagenesis``.

The value sits in the function's ``__jablate__`` attribute (put there by :func:`carries`
at definition) and is read by :func:`find` only, which also looks through
``functools.partial``: it returns the value with the arguments the partials bind. The
typed lookups the engine calls, :func:`jablate.api.ersatz.method_of`,
:func:`jablate.api.ersatz.key_shuffle_of` and :func:`jablate.engine.per_sequence.spec_of`, decide
what to do with those arguments (honour them on the fast path, or run the function
itself on the materialised path with a :class:`PartialFallbackWarning`, or refuse).

A function made with ``functools.wraps`` around one of jablate's is foreign: it copies
``__jablate__`` but also sets ``__wrapped__``, and :func:`find` ignores values on such
wrappers (the wrapper may do anything).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Optional, TypeVar

#: The attribute that holds a function's value.
ATTRIBUTE = "__jablate__"

F = TypeVar("F", bound=Callable)


def carries(value: Any) -> Callable[[F], F]:
    """A decorator attaching ``value`` to the function it decorates, at definition.

    Parameters
    ----------
    value: any value, or a callable ``build(function) -> value``
        Given a :class:`Builds`, it is called with the function (for values that hold
        the function itself, such as :class:`KeyFirstShuffle`).

    Returns
    -------
    decorate: callable
        Returns the function unchanged but for its ``__jablate__`` attribute.
    """
    def decorate(fn: F) -> F:
        setattr(fn, ATTRIBUTE, value.build(fn) if isinstance(value, Builds) else value)
        return fn
    return decorate


class Builds(NamedTuple):
    """For :func:`carries`: build the value from the function it decorates."""

    build: Callable[[Callable], Any]


class Found(NamedTuple):
    """What :func:`find` found under a callable.

    Attributes
    ----------
    value: the value the innermost function carries
    function: callable
        That function (jablate's own).
    args: tuple
        Positional arguments bound by ``functools.partial`` (outermost last).
    keywords: dict
        Keywords bound by ``functools.partial`` (an outer partial's win, as in a call).
    partial: bool
        Whether the callable was a ``functools.partial`` at all.
    """

    value: Any
    function: Callable
    args: tuple
    keywords: Mapping[str, Any]
    partial: bool


def find(fn: Any) -> Optional[Found]:
    """The value ``fn`` carries, looking through ``functools.partial``; None for any
    other callable (a foreign function, a ``functools.wraps`` wrapper, an object)."""
    args: tuple = ()
    keywords: dict = {}
    is_partial = False
    seen = 0
    while isinstance(fn, functools.partial) and seen < 64:
        args = tuple(fn.args) + args
        keywords = {**fn.keywords, **keywords}
        fn, is_partial, seen = fn.func, True, seen + 1
    own = getattr(fn, "__dict__", None)
    if not isinstance(own, dict) or "__wrapped__" in own or ATTRIBUTE not in own:
        return None
    return Found(own[ATTRIBUTE], fn, args, keywords, is_partial)


def describe(fn: Any, found: Optional[Found] = None) -> str:
    """``fn`` for messages: ``functools.partial(jablate.shuffle, n=5)``."""
    found = found if found is not None else find(fn)
    if found is None:
        return repr(fn)
    where = "jablate.functional" if isinstance(found.value, KeyFirstShuffle) else "jablate"
    name = f"{where}.{getattr(found.function, '__name__', '?')}"
    if not found.partial:
        return name
    bound = [repr(a) for a in found.args] + [f"{k}={v!r}" for k, v in found.keywords.items()]
    return f"functools.partial({', '.join([name] + bound)})"


class PartialFallbackWarning(UserWarning):
    """A ``functools.partial`` of one of jablate's functions binds arguments the fast path
    cannot honour: it is called as it is, on the materialised path (tangermeme's)."""


@dataclass(frozen=True)
class KeyFirstShuffle:
    """A key-first single-sequence shuffle of :mod:`jablate.functional`, as the engine
    sees it (say, as ``deep_lift_shap``'s ``references``).

    Attributes
    ----------
    name: str
        For messages.
    key_fn: callable
        The shuffle itself, ``key_fn(key, x, start, end)``.
    min_width: int
        The shortest region it accepts.
    """

    name: str
    key_fn: Callable
    min_width: int


def key_first(min_width: int) -> Builds:
    """For :func:`carries`: the :class:`KeyFirstShuffle` of the decorated function."""
    return Builds(lambda fn: KeyFirstShuffle(fn.__name__, fn, min_width))


@dataclass(frozen=True)
class PredictFunc:
    """``jablate.predict`` as ``ablate``'s ``func``: the model's own predictions, streamed.

    Attributes
    ----------
    keywords: tuple of str
        predict's keywords that ``ablate`` honours on its fast path (passed through
        ``**kwargs``, ``additional_func_kwargs`` or bound by ``functools.partial``).
    """

    keywords: tuple = ("batch_size", "dtype", "device", "verbose", "func", "backend")


#: The value ``jablate.predict`` carries.
PREDICT = PredictFunc()


@dataclass(frozen=True)
class OutputFunc:
    """A ``func`` on a model's outputs (``predict``'s, ``saturation_mutagenesis``'s) written
    with the array operations of whichever framework its input comes from, so that it means
    the same on JAX arrays and torch tensors (:class:`jablate.api.sums.DeviceSums`,
    :class:`jablate.genome.hits.DeviceEffects`).

    Given with a torch module that runs translated to JAX, such a func is applied to the JAX
    outputs as it is. Any other func is torch code, as tangermeme's are: it is translated to
    JAX with the module (:func:`jablate.bridges.torch.translate_func`), so that it keeps
    torch's meaning (``y.std()`` is unbiased in torch, not in JAX).

    Attributes
    ----------
    name: str
        For messages.
    """

    name: str


def mark(instance: Any, value: Any) -> None:
    """:func:`carries` for an instance (a frozen dataclass too): ``value`` in its own
    ``__jablate__`` attribute, where :func:`find` reads it."""
    object.__setattr__(instance, ATTRIBUTE, value)
