"""A wheel built from the repository, installed (not editable) into a fresh virtual environment elsewhere, gives a
working `mnn-parity` in a team's own git repository: init, new, validate, run, bless, all from a subfolder.

The environment is a clean one (no --system-site-packages): the test's own interpreter is itself a venv, whose
packages a new venv could not see anyway, and a clean install is what catches a dependency or a data file that
the wheel forgot. pip fetches the dependencies from PyPI: the install took 0.8-1.9 minutes here.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests import onnx_models

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("git") is None, reason="a team's repository is a git repository")]

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "runner", "schemas")
# What setuptools prints when a project's licence metadata is in a deprecated form (a TOML table, a classifier).
BANNER = re.compile(r"SetuptoolsDeprecationWarning|licen[cs]e[^\n]*deprecat|deprecat[^\n]*licen[cs]e", re.I)


def _run(argv: list, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MNN_PARITY_", "PYTHON"))}
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _build_wheel(work: Path) -> tuple[Path, str]:
    # A copy of the sources, so that no stale build/ folder of the working tree can slip a deleted module in.
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(ROOT / name, source / name)
    built = _run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", work / "dist", source], work)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return next((work / "dist").glob("mnn_parity-*.whl")), built.stdout + built.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ folder of a fresh venv with the wheel installed."""
    work = tmp_path_factory.mktemp("wheel")
    wheel, build_log = _build_wheel(work)
    assert not BANNER.search(build_log), BANNER.search(build_log).group(0)
    venv.EnvBuilder(with_pip=True).create(work / "venv")
    bin_dir = work / "venv" / "bin"
    done = _run([bin_dir / "python", "-m", "pip", "install", wheel], work, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not BANNER.search(done.stdout + done.stderr)
    return bin_dir


def test_the_installed_package_reads_its_schemas_and_data_table(installed, tmp_path):
    probe = ("import mnn_parity, sys\n"
             "from mnn_parity.resources import schema, schema_names\n"
             "from mnn_parity.bundled.sources import load_sources\n"
             "print(mnn_parity.__file__)\n"
             "print(sorted(schema_names()), schema('manifest.schema.json')['title'], len(load_sources().wheels))\n")
    done = _run([installed / "python", "-c", probe], tmp_path)
    assert done.returncode == 0, done.stderr
    where, found = done.stdout.splitlines()
    assert "site-packages" in where and str(ROOT) not in where        # the wheel's copy, not this tree
    assert "'manifest.schema.json', 'preprocess.schema.json', 'report.schema.json'" in found
    assert "mnn-parity suite manifest" in found


def _team_repository(path: Path) -> Path:
    path.mkdir()
    assert _run(["git", "init", "-q"], path).returncode == 0
    onnx_models.conv_relu(path / "models/tiny.onnx")
    (path / "inputs").mkdir()
    for seed in (1, 2):
        np.save(path / f"inputs/{seed}.npy", np.random.RandomState(seed).rand(1, 3, 8, 8).astype(np.float32))
    (path / "work").mkdir()
    return path


def _fill(manifest: Path) -> None:
    """What a user does after `new`: point the input at the real data and say how it is read."""
    data = yaml.safe_load(manifest.read_text())
    data["models"][0]["inputs"]["x"].update(files="inputs/*.npy", preprocess=[{"load": {}}])
    data["description"] = "a tiny convolution"
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))


def test_init_new_validate_run_bless_from_a_subfolder_of_a_team_repository(installed, tmp_path):
    team = _team_repository(tmp_path / "team")
    tool, here = installed / "mnn-parity", team / "work"

    def ok(*argv: str) -> str:
        done = _run([tool, *argv], here)
        assert done.returncode == 0, f"mnn-parity {' '.join(argv)}: {done.returncode}\n{done.stderr[-4000:]}"
        return done.stderr

    assert "git add goldens.dvc && dvc push" in ok("init", "..")
    ok("new", "../models/tiny.onnx")
    manifest = team / "suites/tiny.yaml"
    assert manifest.is_file() and not (here / "suites").exists()
    refused = _run([tool, "validate"], here)
    assert refused.returncode == 2 and "matches no file" in refused.stderr      # its TODO data path
    _fill(manifest)
    assert "ok: " in ok("validate")
    ok("run", "--jobs", "1")
    assert (team / "reports/tiny.md").is_file()
    assert json.loads((team / "reports/tiny.json").read_text())["counts"]["drift"] == {"new": 4}
    assert "goldens.dvc updated" in ok("bless", "--jobs", "1")
    assert (team / "goldens.dvc").is_file() and any((team / "goldens").rglob("*.npz"))
    untracked = _run(["git", "status", "--porcelain", "--untracked-files=all"], team).stdout
    assert "goldens.dvc" in untracked
    for ignored in ("reports/", ".cache/", "goldens/", ".goldens.staging/"):   # init's and DVC's .gitignore lines
        assert f" {ignored}" not in untracked, untracked
    ok("run", "--jobs", "1")
    counts = json.loads((team / "reports/tiny.json").read_text())["counts"]
    assert counts["verdict"] == {"PASS": 4} and counts["drift"] == {"identical": 4}   # 2 cases x 2 backends
    restore = _run([tool, "data", "restore"], here)
    assert restore.returncode == 0 and "only concerns mnn-parity's own bundled data set" in restore.stderr
    assert not (team / "data").exists()


