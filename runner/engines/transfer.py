"""Arrays between the runner and a worker: one file per direction holding the arrays' bytes back to back, each
described (name, dtype, shape) in the JSON request or reply that names the file.

No zip, no `.npy` headers, no pickle: on the conformance suite's tiny models numpy's `.npy` writer and its header
parser (`ast.literal_eval` per array) were a fifth of the runner's own CPU time. Each array starts on a 64-byte
boundary, so the views read back are aligned; object and void dtypes are refused both ways, and a file shorter
than its descriptions is an error. Imports only numpy: the worker runs it under any interpreter.
"""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np

ALIGN = 64


def _checked(dtype: str) -> np.dtype:
    kind = np.dtype(dtype)
    if kind.hasobject or kind.kind == "V":
        raise ValueError(f"refusing to transfer an array of dtype {kind}")
    return kind


def write_arrays(path: str, arrays: Mapping[str, np.ndarray]) -> list[list]:
    """Write the arrays in order; return their descriptions, for the other side to read them back by."""
    described, offset = [], 0
    # written over, never truncated: the reader takes the bytes described, and truncating a file that held the
    # last call's arrays cost more than writing this call's on the conformance suite's tiny models
    with open(path, "r+b" if os.path.exists(path) else "wb") as stream:
        for name, value in arrays.items():
            array = np.asarray(value)
            _checked(array.dtype.str)
            if not array.flags.c_contiguous:
                array = array.copy(order="C")
            pad = -offset % ALIGN
            stream.write(b"\0" * pad)
            stream.write(array.data if array.size else b"")
            offset += pad + array.nbytes
            described.append([name, array.dtype.str, list(array.shape)])
    return described


def read_arrays(path: str, described: list) -> dict[str, np.ndarray]:
    layout, end = [], 0
    for name, dtype, shape in described:
        kind = _checked(dtype)
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count < 0:
            raise ValueError(f"{path}: {name} has a negative dimension {shape}")
        end += -end % ALIGN
        layout.append((name, kind, count, end, shape))
        end += count * kind.itemsize
    data = bytearray(end)   # writable, as the arrays np.load gave
    with open(path, "rb") as stream:
        if stream.readinto(data) != end:
            raise ValueError(f"{path}: shorter than the {end} bytes the {len(described)} arrays described take")
    return {name: np.frombuffer(data, kind, count, offset).reshape(shape)
            for name, kind, count, offset, shape in layout}
