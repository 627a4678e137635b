"""`--mnn VERSION` environments: real venvs, real pip, real MNN wheels from the package index."""
from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mnn_parity.conversion.mnn_env import STAMP_NAME, MnnEnv, MnnEnvError, current_env, ensure_env, env_python, probe_version

OTHER = "3.5.0"      # a release other than the runner's own (3.6.1)


def test_current_env_is_this_interpreter_and_its_mnn():
    env = current_env()
    assert env == MnnEnv(version=importlib.metadata.version("MNN"), python=Path(sys.executable))
    assert env.version == "3.6.1"


def test_no_version_or_the_installed_one_needs_no_new_env(tmp_path):
    cache = tmp_path / "cache"
    assert ensure_env(None, cache) == current_env()
    assert ensure_env("3.6.1", cache) == current_env()
    assert ensure_env("3.6.1.0", cache) == current_env()    # PEP 440: the same release
    assert not cache.exists()


def test_probe_reports_the_mnn_an_interpreter_imports():
    assert probe_version(Path(sys.executable)) == current_env().version


def test_probe_of_an_interpreter_without_mnn_fails(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    with pytest.raises(MnnEnvError, match="cannot import MNN") as info:
        probe_version(env_python(tmp_path / "bare"))
    assert "ModuleNotFoundError" in info.value.output


def test_unknown_version_carries_pips_reason(tmp_path):
    with pytest.raises(MnnEnvError) as info:
        ensure_env("0.0.0-nope", tmp_path)
    assert "MNN==0.0.0-nope" in str(info.value)
    assert "No matching distribution found for MNN==0.0.0-nope" in info.value.output
    assert "No matching distribution" in str(info.value)     # the CLI prints str(exc)
    assert not (tmp_path / "0.0.0-nope").exists()            # nothing half-built is left to be reused


@pytest.mark.parametrize("version", ["../escape", "3.5.0/../../x", "", " 3.5.0"])
def test_versions_that_are_not_directory_names_are_refused(tmp_path, version):
    with pytest.raises(MnnEnvError, match="not a usable MNN version"):
        ensure_env(version, tmp_path / "cache")
    assert not (tmp_path / "escape").exists()


@pytest.fixture(scope="module")
def other_env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("mnn-envs")
    return cache, ensure_env(OTHER, cache)


def test_another_release_is_installed_into_its_own_venv(other_env):
    cache, env = other_env
    assert env.version == OTHER
    assert env.python == env_python(cache / OTHER)
    assert probe_version(env.python) == OTHER
    stamp = json.loads((cache / OTHER / STAMP_NAME).read_text())
    assert stamp["installed"] == OTHER and stamp["requested"] == OTHER
    # Only MNN and numpy (and what pip itself brings): the runner's own dependencies stay out.
    listed = subprocess.run([str(env.python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                            capture_output=True, text=True, check=True).stdout
    names = {p["name"].lower() for p in json.loads(listed)}
    assert {"mnn", "numpy"} <= names and not names & {"onnx", "onnxruntime", "pyyaml", "mnn-parity"}


def test_the_other_release_really_computes(other_env):
    """A stand-alone script (as the worker is) runs under the env's interpreter and gets MNN 3.5.0's answers."""
    _, env = other_env
    script = ("import MNN, numpy as np\n"
              "import MNN.expr as F\n"
              "x = F.const(np.arange(6, dtype=np.float32), [2, 3])\n"
              "print('SUM', float(F.reduce_sum(F.relu(x - 2.0)).read()), MNN.version(), flush=True)\n")
    out = subprocess.run([str(env.python), "-I", "-c", script], capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("SUM"))
    assert line.split()[1:] == ["6.0", OTHER]


def test_a_finished_env_is_reused(other_env):
    cache, env = other_env
    marker = cache / OTHER / "marker-from-test"
    marker.write_text("kept")
    assert ensure_env(OTHER, cache) == env
    assert marker.exists()


def test_an_env_without_its_stamp_is_rebuilt(other_env):
    """A killed install leaves no stamp: the directory must be built again, not trusted."""
    cache, env = other_env
    (cache / OTHER / STAMP_NAME).unlink()
    marker = cache / OTHER / "half-built"
    marker.write_text("left by a killed install")
    rebuilt = ensure_env(OTHER, cache)
    assert rebuilt == env
    assert not marker.exists()
    assert (cache / OTHER / STAMP_NAME).exists()
    assert probe_version(rebuilt.python) == OTHER
