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
from typing import Any, Callable, Iterable, MutableMapping, NamedTuple, TypeVar

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
# The translations of torch funcs (jablate.bridges.torch.translate_func), per func.
register_module("bridges.torch.funcs", "jablate.bridges.torch", "_OUTPUT_FUNCS")


#: The environment variable naming the command line's compile cache, or turning it off.
COMPILE_CACHE_ENV = "JABLATE_COMPILE_CACHE"
_OFF = frozenset({"", "0", "off", "no", "false", "none"})


def default_compile_cache_dir() -> str | None:
    """``$XDG_CACHE_HOME/jablate/xla`` (an absolute ``XDG_CACHE_HOME``), else
    ``~/.cache/jablate/xla``; None without an absolute home directory."""

    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # unset, empty or relative: the XDG spec ignores it
        home = os.path.expanduser("~")
        if not os.path.isabs(home) or home == os.sep:
            return None
        base = os.path.join(home, ".cache")
    return os.path.join(base, "jablate", "xla")


def host_kind() -> str:
    """A name for this machine's kind of CPU: its architecture and a hash of its model
    and instruction-set flags (``x86_64-3f9a0c1b2d4e``). XLA compiles CPU programs for
    the very CPU it runs on (AVX-512 where there is AVX-512), and JAX's cache keys do
    not say which: programs kept for one kind of CPU must not be loaded on another (a
    shared home directory on a cluster of mixed nodes), so each kind gets a directory."""

    import hashlib
    import platform

    described = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags", "Features", "CPU part", "cpu model"):
                    described.append(line.strip())
                elif not line.strip() and len(described) > 2:
                    break  # the first processor's block is enough
    except OSError:
        pass
    digest = hashlib.sha256("\n".join(described).encode()).hexdigest()[:12]
    return f"{platform.machine() or 'cpu'}-{digest}"


def use_compile_cache(path: str | os.PathLike | None = None, *,
                      min_compile_secs: float = 0.0) -> str:
    """Keep XLA's compiled programs on disk, so that a new process compiles nothing twice.

    Every process compiles jablate's steps afresh: the first ``ablate``,
    ``deep_lift_shap`` or ``saturation_mutagenesis`` of a model costs seconds that the
    second call does not (on a GPU, XLA also times convolution algorithms). This turns
    on JAX's persistent compilation cache (`jax_compilation_cache_dir
    <https://docs.jax.dev/en/latest/persistent_compilation_cache.html>`_), for every
    JAX program of this process, jablate's and yours, in a directory per kind of CPU
    under ``path`` (:func:`host_kind`: XLA's CPU code is made for the CPU it runs on,
    and JAX's cache keys do not say which). A program is found again by a hash of its
    HLO, its compile options, the devices and the jaxlib version, so a program found
    there is the one XLA would compile here. ``jablate`` on the command line does this
    by itself (see ``JABLATE_COMPILE_CACHE`` in ``jablate --help``); a Python session
    only when asked.

    Programs that call back into Python (``jax.pure_callback``, models run in torch
    through the bridge) are never written: they compile again in every process. Only
    the first process of a ``jax.distributed`` job writes. The directory is not bounded
    (each program takes tens of kilobytes to a few megabytes); delete it whenever you
    like. It is trusted: whoever can write to it can run code in your process (JAX's
    warning), so it is created readable by you alone. JAX writes an entry in place: a
    process killed while writing one leaves it damaged, and every later process warns
    that it cannot read it (and compiles that program) until it is deleted
    (:func:`remove_unreadable_entries`, which the command line calls after such a
    warning).

    Parameters
    ----------
    path : str or os.PathLike, optional
        The directory (``~`` expanded), created when missing. Default
        :func:`default_compile_cache_dir` (``~/.cache/jablate/xla``).
    min_compile_secs : float, optional
        Programs that compiled faster are not written. Default 0: jablate's steps on a
        CPU compile in tenths of seconds, and each still costs that much per process.

    Returns
    -------
    directory : str
        The directory in use: ``path``'s subdirectory for this kind of CPU.

    Raises
    ------
    InputError
        ``path`` is not a path, ``min_compile_secs`` not a number ``>= 0``, or no
        ``path`` and no home directory to put the default in (a ``ValueError``).
    OSError
        The directory cannot be created or written.

    Examples
    --------
    >>> import jablate
    >>> jablate.use_compile_cache()          # doctest: +SKIP
    '/home/me/.cache/jablate/xla/x86_64-3f9a0c1b2d4e'
    """
    import numbers
    import tempfile

    import jax
    from jax.experimental.compilation_cache import compilation_cache

    from jablate._core.errors import InputError

    if isinstance(min_compile_secs, bool) or not isinstance(min_compile_secs, numbers.Real) \
            or not 0 <= min_compile_secs < float("inf"):
        raise InputError(f"min_compile_secs must be a number >= 0; got {min_compile_secs!r}.")
    if path is None:
        path = default_compile_cache_dir()
        if path is None:
            raise InputError("path: there is no home directory to keep compiled programs "
                             "in; name a directory")
    try:
        base = os.path.expanduser(os.fspath(path))
    except TypeError:
        raise InputError(f"path must be a directory's path; got {type(path).__name__}.") \
            from None
    directory = os.path.join(os.path.abspath(base), host_kind())
    os.makedirs(directory, mode=0o700, exist_ok=True)
    with tempfile.TemporaryFile(dir=directory):  # raises OSError where it cannot write
        pass
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_secs))
    if jax.config.jax_compilation_cache_dir != directory:
        # JAX opens its cache once per process: a new directory needs a new start
        jax.config.update("jax_compilation_cache_dir", directory)
        compilation_cache.reset_cache()
    return directory


