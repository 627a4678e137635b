"""The kind of a divergence and one line saying what to do about it."""
from __future__ import annotations

import itertools
from typing import Optional

import numpy as np

from mnn_parity.localisation.compare import FP16_MAX, Criterion, same_values

SUGGESTIONS = {
    "single-op-fault": "MNN computes {op} differently from ONNX on its own: report it upstream with the reproducer, "
                       "and avoid or replace the op until it is fixed.",
    "fusion": "Only the group {ops} goes wrong together: MNN's fusion of it is at fault; report it with the "
              "reproducer and break the pattern (or wait for a fix) meanwhile.",
    "shape-dependent": "{op} is wrong only when its input dims are unknown at conversion time: convert with fixed "
                       "input shapes (--inputConfigFile / static dims) or report it with the reproducer.",
    "accumulated-drift": "No single op jumps: error builds up from {first} on; loosen the tolerance for this "
                         "precision or convert without fp16/quantized weights.",
    "amplified-drift": "{op} amplifies the error it inherits but computes right from exact inputs: error builds "
                       "up with the precision; loosen the tolerance or convert without fp16/quantized weights.",
    "output-layout": "Output {tensor} holds the right values in another layout ({detail}): reshape or transpose "
                     "it after MNN, or fix the converter's output format (keep_input_format).",
    "fp16-overflow": "The reference reaches |x| = {peak:.3g} > 65504 near {tensor}: fp16 overflows there; run "
                     "this model at precision high or rescale the activations.",
    "unverified": "{op} looks wrong in the full model but not standalone: treat as a lead, not a verdict.",
}


def suggest(kind: str, **facts: object) -> str:
    try:
        return SUGGESTIONS[kind].format(**facts)
    except (KeyError, IndexError, ValueError):
        return SUGGESTIONS.get(kind, "")


def fp16_path(runtime: dict, flags: dict) -> bool:
    # fp16 arithmetic comes with precision low; fp16 weights (--fp16) are widened to fp32 before use
    return str(runtime.get("precision", "high")) == "low" or bool(flags.get("fp16"))


def overflow_peak(maxabs: list[float]) -> Optional[float]:
    peak = max(maxabs, default=0.0)
    return peak if peak > FP16_MAX else None


def layout_of(mnn: np.ndarray, ref: np.ndarray, hint: Criterion) -> Optional[str]:
    """How MNN's output differs in layout only (unit axes, or permuted dims), or None if it is not that."""
    if mnn.shape == ref.shape or mnn.size != ref.size:
        return None
    squeezed_mnn = mnn.reshape([d for d in mnn.shape if d != 1])
    squeezed_ref = ref.reshape([d for d in ref.shape if d != 1])
    if squeezed_mnn.shape == squeezed_ref.shape and same_values(squeezed_mnn, squeezed_ref, hint):
        return f"unit axes: MNN {list(mnn.shape)} vs ONNX {list(ref.shape)}"
    if squeezed_mnn.ndim > 6:
        return None
    for order in itertools.permutations(range(squeezed_mnn.ndim)):
        moved = np.transpose(squeezed_mnn, order)
        if moved.shape == squeezed_ref.shape and same_values(moved, squeezed_ref, hint):
            return f"permuted dims {list(order)}: MNN {list(mnn.shape)} vs ONNX {list(ref.shape)}"
    return None


def kind_of_blame(verified: str, shape_dependent: bool, shortest: int, inherited: float,
                  peak: Optional[float], fp16: bool) -> str:
    if fp16 and peak is not None:
        return "fp16-overflow"
    if verified == "no":
        # Not reproduced from the recorded inputs: the op only amplifies error it was handed
        return "accumulated-drift" if inherited > 0.0 else "unverified"
    if shape_dependent:
        return "shape-dependent"
    return "single-op-fault" if shortest <= 1 else "fusion"
