"""JUnit XML: which element each verdict and failing drift becomes, and the counts CI reads."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace

from mnn_parity.records import DriftClass, Verdict
from mnn_parity.reports import render_junit
from tests.test_report_support import bad_output, case, drift, mixed, summary


def test_junit_parses_and_counts():
    other = summary([case("x", "ok", Verdict.PASS), case("x", "bad", Verdict.FAIL, [bad_output()])], suite="asr")
    root = ET.fromstring(render_junit([mixed(), other]))
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == ("10", "3", "2", "1")
    ocr, asr = root.findall("testsuite")
    assert (ocr.get("name"), ocr.get("tests"), ocr.get("failures"), ocr.get("errors"), ocr.get("skipped")) == \
        ("ocr", "8", "2", "2", "1")
    assert len(ocr.findall("testcase/failure")) == 2 and len(ocr.findall("testcase/error")) == 2
    assert len(ocr.findall("testcase/skipped")) == 1
    dead = ocr.find("testcase[@name='img-dead[cpu-low]']/failure")
    assert dead.get("type") == "dead-output" and dead.get("message").startswith("logits: all zero")
    assert "logits: max_abs=1.17e+00 1−cos=2.1e-01 mismatch=100% [dead-output]" in dead.text
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


def test_junit_lists_stale_goldens_only_when_they_fail_the_run():
    s = summary([case("det", "a", Verdict.PASS)], stale=[("det", "gone", "cpu-fp32")])
    assert ET.fromstring(render_junit([s])).get("tests") == "1"
    root = ET.fromstring(render_junit([replace(s, fail_on=frozenset({"stale"}))]))
    assert (root.get("tests"), root.get("failures")) == ("2", "1")
    assert root.find("testsuite/testcase[@name='gone[cpu-fp32]']/failure").get("type") == "drift:stale"
