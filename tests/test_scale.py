"""Sharding across devices and processes gives the single-device results."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
from conftest import host_devices_env

HERE = Path(__file__).parent


def _env(devices):
    env = host_devices_env(devices)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def single():
    sys.path.insert(0, str(HERE))
    try:
        import scale_worker
        return scale_worker.results()
    finally:
        sys.path.remove(str(HERE))


def _compare(saved, single):
    for name, value in single.items():
        numpy.testing.assert_allclose(saved[name], value, rtol=1e-5, atol=1e-5, err_msg=name)


def test_four_devices_equal_one(tmp_path, single):
    out = tmp_path / "four.npz"
    subprocess.run([sys.executable, str(HERE / "scale_worker.py"), str(out)], env=_env(4),
                   check=True, timeout=300)
    saved = numpy.load(out)
    assert int(saved["devices"]) == 4
    _compare(saved, single)


def test_two_processes_of_two_devices_equal_one(tmp_path, single):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "multi.npz"
    procs = [subprocess.Popen([sys.executable, str(HERE / "scale_worker.py"), str(out),
                               f"127.0.0.1:{port}", str(i), "2"], env=_env(2),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in range(2)]
    logs = [p.communicate(timeout=300)[0].decode(errors="replace") for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)[-3000:]
    saved = numpy.load(out)
    assert int(saved["devices"]) == 4 and int(saved["processes"]) == 2
    _compare(saved, single)
