"""Every cache of jablate, with one owner.

Two kinds:

* **Per runner** — compiled programs and analyses of one model (or one flax structure):
  :func:`for_runner` ``(runner, name)`` gives the cache ``name`` of a runner. It lives on
  the runner (its ``caches`` slot), so it dies with the runner, and runners hold the
  caller's model only weakly (see :mod:`jablate.models.runner`): no cache keeps a dropped model
  or its weights alive.
* **Module-level** — the runners themselves (by flax structure and by model identity),
  memoised helpers: each is registered by name with :func:`register` (or
  :func:`memoize`) where it is defined. A cache in a module jablate does not import
  itself (the torch bridge's translations) is registered by module and attribute with
  :func:`register_module` and reached only when that module is loaded, so clearing never
  imports torch.

:func:`clear_caches` (``jablate.clear_caches``) empties all of them; :func:`sizes` lists
them with their number of entries.
"""

from __future__ import annotations

import functools
import os
import sys
import weakref
from typing import Any, Callable, MutableMapping, NamedTuple, TypeVar

T = TypeVar("T")


class _Entry(NamedTuple):
    size: Callable[[], int]
    clear: Callable[[], None]


#: Module-level caches by name.
_REGISTRY: dict = {}
#: Runners holding per-runner caches (weakly: a runner dies with its model).
_RUNNERS: "weakref.WeakSet[Any]" = weakref.WeakSet()
#: Per-runner caches of objects without a ``caches`` slot (kept only while they live).
_SLOTLESS: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()
#: The names of per-runner caches ever asked for.
_RUNNER_CACHES: set = set()


def _entry(cache: Any) -> _Entry:
    if hasattr(cache, "cache_clear") and hasattr(cache, "cache_info"):  # functools.lru_cache
        return _Entry(lambda: cache.cache_info().currsize, cache.cache_clear)
    if hasattr(cache, "clear") and hasattr(cache, "__len__"):
        return _Entry(lambda: len(cache), cache.clear)
    raise TypeError(f"a cache must be a mapping (or set) with clear(), or an lru_cache "
                    f"function; got {type(cache).__name__}.")


def register(name: str, cache: T) -> T:
    """Register the module-level ``cache`` as ``name`` (``'module.what'``); returns it.

    ``cache`` is a dict-like (or set) with ``clear()`` and ``len()``, or a function
    wrapped by ``functools.lru_cache``. Registering a name again replaces it (a module
    reloaded).
    """
    _REGISTRY[name] = _entry(cache)
    return cache


def memoize(name: str) -> Callable[[Callable], Callable]:
    """``functools.lru_cache(maxsize=None)``, registered as ``name``."""
    def decorate(fn: Callable) -> Callable:
        return register(name, functools.lru_cache(maxsize=None)(fn))
    return decorate


def register_module(name: str, module: str, attribute: str) -> None:
    """Register the cache ``module.attribute`` of a module jablate may never import (the
    torch bridge): sized and cleared only while ``module`` is loaded."""
    def cache():
        loaded = sys.modules.get(module)
        return None if loaded is None else getattr(loaded, attribute, None)

    def size():
        c = cache()
        return 0 if c is None else _entry(c).size()

    def clear():
        c = cache()
        if c is not None:
            _entry(c).clear()

    _REGISTRY[name] = _Entry(size, clear)


def for_runner(runner: Any, name: str,
               factory: Callable[[], MutableMapping] = dict) -> MutableMapping:
    """The per-runner cache ``name`` of ``runner`` (made by ``factory`` on first use).

    It lives on the runner, so it goes when the runner goes (runners reach the caller's
    model only weakly); :func:`clear_caches` empties it.

    Parameters
    ----------
    runner: jablate.models.runner.JaxRunner (or any object that can be weakly referenced)
    name: str
        ``'module.what'``, such as ``'deeplift.steps'``.
    factory: callable, optional
        Makes the empty cache: ``dict`` (default), or ``weakref.WeakKeyDictionary`` for
        one keyed on objects it must not keep alive.

    Returns
    -------
    cache: dict-like
    """
    slots = getattr(runner, "caches", None)
    if not isinstance(slots, dict):
        slots = _SLOTLESS.setdefault(runner, {})
    cache = slots.get(name)
    if cache is None:
        cache = slots[name] = factory()
        _RUNNER_CACHES.add(name)
        _RUNNERS.add(runner)
    return cache


def _runner_slots() -> list:
    out = []
    for runner in list(_RUNNERS):
        slots = getattr(runner, "caches", None)
        out.append(slots if isinstance(slots, dict) else _SLOTLESS.get(runner, {}))
    return out


def sizes() -> dict:
    """Every cache and its number of entries: module-level ones by their registered
    name, per-runner ones as ``'runner:' + name`` summed over the live runners."""
    out = {name: entry.size() for name, entry in _REGISTRY.items()}
    for name in sorted(_RUNNER_CACHES):
        out[f"runner:{name}"] = sum(len(s.get(name, ())) for s in _runner_slots())
    return out


