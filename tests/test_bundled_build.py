"""Fetching pinned wheels and building the data tree from them, on tiny wheels written here."""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnn_parity.bundled.build import build_tree, crop_to_netpbm
from mnn_parity.bundled.errors import DataError
from mnn_parity.bundled.sources import SOURCES_MD, CropSource, FileSource, Sources, WheelSource, render_sources_md
from mnn_parity.bundled.wheels import ensure_wheel, pip_target_args
from mnn_parity.hashing import sha256_file


def _raise_on_download(wheel, cache):
    raise AssertionError(f"downloaded {wheel.filename} although the cache held it")


def _tiny_wheel(folder: Path, members: dict[str, bytes]) -> WheelSource:
    path = folder / "tiny-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    files = tuple(FileSource(member=name, destination=f"data/tiny/{name}", sha256=hashlib.sha256(payload).hexdigest(),
                             size=len(payload), licence="MIT", description="test") for name, payload in members.items())
    return WheelSource("tiny", "1.0", path.name, sha256_file(path), path.stat().st_size, "MIT",
                       "https://pypi.org/project/tiny/1.0/", "https://example.invalid", files)


def test_pip_target_args_pin_the_exact_wheel_anywhere():
    args = pip_target_args("scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
    assert args == ["--implementation", "cp", "--python-version", "3.11", "--abi", "cp311",
                    "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64"]
    assert pip_target_args("silero_vad-6.2.3-py3-none-any.whl") == []
    with pytest.raises(DataError, match="not a wheel file name"):
        pip_target_args("tiny.whl")


def test_a_download_with_the_wrong_sha256_is_refused(tmp_path):
    (tmp_path / "src").mkdir()
    wheel = _tiny_wheel(tmp_path / "src", {"a.txt": b"a"})

    def tampered(w, into):
        into.joinpath(w.filename).write_bytes(b"not the pinned wheel")

    with pytest.raises(DataError, match=wheel.filename):
        ensure_wheel(wheel, tmp_path / "cache", tampered)


def test_a_cached_wheel_with_the_right_sha256_is_not_downloaded_again(tmp_path):
    (tmp_path / "cache").mkdir()
    wheel = _tiny_wheel(tmp_path / "cache", {"a.txt": b"a"})
    assert ensure_wheel(wheel, tmp_path / "cache", _raise_on_download) is False


def test_a_member_that_differs_from_its_pin_is_refused(tmp_path):
    (tmp_path / "cache").mkdir()
    wheel = _tiny_wheel(tmp_path / "cache", {"a.txt": b"a"})
    bad = FileSource("a.txt", "data/tiny/a.txt", "0" * 64, 1, "MIT", "test")
    wheel = WheelSource(**{**wheel.__dict__, "files": (bad,)})
    with pytest.raises(DataError, match="a.txt"):
        build_tree(Sources((wheel,)), tmp_path / "cache", tmp_path / "out")


def test_build_tree_writes_members_crops_and_sources_md_and_nothing_else(tmp_path):
    (tmp_path / "cache").mkdir()
    pixels = np.arange(4 * 6, dtype=np.uint8).reshape(4, 6)
    Image.fromarray(pixels).save(tmp_path / "page.png")
    wheel = _tiny_wheel(tmp_path / "cache", {"a.txt": b"a", "page.png": (tmp_path / "page.png").read_bytes()})
    line = b"P5\n3 2\n255\n" + pixels[1:3, 2:5].tobytes()
    crop = CropSource("data/tiny/page.png", (1, 2, 3, 5), "data/tiny/line.pgm", hashlib.sha256(line).hexdigest(),
                      "MIT", "test")
    sources = Sources((wheel,), (crop,))
    out = tmp_path / "out"
    assert build_tree(sources, tmp_path / "cache", out) == 4
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == [SOURCES_MD, "tiny/a.txt", "tiny/line.pgm", "tiny/page.png"]   # no temporary files left
    assert (out / "tiny" / "line.pgm").read_bytes() == line
    assert (out / SOURCES_MD).read_bytes() == render_sources_md(sources).encode("utf-8")


def test_build_tree_refuses_a_folder_that_already_holds_files(tmp_path):
    (tmp_path / "cache").mkdir()
    wheel = _tiny_wheel(tmp_path / "cache", {"a.txt": b"a"})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stray.txt").write_text("stray")
    with pytest.raises(DataError, match="not empty"):
        build_tree(Sources((wheel,)), tmp_path / "cache", tmp_path / "out")


def test_crops_are_binary_netpbm_of_exactly_the_box(tmp_path):
    pixels = np.arange(6 * 8, dtype=np.uint8).reshape(6, 8)
    Image.fromarray(pixels).save(tmp_path / "grey.png")
    payload = crop_to_netpbm(tmp_path / "grey.png", (1, 2, 4, 7))
    assert payload == b"P5\n5 3\n255\n" + pixels[1:4, 2:7].tobytes()
    rgb = np.stack([pixels, pixels + 1, pixels + 2], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert crop_to_netpbm(tmp_path / "rgb.png", (0, 0, 2, 2)) == b"P6\n2 2\n255\n" + rgb[:2, :2].tobytes()
    with pytest.raises(DataError, match="outside"):
        crop_to_netpbm(tmp_path / "grey.png", (0, 0, 7, 2))
