"""Ctrl-C that Python may have swallowed.

The command line's SIGINT handler raises ``KeyboardInterrupt``, but Python discards an
exception raised while it runs a callback of its own: a garbage-collection callback (JAX
has one), a weakref finaliser. It prints ``Exception ignored in: ...`` and the run goes
on, to finish and write its files as if nothing had happened. So the handler also notes
the signal here (:func:`note`), and the places a run passes often ask :func:`check`,
which raises ``KeyboardInterrupt`` again: every batch of the engine
(:func:`jablate.engine.executor.execute`) and the commit of output files
(:class:`jablate._core.io.AtomicFiles`). Outside the command line nothing notes a
signal, and :func:`check` does nothing.
"""

__all__ = ["note", "pending", "check", "reset"]

_seen: list = []


def note() -> None:
    """Record that SIGINT came (the command line's handler calls it)."""
    _seen.append(True)


def pending() -> bool:
    """Whether SIGINT came since the last :func:`reset`."""
    return bool(_seen)


def check() -> None:
    """Raise ``KeyboardInterrupt`` if SIGINT came since the last :func:`reset`.

    Raises
    ------
    KeyboardInterrupt
    """
    if _seen:
        raise KeyboardInterrupt


def reset() -> None:
    """Forget earlier signals (a new command starts)."""
    _seen.clear()
