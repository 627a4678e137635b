"""The frozen records a run produces: strict JSON round trips, immutability, new records for every change."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from mnn_parity.manifest.tolerance import Tolerance
from mnn_parity.records import (CaseResult, CaseRun, Drift, DriftClass, FailureClass, OutputComparison, Verdict,
                                json_number, number_from_json)

TOL = Tolerance(atol=1e-3, rtol=1e-2, cosine_min=0.999, mismatch_max=0.05)


def comparison(**changes) -> OutputComparison:
    base = dict(name="probs/0", ref_shape=(1, 5), mnn_shape=(1, 5), ref_dtype="float32", mnn_dtype="float16",
                tolerance=TOL, max_abs=0.25, max_rel=1.5, mean_abs=0.125, cosine=0.875, mismatch_fraction=0.4,
                nan_ref=1, inf_ref=2, nan_mnn=3, inf_mnn=4, topk_agreement=0.5, topk_flips=6, near_tie_flips=7,
                failure_class=FailureClass.TOPK_FLIP, reason="top-1 flipped")
    base.update(changes)
    return OutputComparison(**base)


def result(**changes) -> CaseResult:
    base = dict(suite="ocr", model="det", case="doc 1.png", backend="cpu-low", verdict=Verdict.FAIL,
                failure_class=FailureClass.TOPK_FLIP, reason="probs/0: top-1 flipped",
                outputs=(comparison(), comparison(name="boxes", failure_class=None, reason="")),
                warnings=("input x is constant",), latency_ms={"reference": 1.5, "mnn": 2.25})
    base.update(changes)
    return CaseResult(**base)


def through_json(doc: dict) -> dict:
    """Strict JSON: NaN and Infinity must already be strings, or dumps refuses."""
    return json.loads(json.dumps(doc, allow_nan=False))


# --- JSON numbers ---------------------------------------------------------------------------------------------------

def test_json_numbers_keep_nan_and_infinity_as_strings():
    assert [json_number(x) for x in (None, 1, 2.5, math.nan, math.inf, -math.inf, np.float32(0.5))] == \
        [None, 1.0, 2.5, "NaN", "Infinity", "-Infinity", 0.5]
    assert type(json_number(np.float64(3.0))) is float
    assert number_from_json(None) is None
    assert number_from_json("Infinity") == math.inf and number_from_json("-Infinity") == -math.inf
    assert math.isnan(number_from_json("NaN"))
    assert number_from_json(2) == 2.0


# --- OutputComparison ---------------------------------------------------------------------------------------------

def test_output_comparison_round_trips_every_field():
    c = comparison()
    doc = through_json(c.to_json())
    assert doc["failure_class"] == "topk-flip" and doc["passed"] is False
    assert doc["tolerance"] == TOL.as_dict()
    assert doc["ref_shape"] == [1, 5] and "missing" not in doc
    back = OutputComparison.from_json(doc)
    assert back == c
    assert back.failure_class is FailureClass.TOPK_FLIP and back.tolerance == TOL


def test_non_finite_metrics_round_trip():
    c = comparison(max_abs=math.inf, max_rel=math.nan, mean_abs=-math.inf, cosine=math.nan,
                   mismatch_fraction=1.0, topk_agreement=math.nan)
    doc = through_json(c.to_json())
    assert (doc["max_abs"], doc["max_rel"], doc["mean_abs"], doc["cosine"], doc["topk_agreement"]) == \
        ("Infinity", "NaN", "-Infinity", "NaN", "NaN")
    back = OutputComparison.from_json(doc)
    assert back.max_abs == math.inf and back.mean_abs == -math.inf
    assert math.isnan(back.max_rel) and math.isnan(back.cosine) and math.isnan(back.topk_agreement)
    assert back.to_json() == c.to_json()


def test_missing_output_and_unmeasured_metrics_round_trip():
    c = OutputComparison(name="mask", ref_shape=(2, 2), mnn_shape=(), ref_dtype="bool", mnn_dtype="", tolerance=TOL,
                         failure_class=FailureClass.SHAPE_MISMATCH, reason="MNN returned no output 'mask'",
                         missing=True)
    doc = through_json(c.to_json())
    assert doc["missing"] is True and doc["max_abs"] is None and doc["topk_agreement"] is None
    back = OutputComparison.from_json(doc)
    assert back == c and back.missing and back.max_abs is None and back.mnn_shape == ()


def test_a_passing_output_says_so():
    c = comparison(failure_class=None, reason="")
    assert c.passed and c.to_json()["passed"] is True and c.to_json()["failure_class"] is None
    assert OutputComparison.from_json(through_json(c.to_json())).failure_class is None


# --- Drift and CaseResult -------------------------------------------------------------------------------------------

def test_drift_round_trips():
    d = Drift(DriftClass.CHANGED, golden_verdict=Verdict.XFAIL, golden_mnn_version="3.0.0",
              outputs=(comparison(max_abs=math.inf),), latency_ms_golden={"reference": 1.0, "mnn": math.nan},
              note="MNN 3.0.0 → 3.6.1")
    doc = through_json(d.to_json())
    assert doc["drift_class"] == "changed" and doc["golden_verdict"] == "XFAIL"
    assert doc["latency_ms_golden"] == {"reference": 1.0, "mnn": "NaN"}
    back = Drift.from_json(doc)
    assert back.drift_class is DriftClass.CHANGED and back.golden_verdict is Verdict.XFAIL
    assert back.golden_mnn_version == "3.0.0" and back.note == "MNN 3.0.0 → 3.6.1"
    assert back.outputs[0].max_abs == math.inf and math.isnan(back.latency_ms_golden["mnn"])
    assert back.to_json() == d.to_json()
    new = Drift(DriftClass.NEW, note="no golden")
    assert Drift.from_json(through_json(new.to_json())) == new


def test_case_result_round_trips_with_drift():
    r = result(drift=Drift(DriftClass.REGRESSED, golden_verdict=Verdict.PASS, golden_mnn_version="3.6.0",
                           outputs=(comparison(name="boxes"),), latency_ms_golden={"mnn": 2.0}, note="n"))
    doc = through_json(r.to_json())
    assert "suite" not in doc                     # a report holds one suite
    assert doc["verdict"] == "FAIL" and doc["failure_class"] == "topk-flip"
    assert doc["drift"]["drift_class"] == "regressed"
    back = CaseResult.from_json(doc, suite="ocr")
    assert back == r
    assert back.verdict is Verdict.FAIL and back.drift.golden_verdict is Verdict.PASS
    assert [o.name for o in back.outputs] == ["probs/0", "boxes"]


def test_case_result_without_drift_outputs_or_latency_round_trips():
    r = CaseResult(suite="ocr", model="det", case="c", backend="cpu-fp32", verdict=Verdict.CRASH,
                   reason="signal 11", latency_ms={"reference": math.inf})
    doc = through_json(r.to_json())
    assert doc["drift"] is None and doc["outputs"] == [] and doc["failure_class"] is None
    back = CaseResult.from_json(doc, suite="ocr")
    assert back.drift is None and back.outputs == () and back.warnings == ()
    assert back.latency_ms == {"reference": math.inf} and back.reason == "signal 11"
    assert back == r


# --- frozen -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("record, field", [
    (comparison(), "max_abs"), (result(), "verdict"), (Drift(DriftClass.NEW), "note"),
    (CaseRun(result()), "result"), (TOL, "atol"),
])
def test_records_cannot_be_changed(record, field):
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(record, field, None)


# --- new records for every change -------------------------------------------------------------------------------

def test_expecting_a_failure_turns_a_failure_into_xfail_and_leaves_the_original():
    r = result()
    x = r.expecting("MNN lacks ConvInteger")
    assert x is not r
    assert x.verdict is Verdict.XFAIL
    assert x.reason == "FAIL: probs/0: top-1 flipped (expected: MNN lacks ConvInteger)"
    assert x.outputs == r.outputs and x.failure_class is FailureClass.TOPK_FLIP
    assert r.verdict is Verdict.FAIL and r.reason == "probs/0: top-1 flipped"


@pytest.mark.parametrize("verdict", [Verdict.ERROR, Verdict.CRASH])
def test_expected_failures_cover_errors_and_crashes(verdict):
    x = result(verdict=verdict, reason="boom").expecting("known")
    assert x.verdict is Verdict.XFAIL and x.reason == f"{verdict.value}: boom (expected: known)"


def test_expecting_a_failure_that_passes_is_xpass():
    r = result(verdict=Verdict.PASS, failure_class=None, reason="within tolerance")
    x = r.expecting("fp16 overflow")
    assert x.verdict is Verdict.XPASS and x.reason == "expected to fail (fp16 overflow), but passed"
    assert r.verdict is Verdict.PASS and r.reason == "within tolerance"


@pytest.mark.parametrize("verdict", list(Verdict))
def test_no_expectation_changes_nothing(verdict):
    r = result(verdict=verdict)
    assert r.expecting(None) is r and r.expecting("") is r


@pytest.mark.parametrize("verdict", [Verdict.XFAIL, Verdict.XPASS])
def test_an_already_expected_verdict_is_kept(verdict):
    r = result(verdict=verdict)
    assert r.expecting("known") == r


def test_with_drift_and_with_warning_return_new_records():
    r = result()
    drift = Drift(DriftClass.DRIFTED, golden_verdict=Verdict.FAIL)
    d = r.with_drift(drift)
    assert d is not r and d.drift is drift and r.drift is None
    assert dataclasses.replace(d, drift=None) == r
    assert d.with_drift(None).drift is None and d.drift is drift
    w = r.with_warning("golden not compared: bad")
    assert w.warnings == ("input x is constant", "golden not compared: bad")
    assert r.warnings == ("input x is constant",)


def test_case_run_with_result_keeps_the_arrays():
    arrays = {"y": np.arange(3.0)}
    run = CaseRun(result(), ref_outputs=arrays, mnn_outputs=arrays, provenance={"mnn_version": "3.6.1"})
    new = run.with_result(result(verdict=Verdict.PASS))
    assert new is not run and run.result.verdict is Verdict.FAIL and new.result.verdict is Verdict.PASS
    assert new.mnn_outputs is run.mnn_outputs and new.provenance == {"mnn_version": "3.6.1"}


def test_verdict_properties():
    assert {v for v in Verdict if v.is_bad} == {Verdict.FAIL, Verdict.ERROR, Verdict.CRASH}
    assert {v for v in Verdict if not v.ran} == {Verdict.ERROR, Verdict.CRASH}
