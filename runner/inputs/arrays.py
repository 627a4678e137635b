"""Reading user arrays (`.npy`, `.npz`) without trusting them: never unpickled, never inflated past a cap, and
only dtypes both engines can be fed.

A 2 MB `.npz` can hold a 2 GB array (zip compresses zeros ~1000:1), and the runner itself has no memory cap:
each member's header is read and its size checked before a byte of data is inflated.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Union

import numpy as np

# An input tensor for a model under test; a real one is a few MB. Over this, the file is refused, not loaded.
MAX_ARRAY_BYTES = 1 << 30


class ArrayFileError(ValueError):
    """The file is not a plain numeric array file the runner will read; the message says why."""


def _check(header_shape: tuple, dtype: np.dtype, what: str, limit: int) -> None:
    if dtype.hasobject:
        raise ArrayFileError(f"{what} holds Python objects, which would need pickle: refused")
    if dtype.kind == "c":
        raise ArrayFileError(f"{what} is complex ({dtype}): no engine input takes complex numbers, and casting "
                             "would silently drop the imaginary part")
    if dtype.kind not in "biuf":
        raise ArrayFileError(f"{what} has dtype {dtype}, not a numeric tensor")
    size = int(np.prod(header_shape, dtype=np.int64)) * dtype.itemsize
    if size > limit:
        raise ArrayFileError(f"{what} would take {size / 2**20:.0f} MiB in memory (shape {list(header_shape)}), "
                             f"over the {limit / 2**20:.0f} MiB an input may take")


def _read_header(handle, what: str) -> tuple[tuple, bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    except ValueError as error:
        raise ArrayFileError(f"{what}: not a .npy array ({error})") from None
    return shape, fortran, dtype


def load_npy(path: Path, limit: int = MAX_ARRAY_BYTES) -> np.ndarray:
    with open(path, "rb") as handle:
        shape, _, dtype = _read_header(handle, str(path))
        _check(shape, dtype, str(path), limit)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ArrayFileError(f"{path}: {error}") from None


def load_npz(path: Path, limit: int = MAX_ARRAY_BYTES) -> dict[str, np.ndarray]:
    """Every array of the archive by name, each checked from its header before it is inflated."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as error:
        raise ArrayFileError(f"{path}: not a .npz archive ({error})") from None
    arrays: dict[str, np.ndarray] = {}
    total = 0
    with archive:
        for info in archive.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            what = f"{path}[{name}]"
            with archive.open(info) as member:
                shape, _, dtype = _read_header(member, what)
                _check(shape, dtype, what, limit - total)
                total += int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if info.file_size > limit:
                raise ArrayFileError(f"{what} inflates to {info.file_size / 2**20:.0f} MiB: refused")
            with archive.open(info) as member:
                try:
                    arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
                except (OSError, ValueError, EOFError) as error:
                    raise ArrayFileError(f"{what}: {error}") from None
    return arrays


def load_array_file(path: Path, limit: int = MAX_ARRAY_BYTES) -> Union[np.ndarray, dict[str, np.ndarray]]:
    """A `.npy` gives its array, a `.npz` a dict of them (told apart by content, not by name)."""
    with open(path, "rb") as handle:
        is_zip = handle.read(4) == b"PK\x03\x04"
    return load_npz(path, limit) if is_zip else load_npy(path, limit)
