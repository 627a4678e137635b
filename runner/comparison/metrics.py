"""What one MNN output is, measured against the reference's: numbers only, no verdict.

Pure numpy, no engines. Everything is computed in float64 so a float16 or int output is judged on its values,
not on the rounding of the comparison itself. `criteria.py` decides what the numbers mean; keeping the two apart
(as Polygraphy keeps its metrics apart from its thresholds) lets drift, localisation and reports reuse the numbers.

Rules worth knowing (each one is a decision, not an accident):
- Non-finite values are compared position by position. A NaN (or an Inf of the same sign) on both sides agrees;
  every other disagreement at a non-finite position counts as a mismatched element. Max/mean errors and cosine
  are taken over positions where both sides are finite, so one NaN does not hide every other number.
- The relative error of an element is |mnn − ref| / max(|ref|, atol): relative to the *reference*, with a floor,
  because below atol an element is judged by atol and a relative error there would only say "the reference is 0".
- An integer (or bool) reference holds labels, ids or counts: an element matches only when equal, since
  rtol·|ref| would let class 1000 pass as 999. A tolerance with atol >= 1 asks for numeric comparison instead
  (a quantized uint8 output, say), and gets it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from mnn_parity.comparison.topk import TopKAgreement, topk_agreement
from mnn_parity.manifest.spec import TopK
from mnn_parity.manifest.tolerance import Tolerance

DEAD_ZERO_ABS = 1e-30
# float32's smallest normal keeps the relative error finite when atol is 0 (after a ReLU it was 8e+37).
REL_FLOOR = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class Measurement:
    """Everything the criteria need, as numbers. `shapes_match` False leaves the error metrics None."""
    ref_shape: tuple[int, ...]
    mnn_shape: tuple[int, ...]
    ref_dtype: str
    mnn_dtype: str
    nan_ref: int
    inf_ref: int
    nan_mnn: int
    inf_mnn: int
    shapes_match: bool
    max_abs: Optional[float] = None
    max_rel: Optional[float] = None
    mean_abs: Optional[float] = None
    cosine: Optional[float] = None
    mismatch_fraction: Optional[float] = None   # elements outside atol + rtol*|ref|, non-finite disagreements too
    new_nan: int = 0                            # non-finite in MNN where the reference is finite
    new_inf: int = 0
    peak_abs: float = 0.0                       # largest |value| on either side where both are finite
    ref_flat: bool = False                      # all ~0 or constant (over positions where both are finite)
    mnn_flat: bool = False
    mnn_peak: float = 0.0
    mnn_first: float = 0.0
    ref_range: tuple[float, float] = (0.0, 0.0)
    topk: Optional[TopKAgreement] = None
    # the element furthest outside atol + rtol*|ref| (or, all inside, closest to its bound): where to look first
    worst_index: Optional[tuple[int, ...]] = None
    worst_ref: Optional[float] = None
    worst_mnn: Optional[float] = None
    labels: bool = False                        # judged by equality: the fraction of labels that differ


def labels_exact(ref_dtype: np.dtype, tolerance: Tolerance) -> bool:
    return (np.issubdtype(ref_dtype, np.integer) or ref_dtype == np.bool_) and tolerance.atol < 1


def measure(ref: np.ndarray, mnn: np.ndarray, tolerance: Tolerance, topk: Optional[TopK] = None) -> Measurement:
    """`tolerance` only sets what counts as a mismatched element and as a near tie; it judges nothing."""
    ref, mnn = np.asarray(ref), np.asarray(mnn)
    r, m = as_float64(ref, "reference"), as_float64(mnn, "MNN")
    labels = labels_exact(ref.dtype, tolerance)
    element_tol = replace(tolerance, atol=0.0, rtol=0.0) if labels else tolerance
    base = dict(ref_shape=tuple(int(d) for d in ref.shape), mnn_shape=tuple(int(d) for d in mnn.shape),
                ref_dtype=str(ref.dtype), mnn_dtype=str(mnn.dtype),
                nan_ref=int(np.isnan(r).sum()), inf_ref=int(np.isinf(r).sum()),
                nan_mnn=int(np.isnan(m).sum()), inf_mnn=int(np.isinf(m).sum()))
    if ref.shape != mnn.shape:
        return Measurement(**base, shapes_match=False)
    rf, mf = r.ravel(), m.ravel()
    both = np.isfinite(rf) & np.isfinite(mf)
    if both.all():
        rb, mb, odd = rf, mf, 0      # the usual case: skip the masked copies
    else:
        same_nonfinite = ~both & ((np.isnan(rf) & np.isnan(mf)) | (np.isinf(rf) & (rf == mf)))
        rb, mb, odd = rf[both], mf[both], int((~both & ~same_nonfinite).sum())
    new_nonfinite = np.isfinite(rf) & ~np.isfinite(mf)
    new_nan = int(np.isnan(mf[new_nonfinite]).sum())
    return Measurement(**base, shapes_match=True, labels=labels, **_errors(rb, mb, odd, rf.size, tolerance, labels),
                       **_worst(rb, mb, element_tol, None if both.all() else np.flatnonzero(both), ref.shape),
                       new_nan=new_nan, new_inf=int(new_nonfinite.sum()) - new_nan, **_shape_facts(rb, mb),
                       topk=topk_agreement(r, m, topk, tolerance) if topk is not None and ref.ndim and rf.size
                       else None)


def _errors(rb: np.ndarray, mb: np.ndarray, odd: int, size: int, tol: Tolerance, labels: bool) -> dict:
    # Finite float64 values can still differ by more than float64 holds (±1e308): such an error is inf, honestly.
    with np.errstate(over="ignore"):
        diff = np.abs(mb - rb)
        ref_abs = np.abs(rb)
        bound = 0.0 if labels else tol.atol + tol.rtol * ref_abs
        mismatched = int((diff > bound).sum()) + odd
        if not diff.size:
            return dict(max_abs=0.0, max_rel=0.0, mean_abs=0.0, cosine=cosine(rb, mb),
                        mismatch_fraction=mismatched / size if size else 0.0)
        return dict(max_abs=float(diff.max()),
                    max_rel=float((diff / np.maximum(ref_abs, max(tol.atol, REL_FLOOR))).max()),
                    mean_abs=float(diff.mean()), cosine=cosine(rb, mb), mismatch_fraction=mismatched / size)


def _worst(rb: np.ndarray, mb: np.ndarray, tol: Tolerance, positions: Optional[np.ndarray],
           shape: tuple) -> dict:
    """The worst element by the element-wise criterion, with its index in the output's own shape."""
    if not rb.size:
        return {}
    with np.errstate(over="ignore", invalid="ignore"):
        excess = np.abs(mb - rb) - (tol.atol + tol.rtol * np.abs(rb))
    at = int(np.argmax(excess))
    flat = int(positions[at]) if positions is not None else at
    index = tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()
    return dict(worst_index=index, worst_ref=float(rb[at]), worst_mnn=float(mb[at]))


