"""Compare one output of MNN against the reference and name what is wrong with it.

Pure numpy, no engines: arrays in, an `OutputComparison` out. Everything is computed in float64 so a float16 or
int output is judged on its values, not on the rounding of the comparison itself.

Rules worth knowing (each one is a decision, not an accident):
- Non-finite values are compared position by position. A NaN (or an Inf of the same sign) on both sides agrees;
  every other disagreement at a non-finite position counts as a mismatched element. Max/mean errors and cosine
  are taken over positions where both sides are finite, so one NaN does not hide every other number.
- "nan-inf" means MNN is non-finite where the reference is finite. NaN on both sides is the model's business.
- "dead-output": MNN's output is flat — all |x| <= DEAD_ZERO_ABS (1e-30; catches `[4.17e-38, 0]`, denormal
  garbage from an unread tensor) or constant (max == min) — while the reference is not flat, and the output is
  also out of tolerance. The last condition keeps a constant MNN output that matches a nearly constant
  reference (a saturated softmax) from being called dead.
- The cosine criterion is skipped when both sides lie within `atol` of zero everywhere: direction is noise
  there (DESIGN §2, degenerate inputs), and the element-wise atol test already covers it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from mnn_parity.manifest.spec import TopK
from mnn_parity.records import FailureClass, OutputComparison
from mnn_parity.manifest.tolerance import Tolerance

DEAD_ZERO_ABS = 1e-30
# Floor for |ref| in the relative error: below atol an element is judged by atol, so relative error there would
# only say "the reference is ~0" (after a ReLU it was 8e+37). float32's smallest normal keeps atol 0 finite.
REL_FLOOR = float(np.finfo(np.float32).tiny)


def compare_output(name: str, ref: np.ndarray, mnn: np.ndarray, tolerance: Tolerance,
                   topk: Optional[TopK] = None) -> OutputComparison:
    ref = np.asarray(ref)
    mnn = np.asarray(mnn)
    r = _as_float64(ref, "reference", name)
    m = _as_float64(mnn, "MNN", name)
    base = dict(name=name, ref_shape=tuple(int(d) for d in ref.shape), mnn_shape=tuple(int(d) for d in mnn.shape),
                ref_dtype=str(ref.dtype), mnn_dtype=str(mnn.dtype), tolerance=tolerance,
                nan_ref=int(np.isnan(r).sum()), inf_ref=int(np.isinf(r).sum()),
                nan_mnn=int(np.isnan(m).sum()), inf_mnn=int(np.isinf(m).sum()))
    if ref.shape != mnn.shape:
        return OutputComparison(**base, failure_class=FailureClass.SHAPE_MISMATCH,
                                reason=f"shape {_shape(mnn.shape)} vs reference {_shape(ref.shape)}")

    rf, mf = r.ravel(), m.ravel()
    finite_r, finite_m = np.isfinite(rf), np.isfinite(mf)
    both = finite_r & finite_m
    if both.all():
        rb, mb, odd = rf, mf, 0      # the usual case: skip the masked copies
    else:
        # NaN==NaN and inf==inf of the same sign agree; anything else at a non-finite position is a mismatch.
        same_nonfinite = ~both & ((np.isnan(rf) & np.isnan(mf)) | (np.isinf(rf) & (rf == mf)))
        rb, mb, odd = rf[both], mf[both], int((~both & ~same_nonfinite).sum())
    # Finite float64 values can still differ by more than float64 holds (±1e308): such an error is inf, honestly.
    with np.errstate(over="ignore"):
        diff = np.abs(mb - rb)
        ref_abs = np.abs(rb)
        mismatched = int((diff > tolerance.atol + tolerance.rtol * ref_abs).sum()) + odd
        size = rf.size
        metrics = dict(
            max_abs=float(diff.max()) if diff.size else 0.0,
            max_rel=float((diff / np.maximum(ref_abs, max(tolerance.atol, REL_FLOOR))).max()) if diff.size else 0.0,
            mean_abs=float(diff.mean()) if diff.size else 0.0,
            cosine=cosine(rb, mb),
            mismatch_fraction=mismatched / size if size else 0.0,
        )

    topk_fields: dict = {}
    positions = 0
    if topk is not None and ref.ndim > 0 and size:
        topk_fields = _topk(r, m, topk, tolerance)
        positions = topk_fields.pop("positions")

    failure, reason = _classify(finite_r, mf, rb, mb, metrics, topk_fields, positions, tolerance, topk)
    return OutputComparison(**base, **metrics, **topk_fields, failure_class=failure, reason=reason)


def judge(outputs: list[OutputComparison]) -> tuple[Optional[FailureClass], str]:
    """A case's class is its most fundamental output failure; the reason names that output."""
    if not outputs:
        return None, "no outputs compared"
    order = list(FailureClass)
    failing = [o for o in outputs if o.failure_class is not None]
    if not failing:
        worst = min(outputs, key=lambda o: (o.cosine if o.cosine is not None else 1.0))
        if len(outputs) == 1:
            return None, f"within tolerance ({_summary(worst)})"
        return None, f"{len(outputs)} outputs within tolerance (lowest cosine on {worst.name}: {_summary(worst)})"
    first = min(failing, key=lambda o: order.index(o.failure_class))   # min is stable: list order breaks ties
    more = len(failing) - 1
    suffix = f" (+{more} more failing output{'s' if more > 1 else ''})" if more else ""
    return first.failure_class, f"{first.name}: {first.reason}{suffix}"


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
    value = float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return min(1.0, max(-1.0, value))


# --- internals -------------------------------------------------------------------------------------------------

def _as_float64(x: np.ndarray, side: str, name: str) -> np.ndarray:
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.iscomplexobj(x):
        raise TypeError(f"output {name!r}: cannot compare {side} dtype {x.dtype}")
    return x.astype(np.float64)


