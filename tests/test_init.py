"""`mnn-parity init` prepares a team's repository (suites/, .gitignore, DVC with analytics off, a root marker where
git does not mark one) without clobbering anything and is idempotent; `data restore` there touches nothing."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mnn_parity import cli
from mnn_parity.cli import main
from mnn_parity.repo_init import EXAMPLE, MARKER, InitError, init_repository
from mnn_parity.rootdir import find_root
from tests import onnx_models

# Each test runs git and DVC for real (about a second each): the slow tier.
pytestmark = [pytest.mark.skipif(shutil.which("git") is None, reason="git is needed for the repositories here"),
              pytest.mark.slow]


@pytest.fixture(autouse=True)
def no_root_override(monkeypatch):
    monkeypatch.delenv("MNN_PARITY_ROOT", raising=False)


def _git_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    return path


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(root).parts[:1]}


def _dvc_config(root: Path) -> str:
    return (root / ".dvc/config").read_text()


def test_init_prepares_a_git_repository_and_says_what_comes_next(tmp_path, capsys):
    root = _git_repo(tmp_path / "team")
    assert main(["init", str(root)]) == 0
    said = capsys.readouterr().err
    assert (root / EXAMPLE).read_text().startswith("# An example suite manifest")
    assert (root / ".gitignore").read_text().splitlines()[-4:] == [".cache/", "reports/", ".goldens.staging/",
                                                                   "/goldens/"]
    assert "analytics = false" in _dvc_config(root)
    assert "no_scm" not in _dvc_config(root)
    assert not (root / MARKER).exists()           # .git marks the root already
    for step in ("mnn-parity new", "mnn-parity validate", "mnn-parity run", "mnn-parity bless",
                 "git add goldens.dvc && dvc push", "goldens.dvc"):
        assert step in said, step


def test_a_second_init_changes_nothing_and_says_so(tmp_path, capsys):
    root = _git_repo(tmp_path / "team")
    first = init_repository(root)
    assert first.changes
    before = _snapshot(root)
    assert main(["init", str(root)]) == 0
    assert "already prepared for mnn-parity; nothing changed" in capsys.readouterr().err
    assert _snapshot(root) == before


def test_gitignore_is_appended_to_never_duplicated_or_clobbered(tmp_path):
    root = _git_repo(tmp_path / "team")
    (root / ".gitignore").write_text("node_modules\n/.cache")      # no final newline; .cache already ignored
    result = init_repository(root)
    lines = (root / ".gitignore").read_text().splitlines()
    assert lines[:2] == ["node_modules", "/.cache"]
    assert lines.count("reports/") == 1 and ".cache/" not in lines
    assert ".gitignore: added reports/, .goldens.staging/, /goldens/" in result.changes
    init_repository(root)
    assert (root / ".gitignore").read_text().splitlines() == lines


def test_without_git_dvc_runs_without_scm_and_a_marker_finds_the_root(tmp_path, capsys):
    root = tmp_path / "plain"                     # init creates it
    assert main(["init", str(root)]) == 0
    assert "no_scm = True" in _dvc_config(root)
    assert (root / MARKER).is_file()
    (root / "suites/deeper").mkdir(parents=True)
    assert find_root(root / "suites/deeper") == root.resolve()
    assert "commit what init wrote" not in capsys.readouterr().err


def test_inside_a_larger_git_repository_dvc_gets_a_subdir_and_the_folder_a_marker(tmp_path):
    outer = _git_repo(tmp_path / "mono")
    root = outer / "ml" / "parity"
    result = init_repository(root)
    assert result.scm == "subdir"
    assert (root / ".dvc/config").is_file() and not (outer / ".dvc").exists()
    assert (root / MARKER).is_file()
    assert find_root(root / "suites") == root.resolve()   # not the git root above it


def test_existing_dvc_set_up_and_example_are_kept_and_analytics_switched_off(tmp_path):
    root = _git_repo(tmp_path / "team")
    subprocess.run([cli.sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True,
                   env={**cli.os.environ, "DVC_NO_ANALYTICS": "1"})
    (root / ".dvc/config").write_text("[core]\n    remote = storage\n['remote \"storage\"']\n    url = /tmp/x\n")
    (root / EXAMPLE).parent.mkdir()
    (root / EXAMPLE).write_text("mine\n")
    result = init_repository(root)
    assert not any("initialised DVC" in change for change in result.changes)
    config = _dvc_config(root)
    assert "remote = storage" in config and "url = /tmp/x" in config and "analytics = false" in config
    assert (root / EXAMPLE).read_text() == "mine\n"


def test_a_dvc_failure_is_a_set_up_error(tmp_path, monkeypatch, capsys):
    def broken(root, *args):
        return subprocess.CompletedProcess(args, 1, "", "ERROR: something DVC says")

    monkeypatch.setattr("mnn_parity.repo_init.dvc_cli", broken)
    assert main(["init", str(tmp_path / "team")]) == 2
    assert "init: `dvc init --no-scm` failed: ERROR: something DVC says" in capsys.readouterr().err
    with pytest.raises(InitError):
        init_repository(tmp_path / "team")
    (tmp_path / "a-file").write_text("")
    assert main(["init", str(tmp_path / "a-file")]) == 2
    said = capsys.readouterr().err
    assert said.startswith("init: ") and "internal error" not in said


TODOS = (("TODO what this suite checks, and on which data", "a tiny convolution"), ("TODO-name-it", "tiny"),
         ("TODO/path/to/model.onnx", "models/tiny.onnx"), ("TODO-input-name", "x"),
         ("TODO/path/to/inputs/*.png", "images/*.png"), ("{height: TODO, width: TODO}", "{height: 8, width: 8}"),
         ("TODO-output-name", "y"))


def _model_and_images(root: Path) -> None:
    from PIL import Image

    onnx_models.conv_relu(root / "models/tiny.onnx")
    (root / "images").mkdir()
    for seed in (1, 2):
        pixels = np.random.RandomState(seed).randint(0, 255, (12, 10, 3), np.uint8)
        Image.fromarray(pixels).save(root / f"images/{seed}.png")


def _fill(text: str) -> str:
    """The example with every TODO filled for the tiny model and its images."""
    for todo, value in TODOS:
        assert todo in text, todo
        text = text.replace(todo, value)
    assert not [line for line in text.splitlines() if "TODO" in line.split("#")[0]]   # comments may say TODO
    return text


def test_the_example_manifest_is_not_read_until_copied_and_validates_once_filled(tmp_path, monkeypatch, capsys):
    root = _git_repo(tmp_path / "team")
    init_repository(root)
    _model_and_images(root)
    monkeypatch.chdir(root)
    copy = root / "suites/example.yaml"
    copy.write_text((root / EXAMPLE).read_text())
    assert main(["validate"]) == 2               # as written, its TODOs are errors, each with a line
    errors = capsys.readouterr().err
    assert "suites/example.yaml:41: models[0].inputs.TODO-input-name.preprocess[1].resize.height" in errors
    assert ".sample" not in errors
    copy.write_text(copy.read_text().replace("{height: TODO, width: TODO}", "{height: 8, width: 8}"))
    assert main(["validate"]) == 2               # then the paths the schema cannot check
    assert "no file 'TODO/path/to/model.onnx'" in capsys.readouterr().err
    copy.write_text(_fill((root / EXAMPLE).read_text()))
    assert main(["validate"]) == 0, capsys.readouterr().err


def test_bless_in_an_initialised_repository_without_git_tracks_goldens(tmp_path, monkeypatch, capsys):
    root = tmp_path / "plain"
    init_repository(root)
    _model_and_images(root)
    (root / "suites/example.yaml").write_text(_fill((root / EXAMPLE).read_text()))
    (root / "suites/deep").mkdir()
    monkeypatch.chdir(root / "suites/deep")       # the marker, not the working directory, names the root
    assert main(["bless", "--backend", "cpu-fp32", "--jobs", "1"]) == 0, capsys.readouterr().err
    assert "goldens.dvc updated" in capsys.readouterr().err
    assert (root / "goldens.dvc").is_file() and any((root / "goldens").iterdir())
    assert not (root / "suites/deep/goldens").exists()


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def test_after_committing_what_init_wrote_a_bless_leaves_only_goldens_dvc_to_add(tmp_path, monkeypatch, capsys):
    """The walk-through's order: init, commit what it says, bless, `git add goldens.dvc`: nothing else is left
    changed (DVC found goldens/ ignored already), and a teammate's clone ignores the goldens `dvc pull` brings."""
    root = _git_repo(tmp_path / "team")
    assert main(["init", str(root)]) == 0
    _git(root, "add", ".gitignore", ".dvc", ".dvcignore", "suites")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    _model_and_images(root)
    (root / "suites/example.yaml").write_text(_fill((root / EXAMPLE).read_text()))
    monkeypatch.chdir(root)
    assert main(["bless", "--backend", "cpu-fp32", "--jobs", "1"]) == 0, capsys.readouterr().err
    assert "goldens.dvc updated: `git add goldens.dvc" in capsys.readouterr().err
    changed = _git(root, "status", "--porcelain", "--untracked-files=all").splitlines()
    assert [line for line in changed if not line.startswith("?? ") or line[3:].startswith(("goldens", ".git"))] \
        == ["?? goldens.dvc"]
    assert _git(root, "check-ignore", "goldens/example").strip() == "goldens/example"


def test_data_restore_in_a_team_repository_says_why_and_touches_nothing(tmp_path, monkeypatch, capsys):
    root = _git_repo(tmp_path / "team")
    init_repository(root)
    (root / "data").mkdir()
    (root / "data/own.bin").write_bytes(b"the team's own")
    (root / "data.dvc").write_text("outs:\n- md5: 0123.dir\n  nfiles: 1\n  path: data\n")
    before = _snapshot(root)
    monkeypatch.chdir(root)
    for action in ("restore", "verify"):   # verify once reported the team's data.dvc as broken, exit 2
        assert main(["data", action]) == 0
        said = capsys.readouterr().err
        assert f"data {action}: nothing to do" in said and "only concerns mnn-parity's own bundled data set" in said
    assert _snapshot(root) == before and not (root / ".cache").exists()
