"""Arrays between the runner and a worker: one file per direction, the arrays' `.npy` records back to back.

No zip and no compression (an `.npz` cost several times the engine's own time on small models), no pickle: the
`.npy` header names a plain dtype and shape, `allow_pickle=False` on both sides refuses object arrays. The names
travel in the JSON request or reply, in the order of the records. Imports only numpy: the worker runs it under any
interpreter.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np


def write_arrays(path: str, arrays: Mapping[str, np.ndarray]) -> list[str]:
    """Write the arrays in order; return their names, for the other side to read them back by."""
    with open(path, "wb") as stream:
        for array in arrays.values():
            np.lib.format.write_array(stream, np.asanyarray(array), allow_pickle=False)
    return list(arrays)


def read_arrays(path: str, names: list[str]) -> dict[str, np.ndarray]:
    with open(path, "rb") as stream:
        arrays = {name: np.lib.format.read_array(stream, allow_pickle=False) for name in names}
        if stream.read(1):
            raise ValueError(f"{path}: more arrays than the {len(names)} named")
    return arrays
