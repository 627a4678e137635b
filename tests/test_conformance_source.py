"""The conformance tree: made from the pinned onnx wheel byte for byte the same every time, and pinned by DVC."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mnn_parity.bundled.wheels import WHEEL_CACHE, ensure_wheel, pip_download
from mnn_parity.conformance import source
from mnn_parity.conformance.extract import INDEX, extract_tree, npz_bytes, read_index
from mnn_parity.inputs.arrays import load_npz

ROOT = Path(__file__).resolve().parent.parent
SUBSET = frozenset({"test_relu", "test_gelu_default_1", "test_equal_string", "test_identity_sequence"})


@pytest.fixture(scope="module")
def wheel() -> Path:
    """The pinned wheel, as `data restore` leaves it in .cache/wheels (fetched from PyPI if it is not there)."""
    ensure_wheel(source.WHEEL, ROOT / WHEEL_CACHE, pip_download)
    return ROOT / WHEEL_CACHE / source.WHEEL.filename


def test_npz_bytes_depend_only_on_the_arrays_and_read_back_through_the_runner(tmp_path):
    arrays = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "flag": np.array([True, False]),
              "loss": np.array(1.5, dtype=np.float32)}
    first, second = npz_bytes(arrays), npz_bytes(dict(arrays))
    assert first == second
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}
    (tmp_path / "a.npz").write_bytes(first)
    back = load_npz(tmp_path / "a.npz")
    assert list(back) == ["x", "flag", "loss"]
    assert back["loss"].shape == ()     # a scalar output stays a scalar (ascontiguousarray would make it (1,))
    assert back["x"].dtype == np.float32 and np.array_equal(back["x"], arrays["x"])
    assert back["flag"].dtype == np.bool_


def test_extraction_is_byte_identical_and_indexes_ops_and_skips(tmp_path, wheel):
    extract_tree(wheel, tmp_path / "a", "pinned", only=SUBSET)
    extract_tree(wheel, tmp_path / "b", "pinned", only=SUBSET)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)
    _, tests = read_index(tmp_path / "a")
    by_name = {t.name: t for t in tests}
    # the expanded twin is counted under the op it stands for, not under its Mul/Erf/... parts
    assert by_name["test_gelu_default_1_expanded"].op == "Gelu"
    assert len(by_name["test_gelu_default_1_expanded"].ops) > 1
    assert "STRING" in by_name["test_equal_string"].skipped
    assert "sequence" in by_name["test_identity_sequence"].skipped
    assert not (tmp_path / "a" / "test_equal_string").exists()
    relu = by_name["test_relu"]
    assert (relu.op, relu.skipped, relu.data_sets) == ("Relu", "", 1)
    feeds = load_npz(tmp_path / "a" / "test_relu" / "inputs" / "test_data_set_0.npz")
    expected = load_npz(tmp_path / "a" / "test_relu" / "expected" / "test_data_set_0.npz")
    assert list(feeds) == list(relu.inputs) and list(expected) == list(relu.outputs)
    assert np.array_equal(expected[relu.outputs[0]], np.maximum(feeds[relu.inputs[0]], 0))


def test_extraction_refuses_a_folder_that_is_not_empty(tmp_path, wheel):
    (tmp_path / "stray.txt").write_text("x")
    with pytest.raises(FileExistsError):
        extract_tree(wheel, tmp_path, "pinned", only=SUBSET)


@pytest.mark.slow
def test_the_restored_tree_is_the_one_its_dvc_file_pins():
    """`make test` restores it first (`mnn-parity data restore`); DVC's hash is the authority."""
    assert source.pinned(ROOT)
    assert source.differences(ROOT) == []
    assert (ROOT / source.TREE / INDEX).is_file()
