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


def pytest_configure(config):
    """One JAX compilation cache for the whole session, shared by the xdist workers and the
    command-line subprocesses the tests start, so a program the tests compile more than
    once (the demo model, the CLI's tiny models) compiles once. It lives in a fresh
    temporary folder, removed at the end: every session starts cold, as on a clean clone."""

    if os.environ.get("PYTEST_XDIST_WORKER") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    import tempfile
    folder = tempfile.mkdtemp(prefix="jablate-tests-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    config._jablate_jax_cache = folder


def pytest_unconfigure(config):
    folder = getattr(config, "_jablate_jax_cache", None)
    if folder is not None:
        import shutil
        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
