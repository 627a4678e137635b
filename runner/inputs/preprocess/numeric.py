"""Numeric steps: `load` reads a .npy/.npz file, `zeros` and `value` make constants, and the rest reshape, cast,
scale or clamp whatever array they are given, whatever its rank."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np

from mnn_parity.inputs import arrays as array_files
from mnn_parity.inputs.preprocess.errors import StepError
from mnn_parity.inputs.preprocess.options import Options, hint
from mnn_parity.inputs.preprocess.tensor import contiguous


def load(path: Path, o: Options) -> np.ndarray:
    """A .npy's array, or the array `key` names in a .npz (optional when it holds one); never unpickled, and
    refused from its header when it is complex or would inflate past the cap."""
    try:
        # The cap is read now, not bound at import, so it is lowered in one place (a test, a small machine).
        loaded = array_files.load_array_file(path, array_files.MAX_ARRAY_BYTES)
    except array_files.ArrayFileError as e:
        raise StepError(str(e)) from None
    except OSError as e:
        raise StepError(f"could not read: {e}") from None
    key: Optional[str] = o["key"]
    if isinstance(loaded, np.ndarray):
        if key is not None:
            raise StepError(f"'key' is {key!r} but the file is a .npy holding a single array")
        return loaded
    names = list(loaded)
    if key is None:
        if len(names) != 1:
            raise StepError(f"the .npz holds {len(names)} arrays ({', '.join(names)}); choose one with 'key'")
        key = names[0]
    if key not in loaded:
        raise StepError(f"no array '{key}' in the .npz{hint(key, names)}; it holds {', '.join(names) or 'nothing'}")
    return loaded[key]


def zeros(o: Options) -> np.ndarray:
    return np.zeros(o["shape"], dtype=o["dtype"])


def value(o: Options) -> np.ndarray:
    try:
        x = np.array(o["data"], dtype=o["dtype"])
    except (ValueError, OverflowError, TypeError) as e:
        raise StepError(f"'data' cannot be made a {o['dtype']} array: {e}") from None
    if o["shape"] is None:
        return x
    shape = o["shape"]
    if x.ndim == 0:
        return np.full(shape, x, dtype=x.dtype)
    if x.size != math.prod(shape):
        raise StepError(f"'data' has {x.size} values but 'shape' {list(shape)} needs {math.prod(shape)}")
    return x.reshape(shape)


def scale(x: np.ndarray, s: float) -> np.ndarray:
    return (x.astype(np.float64) * s).astype(np.float32)


def dtype(x: np.ndarray, name: str) -> np.ndarray:
    target = np.dtype(name)
    if x.dtype == target:
        return x
    if target.kind in "iu" and x.size:
        # A silent wrap-around (300 → 44 in uint8) or NaN → INT_MIN would make both engines agree on garbage.
        if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            raise StepError(f"cannot cast NaN or Inf to {name}")
        info = np.iinfo(target)
        lo, hi = x.min(), x.max()
        if lo < info.min or hi > info.max:
            raise StepError(f"values span [{lo}, {hi}], outside {name}'s [{info.min}, {info.max}]; add clip first")
    if target == np.float16 and x.size and np.issubdtype(x.dtype, np.number):
        limit = float(np.finfo(np.float16).max)
        finite = np.isfinite(x) if x.dtype.kind == "f" else np.ones(x.shape, bool)
        if np.any(np.abs(x[finite].astype(np.float64)) > limit):
            raise StepError(f"values beyond float16's range (±{limit:g}) would become Inf; add clip first")
    return x.astype(target)   # float → integer truncates toward zero


def batch(x: np.ndarray, on: bool) -> np.ndarray:
    return x[None] if on else x


def expand(x: np.ndarray, o: Options) -> np.ndarray:
    axis = o["axis"]
    if not -(x.ndim + 1) <= axis <= x.ndim:
        raise StepError(f"axis {axis} is out of range for an array of rank {x.ndim} "
                        f"(valid: {-(x.ndim + 1)}..{x.ndim})")
    return np.expand_dims(x, axis)


def reshape(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if sum(1 for d in shape if d == -1) > 1:
        raise StepError("at most one dimension may be -1")
    try:
        return x.reshape(shape)
    except ValueError:
        raise StepError(f"cannot reshape {tuple(x.shape)} ({x.size} values) to {list(shape)}") from None


def transpose(x: np.ndarray, perm: tuple[int, ...]) -> np.ndarray:
    if sorted(perm) != list(range(x.ndim)):
        raise StepError(f"{list(perm)} is not a permutation of the axes of an array of rank {x.ndim}")
    return contiguous(x.transpose(perm))


def check_clip(o: Options) -> None:
    if o["min"] is None and o["max"] is None:
        raise StepError("set at least one of min, max")


def clip(x: np.ndarray, o: Options) -> np.ndarray:
    lo, hi = o["min"], o["max"]
    if lo is not None and hi is not None and lo > hi:
        raise StepError(f"'min' {lo} is greater than 'max' {hi}")
    if x.dtype.kind in "iu":
        # Bounds round inward and into the dtype's range, so the array keeps its integer dtype.
        info = np.iinfo(x.dtype)
        lo = None if lo is None else int(min(max(math.ceil(lo), info.min), info.max))
        hi = None if hi is None else int(max(min(math.floor(hi), info.max), info.min))
        return np.clip(x, lo, hi).astype(x.dtype)
    if x.dtype.kind != "f":
        raise StepError(f"cannot clip {x.dtype} data")
    return np.clip(x, lo, hi).astype(x.dtype)
