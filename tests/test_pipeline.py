"""The pipeline's own judgements: MNN's input shapes against ONNX's, expected failures, degenerate inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mnn_parity.execution.model_work import input_shape_problem, input_warnings
from mnn_parity.manifest.spec import ConvertFlags, InputSpec, ModelSpec
from mnn_parity.records import CaseResult, Verdict


def result(verdict: Verdict, reason: str = "why") -> CaseResult:
    return CaseResult("s", "m", "c", "b", verdict, reason=reason)


def test_a_permuted_input_is_named():
    """An ORT-quantized model once came out of the converter wanting (3,1,416,416) instead of (1,3,416,416)."""
    problem = input_shape_problem({"images": (1, 3, 416, 416)}, {"images": {"shape": [3, 1, 416, 416]}})
    assert problem == "input 'images': MNN's shape [3, 1, 416, 416] differs from ONNX's [1, 3, 416, 416]"


def test_dynamic_dimensions_on_either_side_are_not_held_against_mnn():
    assert input_shape_problem({"x": (None, 3, None, None)}, {"x": {"shape": [1, 3, 224, 224]}}) is None
    assert input_shape_problem({"x": (1, 3, 224, 224)}, {"x": {"shape": [-1, 3, 224, 224]}}) is None
    assert input_shape_problem({"x": (1, 3, 224, 224)}, {"x": {"shape": [1, 3, 224, 224]}}) is None


def test_an_input_missing_from_the_converted_model_is_named():
    assert input_shape_problem({"x": (1,), "mask": (1,)}, {"x": {"shape": [1]}}) == \
        "the converted model has no input 'mask' (it has ['x'])"


def test_expected_failure_turns_failures_into_xfail_and_a_pass_into_xpass():
    assert result(Verdict.PASS).expecting(None).verdict is Verdict.PASS
    for bad in (Verdict.FAIL, Verdict.ERROR, Verdict.CRASH):
        marked = result(bad, "killed by SIGFPE").expecting("tracked upstream")
        assert marked.verdict is Verdict.XFAIL
        assert marked.reason == f"{bad.value}: killed by SIGFPE (expected: tracked upstream)"
    news = result(Verdict.PASS).expecting("tracked upstream")
    assert news.verdict is Verdict.XPASS and "expected to fail (tracked upstream), but passed" in news.reason


def test_degenerate_inputs_are_warned_about_but_constant_state_inputs_are_not():
    model = ModelSpec(name="m", onnx=Path("m.onnx"), convert=ConvertFlags(), tolerance={},
                      inputs={"x": InputSpec("x", ("*.png",), ({"decode": {}},)),
                              "state": InputSpec("state", None, ({"zeros": {"shape": [2]}},))},
                      outputs={})
    flat = {"x": np.zeros((1, 3, 4, 4), np.float32), "state": np.zeros(2, np.float32)}
    warnings = input_warnings(flat, model)
    assert len(warnings) == 1 and warnings[0].startswith("input 'x': ")
    assert warnings[0].endswith("not a meaningful test input")
    real = {"x": np.random.RandomState(0).rand(1, 3, 4, 4).astype(np.float32), "state": np.zeros(2, np.float32)}
    assert input_warnings(real, model) == []