def test_pytest_and_github_outputs_from_the_installed_wheel(installed, tmp_path):
    """The walk-through's steps 9 and 11: the plugin the wheel registers collects the suite (pytest installed
    beside it, as docs/your-repository.md says), and inside GitHub Actions a failing run annotates the manifest
    and fills the step summary; `.gitignore` as init wrote it already ignores what bless makes."""
    team = _team_repository(tmp_path / "team")
    tool, here = installed / "mnn-parity", team / "work"
    assert _run([tool, "init", ".."], here).returncode == 0
    assert _run(["git", "add", "."], team).returncode == 0                   # commit what init wrote
    assert _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], team).returncode == 0
    assert _run([tool, "new", "../models/tiny.onnx"], here).returncode == 0
    _fill(team / "suites/tiny.yaml")
    assert _run([tool, "bless", "--jobs", "1", "--backend", "cpu-fp32"], here).returncode == 0
    changed = _run(["git", "status", "--porcelain", "--untracked-files=all"], team).stdout.splitlines()
    assert not [line for line in changed if not line.startswith("??")], changed      # .gitignore untouched

    got = _run([installed / "python", "-m", "pip", "install", "-q", "pytest"], team, timeout=900)
    assert got.returncode == 0, got.stderr[-3000:]
    tests = _run([installed / "python", "-m", "pytest", "-p", "no:cacheprovider", "-rA", "../suites/", "-k",
                  "cpu-fp32"], here)
    assert tests.returncode == 0, tests.stdout[-4000:]
    assert "PASSED ../suites/tiny.yaml::tiny/1[cpu-fp32]" in tests.stdout, tests.stdout[-4000:]
    assert re.search(r"2 passed, 2 deselected", tests.stdout), tests.stdout[-2000:]

    manifest = team / "suites/tiny.yaml"
    data = yaml.safe_load(manifest.read_text())
    onnx_models.round_half(team / "models/round.onnx")                    # MNN rounds halves away from zero: FAIL
    (team / "halves").mkdir()
    np.save(team / "halves/h.npy", np.array([[0.5, 1.5, 2.5, -0.5, 3.5, 4.5, -2.5, 0.25]], np.float32))
    data["models"].append({"name": "round", "onnx": "models/round.onnx",
                           "inputs": {"x": {"files": "halves/*.npy", "preprocess": [{"load": {}}]}}})
    manifest.write_text(yaml.safe_dump(data, sort_keys=False))
    (team / "suites/typo.yaml").write_text(yaml.safe_dump({**data, "suite": "typo", "modles": []}, sort_keys=False))
    summary = tmp_path / "summary.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MNN_PARITY_", "PYTHON", "GITHUB_"))}
    env.update(GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(summary), GITHUB_WORKSPACE=str(team))
    bad = subprocess.run([str(tool), "run", "--localise", "never", "--backend", "cpu-fp32"], cwd=here, env=env,
                         capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert bad.returncode == 2, bad.stderr[-3000:]                             # the bad manifest: exit status 2
    assert re.search(r"^::error file=suites/typo\.yaml,line=\d+,title=mnn-parity%3A manifest::modles: unknown key",
                     bad.stdout, re.M), bad.stdout
    assert re.search(r"^::error file=suites/tiny\.yaml,line=\d+,title=mnn-parity tiny/round%3A 1 FAIL::", bad.stdout,
                     re.M), bad.stdout
    shown = summary.read_text()
    assert shown.startswith("# mnn-parity: tiny ❌") and "## mnn-parity: 1 problem(s) in manifests or setup" in shown
