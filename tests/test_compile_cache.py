"""The compile cache: ``jablate.use_compile_cache`` and the command line's
``$JABLATE_COMPILE_CACHE`` (compiled programs kept between processes)."""

import os
import warnings

import jax
import numpy
import pytest
from test_cli import main_in_process, run_cli

import jablate
from jablate._core import caches
from jablate.cli import _warning_line

SEQUENCES = numpy.random.default_rng(3).choice(list("ACGT"), (4, 100))
FASTA = "".join(f">s{i}\n{''.join(s)}\n" for i, s in enumerate(SEQUENCES))
REGIONS = "s0\t40\t60\ns1\t10\t30\ns2\t0\t100\ns3\t70\t90\n"
ARGS = ("ablate", "--model", "jablate.demo:load_model", "--fasta", "seqs.fa", "--regions",
        "regions.bed", "--n", "8", "--quiet")


@pytest.fixture
def inputs(tmp_path):
    (tmp_path / "seqs.fa").write_text(FASTA)
    (tmp_path / "regions.bed").write_text(REGIONS)
    return tmp_path


@pytest.fixture
def no_jax_cache(monkeypatch):
    """This process as a user's, whose JAX has no compilation cache of its own (the suite
    gives every process one); JAX's settings and cache are put back afterwards."""

    from jax.experimental.compilation_cache import compilation_cache

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    before = {name: getattr(jax.config, name) for name in names}
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    jax.config.update("jax_compilation_cache_dir", None)
    compilation_cache.reset_cache()
    yield
    for name, value in before.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


def _programs(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith("-cache"))


def test_a_second_run_finds_its_programs_on_disk_and_prints_the_same_table(inputs):
    env = {"JAX_COMPILATION_CACHE_DIR": "", "XDG_CACHE_HOME": str(inputs / "xdg")}
    env.pop("JABLATE_COMPILE_CACHE", None)
    first = run_cli(*ARGS, cwd=inputs, env=env)
    assert first.returncode == 0, first.stderr
    assert "warning" not in first.stderr
    default = inputs / "xdg" / "jablate" / "xla"  # $XDG_CACHE_HOME/jablate/xla
    kinds = os.listdir(default)
    assert kinds == [caches.host_kind()]  # a directory per kind of CPU
    written = _programs(default / kinds[0])
    assert written
    assert os.stat(default / kinds[0]).st_mode & 0o077 == 0  # the user's alone

    # the same directory named by $JABLATE_COMPILE_CACHE: every program is found there
    second = run_cli(*ARGS, cwd=inputs, env=dict(env, XDG_CACHE_HOME=str(inputs / "other"),
                     JABLATE_COMPILE_CACHE=str(default)))
    assert second.returncode == 0, second.stderr
    assert "warning" not in second.stderr  # every program was read back
    assert second.stdout == first.stdout
    assert _programs(default / kinds[0]) == written  # nothing new was compiled
    assert not (inputs / "other").exists()

    # off: nothing is kept, and the table is still the same
    third = run_cli(*ARGS, cwd=inputs, env=dict(env, XDG_CACHE_HOME=str(inputs / "third"),
                    JABLATE_COMPILE_CACHE="off"))
    assert third.returncode == 0, third.stderr
    assert third.stdout == first.stdout
    assert not (inputs / "third").exists()


def test_a_cache_that_cannot_be_used_is_one_warning_and_the_run_goes_on(
        inputs, no_jax_cache, monkeypatch):
    blocked = inputs / "a-file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("JABLATE_COMPILE_CACHE", str(blocked / "xla"))
    result = main_in_process(*ARGS, cwd=inputs)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"jablate: warning: the compile cache {blocked / 'xla'} "
                               "cannot be used")
    assert "JABLATE_COMPILE_CACHE" in lines[0]
    assert jax.config.jax_compilation_cache_dir is None
    reference = main_in_process(*ARGS, cwd=inputs)
    assert result.stdout == reference.stdout


def test_the_command_line_leaves_a_cache_given_to_jax_and_off_alone(no_jax_cache, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("JABLATE_COMPILE_CACHE", "off")
    assert caches.compile_cache_from_env() == (None, None)
    assert jax.config.jax_compilation_cache_dir is None
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "users"))
    monkeypatch.setenv("JABLATE_COMPILE_CACHE", str(tmp_path / "ours"))
    assert caches.compile_cache_from_env() == (str(tmp_path / "users"), None)
    assert not (tmp_path / "ours").exists()


