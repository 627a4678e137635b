"""The JSON report: its schema, and every case as the records serialise themselves."""
from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from mnn_parity.comparison import compare_output
from mnn_parity.records import CaseResult, FailureClass, OutputComparison, Verdict
from mnn_parity.reports import render_json, validate_report
from mnn_parity.resources import schema
from tests.test_report_support import TOL, case, good_output, mixed, summary


def test_schema_is_valid_draft_2020_12():
    doc = schema("report.schema.json")
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(doc)
    assert doc["$defs"]["case"]["additionalProperties"] is False


def test_json_validates_and_carries_every_case_field():
    doc = render_json(mixed())
    validate_report(doc)
    json.dumps(doc, allow_nan=False)
    assert doc["exit_status"] == 1
    assert doc["counts"]["verdict"] == {"PASS": 2, "FAIL": 2, "ERROR": 1, "CRASH": 1, "XFAIL": 1, "XPASS": 1}
    assert doc["counts"]["drift"] == {"identical": 1, "drifted": 1, "regressed": 1, "stale": 1}
    assert doc["counts"]["slowdowns"] == 1
    assert doc["stale"] == [{"model": "det", "case": "old-doc", "backend": "cpu-fp32"}]
    by_case = {c["case"]: c for c in doc["cases"]}
    fail = by_case["doc-fail"]
    for key in ("model", "case", "backend", "verdict", "failure_class", "reason", "warnings", "latency_ms", "drift",
                "outputs"):
        assert key in fail
    assert fail["verdict"] == "FAIL" and fail["failure_class"] == "out-of-tolerance"
    assert fail["drift"]["drift_class"] == "regressed"
    assert fail["slowdown"] == 3.0
    out = fail["outputs"][0]
    assert out["name"] == "sigmoid_0.tmp_0" and out["mismatch_fraction"] == 0.125
    assert out["tolerance"] == {"atol": 1e-4, "rtol": 1e-3, "cosine_min": 0.9999, "mismatch_max": 0.0}
    assert by_case["img-dead"]["failure_class"] == "dead-output"
    assert by_case["line"]["outputs"] == [] and by_case["line"]["verdict"] == "ERROR"


def test_json_cases_read_back_as_the_records_they_came_from():
    s = mixed()
    cases = json.loads(json.dumps(render_json(s)))["cases"]
    assert [CaseResult.from_json(c, suite=s.suite) for c in cases] == list(s.results)
    # The report's own field sits where it always has, so reports from before and after a change diff cleanly.
    assert list(cases[0]) == ["model", "case", "backend", "verdict", "failure_class", "reason", "warnings",
                              "latency_ms", "slowdown", "drift", "outputs"]


def test_json_marks_a_missing_output_and_still_validates():
    gone = OutputComparison(name="boxes", ref_shape=(1, 4), mnn_shape=(), ref_dtype="float32", mnn_dtype="",
                            tolerance=TOL, failure_class=FailureClass.SHAPE_MISMATCH, reason="MNN gave no output",
                            missing=True)
    doc = render_json(summary([case("det", "a", Verdict.FAIL, [good_output(), gone])]))
    validate_report(doc)
    present, absent = doc["cases"][0]["outputs"]
    assert "missing" not in present
    assert absent["missing"] is True and absent["mnn_dtype"] == ""


def test_json_writes_non_finite_metrics_as_strings():
    nan_out = compare_output("y", np.float32([1, 2]), np.float32([np.nan, 2]), TOL)
    huge = compare_output("z", np.array([1e308, -1e308]), np.array([-1e308, 1e308]), TOL)
    assert huge.max_abs == float("inf")
    doc = render_json(summary([case("m", "c", Verdict.FAIL, [nan_out, huge])]))
    validate_report(doc)
    out = doc["cases"][0]["outputs"]
    assert out[0]["nan_mnn"] == 1 and out[0]["failure_class"] == "nan-inf"
    assert out[1]["max_abs"] == "Infinity"
    json.dumps(doc, allow_nan=False)


def test_schema_rejects_unknown_case_keys_and_bad_verdicts():
    doc = render_json(mixed())
    doc["cases"][0]["surprise"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_report(doc)
    doc = render_json(mixed())
    doc["cases"][0]["verdict"] = "MAYBE"
    with pytest.raises(jsonschema.ValidationError):
        validate_report(doc)
