"""Comparing MNN's outputs with the reference's: `metrics` measures, `criteria` judges, `topk` ranks.

`compare_output` is the one core check; drift against a golden and localisation reuse it with other arrays.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from mnn_parity.comparison.criteria import judge_case, judge_output, to_comparison
from mnn_parity.comparison.metrics import measure
from mnn_parity.manifest.spec import TopK
from mnn_parity.manifest.tolerance import Tolerance
from mnn_parity.records import OutputComparison


def compare_output(name: str, ref: np.ndarray, mnn: np.ndarray, tolerance: Tolerance,
                   topk: Optional[TopK] = None) -> OutputComparison:
    try:
        measurement = measure(ref, mnn, tolerance, topk)
    except TypeError as error:
        raise TypeError(f"output {name!r}: {error}") from None
    return to_comparison(name, measurement, tolerance, judge_output(measurement, tolerance, topk))


__all__ = ["compare_output", "judge_case"]
