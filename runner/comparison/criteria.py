"""The thresholds that judge a measurement: a failure class and a reason a person can act on.

- "nan-inf": MNN is non-finite where the reference is finite. NaN on both sides is the model's business.
- "dead-output": MNN's output is flat (all |x| <= 1e-30, or constant) while the reference is not, *and* it is out
  of tolerance: a constant MNN output matching a nearly constant reference (a saturated softmax) is not dead.
- The cosine criterion is skipped when both sides lie within `atol` of zero everywhere: direction is noise there
  (degenerate inputs, README "Preprocessing"), and the element-wise atol test already covers it.
- A case's class is its most fundamental output failure, in `FailureClass` order.
"""
from __future__ import annotations

from typing import Optional, Sequence

from mnn_parity.comparison.metrics import DEAD_ZERO_ABS, Measurement
from mnn_parity.manifest.spec import TopK
from mnn_parity.manifest.tolerance import Tolerance
from mnn_parity.records import FailureClass, OutputComparison

Judgement = tuple[Optional[FailureClass], str]


def judge_output(m: Measurement, tol: Tolerance, topk: Optional[TopK] = None) -> Judgement:
    if not m.shapes_match:
        return FailureClass.SHAPE_MISMATCH, f"shape {shape_text(m.mnn_shape)} vs reference {shape_text(m.ref_shape)}"
    if m.new_nan or m.new_inf:
        return (FailureClass.NAN_INF, f"{m.new_nan + m.new_inf} non-finite where the reference is finite "
                                      f"(NaN {m.new_nan}, Inf {m.new_inf})")
    mismatch_bad = m.mismatch_fraction > tol.mismatch_max
    near_zero = m.peak_abs <= tol.atol
    # Labels have no direction: cosine and max abs of class ids are arithmetic on names.
    cosine_bad = (not near_zero) and (not m.labels) and m.cosine < tol.cosine_min
    # An integer output is ids or counts: a flat one is dead only when most of it is wrong; [0, 0] against [0, 1]
    # is a tie broken the other way, not a dead layer.
    plausible = _is_float(m.mnn_dtype) or m.mismatch_fraction > 0.5
    if (mismatch_bad or cosine_bad) and m.mnn_flat and not m.ref_flat and plausible:
        what = (f"all zero (max |x| {m.mnn_peak:.2e})" if m.mnn_peak <= DEAD_ZERO_ABS
                else f"constant {m.mnn_first:.6g}")
        return (FailureClass.DEAD_OUTPUT,
                f"{what} where the reference spans [{m.ref_range[0]:.4g}, {m.ref_range[1]:.4g}]")
    pct = f"{100 * m.mismatch_fraction:.3g}%"
    if mismatch_bad and m.labels:
        return (FailureClass.OUT_OF_TOLERANCE,
                f"{pct} of labels differ (mismatch_max {tol.mismatch_max:g}){_worst(m)}")
    if mismatch_bad:
        return (FailureClass.OUT_OF_TOLERANCE,
                f"{pct} of elements differ by more than atol {tol.atol:g} + rtol {tol.rtol:g} x |reference|"
                f"{_worst(m)} (max abs {m.max_abs:.1e}, cosine {m.cosine:.5f})")
    if cosine_bad:
        return (FailureClass.OUT_OF_TOLERANCE,
                f"cosine {m.cosine:.5f} < {tol.cosine_min:g} (max abs {m.max_abs:.1e}, "
                f"{pct} of elements outside atol {tol.atol:g})")
    if m.topk is not None and m.topk.flips:
        ties = m.topk.near_tie_flips
        return (FailureClass.TOPK_FLIP,
                f"top-{topk.k} flipped at {m.topk.flips} of {m.topk.positions} positions along axis {topk.axis}"
                + (f" ({ties} near-tie flips ignored)" if ties else ""))
    return None, ""


def _or(value: Optional[float], default: float) -> float:
    return default if value is None or value != value else value


def _is_float(dtype: str) -> bool:
    return dtype.startswith(("float", "bfloat"))


def _worst(m: Measurement) -> str:
    if m.worst_index is None:
        return ""
    return f"; worst at {list(m.worst_index)}: MNN {m.worst_mnn:.6g} vs reference {m.worst_ref:.6g}"


def to_comparison(name: str, m: Measurement, tol: Tolerance, judgement: Judgement) -> OutputComparison:
    numbers = dict(max_abs=m.max_abs, max_rel=m.max_rel, mean_abs=m.mean_abs, cosine=m.cosine,
                   mismatch_fraction=m.mismatch_fraction)
    topk = (dict(topk_agreement=m.topk.agreement, topk_flips=m.topk.flips, near_tie_flips=m.topk.near_tie_flips)
            if m.topk is not None else {})
    return OutputComparison(name=name, ref_shape=m.ref_shape, mnn_shape=m.mnn_shape, ref_dtype=m.ref_dtype,
                            mnn_dtype=m.mnn_dtype, tolerance=tol, nan_ref=m.nan_ref, inf_ref=m.inf_ref,
                            nan_mnn=m.nan_mnn, inf_mnn=m.inf_mnn, **numbers, **topk,
                            failure_class=judgement[0], reason=judgement[1])


def judge_case(outputs: Sequence[OutputComparison]) -> Judgement:
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
    # The most fundamental class first; within it the worst output (lowest cosine, then most elements off), so
    # the headline names the output that matters, not a state tensor that is merely first; min is stable.
    first = min(failing, key=lambda o: (order.index(o.failure_class), _or(o.cosine, 1.0),
                                        -_or(o.mismatch_fraction, 0.0)))
    more = len(failing) - 1
    suffix = f" (+{more} more failing output{'s' if more > 1 else ''})" if more else ""
    return first.failure_class, f"{first.name}: {first.reason}{suffix}"


def _summary(o: OutputComparison) -> str:
    if o.cosine is None:
        return "not compared"
    return f"max abs {o.max_abs:.1e}, cosine {o.cosine:.6f}"


def shape_text(shape) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ")"
