"""Whether a preprocessed input is worth testing with: a constant or near-constant float input through a
normalisation layer divides by ~sqrt(eps), so tiny engine differences explode and the comparison means nothing."""
from __future__ import annotations

from typing import Optional

import numpy as np


def degenerate_reason(array: np.ndarray) -> Optional[str]:
    """Why a float input is not a meaningful test input, or None if it is. The reason is bare (the caller
    adds "not a meaningful test input"), e.g. "constant: all 48 values are 0".

    Flags NaN/Inf, a constant array, and (near) zero variance: std <= 1e-6 * max(1, |mean|). Integer and bool
    inputs (ids, masks, sizes) and arrays of fewer than two values are never flagged: being constant is their
    nature.
    """
    x = np.asarray(array)
    if x.dtype.kind != "f" or x.size < 2:
        return None
    finite = np.isfinite(x)
    if not finite.all():
        nan = int(np.isnan(x).sum())
        return f"{nan} NaN and {x.size - int(finite.sum()) - nan} Inf values"
    first = x.flat[0]
    if np.all(x == first):
        return f"constant: all {x.size} values are {float(first):g}"
    mean = float(np.mean(x, dtype=np.float64))
    std = float(np.std(x, dtype=np.float64))
    if std <= 1e-6 * max(1.0, abs(mean)):
        return f"near-zero variance (std {std:.3g}, mean {mean:.6g})"
    return None
