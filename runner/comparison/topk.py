"""Top-k agreement along an axis, and which disagreements are near ties rather than real flips.

For each position whose top-k sets differ, every class MNN put in its top-k that the reference did not is checked
against the reference's k-th best score (for k=1: MNN's top-1 against the reference's top-1). The flip is a near
tie when that gap is <= atol + rtol*|reference's k-th score| or <= the largest |mnn - ref| at that position: an
error that big can legitimately reorder the scores.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mnn_parity.manifest.spec import TopK
from mnn_parity.manifest.tolerance import Tolerance


@dataclass(frozen=True)
class TopKAgreement:
    agreement: float          # fraction of positions whose top-k sets agree
    flips: int                # disagreements where the reference's scores were clearly apart
    near_tie_flips: int       # disagreements between scores closer than the error: reported, not failed
    positions: int


def topk_agreement(r: np.ndarray, m: np.ndarray, topk: TopK, tol: Tolerance) -> TopKAgreement:
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
    bad = np.flatnonzero(~agree)
    ties = _near_ties(rs[bad], ms[bad], r_idx[bad], m_idx[bad], tol) if bad.size else 0
    return TopKAgreement(float(agree.mean()), int(bad.size - ties), ties, rs.shape[0])


def _near_ties(rb: np.ndarray, mb: np.ndarray, ri: np.ndarray, mi: np.ndarray, tol: Tolerance) -> int:
    return int(near_tie_mask(rb, mb, ri, mi, tol)[0].sum())


def near_tie_mask(rb: np.ndarray, mb: np.ndarray, ri: np.ndarray, mi: np.ndarray,
                  tol: Tolerance) -> tuple[np.ndarray, np.ndarray]:
    """Per disagreeing position (rows of scores `rb`, `mb`; top-k indices `ri`, `mi`): whether it is a near tie,
    and the reference's gap. `comparison/labels.py` judges an ArgMax's label flips by the same rule."""
    # Vectorised over the disagreeing positions: a segmentation map has hundreds of thousands of them when broken.
    kth = np.take_along_axis(rb, ri[:, -1:], axis=1)[:, 0]
    intruder = ~(mi[:, :, None] == ri[:, None, :]).any(axis=2)
    with np.errstate(invalid="ignore", over="ignore"):
        gaps = np.where(intruder, kth[:, None] - np.take_along_axis(rb, mi, axis=1), -np.inf)
        gap = gaps.max(axis=1)
        # The largest error among finite positions: a NaN (or -inf) on both sides must not hide a near tie.
        diff = np.abs(mb - rb)
        err = np.where(np.isfinite(diff), diff, 0.0).max(axis=1)
        near = (gap <= tol.atol + tol.rtol * np.abs(kth)) | (gap <= err)
    return near, gap


def _nan_last(x: np.ndarray) -> np.ndarray:
    nan = np.isnan(x)
    return np.where(nan, -np.inf, x) if nan.any() else x
