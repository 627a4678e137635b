"""The arrays between the runner and its workers: raw bytes described in the JSON, nothing else trusted."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mnn_parity.engines.transfer import read_arrays, write_arrays


def test_every_dtype_and_shape_comes_back_identical_aligned_and_writable(tmp_path: Path):
    arrays = {"f32": np.arange(12, dtype=np.float32).reshape(3, 4), "scalar": np.array(2.5, np.float64),
              "empty": np.zeros((0, 3), np.int64), "flags": np.array([True, False, True]),
              "half": np.array([1, 2, 3], np.float16), "u8": np.arange(5, dtype=np.uint8),
              "big_endian": np.arange(3, dtype=">i4"), "strided": np.arange(20, dtype=np.int32)[::3],
              "text": np.array(["ab", "c"])}
    described = write_arrays(str(tmp_path / "a.bin"), arrays)
    assert [d[0] for d in described] == list(arrays)
    back = read_arrays(str(tmp_path / "a.bin"), described)
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape, name
        assert np.array_equal(back[name], array), name
        assert back[name].ctypes.data % 16 == 0 and back[name].flags.writeable, name


def test_bytes_that_do_not_match_the_description_are_refused(tmp_path: Path):
    described = write_arrays(str(tmp_path / "a.bin"), {"x": np.ones(4, np.float32)})
    with pytest.raises(ValueError, match="shorter"):
        read_arrays(str(tmp_path / "a.bin"), [["x", "<f4", [5]]])
    with pytest.raises(ValueError, match="negative"):
        read_arrays(str(tmp_path / "a.bin"), [["x", "<f4", [-1, 4]]])
    with pytest.raises(ValueError, match="refusing"):
        read_arrays(str(tmp_path / "a.bin"), [["x", "|O", [2]]])
    with pytest.raises(ValueError, match="refusing"):
        write_arrays(str(tmp_path / "b.bin"), {"x": np.array([object()])})
    assert read_arrays(str(tmp_path / "a.bin"), described)["x"].tolist() == [1.0] * 4


def test_a_shorter_write_over_a_longer_file_reads_back_its_own_arrays(tmp_path: Path):
    path = str(tmp_path / "a.bin")
    write_arrays(path, {"x": np.arange(1000, dtype=np.float64)})
    described = write_arrays(path, {"y": np.array([7, 8], np.int32)})   # over the last call's, not truncated
    assert read_arrays(path, described)["y"].tolist() == [7, 8]
