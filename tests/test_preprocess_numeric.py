"""Numeric steps: load (and what it refuses), zeros and value, and the array-to-array steps (scale, dtype, batch,
expand, reshape, transpose, clip)."""
from __future__ import annotations

import io
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from mnn_parity.inputs import arrays
from mnn_parity.inputs.preprocess import PreprocessError, run_pipeline


def run(steps, x):
    return run_pipeline(steps, np.asarray(x))


# --- load ------------------------------------------------------------------------------------------------------

def test_load_npy_and_npz(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(run_pipeline([{"load": {}}], tmp_path / "a.npy"), a)
    np.savez(tmp_path / "b.npz", x=a, y=a * 2)
    np.testing.assert_array_equal(run_pipeline([{"load": {"key": "y"}}], tmp_path / "b.npz"), a * 2)
    with pytest.raises(PreprocessError, match=r"b\.npz: step 1 \(load\): no array 'z'.*holds x, y"):
        run_pipeline([{"load": {"key": "z"}}], tmp_path / "b.npz")
    with pytest.raises(PreprocessError, match="holds 2 arrays"):
        run_pipeline([{"load": {}}], tmp_path / "b.npz")
    with pytest.raises(PreprocessError, match="'key' is 'x' but the file is a .npy"):
        run_pipeline([{"load": {"key": "x"}}], tmp_path / "a.npy")


def test_load_refuses_complex_arrays_instead_of_dropping_the_imaginary_part(tmp_path):
    np.save(tmp_path / "c.npy", np.array([1 + 2j, 3 - 4j], np.complex64))
    with pytest.raises(PreprocessError) as info:
        run_pipeline([{"load": {}}, {"dtype": "float32"}], tmp_path / "c.npy")
    assert (info.value.step_index, info.value.step) == (1, "load")
    assert "is complex (complex64)" in info.value.message and "imaginary part" in info.value.message
    np.savez(tmp_path / "c.npz", x=np.zeros(2, np.complex128))
    with pytest.raises(PreprocessError, match=r"c\.npz\[x\] is complex \(complex128\)"):
        run_pipeline([{"load": {"key": "x"}}], tmp_path / "c.npz")


def test_load_refuses_pickled_object_arrays(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(PreprocessError, match="Python objects, which would need pickle: refused"):
        run_pipeline([{"load": {}}], tmp_path / "o.npy")


def _deflated_zeros(head: bytes, chunks: int, chunk: int) -> bytes:
    """A raw deflate stream of `head` then chunks * chunk zero bytes, compressing one chunk only: a full flush
    ends a chunk on a byte boundary with nothing referring back, so its compressed bytes can be repeated."""
    zeros = bytes(chunk)
    first = zlib.compressobj(9, zlib.DEFLATED, -15)
    again = zlib.compressobj(9, zlib.DEFLATED, -15)
    repeat = again.compress(zeros) + again.flush(zlib.Z_FULL_FLUSH)
    return (first.compress(head + zeros) + first.flush(zlib.Z_FULL_FLUSH) + repeat * (chunks - 1)
            + again.flush(zlib.Z_FINISH))


def write_npz_bomb(path: Path, size: int, chunk: int = 16 << 20) -> None:
    """A .npz whose one member, x.npy, inflates to a uint8 array of `size` zeros (a whole number of chunks)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (size,)})
    head, chunks = header.getvalue(), size // chunk
    crc = zlib.crc32(head)
    zeros = bytes(chunk)
    for _ in range(chunks):
        crc = zlib.crc32(zeros, crc)
    data, name, inflated = _deflated_zeros(head, chunks, chunk), b"x.npy", len(head) + size
    common = struct.pack("<4H3L", 0, 8, 0, 0x21, crc, len(data), inflated)   # flags, deflate, 1980-01-01
    local = b"PK\x03\x04" + struct.pack("<H", 20) + common + struct.pack("<2H", len(name), 0) + name
    central = (b"PK\x01\x02" + struct.pack("<2H", 20, 20) + common + struct.pack("<5H2L", len(name), 0, 0, 0, 0, 0, 0)
               + name)
    end = b"PK\x05\x06" + struct.pack("<4H2LH", 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    path.write_bytes(local + data + central + end)


def test_load_refuses_a_zip_bomb_from_its_header_without_inflating_it(tmp_path):
    bomb = tmp_path / "bomb.npz"
    write_npz_bomb(bomb, 1536 << 20)                     # 1.5 GiB of zeros
    assert bomb.stat().st_size < 2 << 20
    with zipfile.ZipFile(bomb) as archive:               # a well-formed archive: the bomb is real
        (info,) = archive.infolist()
        assert info.file_size > 1536 << 20 and info.compress_type == zipfile.ZIP_DEFLATED
        with archive.open(info) as member:
            assert np.lib.format.read_magic(member) == (1, 0)
            assert np.lib.format.read_array_header_1_0(member)[0] == (1536 << 20,)
            assert member.read(1 << 20) == bytes(1 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(PreprocessError) as info:
            run_pipeline([{"load": {}}], bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (info.value.step_index, info.value.step) == (1, "load")
    assert "would take 1536 MiB in memory" in info.value.message and "1024 MiB" in info.value.message
    assert peak < 64 << 20, f"{peak / 2**20:.0f} MiB allocated while refusing"


def test_load_cap_is_read_when_the_step_runs(tmp_path, monkeypatch):
    np.savez_compressed(tmp_path / "big.npz", x=np.zeros(2 << 20, np.uint8))
    np.save(tmp_path / "small.npy", np.ones(1 << 19, np.uint8))
    monkeypatch.setattr(arrays, "MAX_ARRAY_BYTES", 1 << 20)
    with pytest.raises(PreprocessError, match=r"big\.npz\[x\] would take 2 MiB .* over the 1 MiB"):
        run_pipeline([{"load": {}}], tmp_path / "big.npz")
    assert run_pipeline([{"load": {}}], tmp_path / "small.npy").sum() == 1 << 19


def test_load_of_a_missing_or_broken_file_names_it(tmp_path):
    with pytest.raises(PreprocessError, match=r"gone\.npy: step 1 \(load\): could not read"):
        run_pipeline([{"load": {}}], tmp_path / "gone.npy")
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(PreprocessError, match=r"text\.npy: step 1 \(load\): .*not a \.npy array"):
        run_pipeline([{"load": {}}], tmp_path / "text.npy")


# --- zeros, value ----------------------------------------------------------------------------------------------

def test_zeros_and_value():
    z = run_pipeline([{"zeros": {"shape": [2, 1, 3]}}])
    assert z.dtype == np.float32 and z.shape == (2, 1, 3) and not z.any()
    sr = run_pipeline([{"value": {"data": 16000, "dtype": "int64"}}])
    assert sr.dtype == np.int64 and sr.shape == () and sr == 16000
    np.testing.assert_array_equal(run_pipeline([{"value": {"data": 2, "shape": [2, 2]}}]), np.full((2, 2), 2.0))
    np.testing.assert_array_equal(run_pipeline([{"value": {"data": [1, 2, 3, 4], "dtype": "int32", "shape": [2, 2]}}]),
                                  np.int32([[1, 2], [3, 4]]))
    with pytest.raises(PreprocessError, match="has 3 values but 'shape'"):
        run_pipeline([{"value": {"data": [1, 2, 3], "shape": [2, 2]}}])
    with pytest.raises(PreprocessError, match="cannot be made a float32 array"):
        run_pipeline([{"value": {"data": [[1, 2], [3]]}}])


# --- array to array --------------------------------------------------------------------------------------------

def test_scale_hand_computed():
    x = np.array([[[255, 0, 51]]], np.uint8)
    np.testing.assert_array_equal(run([{"scale": 0.5}], x), np.float32([[[127.5, 0, 25.5]]]))


def test_dtype_casts_and_range_errors():
    assert run([{"dtype": "int32"}], np.float32([1.9, -1.9])).tolist() == [1, -1]   # truncates toward zero
    assert run([{"dtype": "bool"}], np.float32([0, 2])).tolist() == [False, True]
    assert run([{"dtype": "float16"}], np.float32([1.5])).dtype == np.float16
    with pytest.raises(PreprocessError, match=r"step 1 \(dtype\): values span \[-1.0, 300.0\], outside uint8"):
        run([{"dtype": "uint8"}], np.float32([-1, 300]))
    with pytest.raises(PreprocessError, match="NaN or Inf"):
        run([{"dtype": "int64"}], np.float32([np.nan]))
    with pytest.raises(PreprocessError, match="float16"):
        run([{"dtype": "float16"}], np.float32([70000]))


def test_dtype_has_no_complex_target():
    for name in ("complex64", "complex128"):
        with pytest.raises(PreprocessError, match=r"step 1 \(dtype\): 'dtype' must be one of float32, .*got"):
            run([{"dtype": name}], np.float32([1.0]))


def test_batch_expand_reshape_transpose_clip():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert run([{"batch": True}], x).shape == (1, 2, 3)
    assert run([{"batch": False}], x).shape == (2, 3)
    assert run([{"expand": {"axis": -1}}], x).shape == (2, 3, 1)
    assert run([{"expand": {}}], x).shape == (1, 2, 3)
    with pytest.raises(PreprocessError, match="axis 4 is out of range"):
        run([{"expand": {"axis": 4}}], x)
    assert run([{"reshape": [3, -1]}], x).tolist() == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(PreprocessError, match=r"cannot reshape \(2, 3\) \(6 values\) to \[4, -1\]"):
        run([{"reshape": [4, -1]}], x)
    assert run([{"transpose": [1, 0]}], x).tolist() == [[0, 3], [1, 4], [2, 5]]
    with pytest.raises(PreprocessError, match="not a permutation"):
        run([{"transpose": [0, 0]}], x)
    assert run([{"clip": {"min": 1.5, "max": 4}}], x).tolist() == [[1.5, 1.5, 2], [3, 4, 4]]
    clipped = run([{"clip": {"min": -5, "max": 2.5}}], np.uint8([0, 3, 255]))
    assert clipped.dtype == np.uint8 and clipped.tolist() == [0, 2, 2]
    with pytest.raises(PreprocessError, match=r"step 1 \(clip\): set at least one of min, max"):
        run([{"clip": {}}], x)
