"""Comparing MNN's outputs with the reference's: `metrics` measures, `criteria` judges, `topk` ranks.

`compare_output` is the one core check; drift against a golden and localisation reuse it with other arrays.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import numpy as np

from mnn_parity.comparison.criteria import judge_case, judge_output, shape_text, to_comparison
from mnn_parity.comparison.metrics import Measurement, measure
from mnn_parity.manifest.spec import TopK
from mnn_parity.manifest.tolerance import Tolerance
from mnn_parity.records import FailureClass, OutputComparison


def compare_output(name: str, ref: np.ndarray, mnn: np.ndarray, tolerance: Tolerance,
                   topk: Optional[TopK] = None) -> OutputComparison:
    try:
        measurement = measure(ref, mnn, tolerance, topk)
        if not measurement.shapes_match and same_but_unit_axes(np.shape(ref), np.shape(mnn)):
            return _layout(name, np.asarray(ref), np.asarray(mnn), measurement, tolerance, topk)
    except TypeError as error:
        raise TypeError(f"output {name!r}: {error}") from None
    return to_comparison(name, measurement, tolerance, judge_output(measurement, tolerance, topk))


def same_but_unit_axes(ref_shape: tuple, mnn_shape: tuple) -> bool:
    """Equal once axes of length 1 are dropped: a Conv1D run as Conv2D, a batch axis kept or squeezed away."""
    return tuple(d for d in ref_shape if d != 1) == tuple(d for d in mnn_shape if d != 1)


def _layout(name: str, ref: np.ndarray, mnn: np.ndarray, shaped: Measurement, tolerance: Tolerance,
            topk: Optional[TopK]) -> OutputComparison:
    """Judge the values in the reference's layout: right values are `output-layout`, wrong ones (an all-zero
    output) keep their own class; either way the reason says the shapes differ."""
    measurement = measure(ref, mnn.reshape(ref.shape), tolerance, topk)
    failure, reason = judge_output(measurement, tolerance, topk)
    layout = f"shape {shape_text(shaped.mnn_shape)} vs reference {shape_text(shaped.ref_shape)}"
    judged = ((FailureClass.OUTPUT_LAYOUT, f"same values in another layout: {layout} (unit axes differ)")
              if failure is None else (failure, f"{reason}; and {layout}"))
    return replace(to_comparison(name, measurement, tolerance, judged), mnn_shape=shaped.mnn_shape)


__all__ = ["compare_output", "judge_case"]