def test_use_compile_cache_sets_jax_and_refuses_bad_values(no_jax_cache, tmp_path):
    for bad in ("1", None, float("nan"), -1, True):
        with pytest.raises(jablate.InputError, match="min_compile_secs must be a number"):
            caches.use_compile_cache(tmp_path, min_compile_secs=bad)
    with pytest.raises(jablate.InputError, match="path must be a directory's path"):
        caches.use_compile_cache(3)
    assert jax.config.jax_compilation_cache_dir is None  # refused before anything
    (tmp_path / "f").write_text("")
    with pytest.raises(OSError):
        caches.use_compile_cache(tmp_path / "f" / "c")
    assert jax.config.jax_compilation_cache_dir is None

    kind = caches.host_kind()
    path = caches.use_compile_cache(tmp_path / "a", min_compile_secs=0.0)
    assert path == str(tmp_path / "a" / kind) == jax.config.jax_compilation_cache_dir
    jax.jit(lambda x: x * 3.25 + 1)(numpy.ones(7)).block_until_ready()
    assert _programs(tmp_path / "a" / kind)
    # another directory later in the same process: JAX's cache starts again there
    assert caches.use_compile_cache(tmp_path / "b") == str(tmp_path / "b" / kind)
    jax.jit(lambda x: x * 4.25 - 1)(numpy.ones(7)).block_until_ready()
    jax.jit(lambda x: x * 5.25 - 1)(numpy.ones(7)).block_until_ready()
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0

    # an entry cut short (a process killed while JAX wrote it) is found and deleted; a
    # valid one, another compressor's (another JAX's, never read here) and one written
    # a moment ago (perhaps still being written) are not
    where = tmp_path / "b" / kind
    entries = _programs(where)
    assert len(entries) == 2
    module = entries[0].split("-")[0]
    cut = where / entries[0]
    cut.write_bytes(cut.read_bytes()[:40])
    (where / f"{module}-zstd-cache").write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 40)
    assert caches.remove_unreadable_entries(str(where), {module}) == 0  # too young
    assert caches.remove_unreadable_entries(str(where), {"jit_other"}, min_age_s=0) == 0
    assert caches.remove_unreadable_entries(str(where), {module}, min_age_s=0) == 1
    assert _programs(where) == sorted([entries[1], f"{module}-zstd-cache"])


def test_where_the_default_directory_is(monkeypatch, no_jax_cache):
    monkeypatch.setenv("HOME", "/home/someone")
    monkeypatch.setenv("XDG_CACHE_HOME", "/scratch/cache")
    assert caches.default_compile_cache_dir() == "/scratch/cache/jablate/xla"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # the XDG spec ignores it
    assert caches.default_compile_cache_dir() == "/home/someone/.cache/jablate/xla"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", "")
    assert caches.default_compile_cache_dir() is None
    monkeypatch.delenv("JABLATE_COMPILE_CACHE", raising=False)
    directory, why = caches.compile_cache_from_env()
    assert directory is None and why.startswith("no home directory to keep compiled programs")
    assert jax.config.jax_compilation_cache_dir is None
    with pytest.raises(jablate.InputError, match="no home directory"):
        caches.use_compile_cache()


def test_jax_s_warnings_about_the_cache_are_said_once_per_cause_with_what_to_do(
        capsys, monkeypatch):
    from jablate import cli

    where = jax.config.jax_compilation_cache_dir
    monkeypatch.setattr(cli, "_UNREADABLE", {})  # the suite's own cache stays as it is
    monkeypatch.setattr(cli, "_OURS", {where})  # as if jablate had chosen it
    show = _warning_line(quiet=False)
    with warnings.catch_warnings():
        warnings.showwarning = show
        warnings.simplefilter("always")
        for name in ("a", "b", "c"):
            warnings.warn(f"Error writing persistent compilation cache entry for '{name}': "
                          "OSError: disk full", stacklevel=1)
        for name in ("a", "b"):
            warnings.warn(f"Error reading persistent compilation cache entry for '{name}': "
                          "error: Error -5 while decompressing data", stacklevel=1)
        warnings.warn("Error reading persistent compilation cache entry for 'a': "
                      "Timeout: lock", stacklevel=1)
        warnings.warn("another warning", stacklevel=1)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "jablate: warning: Error writing persistent compilation cache entry for 'a': "
        f"OSError: disk full (the compile cache {where}; JABLATE_COMPILE_CACHE=off does "
        "without it)",
        "jablate: warning: Error reading persistent compilation cache entry for 'a': error: "
        f"Error -5 while decompressing data (the compile cache {where} holds an entry "
        "JAX cannot read, as a run killed while writing it leaves: jablate deletes the "
        "entries it finds cut short when this run ends; should this come again, delete the "
        "directory, or set JABLATE_COMPILE_CACHE=off)",
        "jablate: warning: Error reading persistent compilation cache entry for 'a': "
        f"Timeout: lock (the compile cache {where} holds an entry JAX cannot read, as a run "
        "killed while writing it leaves: jablate deletes the entries it finds cut short "
        "when this run ends; should this come again, delete the directory, or set "
        "JABLATE_COMPILE_CACHE=off)",
        "jablate: warning: another warning"]
    assert cli._UNREADABLE == {where: {"a"}}  # deleted when main ends, if cut short
