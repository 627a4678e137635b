"""Reports: Markdown, JSON (against its schema), JUnit, exit status and atomic writes.

Case results are built by hand here (no engines): the report layer renders records, and hand-made records are
the way to provoke every verdict and drift combination. The per-output comparisons come from real arrays.
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path

import jsonschema
import numpy as np
import pytest

import mnn_parity.reports.render as report
from mnn_parity.comparison.metrics import compare_output, judge
from mnn_parity.reports.render import (MARKDOWN_LIMIT, RunSummary, exit_status, render_json, render_junit, render_markdown,
                           terminal_summary, validate_report, write_reports)
from mnn_parity.records import CaseResult, Drift, DriftClass, Verdict
from mnn_parity.manifest.tolerance import Tolerance

TOL = Tolerance()
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
    outputs = [good_output()] if outputs is None else outputs
    cls, why = judge(outputs)
    if verdict in (Verdict.ERROR, Verdict.CRASH):
        cls, why, outputs = None, reason or "engine died: SIGSEGV", []
    return CaseResult(suite=suite, model=model, case=name, backend=backend, verdict=verdict,
                      failure_class=cls if verdict in (Verdict.FAIL, Verdict.XFAIL) else None,
                      reason=reason or why, outputs=outputs, warnings=list(warnings),
                      latency_ms=latency if latency is not None else {"reference": 10.0, "mnn": 12.0}, drift=drift)


def drift(cls: DriftClass, golden_verdict="PASS", mnn_golden=None, note=""):
    return Drift(drift_class=cls, golden_verdict=golden_verdict, golden_mnn_version="3.0.0",
                 outputs=(good_output(),), latency_ms_golden={"mnn": mnn_golden} if mnn_golden else {}, note=note)


def summary(results, env=ENV, stale=(), fail_on=None, suite="ocr"):
    kw = {} if fail_on is None else {"fail_on": set(fail_on)}
    return RunSummary(suite=suite, description="PP-OCR mobile text detection", environment=dict(env),
                      results=list(results), stale=list(stale), started="2026-11-22T23:00:00Z", duration_s=3.5, **kw)


@pytest.fixture
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
        case("vad", "noise", Verdict.XFAIL, [bad_output()]),
        case("vad", "quiet", Verdict.XPASS),
    ], stale=[("det", "old-doc", "cpu-fp32")])


# --- Markdown ---------------------------------------------------------------------------------------------------------

def test_markdown_puts_summary_then_failures_before_passes(mixed):
    md = render_markdown(mixed)
    assert md.startswith("# mnn-parity: ocr ❌")
    order = [md.index(h) for h in ("## Summary", "## What changed since the goldens", "## Failures (5)",
                                   "## Passes (2)")]
    assert order == sorted(order)
    assert md.index("doc-fail") < md.index("doc-pass")
    assert md.index("| quiet") < md.index("## Passes")          # XPASS is news, listed with the failures
    assert "**MNN 3.0.0 → 3.6.1**" in md
    assert "ONNX Runtime 1.23.2" in md


def test_markdown_shows_reasons_classes_details_and_warnings(mixed):
    md = render_markdown(mixed)
    fail = mixed.results[2]
    assert fail.reason.startswith("sigmoid_0.tmp_0: max abs 3.2e-02 > atol 0.0001 on 12.5% of elements")
    assert fail.reason in md
    assert "dead-output" in md and "all zero (max \\|x\\| 4.17e-38)" in md    # escaped inside a table cell
    assert "<details><summary>det/doc-fail [cpu-fp32] — FAIL · out-of-tolerance</summary>" in md
    assert "input x has ~zero variance: not a meaningful test input" in md
    assert "```text\nconversion failed: unsupported op ConvInteger\nfull log…\n```" in md
    assert md.count("<details>") == md.count("</details>")


def test_markdown_version_line_without_a_version_change():
    md = render_markdown(summary([case("det", "a", Verdict.PASS)], env={**ENV, "baseline_mnn_version": "3.6.1"}))
    assert "**MNN 3.6.1**" in md and "→ 3.6.1" not in md
    assert md.startswith("# mnn-parity: ocr ✅")


def test_what_changed_lists_only_changed_regressed_and_fixed(mixed):
    s = summary(mixed.results + [
        case("det", "doc-fixed", Verdict.PASS, drift=drift(DriftClass.FIXED, golden_verdict="FAIL")),
        case("det", "doc-changed", Verdict.PASS, drift=drift(DriftClass.CHANGED)),
    ], stale=mixed.stale)
    md = render_markdown(s)
    section = md[md.index("## What changed"):md.index("## Failures")]
    assert "doc-fail" in section and "**regressed**" in section and "PASS → FAIL" in section
    assert "doc-fixed" in section and "FAIL → PASS" in section
    assert "doc-changed" in section
    changed_table = section[:section.index("drifted within tolerance: how far")]
    assert "doc-pass" not in section and "doc-drifted" not in changed_table
    assert "doc-drifted" in section[section.index("drifted within tolerance: how far"):]   # folded, with magnitudes
    assert section.index("doc-fail") < section.index("doc-changed") < section.index("doc-fixed")
    assert "golden model hash differs: reconverted" in section
    assert "Stale goldens (no case left): 1 — det/old-doc [cpu-fp32]" in section
    assert "1 identical, 1 drifted" in section


def test_latency_columns_flag_slowdowns_against_the_golden(mixed):
    md = render_markdown(mixed)
    failures = md[md.index("## Failures"):]
    row = next(line for line in failures.splitlines() if line.startswith("| det") and "doc-fail" in line)
    assert "| 12.0 " in row and "| 10.0 " in row
    assert "+200% ⚠️ slower" in row           # 12 ms now vs 4 ms at the golden, limit 1.5x
    row = next(line for line in md.splitlines() if "doc-pass" in line and line.startswith("| det"))
    assert "+9%" in row and "slower" not in row
    assert "1 case(s) ran slower than 1.5× their golden MNN latency" in md


def test_sub_millisecond_slowdowns_are_noise_not_flagged():
    fast = case("det", "tiny", Verdict.PASS, latency={"reference": 0.06, "mnn": 0.069},
                drift=drift(DriftClass.IDENTICAL, mnn_golden=0.045))
    s = summary([fast])
    md = render_markdown(s)
    row = next(line for line in md.splitlines() if "| tiny" in line)
    assert "+53%" in row and "slower" not in row
    assert render_json(s)["counts"]["slowdowns"] == 0
    s.slowdown_floor_ms = 0.0
    assert "+53% ⚠️ slower" in render_markdown(s)


def test_markdown_escapes_table_breaking_and_html_text():
    s = summary([case("det", "a|b<script>", Verdict.FAIL, [bad_output()])])
    md = render_markdown(s)
    assert "a\\|b&lt;script>" in md
    assert "<script>" not in md


def test_large_run_stays_under_the_limit_and_lists_every_failure():
    results = []
    for i in range(3000):
        if i % 30 == 0:   # 100 failures of mixed kinds
            results.append(case(f"model{i % 7}", f"case{i:04d}", Verdict.FAIL, [bad_output(f"out{i % 3}")],
                                backend=f"b{i % 2}"))
        else:
            results.append(case(f"model{i % 7}", f"case{i:04d}", Verdict.PASS, [good_output(), good_output("z")],
                                backend=f"b{i % 2}", drift=drift(DriftClass.DRIFTED),
                                warnings=["input x has ~zero variance"] if i % 100 == 1 else ()))
    s = summary(results, suite="big")
    md = render_markdown(s)
    assert len(md) <= MARKDOWN_LIMIT
    failures = [r for r in results if r.verdict is Verdict.FAIL]
    assert len(failures) == 100
    for r in failures:
        assert f"| {r.case}" in md, r.case
    assert "summarised as counts: full details in `big.json`" in md
    # Per-output details are kept for the first failures that fit, and the rest are pointed at the JSON.
    shown = md.count("<details><summary>model")
    assert 0 < shown < 100
    assert f"Per-output metrics of the other {100 - shown} failures omitted to fit a comment" in md
    assert md.count("<details>") == md.count("</details>")
    assert "## Passes (2900)" in md
    assert "30× input x has ~zero variance" in md


def test_version_bump_changing_every_case_still_fits():
    results = [case("det", f"c{i:04d}", Verdict.PASS, drift=drift(DriftClass.CHANGED, note="x" * 80))
               for i in range(3000)]
    md = render_markdown(summary(results))
    assert len(md) <= MARKDOWN_LIMIT
    assert "… and 2950 more changed cases: full details in `ocr.json`" in md


def test_run_with_more_failures_than_fit_says_how_many_are_left_out():
    results = [case("det", f"c{i:04d}", Verdict.FAIL, [bad_output()]) for i in range(3000)]
    md = render_markdown(summary(results))
    assert len(md) <= MARKDOWN_LIMIT
    assert "## Failures (3000)" in md
    listed = sum(1 for line in md.splitlines() if line.startswith("| det "))
    assert 0 < listed < 3000
    assert f"… and {3000 - listed} more failures: full details in `ocr.json`." in md


# --- JSON --------------------------------------------------------------------------------------------------------------

def test_schema_is_valid_draft_2020_12():
    schema = __import__("mnn_parity.resources", fromlist=["schema"]).schema("report.schema.json")
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$defs"]["case"]["additionalProperties"] is False


def test_json_validates_and_carries_every_case_field(mixed):
    doc = render_json(mixed)
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


def test_schema_rejects_unknown_case_keys_and_bad_verdicts(mixed):
    doc = render_json(mixed)
    doc["cases"][0]["surprise"] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_report(doc)
    doc = render_json(mixed)
    doc["cases"][0]["verdict"] = "MAYBE"
    with pytest.raises(jsonschema.ValidationError):
        validate_report(doc)


# --- JUnit -------------------------------------------------------------------------------------------------------------

def test_junit_parses_and_counts(mixed):
    other = summary([case("x", "ok", Verdict.PASS), case("x", "bad", Verdict.FAIL, [bad_output()])], suite="asr")
    root = ET.fromstring(render_junit([mixed, other]))
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == ("10", "3", "2", "1")
    ocr, asr = root.findall("testsuite")
    assert (ocr.get("name"), ocr.get("tests"), ocr.get("failures"), ocr.get("errors"), ocr.get("skipped")) == \
        ("ocr", "8", "2", "2", "1")
    assert len(ocr.findall("testcase/failure")) == 2 and len(ocr.findall("testcase/error")) == 2
    assert len(ocr.findall("testcase/skipped")) == 1
    dead = ocr.find("testcase[@name='img-dead[cpu-low]']/failure")
    assert dead.get("type") == "dead-output" and dead.get("message").startswith("logits: all zero")
    crash = ocr.find("testcase[@name='speech[cpu-fp32]']/error")
    assert crash.get("type") == "CRASH" and crash.get("message") == "SIGSEGV in MNN worker"
    assert ocr.find("testcase[@name='quiet[cpu-fp32]']/failure") is None
    props = {p.get("name"): p.get("value") for p in ocr.findall("properties/property")}
    assert props["mnn_version"] == "3.6.1" and props["baseline_mnn_version"] == "3.0.0"
    assert (asr.get("tests"), asr.get("failures")) == ("2", "1")


def test_junit_marks_a_failing_drift_on_a_passing_case():
    s = summary([case("det", "a", Verdict.PASS, drift=drift(DriftClass.CHANGED, note="3.3e-3 max abs"))])
    root = ET.fromstring(render_junit([s]))
    failure = root.find("testsuite/testcase/failure")
    assert failure.get("type") == "drift:changed"
    assert root.get("failures") == "1"


# --- exit status -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("verdict, drift_class, fail_on, expected", [
    (Verdict.PASS, None, None, 0),
    (Verdict.XFAIL, None, None, 0),
    (Verdict.XPASS, None, None, 0),
    (Verdict.FAIL, None, None, 1),
    (Verdict.ERROR, None, None, 1),
    (Verdict.CRASH, None, None, 1),
    (Verdict.PASS, DriftClass.IDENTICAL, None, 0),
    (Verdict.PASS, DriftClass.DRIFTED, None, 0),
    (Verdict.PASS, DriftClass.NEW, None, 0),
    (Verdict.PASS, DriftClass.FIXED, None, 0),
    (Verdict.PASS, DriftClass.CHANGED, None, 1),
    (Verdict.XFAIL, DriftClass.REGRESSED, None, 1),
    (Verdict.PASS, DriftClass.CHANGED, {"regressed"}, 0),
    (Verdict.PASS, DriftClass.DRIFTED, {"drifted"}, 1),
    (Verdict.FAIL, DriftClass.IDENTICAL, set(), 1),
])
def test_exit_status(verdict, drift_class, fail_on, expected):
    d = drift(drift_class) if drift_class else None
    outputs = [bad_output()] if verdict in (Verdict.FAIL, Verdict.XFAIL) else None
    s = summary([case("m", "c", verdict, outputs, drift=d)], fail_on=fail_on)
    assert exit_status([s]) == expected
    assert render_json(s)["exit_status"] == expected


def test_exit_status_over_several_summaries_and_stale():
    ok = summary([case("m", "a", Verdict.PASS)])
    bad = summary([case("m", "b", Verdict.CRASH)])
    assert exit_status([]) == 0
    assert exit_status([ok]) == 0
    assert exit_status([ok, bad]) == 1
    stale = summary([case("m", "a", Verdict.PASS)], stale=[("m", "gone", "cpu")])
    assert exit_status([stale]) == 0
    stale.fail_on = {"stale"}
    assert exit_status([stale]) == 1


# --- terminal --------------------------------------------------------------------------------------------------------------

def test_terminal_summary(mixed):
    text = terminal_summary(mixed, paths=[Path("reports/ocr.md"), Path("reports/ocr.json")])
    lines = text.splitlines()
    assert lines[0] == "ocr: 8 cases — 2 PASS, 2 FAIL, 1 ERROR, 1 CRASH, 1 XFAIL, 1 XPASS (3.5 s) [FAILED]"
    assert any(line.startswith("  FAIL dead-output cls/img-dead [cpu-low]: logits: all zero") for line in lines)
    assert "  goldens: 1 identical, 1 drifted, 1 regressed, 1 stale" in lines
    assert "  MNN 3.0.0 → 3.6.1" in lines
    assert lines[-1] == "  reports: reports/ocr.md, reports/ocr.json"
    assert len(lines) < 15


# --- writing -------------------------------------------------------------------------------------------------------------

def test_write_reports_writes_valid_files(tmp_path, mixed):
    junit = tmp_path / "ci" / "junit.xml"
    paths = write_reports(mixed, tmp_path / "reports", junit=junit)
    assert paths == [tmp_path / "reports" / "ocr.md", tmp_path / "reports" / "ocr.json", junit]
    doc = json.loads(paths[1].read_text())
    validate_report(doc)
    assert paths[0].read_text() == render_markdown(mixed)
    assert ET.parse(junit).getroot().get("tests") == "8"
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["ocr.json", "ocr.md"]


def test_failed_render_leaves_the_old_reports_intact(tmp_path, mixed, monkeypatch):
    out = tmp_path / "reports"
    junit = tmp_path / "junit.xml"
    write_reports(mixed, out, junit=junit)
    before = {p.name: p.read_bytes() for p in [*out.iterdir(), junit]}
    changed = summary([case("det", "new-case", Verdict.PASS)])

    for target in ("render_markdown", "render_json", "render_junit", "validate_report"):
        with monkeypatch.context() as m:
            m.setattr(report, target, lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
            with pytest.raises(RuntimeError, match="boom"):
                write_reports(changed, out, junit=junit)
        after = {p.name: p.read_bytes() for p in [*out.iterdir(), junit]}
        assert after == before, target


def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "ocr.md"
    target.write_text("old report\n")

    def fail(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        report.atomic_write_text(target, "new report that never lands\n")
    assert target.read_text() == "old report\n"
    assert [p.name for p in tmp_path.iterdir()] == ["ocr.md"]


def test_junit_lists_stale_goldens_only_when_they_fail_the_run():
    s = summary([case("det", "a", Verdict.PASS)], stale=[("det", "gone", "cpu-fp32")])
    assert ET.fromstring(render_junit([s])).get("tests") == "1"
    s.fail_on = {"stale"}
    root = ET.fromstring(render_junit([s]))
    assert (root.get("tests"), root.get("failures")) == ("2", "1")
    assert root.find("testsuite/testcase[@name='gone[cpu-fp32]']/failure").get("type") == "drift:stale"


def test_suite_names_that_are_not_file_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="cannot name a report file"):
        write_reports(summary([], suite="../escape"), tmp_path)


def test_drifted_cases_say_how_far_they_moved_from_the_golden():
    moved = Drift(drift_class=DriftClass.DRIFTED, golden_verdict="PASS", golden_mnn_version="3.0.0",
                  outputs=(bad_output("sigmoid"),))
    text = render_markdown(summary([case("det", "page", Verdict.PASS, drift=moved),
                                    case("det", "text", Verdict.PASS, drift=drift(DriftClass.IDENTICAL))]))
    changes = text[text.index("## What changed"):]
    assert "1 drifted within tolerance: how far" in changes
    row = next(line for line in changes.splitlines() if line.startswith("| det ") and "page" in line)
    assert "3.20e-02" in row                      # the golden comparison's max abs, not the reference's
    assert "| text " not in changes.split("## Passes")[0].split("how far")[1]
