"""jablate's one input error."""

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input to jablate: an argument, an array, a file or an option.

    A ``ValueError``, so ``except ValueError`` keeps working. The message names what is
    wrong (the parameter, or the file and line) and what was expected. Raised before any
    model runs; the command line turns it into one line and exit status 2.
    """
