"""Integer labels (an ArgMax's class map) re-judged on the scores they came from: near-tie flips apart from real ones.

A segmentation map compared label by label fails on pixels where two classes scored almost the same and the two
engines broke the tie differently. Given the logits both engines computed, each differing label is a near tie by
the rule top-k agreement uses (`topk.near_tie_mask`): the reference's gap between its own class and MNN's is
<= atol + rtol*|reference's top score|, or <= the largest |MNN - reference| among the scores at that position (an
error that big can legitimately reorder them). What remains are real flips; only they count against mismatch_max.
Pure numpy: fetching the logits from the engines is `execution/label_flips.py`'s business.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from mnn_parity.comparison.topk import near_tie_mask
from mnn_parity.manifest.tolerance import Tolerance
from mnn_parity.records import FailureClass, OutputComparison


@dataclass(frozen=True)
class LabelFlips:
    differing: int                      # labels that differ
    near_ties: int                      # of those, flips between scores closer than the error or the tolerance
    total: int                          # labels compared
    largest_tie_gap: float = 0.0        # the reference's widest gap among the near ties
    worst_index: Optional[tuple[int, ...]] = None   # the real flip with the widest gap, in the labels' own shape
    worst_ref: int = 0
    worst_mnn: int = 0
    worst_gap: float = 0.0

    @property
    def real_flips(self) -> int:
        return self.differing - self.near_ties

    @property
    def real_fraction(self) -> float:
        return self.real_flips / self.total if self.total else 0.0


def label_flips(ref_labels: np.ndarray, mnn_labels: np.ndarray, ref_logits: np.ndarray, mnn_logits: np.ndarray,
                axis: int, tol: Tolerance) -> LabelFlips:
    """Raises ValueError when the logits cannot have given these labels (shapes, axis): the caller keeps its
    verdict and says why."""
    ref_labels = np.asarray(ref_labels)
    scores = np.asarray(ref_logits, dtype=np.float64)
    rank = scores.ndim
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} is outside the rank-{rank} logits {_shape(scores.shape)}")
    axis %= rank
    classes = scores.shape[axis]
    if ref_labels.shape not in (_without(scores.shape, axis), _without(scores.shape, axis, keep=True)):
        raise ValueError(f"logits {_shape(scores.shape)} along axis {axis} do not give labels "
                         f"{_shape(ref_labels.shape)}")
    r_lab = ref_labels.astype(np.int64).ravel()
    m_lab = _reshaped(mnn_labels, ref_labels.shape, "MNN's labels").astype(np.int64).ravel()
    mnn_scores = _reshaped(mnn_logits, scores.shape, "MNN's logits").astype(np.float64)
    differ = np.flatnonzero(r_lab != m_lab)
    if not differ.size:
        return LabelFlips(0, 0, int(r_lab.size))
    rs = np.moveaxis(scores, axis, -1).reshape(-1, classes)[differ]
    ms = np.moveaxis(mnn_scores, axis, -1).reshape(-1, classes)[differ]
    ri, mi = r_lab[differ], m_lab[differ]
    valid = (ri >= 0) & (ri < classes) & (mi >= 0) & (mi < classes)   # an id past the classes is a real flip
    near = np.zeros(differ.size, dtype=bool)
    gap = np.full(differ.size, np.inf)
    if valid.any():
        near[valid], gap[valid] = near_tie_mask(rs[valid], ms[valid], ri[valid, None], mi[valid, None], tol)
    return _counted(differ, near, gap, ri, mi, ref_labels.shape, int(r_lab.size))


def _counted(differ: np.ndarray, near: np.ndarray, gap: np.ndarray, ri: np.ndarray, mi: np.ndarray,
             shape: tuple, total: int) -> LabelFlips:
    ties = int(near.sum())
    widest_tie = float(np.max(gap[near])) if ties else 0.0
    if ties == differ.size:
        return LabelFlips(int(differ.size), ties, total, widest_tie)
    real = np.flatnonzero(~near)
    # NaN gaps (a NaN score) rank first: a position that cannot be judged is the one to look at
    at = int(real[np.argmax(np.where(np.isnan(gap[real]), np.inf, gap[real]))])
    index = tuple(int(i) for i in np.unravel_index(int(differ[at]), shape)) if shape else ()
    return LabelFlips(int(differ.size), ties, total, widest_tie, index, int(ri[at]), int(mi[at]), float(gap[at]))


def judge_flips(flips: LabelFlips, tensor: str, tol: Tolerance) -> tuple[Optional[FailureClass], str]:
    """Only real flips count against mismatch_max; the reason says how many of each there were."""
    ties = f"{flips.near_ties} near tie{'s' if flips.near_ties != 1 else ''} by logits {tensor!r}"
    if flips.real_flips == 0:
        count = f"{flips.differing} label{'s' if flips.differing != 1 else ''} differ"
        return None, (f"{count}, all near ties in logits {tensor!r} (largest gap {flips.largest_tie_gap:.1e})"
                      if flips.differing else "no labels differ")
    pct = f"{100 * flips.differing / flips.total:.3g}% of labels differ"
    real = f"{flips.real_flips} real flip{'s' if flips.real_flips != 1 else ''}"
    if flips.real_fraction <= tol.mismatch_max:
        return None, (f"{pct}: {real} ({100 * flips.real_fraction:.3g}% <= mismatch_max {tol.mismatch_max:g}), "
                      f"{ties}")
    worst = (f"; worst at {list(flips.worst_index)}: MNN {flips.worst_mnn} vs reference {flips.worst_ref} "
             f"(reference gap {flips.worst_gap:.3g})") if flips.worst_index is not None else ""
    return FailureClass.OUT_OF_TOLERANCE, f"{pct}: {real}, {ties} (mismatch_max {tol.mismatch_max:g}){worst}"


def rejudged(comparison: OutputComparison, flips: LabelFlips, tensor: str) -> OutputComparison:
    """A new record: the verdict on real flips, and the flips as an argmax agreement (what they are) for reports."""
    failure, reason = judge_flips(flips, tensor, comparison.tolerance)
    agreement = 1.0 - flips.differing / flips.total if flips.total else 1.0
    return replace(comparison, failure_class=failure, reason=reason, topk_agreement=agreement,
                   topk_flips=flips.real_flips, near_tie_flips=flips.near_ties)


def without_logits(comparison: OutputComparison, tensor: str, engine: str, why: str) -> OutputComparison:
    """The verdict stands; the reason says why it could not be refined."""
    return replace(comparison, reason=f"{comparison.reason} (logits {tensor!r} not available from {engine}: {why})")


def _without(shape: tuple, axis: int, keep: bool = False) -> tuple:
    return shape[:axis] + ((1,) if keep else ()) + shape[axis + 1:]


def _reshaped(array: np.ndarray, shape: tuple, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.shape == shape:
        return array
    if array.size != int(np.prod(shape, dtype=np.int64)):
        raise ValueError(f"{what} {_shape(array.shape)} do not fit the reference's {_shape(shape)}")
    return array.reshape(shape)   # unit axes added or dropped by MNN: the same values in the same order


def _shape(shape: tuple) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ")"
