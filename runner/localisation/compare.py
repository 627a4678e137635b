"""Per-tensor errors between MNN and ONNX Runtime: element-wise work in the tensors' own float type, sums in
float64.

A detector's intermediates hold some 10^8 elements per case: converting each to float64 and masking it cost
4 s per 5·10^7 elements, twenty times the passes below (measured with bench/localise.py).

Numpy only: the MNN child loads this file by path (it runs under an interpreter that may hold nothing but MNN and
numpy), so the parent and the child judge a tensor with the very same code.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Union

import numpy as np

# Cosine below this (and max-rel above REL_MIN) is a divergence. Max-rel alone jumps on one element; cosine alone
# ignores scale, so both must say so.
COSINE_MIN = {"high": 0.999, "low": 0.99}
REL_MIN = 1e-2
# Below this absolute difference a float32 tensor of O(1) activations differs by rounding alone: a saturated
# Sigmoid of PP-OCR's detector (all ~1e-8) gave max-rel 0.6 and cosine 0.53 on a case the run passes.
ABS_MIN = 1e-5
FP16_MAX = 65504.0


def squeezed(shape: tuple) -> tuple:
    """A Conv1D becomes Unsqueeze→Conv2D→Squeeze in MNN: ranks differ by unit axes that carry nothing."""
    return tuple(int(d) for d in shape if int(d) != 1)


def measure(mnn: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    """status: ok | shape | int | nan | layout; err = 1 − cosine (inf for a shape or a non-finite value)."""
    if mnn.size != ref.size:
        return {"status": "shape", "err": math.inf, "rel": math.inf, "cos": 0.0,
                "detail": f"MNN {list(mnn.shape)} vs ONNX {list(ref.shape)}"}
    layout = squeezed(mnn.shape) != squeezed(ref.shape)
    if ref.dtype.kind in "iub" and mnn.dtype.kind in "iub":
        same = bool(np.array_equal(mnn.reshape(-1).astype(np.int64), ref.reshape(-1).astype(np.int64)))
        return {"status": "int" if not same else ("layout" if layout else "ok"), "err": 0.0 if same else 1.0,
                "rel": 0.0 if same else 1.0, "cos": 1.0 if same else 0.0, "detail": ""}
    a, b = _floats(mnn), _floats(ref)
    fast = _finite_measure(a, b)
    if fast is not None:
        rel, err, delta = fast
        return {"status": "layout" if layout else "ok", "err": err, "rel": rel, "cos": max(-1.0, 1.0 - err),
                "abs": delta, "detail": ""}
    a_ok, b_ok = np.isfinite(a), np.isfinite(b)
    if not (a_ok.all() and b_ok.all()):
        if bool(np.any(a_ok < b_ok)):
            return {"status": "nan", "err": math.inf, "rel": math.inf, "cos": 0.0,
                    "detail": f"{int(np.sum(a_ok < b_ok))} non-finite value(s) only in MNN"}
        keep = a_ok & b_ok
        a, b = a[keep], b[keep]
    del a_ok, b_ok
    delta = max_abs_difference(a, b)
    rel, cos = relative(a, b, delta), cosine(a, b)
    return {"status": "layout" if layout else "ok", "err": max(0.0, 1.0 - cos), "rel": rel, "cos": cos,
            "abs": delta, "detail": ""}


BLOCK = 4096


def _sum_squares(x: np.ndarray) -> float:
    """Σx² in float32 blocks of BLOCK elements, the blocks summed in float64: five times faster than a float64
    einsum over a detector's tensors, and each block's rounding (~1e-6 relative) is far below what `measure`
    reads from it. Non-finite, or too large for float32 squares, gives a non-finite sum."""
    whole = x.size - x.size % BLOCK
    total = float(np.einsum("ij,ij->i", x[:whole].reshape(-1, BLOCK), x[:whole].reshape(-1, BLOCK))
                  .sum(dtype=np.float64))
    return total + float(np.einsum("i,i->", x[whole:], x[whole:], dtype=np.float64))


def _finite_measure(a: np.ndarray, b: np.ndarray) -> Optional[tuple[float, float, float]]:
    """(max rel, 1 − cosine, max abs) of two float32 arrays, or None when either holds a non-finite value or a
    magnitude whose square float32 cannot hold (the exact path handles those).

    1 − cos = (|a − b|² − (|a| − |b|)²) / (2|a||b|): from the difference's own sum of squares, float32 blocks
    keep 1 − cos to ~1e-6 of |a − b|²/(2|a||b|), where a·b/(|a||b|) from float32 sums would be noise below 1e-6."""
    if a.dtype != np.float32 or b.dtype != np.float32 or a.size == 0:
        return None
    aa, bb = _sum_squares(a), _sum_squares(b)
    if not (math.isfinite(aa) and math.isfinite(bb)):
        return None
    difference = np.subtract(a, b)
    dd = _sum_squares(difference)
    np.abs(difference, out=difference)
    delta = float(difference.max())
    del difference
    scale = max(float(b.max()), -float(b.min()))
    rel = 0.0 if delta == 0.0 else (delta / scale if scale > 0 else math.inf)
    if aa == 0.0 and bb == 0.0:
        return rel, 0.0, delta
    if aa == 0.0 or bb == 0.0:
        return rel, 1.0, delta
    na, nb = math.sqrt(aa), math.sqrt(bb)
    return rel, min(2.0, max(0.0, (dd - (na - nb) ** 2) / (2.0 * na * nb))), delta


def _floats(array: np.ndarray) -> np.ndarray:
    """Flat, in float32 or float64: half precision and integers widened once, nothing narrowed."""
    flat = np.asarray(array).reshape(-1)
    return flat if flat.dtype in (np.float32, np.float64) else flat.astype(np.float32)


def max_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    if a.size == 0:
        return 0.0
    difference = np.subtract(a, b)
    np.abs(difference, out=difference)
    return float(difference.max())


def relative(a: np.ndarray, b: np.ndarray, delta: Optional[float] = None) -> float:
    if a.size == 0:
        return 0.0
    delta = max_abs_difference(a, b) if delta is None else delta
    if delta == 0.0:
        return 0.0
    scale = max(float(b.max()), -float(b.min()))
    return delta / scale if scale > 0 else math.inf


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    # einsum rather than np.dot: threaded BLAS calls stalled in a busy process; float64 sums without a copy
    aa, bb, ab = (float(np.einsum("i,i->", x, y, dtype=np.float64)) for x, y in ((a, a), (b, b), (a, b)))
    if aa == 0.0 and bb == 0.0:
        return 1.0
    if aa == 0.0 or bb == 0.0:
        return 0.0
    return max(-1.0, min(1.0, ab / math.sqrt(aa * bb)))


Criterion = Union[str, float]    # "high" | "low", or a cosine bound of the case's own


def cosine_bound(hint: Criterion) -> float:
    return float(hint) if isinstance(hint, (int, float)) else COSINE_MIN.get(hint, COSINE_MIN["high"])


def diverges(metric: dict[str, Any], hint: Criterion) -> bool:
    if metric["status"] in ("shape", "int", "nan"):
        return True
    return (metric["rel"] > REL_MIN and metric["cos"] < cosine_bound(hint)
            and metric.get("abs", math.inf) > ABS_MIN)


def within(mnn: np.ndarray, ref: np.ndarray, tolerance: dict) -> bool:
    """The run's own test of an output: every element within atol + rtol·|ref| (up to mismatch_max) and the
    cosine over cosine_min."""
    if mnn.size != ref.size:
        return False
    a, b = mnn.reshape(-1).astype(np.float64), ref.reshape(-1).astype(np.float64)
    bad = np.abs(a - b) > float(tolerance.get("atol", 1e-4)) + float(tolerance.get("rtol", 1e-3)) * np.abs(b)
    bad |= np.isfinite(a) != np.isfinite(b)
    if a.size and float(np.mean(bad)) > float(tolerance.get("mismatch_max", 0.0)):
        return False
    finite = np.isfinite(a) & np.isfinite(b)
    return cosine(a[finite], b[finite]) >= float(tolerance.get("cosine_min", 0.0))


def same_values(mnn: np.ndarray, ref: np.ndarray, hint: Criterion) -> bool:
    """Whether two arrays of equal size hold the same values (layout ignored): the alias and layout checks."""
    if mnn.size != ref.size:
        return False
    return not diverges(measure(mnn.reshape(-1), ref.reshape(-1)), hint)