def compile_cache_from_env() -> tuple[str | None, str | None]:
    """The command line's compile cache: ``(directory, None)`` when in use, ``(None,
    why)`` when it cannot be (``(None, None)`` when it is off by choice).

    ``$JABLATE_COMPILE_CACHE`` names the directory (``~`` expanded), or is ``off`` (or
    ``0``, empty); unset, :func:`default_compile_cache_dir`. A cache the user gave JAX
    itself (``JAX_COMPILATION_CACHE_DIR``) is left as it is, with JAX's own settings.
    """
    import jax

    own = jax.config.jax_compilation_cache_dir
    if own:
        return own, None
    value = os.environ.get(COMPILE_CACHE_ENV)
    if value is not None and value.strip().lower() in _OFF:
        return None, None
    where = value or default_compile_cache_dir()
    if where is None:
        return None, (f"no home directory to keep compiled programs in; every program "
                      f"compiles afresh (set {COMPILE_CACHE_ENV} to a directory, or to off)")
    try:
        return use_compile_cache(where), None
    except OSError as error:
        return None, (f"the compile cache {where} cannot be used ({error.strerror or error});"
                      f" every program compiles afresh (set {COMPILE_CACHE_ENV} to another "
                      "directory, or to off)")


def remove_unreadable_entries(directory: str, modules: Iterable[str],
                              min_age_s: float = 10.0) -> int:
    """Delete the entries of programs ``modules`` in a compile cache directory that JAX
    cannot decompress.

    JAX writes an entry in place and never replaces one that exists: an entry cut short
    (a process killed while writing it, a full disk) stays, and every later process warns
    that it cannot read it and compiles that program again. The command line calls this
    once a run has warned so, for jablate's own directory, so that the next run writes
    the program afresh. Only entries that this process's JAX would have written (its
    compression's first bytes: a JAX with another compressor keeps other, valid entries
    under other keys in the same directory), that belong to ``modules`` and that have not
    changed for ``min_age_s`` seconds (not another process's entry being written) are
    deleted.

    Parameters
    ----------
    directory : str
        A directory of :func:`use_compile_cache`.
    modules : iterable of str
        The programs JAX named in its warnings (``'jit__step'``).
    min_age_s : float, optional
        Default 10.

    Returns
    -------
    removed : int
        How many entries were deleted (0 where this JAX has no compressor jablate knows:
        nothing is deleted then).
    """
    import time

    try:
        from jax._src.compilation_cache import compress_executable, decompress_executable
    except ImportError:  # JAX's private module moved: leave the directory as it is
        return 0
    ours = compress_executable(b"jablate")[:2]
    prefixes = tuple(f"{module}-" for module in modules)
    removed = 0
    for name in sorted(os.listdir(directory)):
        if not (name.endswith("-cache") and name.startswith(prefixes)):
            continue
        path = os.path.join(directory, name)
        try:
            if time.time() - os.stat(path).st_mtime < min_age_s:
                continue
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if len(data) >= len(ours) and not data.startswith(ours):
            continue  # another JAX's entry: valid, and never read here
        try:
            decompress_executable(data)
        except Exception:
            for stale in (path, path[:-len("-cache")] + "-atime"):
                try:
                    os.unlink(stale)
                except OSError:
                    pass
            removed += 1
    return removed
