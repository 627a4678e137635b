"""Issue 8 re-audited on the real command line: the gaps found then closed, each pinned here.

- two blesses at once: the second is refused before it runs anything (the lock spans the run, the writes and
  `dvc add goldens`), and a run reading goldens meanwhile is not refused;
- goldens.dvc pinning files while goldens/ is missing or empty: `bless` is refused too (it would pin only the
  suites it writes), and an empty goldens/ is not "N new";
- a zip member whose header says more than the cap is refused whatever its array header says;
- a key written twice on one line says "on line N";
- a whole `mnn-parity run` under strace makes no connect() and no socket() call that succeeds.
"""
from __future__ import annotations

import fcntl
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mnn_parity.cli import main
from mnn_parity.goldens import GoldenStore
from mnn_parity.inputs.arrays import ArrayFileError, load_npz
from tests import onnx_models
from tests.repos import make_repo, one_model_manifest


@pytest.fixture()
def repo(tmp_path: Path, monkeypatch) -> Path:
    return make_repo(tmp_path, monkeypatch, {"good": one_model_manifest("good", "conv")},
                     onnx_models.conv_relu, "conv", {"a": np.random.RandomState(1).rand(1, 3, 8, 8).astype(np.float32)})


@pytest.mark.slow
def test_a_second_bless_is_refused_before_it_runs_anything(repo: Path, capsys):
    store = GoldenStore(repo / "goldens")
    store.staging.mkdir(parents=True)
    with open(store.staging / "bless.lock", "a") as held:       # another `mnn-parity bless`, still running
        fcntl.flock(held, fcntl.LOCK_EX)
        assert main(["bless"]) == 2
        err = capsys.readouterr().err
        assert "another bless" in err and "nothing was written" in err
        assert not (repo / "goldens").exists()
        assert not (repo / ".cache").exists()                   # refused before converting or running
        store.recover()                                         # a run's recovery does not fail meanwhile
        assert main(["run"]) == 0
    assert main(["bless"]) == 0 and store.keys("good") == {("conv", "a", "cpu-fp32")}


def test_bless_holds_its_lock_until_goldens_are_tracked(repo: Path, monkeypatch):
    import mnn_parity.bundled.restore as restore

    seen = []

    def dvc_add(root, folder):
        other = GoldenStore(repo / "goldens")
        try:
            with other.exclusive():
                seen.append("free")
        except Exception as error:   # BlessBusy: the lock is still held while goldens/ is tracked
            seen.append(type(error).__name__)
        return "not a DVC repository"
    monkeypatch.setattr(restore, "dvc_track", dvc_add)
    assert main(["bless"]) == 0
    assert seen == ["BlessBusy"]


def test_a_failed_dvc_add_where_goldens_dvc_pins_goldens_is_a_setup_error(repo: Path, monkeypatch, capsys):
    import mnn_parity.bundled.restore as restore

    assert main(["bless"]) == 0
    (repo / "goldens.dvc").write_text("outs:\n- path: goldens\n  nfiles: 4\n")
    monkeypatch.setattr(restore, "dvc_track", lambda root, folder: "ERROR: failed to add: lock is busy")
    assert main(["bless"]) == 2
    assert "run `dvc add goldens`" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "bless"])
def test_goldens_dvc_without_goldens_refuses_run_and_bless(repo: Path, capsys, command):
    (repo / "goldens.dvc").write_text("outs:\n- md5: 5a3a.dir\n  nfiles: 7\n  path: goldens\n")
    assert main([command]) == 2
    assert "run `dvc pull goldens.dvc`" in capsys.readouterr().err
    assert not (repo / "goldens").exists() and not (repo / "reports").exists()


@pytest.mark.parametrize("command", ["run", "bless"])
def test_an_empty_goldens_folder_under_a_pin_is_not_n_new(repo: Path, capsys, command):
    (repo / "goldens.dvc").write_text("outs:\n- md5: 5a3a.dir\n  nfiles: 7\n  path: goldens\n")
    (repo / "goldens/good").mkdir(parents=True)        # a failed pull, or a folder made by hand
    assert main([command]) == 2
    assert "goldens.dvc (7 file(s)) but holds no file: run `dvc pull goldens.dvc`" in capsys.readouterr().err
    assert list((repo / "goldens").rglob("*")) == [repo / "goldens/good"]