def _shape_facts(rb: np.ndarray, mb: np.ndarray) -> dict:
    if not rb.size:
        return dict(ref_flat=True, mnn_flat=True)
    return dict(peak_abs=max(float(np.abs(rb).max()), float(np.abs(mb).max())), ref_flat=is_flat(rb),
                mnn_flat=is_flat(mb), mnn_peak=float(np.abs(mb).max()), mnn_first=float(mb[0]),
                ref_range=(float(rb.min()), float(rb.max())))


def as_float64(x: np.ndarray, side: str) -> np.ndarray:
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.iscomplexobj(x):
        raise TypeError(f"cannot compare {side} dtype {x.dtype}")
    return x.astype(np.float64)


def is_flat(values: np.ndarray) -> bool:
    """All (almost) zero, e.g. `[4.17e-38, 0]` from an unread tensor, or one constant value."""
    if values.size == 0:
        return True
    return float(np.abs(values).max()) <= DEAD_ZERO_ABS or float(values.max()) == float(values.min())


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    # einsum's own loop, not BLAS: a threaded BLAS call in a process that also starts children is what hung runs.
    return float(np.einsum("i,i->", a, b))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of flattened arrays in float64; both all-zero → 1.0, exactly one all-zero → 0.0."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    sa = float(np.abs(a).max()) if a.size else 0.0
    sb = float(np.abs(b).max()) if b.size else 0.0
    if sa == 0.0 and sb == 0.0:
        return 1.0
    if sa == 0.0 or sb == 0.0:
        return 0.0
    # Squares of float64 beyond ~1e150 overflow (and below ~1e-150 underflow): scale such sides to max 1 first.
    if not 1e-150 < sa < 1e150:
        a = a / sa
    if not 1e-150 < sb < 1e150:
        b = b / sb
    # sqrt(|a|²|b|²) rather than |a|·|b|: identical arrays then give exactly 1.0, so cosine_min: 1.0 is usable.
    value = _dot(a, b) / np.sqrt(_dot(a, a) * _dot(b, b))
    return min(1.0, max(-1.0, float(value)))

