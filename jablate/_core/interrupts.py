"""Ctrl-C (or SIGTERM, SIGHUP) that Python may have swallowed.

The command line's SIGINT handler (and its SIGTERM and SIGHUP handlers: a batch system's
time limit, a closed terminal) raises ``KeyboardInterrupt``, but Python discards an
exception raised while it runs a callback of its own: a garbage-collection callback (JAX
has one), a weakref finaliser. It prints ``Exception ignored in: ...`` and the run goes
on, to finish and write its files as if nothing had happened. So the handler also notes
the signal here (:func:`note`), and the places a run passes often ask :func:`check`,
which raises ``KeyboardInterrupt`` again: every batch of the engine
(:func:`jablate.engine.executor.execute`) and the commit of output files
(:class:`jablate._core.io.AtomicFiles`). Outside the command line nothing notes a
signal, and :func:`check` does nothing.
"""

__all__ = ["note", "pending", "check", "reset", "signal_number"]

_seen: list = []

#: SIGINT's number, the signal :func:`signal_number` reports when none was noted.
_SIGINT = 2


def note(number: int = _SIGINT) -> None:
    """Record that a signal came (the command line's handlers call it).

    Parameters
    ----------
    number: int, optional
        The signal's number. Default 2 (SIGINT).
    """
    _seen.append(number)


def signal_number() -> int:
    """The first signal noted since the last :func:`reset`; SIGINT's number (2) when none
    was (a ``KeyboardInterrupt`` from elsewhere)."""
    return _seen[0] if _seen else _SIGINT


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