def clear_caches() -> None:
    """Empty every cache of jablate.

    jablate keeps compiled programs, incremental analyses and model runners between
    calls, so that calling ``ablate`` (or ``predict``, ``deep_lift_shap``,
    ``saturation_mutagenesis``) again on a model compiles nothing. None of them keeps a
    dropped model alive; this frees them all now (say, after a sweep over many
    architectures, or to measure compilation). Results do not change: the next call
    compiles again. The torch bridge's translations are cleared when the bridge is
    loaded. JAX's own caches (``jax.clear_caches``) and its persistent compilation cache
    are JAX's and stay.

    Returns
    -------
    None

    Examples
    --------
    >>> import jablate
    >>> jablate.clear_caches()
    """
    for slots in _runner_slots():
        slots.clear()
    for entry in list(_REGISTRY.values()):
        entry.clear()


# The torch bridge's translations (jablate.bridges.torch_export._CACHE), a cache jablate
# reaches only when the bridge is loaded: importing it here would import torch.
register_module("bridges.torch_export.translations", "jablate.bridges.torch_export", "_CACHE")


#: The environment variable naming the command line's compile cache, or turning it off.
COMPILE_CACHE_ENV = "JABLATE_COMPILE_CACHE"
_OFF = frozenset({"", "0", "off", "no", "false", "none"})


def default_compile_cache_dir() -> str:
    """``$XDG_CACHE_HOME/jablate/xla``, else ``~/.cache/jablate/xla``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jablate", "xla")


def use_compile_cache(path: str | os.PathLike | None = None, *,
                      max_bytes: int = 2 ** 30, min_compile_secs: float = 0.0) -> str:
    """Keep XLA's compiled programs on disk, so that a new process compiles nothing twice.

    Every process compiles jablate's steps afresh: the first ``ablate``,
    ``deep_lift_shap`` or ``saturation_mutagenesis`` of a model costs seconds that the
    second call does not (on a GPU, XLA also times convolution algorithms). This turns
    on JAX's persistent compilation cache (`jax_compilation_cache_dir
    <https://docs.jax.dev/en/latest/persistent_compilation_cache.html>`_) in a
    directory of jablate's, for every JAX program of this process, jablate's and yours.
    A program is found again by a hash of its HLO, its compile options, the devices and
    the versions of jax and jaxlib, so results never change: a program found on disk is
    the program XLA would compile. ``jablate`` on the command line does this by itself
    (see ``JABLATE_COMPILE_CACHE`` in ``jablate --help``); a Python session does it only
    when asked.

    Programs that call back into Python (``jax.pure_callback``, models run in torch
    through the bridge) are never written. Only the first process of a
    ``jax.distributed`` job writes. The directory is trusted: whoever can write to it
    can run code in your process (JAX's warning), so it is created readable by you
    alone.

    Parameters
    ----------
    path : str or os.PathLike, optional
        The directory, created when missing. Default
        :func:`default_compile_cache_dir` (``~/.cache/jablate/xla``).
    max_bytes : int, optional
        Above this total, the least recently used programs are deleted (needs the
        ``filelock`` package; without it the directory is not bounded). Default 1 GiB.
    min_compile_secs : float, optional
        Programs that compiled faster are not written. Default 0: jablate's steps on a
        CPU compile in tenths of seconds, and each still costs that much per process.

    Returns
    -------
    path : str
        The directory in use.

    Raises
    ------
    ValueError
        ``max_bytes`` is not a positive int, or ``min_compile_secs`` is negative.
    OSError
        The directory cannot be created or written.

    Examples
    --------
    >>> import jablate
    >>> jablate.use_compile_cache()          # doctest: +SKIP
    '/home/me/.cache/jablate/xla'
    """
    import importlib.util
    import tempfile

    import jax

    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
        raise ValueError(f"max_bytes must be a positive int; got {max_bytes!r}.")
    if not min_compile_secs >= 0:
        raise ValueError(f"min_compile_secs must be >= 0; got {min_compile_secs!r}.")
    directory = os.path.abspath(os.fspath(default_compile_cache_dir() if path is None
                                          else path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    with tempfile.TemporaryFile(dir=directory):  # raises OSError where it cannot write
        pass
    if importlib.util.find_spec("filelock") is not None:
        jax.config.update("jax_compilation_cache_max_size", max_bytes)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_secs))
    jax.config.update("jax_compilation_cache_dir", directory)
    return directory


def compile_cache_from_env() -> tuple[str | None, str | None]:
    """The command line's compile cache: ``(directory, None)`` when in use, ``(None,
    why)`` when not (``why`` None when it is off by choice).

    ``$JABLATE_COMPILE_CACHE`` names the directory, or is ``off`` (or ``0``, empty);
    unset, :func:`default_compile_cache_dir`. A cache the user gave JAX itself
    (``JAX_COMPILATION_CACHE_DIR``) is left as it is.
    """
    import jax

    own = jax.config.jax_compilation_cache_dir
    if own:
        return own, None
    value = os.environ.get(COMPILE_CACHE_ENV)
    if value is not None and value.strip().lower() in _OFF:
        return None, None
    try:
        return use_compile_cache(value or None), None
    except OSError as error:
        return None, (f"the compile cache {value or default_compile_cache_dir()} cannot be "
                      f"used ({error.strerror or error}); every program compiles afresh "
                      f"(set {COMPILE_CACHE_ENV} to another directory, or to off)")
