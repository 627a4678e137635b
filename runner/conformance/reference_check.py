"""ONNX Runtime against the outputs the node tests ship: a test where the reference itself is wrong says nothing
about MNN, and is counted as `reference-wrong`, apart from MNN's failures. For those, MNN is judged against the
shipped outputs instead, so the report can still say whether MNN got them right."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional

import numpy as np

from mnn_parity.comparison import compare_output, judge_case
from mnn_parity.inputs.arrays import load_npz
from mnn_parity.manifest.tolerance import Tolerance
from mnn_parity.records import FailureClass


def expected_outputs(tree: Path, test: str, case: str) -> dict[str, np.ndarray]:
    return load_npz(tree / test / "expected" / f"{case}.npz")


def judge_against(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray],
                  tolerance: Tolerance) -> tuple[Optional[FailureClass], str]:
    """(None, reason) when `actual` matches the shipped outputs, else the failure class and why."""
    comparisons = []
    for name, want in expected.items():
        got = actual.get(name)
        if got is None:
            return FailureClass.SHAPE_MISMATCH, f"{name}: no output of this name"
        try:
            comparisons.append(compare_output(name, want, np.asarray(got), tolerance))
        except TypeError as error:
            return FailureClass.SHAPE_MISMATCH, str(error)
    return judge_case(comparisons)