def test_a_pulled_goldens_folder_passes_the_gate(repo: Path):
    assert main(["bless"]) == 0
    (repo / "goldens.dvc").write_text("outs:\n- md5: 5a3a.dir\n  nfiles: 4\n  path: goldens\n")
    assert main(["run"]) == 0


def test_a_zip_member_inflating_past_the_cap_is_refused_even_with_a_small_array_header(tmp_path: Path):
    """The header says (1, 4): only the zip's own size says the member inflates to 64 MiB of zeros."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (1, 4)})
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x.npy", "w") as member:
            member.write(header.getvalue() + bytes(16))
            for _ in range(64):
                member.write(bytes(1 << 20))
    assert path.stat().st_size < 1 << 20
    with pytest.raises(ArrayFileError, match=r"bomb.npz\[x\] inflates to 64 MiB: refused"):
        load_npz(path, limit=32 << 20)


def test_a_key_written_twice_on_one_line_says_so(repo: Path, capsys):
    (repo / "suites/good.yaml").write_text(
        "suite: good\nmodels:\n  - name: conv\n    onnx: models/conv.onnx\n"
        "    inputs: {x: {files: inputs/*.npy, files: inputs/a.npy, preprocess: [{load: {}}]}}\n")
    assert main(["validate"]) == 2
    assert "key 'files' is written twice, on line 5;" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/strace").exists(), reason="needs strace")
def test_a_whole_run_under_strace_makes_no_connect_call(repo: Path):
    """The command line itself, converter and both engines included, as a user starts it."""
    trace = repo.parent / "trace.txt"
    env = {**os.environ, "MNN_PARITY_ROOT": str(repo), "MNN_PARITY_CACHE_DIR": str(repo / ".cache")}
    done = subprocess.run(["/usr/bin/strace", "-f", "-qq", "-s", "4096", "-e", "trace=connect,socket,execve",
                           "-o", str(trace), sys.executable, "-m", "mnn_parity.cli", "--root", str(repo), "run",
                           "--jobs", "2"], capture_output=True, text=True, timeout=300, env=env, cwd=repo)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = trace.read_text().splitlines()
    assert sum(1 for line in lines if "execve(" in line and "sandbox.py" in line) >= 3   # converter + 2 engines
    assert [line for line in lines if "connect(" in line] == []
    assert all("EACCES" in line for line in lines if "socket(" in line)


@pytest.mark.slow
def test_a_bless_killed_before_its_dvc_add_ended_is_finished_by_the_next_run(repo: Path, monkeypatch):
    import subprocess

    import mnn_parity.bundled.restore as restore
    from mnn_parity.repo_init import init_repository

    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    init_repository(repo)
    dvc = [str(Path(sys.executable).with_name("dvc")), "status", "goldens.dvc"]
    assert main(["bless"]) == 0 and (repo / "goldens.dvc").exists()
    assert "up to date" in subprocess.run(dvc, cwd=repo, capture_output=True, text=True).stdout

    real_track = restore.dvc_track

    def killed(root, folder):
        raise KeyboardInterrupt   # the user's Ctrl-C, after the new goldens were swapped in
    monkeypatch.setattr(restore, "dvc_track", killed)
    assert main(["bless"]) == 130
    store = GoldenStore(repo / "goldens")
    assert store.untracked_pending()
    assert "modified" in subprocess.run(dvc, cwd=repo, capture_output=True, text=True).stdout

    monkeypatch.setattr(restore, "dvc_track", real_track)
    assert main(["run", "-q", "--localise", "never"]) == 0
    assert not store.untracked_pending()
    assert "up to date" in subprocess.run(dvc, cwd=repo, capture_output=True, text=True).stdout
