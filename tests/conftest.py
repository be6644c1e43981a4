"""Shared test helpers.

``require(name)`` imports an optional test dependency (bpnet-lite, tangermeme,
torch). Locally a missing one skips the module, as ``pytest.importorskip`` does;
in CI (``CI`` set to anything but ``""``, ``0``, ``false`` or ``no``) it fails,
so a broken test environment never passes by skipping.
"""

import gc
import importlib
import os
import sys

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


def host_devices_env(devices):
    """The environment for a subprocess with ``devices`` host devices on the CPU backend:
    this session's environment (its XLA flags included) plus the device count."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} " \
            f"--xla_force_host_platform_device_count={devices}"
    return dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu")


def signals_as_in_a_terminal(ignore_sigint=False):
    """A ``preexec_fn`` for a subprocess that gets SIGINT as in a terminal (the default
    action, which Python turns into KeyboardInterrupt), whether or not this test run
    ignores it (pytest started with ``&`` from a script inherits SIGINT ignored); with
    ``ignore_sigint``, ignored, as a command started with ``&`` from a script has it."""

    import signal

    action = signal.SIG_IGN if ignore_sigint else signal.SIG_DFL
    return lambda: signal.signal(signal.SIGINT, action)


def _xla_accepts(*flags):
    """Which of ``flags`` this jaxlib's XLA starts with in ``XLA_FLAGS`` (an unknown flag
    aborts the process). Asked once, in a subprocess (all together first, one by one when
    that fails), by the first process that needs it; the answer travels to the xdist
    workers and subprocesses in the environment."""

    key = "JABLATE_TESTS_XLA_ACCEPTS"
    if key not in os.environ:
        import subprocess

        def starts(*these):
            env = dict(os.environ, JAX_PLATFORMS="cpu",
                       XLA_FLAGS=" ".join([os.environ.get("XLA_FLAGS", ""), *these]))
            return subprocess.run([sys.executable, "-c", "import jax; jax.numpy.zeros(1)"],
                                  env=env, capture_output=True).returncode == 0

        accepted = flags if starts(*flags) else [f for f in flags if starts(f)]
        os.environ[key] = " ".join(accepted)
    return [f for f in flags if f in os.environ[key].split()]


def _fewer_compiler_optimizations():
    """Compile with JAX's ``jax_disable_most_optimizations`` (XLA's backend optimization
    level 0, no expensive LLVM passes), here and, through the environment, in the xdist
    workers and every subprocess the tests start. The suite compiles over two thousand
    distinct small programs and runs each on a few sequences, so XLA's optimizer was most
    of its time (a third of the wall time on two cores); the programs compute the same
    things (optimization without fast-math keeps IEEE results), and every tolerance and
    pinned value of the tests is unchanged. ``JAX_DISABLE_MOST_OPTIMIZATIONS=0`` in the
    environment runs the suite with XLA's default optimization instead."""

    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    # XLA's CPU backend has two code generators for fused elementwise work: the newer
    # MLIR "fusion emitters" (the default) and the older LLVM IR emitters. The older ones
    # compile the suite's small programs in half the time (backend compile 318 s -> 153 s
    # of worker time over the suite, 2026-12-07) and compute the same IEEE operations.
    # ``XLA_FLAGS=--xla_cpu_use_fusion_emitters=true`` runs the suite on the default.
    # The suite passes both ways. Newer jaxlibs (0.11.2) no longer know the flag and abort
    # on it, so it is set only where a jaxlib accepts it (:func:`_xla_accepts`).
    # XLA's CPU backend also splits each program's LLVM module to compile the parts on
    # several threads; the suite's programs are small and its workers fill the cores, so
    # one part compiles faster (backend compile 28% less on a sample of the suite's
    # programs, 2026-12-08). The same code is generated.
    flags = os.environ.get("XLA_FLAGS", "")
    wanted = [f for f in ("--xla_cpu_use_fusion_emitters=false",
                          "--xla_cpu_parallel_codegen_split_count=1")
              if f.split("=")[0] not in flags]
    if wanted:
        os.environ["XLA_FLAGS"] = " ".join([flags, *_xla_accepts(*wanted)]).strip()
    if "jax" in sys.modules:  # imported before this hook ran: set the flag directly
        sys.modules["jax"].config.update(
            "jax_disable_most_optimizations",
            os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"].strip().lower()
            in ("1", "true", "yes", "on"))


def pytest_configure(config):
    """One JAX compilation cache for the whole session, shared by the xdist workers and the
    command-line subprocesses the tests start, so a program the tests compile more than
    once (the demo model, the CLI's tiny models) compiles once. It lives in a fresh
    temporary folder, removed at the end: every session starts cold, as on a clean clone."""

    _fewer_compiler_optimizations()
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


def pytest_collection_finish(session):
    """Every test module is imported: move the objects alive now (jax, torch, flax, the
    test modules) to the garbage collector's permanent generation, so that a full
    collection (automatic, or the ``gc.collect()`` of the leak tests) walks only what the
    tests made since. A frozen object is never freed by the collector, so freezing can
    keep something alive but never frees it: a leak test cannot pass because of it."""

    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True, scope="module")
def _freeze_what_a_module_leaves():
    """The same after each test module (its module fixtures already torn down): JAX's
    caches of traced and compiled programs grow with every test, and full collections
    that walk them again and again cost tens of seconds over the suite."""

    yield
    gc.collect()
    gc.freeze()