def _is_flat(values: np.ndarray) -> bool:
    if values.size == 0:
        return True
    return float(np.abs(values).max()) <= DEAD_ZERO_ABS or float(values.max()) == float(values.min())


def _classify(finite_r, mf, rb, mb, metrics, topk_fields, positions, tol: Tolerance, topk):
    # finite_r, mf: over every element; rb, mb: the reference and MNN values where both sides are finite.
    new_nonfinite = finite_r & ~np.isfinite(mf)
    if new_nonfinite.any():
        n_nan = int(np.isnan(mf[new_nonfinite]).sum())
        n_inf = int(new_nonfinite.sum()) - n_nan
        return (FailureClass.NAN_INF,
                f"{int(new_nonfinite.sum())} non-finite where the reference is finite (NaN {n_nan}, Inf {n_inf})")

    mismatch_bad = metrics["mismatch_fraction"] > tol.mismatch_max
    near_zero = rb.size == 0 or max(float(np.abs(rb).max()), float(np.abs(mb).max())) <= tol.atol
    cosine_bad = (not near_zero) and metrics["cosine"] < tol.cosine_min
    out_of_tolerance = mismatch_bad or cosine_bad

    if out_of_tolerance and _is_flat(mb) and not _is_flat(rb):
        peak = float(np.abs(mb).max()) if mb.size else 0.0
        what = f"all zero (max |x| {peak:.2e})" if peak <= DEAD_ZERO_ABS else f"constant {float(mb[0]):.6g}"
        return (FailureClass.DEAD_OUTPUT,
                f"{what} where the reference spans [{float(rb.min()):.4g}, {float(rb.max()):.4g}]")

    if out_of_tolerance:
        pct = _pct(metrics["mismatch_fraction"])
        if mismatch_bad:
            return (FailureClass.OUT_OF_TOLERANCE,
                    f"max abs {metrics['max_abs']:.1e} > atol {tol.atol:g} on {pct} of elements "
                    f"(cosine {metrics['cosine']:.5f})")
        return (FailureClass.OUT_OF_TOLERANCE,
                f"cosine {metrics['cosine']:.5f} < {tol.cosine_min:g} (max abs {metrics['max_abs']:.1e}, "
                f"{pct} of elements outside atol {tol.atol:g})")

    flips = topk_fields.get("topk_flips", 0)
    if flips:
        ties = topk_fields.get("near_tie_flips", 0)
        return (FailureClass.TOPK_FLIP,
                f"top-{topk.k} flipped at {flips} of {positions} positions along axis {topk.axis}"
                + (f" ({ties} near-tie flips ignored)" if ties else ""))
    return None, ""


def _topk(r: np.ndarray, m: np.ndarray, topk: TopK, tol: Tolerance) -> dict:
    """Top-k agreement along an axis; a disagreement is a near tie when the reference barely separates the classes.

    For each position whose top-k sets differ, every class MNN put in its top-k that the reference did not is
    checked against the reference's k-th best score (for k=1: MNN's top-1 against the reference's top-1). The
    flip is a near tie when that gap is <= atol + rtol*|reference's k-th score| or <= the largest |mnn - ref| at
    that position: an error that big can legitimately reorder the scores.
    """
    axis = topk.axis % r.ndim
    k = max(1, min(int(topk.k), r.shape[axis]))
    # Rank NaN last so it never enters a top-k set by accident.
    rs = np.moveaxis(_nan_last(r), axis, -1).reshape(-1, r.shape[axis])
    ms = np.moveaxis(_nan_last(m), axis, -1).reshape(-1, r.shape[axis])
    if k == 1:   # argmax picks the first of equal scores, like a stable sort, at a fraction of the cost
        r_idx = np.argmax(rs, axis=1)[:, None]
        m_idx = np.argmax(ms, axis=1)[:, None]
        agree = r_idx[:, 0] == m_idx[:, 0]
    else:
        r_idx = np.argsort(-rs, axis=1, kind="stable")[:, :k]
        m_idx = np.argsort(-ms, axis=1, kind="stable")[:, :k]
        agree = np.all(np.sort(r_idx, axis=1) == np.sort(m_idx, axis=1), axis=1)
    positions = rs.shape[0]

    # Vectorised over the disagreeing positions: a segmentation map has hundreds of thousands of them when broken.
    bad = np.flatnonzero(~agree)
    flips = ties = 0
    if bad.size:
        rb, mb, ri, mi = rs[bad], ms[bad], r_idx[bad], m_idx[bad]
        kth = np.take_along_axis(rb, ri[:, -1:], axis=1)[:, 0]
        intruder = ~(mi[:, :, None] == ri[:, None, :]).any(axis=2)
        with np.errstate(invalid="ignore", over="ignore"):
            gaps = np.where(intruder, kth[:, None] - np.take_along_axis(rb, mi, axis=1), -np.inf)
            gap = gaps.max(axis=1)
            err = np.abs(mb - rb).max(axis=1)
            near = (gap <= tol.atol + tol.rtol * np.abs(kth)) | (gap <= err)
        ties = int(near.sum())
        flips = int(bad.size - ties)
    return {"topk_agreement": float(agree.mean()), "topk_flips": flips, "near_tie_flips": ties,
            "positions": positions}


def _nan_last(x: np.ndarray) -> np.ndarray:
    nan = np.isnan(x)
    return np.where(nan, -np.inf, x) if nan.any() else x


def _summary(o: OutputComparison) -> str:
    if o.cosine is None:
        return "not compared"
    return f"max abs {o.max_abs:.1e}, cosine {o.cosine:.6f}"


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.3g}%"


def _shape(shape) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ")"
