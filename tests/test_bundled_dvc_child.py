"""DVC runs as a child that dies with the runner: a killed `bless` leaves no `dvc add` writing on its own."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnn_parity.bundled.dvc import module_argv


def test_a_module_run_through_module_argv_runs_like_python_m(tmp_path: Path):
    (tmp_path / "hello.py").write_text("import sys\nprint('args', sys.argv[1:])\n")
    parent = (f"import subprocess, sys\nfrom mnn_parity.bundled.dvc import module_argv\n"
              f"sys.exit(subprocess.run(module_argv('hello', 'a', 'b')).returncode)\n")
    out = subprocess.run([sys.executable, "-c", parent], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0 and "args ['a', 'b']" in out.stdout


@pytest.mark.slow
def test_the_child_dies_when_the_runner_is_killed(tmp_path: Path):
    (tmp_path / "slow.py").write_text("import os, time\nopen('pid', 'w').write(str(os.getpid()))\ntime.sleep(60)\n")
    parent = ("import subprocess\nfrom mnn_parity.bundled.dvc import module_argv\n"
              "subprocess.run(module_argv('slow'))\n")
    runner = subprocess.Popen([sys.executable, "-c", parent], cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(tmp_path)})
    deadline = time.monotonic() + 20
    while not (tmp_path / "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int((tmp_path / "pid").read_text())
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the child outlived the runner")
