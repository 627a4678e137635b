"""Records for the report tests, built by hand (no engines): the report layer renders records, and hand-made
records are the way to provoke every verdict and drift combination. Per-output comparisons come from real arrays.
Holds no tests; the test_report_*.py modules share it."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from mnn_parity.comparison import compare_output, judge_case
from mnn_parity.manifest.tolerance import Tolerance
from mnn_parity.records import CaseResult, Drift, DriftClass, Verdict
from mnn_parity.reports import RunSummary

TOL = Tolerance()
EXPECT = "known MNN defect, tracked in #123"
ENV = {"mnn_version": "3.6.1", "onnxruntime_version": "1.23.2", "python": "3.12.3", "platform": "Linux-x86_64",
       "baseline_mnn_version": "3.0.0"}


@lru_cache(maxsize=None)   # frozen records: thousands of cases can share one comparison
def good_output(name="y"):
    x = np.linspace(-1, 1, 12, dtype=np.float32)
    return compare_output(name, x, x + np.float32(1e-6), TOL)


@lru_cache(maxsize=None)
def bad_output(name="y"):
    ref = np.linspace(-1, 1, 8)
    mnn = ref.copy()
    mnn[0] += 0.032
    return compare_output(name, ref, mnn, TOL)


def dead_output(name="logits"):
    return compare_output(name, np.float32([1.17, -0.91]), np.float32([4.17e-38, 0.0]), TOL)


def case(model, name, verdict, outputs=None, backend="cpu-fp32", drift=None, warnings=(), latency=None,
         reason=None, suite="ocr"):
    outputs = (good_output(),) if outputs is None else tuple(outputs)
    cls, why = judge_case(outputs)
    if verdict in (Verdict.ERROR, Verdict.CRASH):
        cls, why, outputs = None, reason or "engine died: SIGSEGV", ()
    return CaseResult(suite=suite, model=model, case=name, backend=backend, verdict=verdict,
                      failure_class=cls if verdict in (Verdict.FAIL, Verdict.XFAIL) else None,
                      reason=reason or why, outputs=outputs, warnings=tuple(warnings),
                      latency_ms=latency if latency is not None else {"reference": 10.0, "mnn": 12.0}, drift=drift)


def drift(cls: DriftClass, golden_verdict=Verdict.PASS, mnn_golden=None, note=""):
    return Drift(drift_class=cls, golden_verdict=golden_verdict, golden_mnn_version="3.0.0",
                 outputs=(good_output(),), latency_ms_golden={"mnn": mnn_golden} if mnn_golden else {}, note=note)


def summary(results, env=ENV, stale=(), fail_on=None, suite="ocr"):
    kw = {} if fail_on is None else {"fail_on": frozenset(fail_on)}
    return RunSummary(suite=suite, description="PP-OCR mobile text detection", environment=dict(env),
                      results=tuple(results), stale=tuple(stale), started="2026-11-22T23:00:00Z", duration_s=3.5,
                      **kw)


@lru_cache(maxsize=None)   # a RunSummary is frozen: every test can share one
def mixed():
    return summary([
        case("det", "doc-pass", Verdict.PASS, drift=drift(DriftClass.IDENTICAL, mnn_golden=11.0)),
        case("det", "doc-drifted", Verdict.PASS, drift=drift(DriftClass.DRIFTED)),
        case("det", "doc-fail", Verdict.FAIL, [bad_output("sigmoid_0.tmp_0")],
             drift=drift(DriftClass.REGRESSED, mnn_golden=4.0, note="golden model hash differs: reconverted"),
             warnings=["input x has ~zero variance: not a meaningful test input"]),
        case("cls", "img-dead", Verdict.FAIL, [dead_output(), good_output("boxes")], backend="cpu-low"),
        case("rec", "line", Verdict.ERROR, reason="conversion failed: unsupported op ConvInteger\nfull log…"),
        case("vad", "speech", Verdict.CRASH, reason="SIGSEGV in MNN worker"),
        case("vad", "noise", Verdict.FAIL, [bad_output()]).expecting(EXPECT),
        case("vad", "quiet", Verdict.PASS).expecting(EXPECT),
    ], stale=[("det", "old-doc", "cpu-fp32")])
