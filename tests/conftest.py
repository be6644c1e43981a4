"""Shared test helpers.

``require(name)`` imports an optional test dependency (bpnet-lite, tangermeme,
torch). Locally a missing one skips the module, as ``pytest.importorskip`` does;
in CI (``CI`` set to anything but ``""``, ``0``, ``false`` or ``no``) it fails,
so a broken test environment never passes by skipping.
"""

import importlib
import os

import pytest


def in_ci():
    """True when the ``CI`` environment variable says this is a CI run."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require(name):
    """Import and return module ``name``; skip when it is missing, fail in CI."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        message = f"{name} is not installed ({error}); `make install-test` installs it"
        if in_ci():
            pytest.fail(f"{message}. CI is set, so this fails instead of skipping.",
                        pytrace=False)
        pytest.skip(message, allow_module_level=True)
