"""jablate's one input error, and where its warnings point."""

import sys

__all__ = ["InputError", "ModelFailure", "a_or_an", "counted", "one_line", "out_of_memory",
           "length_question", "refuse_not_finite", "warn_not_finite",
           "outside_stacklevel"]


class InputError(ValueError):
    """Bad input to jablate: an argument, an array, a file or an option.

    A ``ValueError``, so ``except ValueError`` keeps working. The message names what is
    wrong (the parameter, or the file and line) and what was expected. Raised before any
    model runs; the command line turns it into one line and exit status 2.
    """


class ModelFailure(Exception):
    """An exception raised while the model ran (not jablate's input checks); the command
    line reports it as one line, exit status 1.

    Parameters
    ----------
    spec : str
        The ``--model`` SPEC.
    error : BaseException
        What the model raised.
    hint : str, optional
        What the user may check, appended in parentheses.
    """

    def __init__(self, spec: str, error: BaseException, hint: str = ""):
        super().__init__(spec, error)
        self.spec, self.error, self.hint = spec, error, hint

    def __str__(self):
        return (f"model '{self.spec}' failed: {type(self.error).__name__}: "
            f"{one_line(self.error)}" + (f" ({self.hint})" if self.hint else ""))

    def about_shapes(self, question: str) -> "ModelFailure":
        """This failure asking ``question`` (its hint) when what the model raised speaks of
        shapes (JAX's and torch's words) and it has no hint yet; else this failure."""
        if self.hint or "shape" not in str(self.error).lower():
            return self
        return ModelFailure(self.spec, self.error, question)


def length_question(length: int) -> str:
    """What a model failure that may come from the input's length asks (the hint of a
    :class:`ModelFailure`)."""
    return f"are sequences of {length} bp the input length the model expects?"


def refuse_not_finite(values, spec: str, unit: str, meaning: str, units: str, result: str,
                      hint: str = "") -> None:
    """For the command line's tables: refuse when the model's output is not finite (NaN,
    inf) anywhere in ``values``, and warn with the count of rows that are not finite
    everywhere otherwise.

    Parameters
    ----------
    values : array, shape=(R, ...)
        The outputs a table is made of, one row per region, window or sequence.
    spec : str
        The ``--model`` SPEC.
    unit : str
        A row, in ``"for every {unit}"`` (``"region"``).
    meaning : str
        What would mean nothing, in ``"so no {meaning} means anything"`` (``"drop"``).
    units : str
        The rows, in ``"for 3 of 5 {units}"`` (``"regions"``).
    result : str
        What those rows hold (``"their rows hold NaN or inf"``).
    hint : str, optional
        What the user may check (:func:`length_question`).

    Raises
    ------
    ModelFailure
        When no value is finite.
    """
    import warnings

    import numpy

    finite = numpy.isfinite(numpy.asarray(values, dtype=numpy.float64)).reshape(
        len(values), -1)
    if not finite.any():  # not one number: refuse rather than write it
        raise ModelFailure(spec, FloatingPointError(f"its output is not finite (NaN or inf) "
            f"for every {unit}, so no {meaning} means anything"), hint)
    bad = int((~finite.all(axis=1)).sum())
    if bad:
        warnings.warn(f"the model's output is not finite (NaN or inf) for {bad} of "
                      f"{len(finite)} {units}: {result}", stacklevel=3)


def warn_not_finite(what: str, consequence: str) -> None:
    """Warn (``RuntimeWarning``) that the model's output is not finite (NaN, inf) for
    ``what`` (``"3 of 5 sequences"``), with ``consequence`` for the results."""
    import warnings

    warnings.warn(f"The model's output is not finite (NaN or inf) for {what}: {consequence}. "
                  "Is the input the length the model expects?", RuntimeWarning,
                  stacklevel=outside_stacklevel())


def a_or_an(word: str) -> str:
    """``word`` with its indefinite article, for messages: ``an int``, ``a dict``."""
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def counted(count: int, noun: str) -> str:
    """``count`` and ``noun``, plural but for one, for messages: ``1 chunk``, ``7 chunks``."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def one_line(error: BaseException) -> str:
    """``error``'s message on one line (its type's name when it has none)."""
    return " ".join(str(error).split()) or type(error).__name__


def out_of_memory(error: BaseException) -> str:
    """Whether ``error`` (or an exception it was raised from) says memory ran out, and of
    what kind.

    Parameters
    ----------
    error : BaseException
        What a model run raised.

    Returns
    -------
    kind : str
        ``"xla"`` for XLA's ``RESOURCE_EXHAUSTED`` status about memory or an allocation
        (the memory of the device the program ran on: the host's on the CPU backend),
        ``"device"`` for torch's ``OutOfMemoryError`` (an accelerator's memory),
        ``"host"`` for a ``MemoryError`` (numpy's "Unable to allocate" included) or
        torch's CPU allocator failing, ``""`` for anything else. Follows ``__cause__``
        (``raise ... from``), not the exceptions being handled when ``error`` was raised.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = str(error)
        if "RESOURCE_EXHAUSTED" in text and ("memory" in text.lower() or "allocat" in text):
            return "xla"
        if any(cls.__name__ == "OutOfMemoryError" for cls in type(error).__mro__):
            return "device"
        if isinstance(error, MemoryError) or "DefaultCPUAllocator" in text:
            return "host"
        error = error.__cause__
    return ""


def outside_stacklevel() -> int:
    """The ``stacklevel`` for a ``warnings.warn`` in the function that calls this one, so
    that the warning names the first frame outside jablate (the user's call), however
    deep inside jablate it was issued.

    Returns
    -------
    stacklevel : int
        1 for the caller itself, 2 for its caller, ...
    """
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith("jablate"):
        frame, level = frame.f_back, level + 1
    return level
