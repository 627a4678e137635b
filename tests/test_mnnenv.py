"""`--mnn VERSION` environments: real venvs, real pip, real MNN wheels from the package index."""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mnn_parity.conversion.mnn_env import (ENVS_VARIABLE, STAMP_NAME, MnnEnv, MnnEnvError, current_env, ensure_env,
                                           env_python, envs_dir, probe_version)
from tests import onnx_models

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


def test_environments_are_shared_in_the_users_cache_unless_a_folder_is_chosen(tmp_path, monkeypatch):
    import platformdirs

    monkeypatch.setenv(ENVS_VARIABLE, str(tmp_path / "chosen"))
    assert envs_dir() == tmp_path / "chosen"
    assert envs_dir(tmp_path / "repo-cache") == tmp_path / "chosen"     # the variable wins over a caller's folder
    monkeypatch.delenv(ENVS_VARIABLE)
    assert envs_dir(tmp_path / "repo-cache") == tmp_path / "repo-cache"
    assert envs_dir() == Path(platformdirs.user_cache_dir("mnn-parity")) / "mnn-envs"


@pytest.mark.slow
def test_a_half_built_env_is_started_again_and_pips_words_are_shown(tmp_path, monkeypatch, capfd):
    """A killed install leaves no stamp: the folder is built again from nothing, pip's lines are shown as they
    come (prefixed, on stderr), and a failed install leaves nothing to be reused."""
    monkeypatch.setenv(ENVS_VARIABLE, str(tmp_path))
    half = tmp_path / "0.0.0-nope"
    half.mkdir()
    (half / "left-by-a-killed-install").write_text("")
    with pytest.raises(MnnEnvError) as info:
        ensure_env("0.0.0-nope")
    assert "MNN==0.0.0-nope" in str(info.value)
    assert "No matching distribution found for MNN==0.0.0-nope" in info.value.output
    assert "No matching distribution" in str(info.value)     # the CLI prints str(exc)
    assert not half.exists()
    shown = capfd.readouterr().err
    assert f"installing MNN 0.0.0-nope into {half}" in shown
    assert "  [pip MNN==0.0.0-nope] ERROR: No matching distribution found for MNN==0.0.0-nope" in shown


@pytest.mark.parametrize("version", ["../escape", "3.5.0/../../x", "", " 3.5.0"])
def test_versions_that_are_not_directory_names_are_refused(tmp_path, monkeypatch, version):
    monkeypatch.setenv(ENVS_VARIABLE, str(tmp_path / "cache"))
    with pytest.raises(MnnEnvError, match="not a usable MNN version"):
        ensure_env(version)
    assert not (tmp_path / "escape").exists()


@pytest.fixture(scope="module")
def other_env():
    """The session's shared folder (tests/conftest.py): built once for every test that needs MNN 3.5.0."""
    return envs_dir(), ensure_env(OTHER)


@pytest.mark.slow
def test_another_release_is_installed_into_its_own_venv(other_env):
    cache, env = other_env
    assert cache == Path(os.environ[ENVS_VARIABLE])
    assert env.version == OTHER
    assert env.python == env_python(cache / OTHER)
    assert probe_version(env.python) == OTHER
    stamp = json.loads((cache / OTHER / STAMP_NAME).read_text())
    assert stamp["installed"] == OTHER and stamp["requested"] == OTHER
    # Only MNN and numpy (and what pip itself brings): the runner's own dependencies stay out.
    listed = subprocess.run([str(env.python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
                            capture_output=True, text=True, check=True).stdout
    names = {p["name"].lower() for p in json.loads(listed)}
    assert {"mnn", "numpy"} <= names and not names & {"onnx", "onnxruntime", "pyyaml", "mnn-parity", "platformdirs"}


@pytest.mark.slow
def test_the_converter_and_the_worker_run_sandboxed_under_the_other_release(other_env, tmp_path):
    """The runner is not installed there: the converter child and the worker find their own modules."""
    import numpy as np

    from mnn_parity.conversion.mnnconvert import ConverterEnv, convert
    from mnn_parity.engines.host import EngineProcess, EngineSpec
    from mnn_parity.manifest.spec import ConvertFlags

    _, env = other_env
    model = onnx_models.conv_relu(tmp_path / "conv.onnx")
    conversion = convert(model, ConvertFlags(), ConverterEnv(env.python, env.version), tmp_path / "cache")
    assert conversion.ok, conversion.reason
    x = np.random.RandomState(0).rand(1, 3, 8, 8).astype(np.float32)
    with EngineProcess(EngineSpec("onnxruntime", model, (), ("y",))) as reference:
        ref, _ = reference.infer({"x": x})
    with EngineProcess(EngineSpec("mnn", conversion.mnn_model, ("x",), ("y",), python=env.python)) as worker:
        out, _ = worker.infer({"x": x})
        assert worker.version == OTHER and "network blocked by seccomp" in worker.sandbox
    assert np.abs(out["y"] - ref["y"]).max() < 1e-5


@pytest.mark.slow
def test_a_finished_env_is_reused(other_env):
    cache, env = other_env
    marker = cache / OTHER / "marker-from-test"
    marker.write_text("kept")
    assert ensure_env(OTHER) == env
    assert marker.exists()
    marker.unlink()
