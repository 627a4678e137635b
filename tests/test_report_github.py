"""GitHub Actions: annotations (exact text, escaping, manifest lines) and the step summary (appended, bounded)."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import mnn_parity.reports.github as github
from mnn_parity.manifest import load_suite
from mnn_parity.manifest.spec import ConvertFlags, LatencySpec, Limits, ModelSpec, Suite
from mnn_parity.records import DriftClass, Verdict
from mnn_parity.reports import render_markdown
from mnn_parity.reports.github import (annotations, case_annotations, command, escape_data, escape_property,
                                       github_outputs, problem_annotation, step_summary)
from tests import onnx_models
from tests.test_report_support import EXPECT, bad_output, case, drift, mixed, summary

ROOT = Path("/repo")


def _suite(name: str = "ocr", lines: dict | None = None) -> Suite:
    lines = lines or {"det": 22, "cls": 40, "rec": 57, "vad": 74}
    models = tuple(ModelSpec(name=m, onnx=ROOT / "m.onnx", convert=ConvertFlags(), tolerance={}, inputs={},
                             outputs={}, line=line) for m, line in lines.items())
    return Suite(name=name, description="", path=ROOT / f"suites/{name}.yaml", root=ROOT, reference={}, backends={},
                 tolerance={}, limits=Limits(), latency=LatencySpec(), models=models)


@dataclass(frozen=True)
class _Outcome:
    suite: Suite
    summary: object
    report_paths: tuple = ()


@dataclass(frozen=True)
class _Result:
    outcomes: tuple = ()
    problems: tuple = ()


def test_escaping_follows_the_workflow_command_rules():
    assert escape_data("50% done\r\nnext: a,b") == "50%25 done%0D%0Anext: a,b"
    assert escape_property("C:\\x,y%\n") == "C%3A\\x%2Cy%25%0A"
    assert escape_data("%0A") == "%250A"            # an escaped-looking text stays the text it was
    assert command("error", "bad: 3%\nnext", file="suites/a,b.yaml", line=3, col=None, title="t: 1") == \
        "::error file=suites/a%2Cb.yaml,line=3,title=t%3A 1::bad: 3%25%0Anext"
    assert command("warning", "plain") == "::warning::plain"


def test_manifest_problems_annotate_their_file_and_line():
    assert problem_annotation("suites/ocr.yaml:12: models[0].inputs.x.files: no file matches 'data/*.png'") == \
        ("::error file=suites/ocr.yaml,line=12,title=mnn-parity%3A manifest::"
         "models[0].inputs.x.files: no file matches 'data/*.png'")
    assert problem_annotation("suites/ocr.yml: <top>: cannot read: [Errno 13] denied") == \
        "::error file=suites/ocr.yml,title=mnn-parity%3A manifest::<top>: cannot read: [Errno 13] denied"
    assert problem_annotation("setup: cannot use MNN 9.9: no such release\nsee log 100%") == \
        "::error title=mnn-parity%3A setup::setup: cannot use MNN 9.9: no such release%0Asee log 100%25"
    gate = "goldens/ is tracked by goldens.dvc but missing: run `dvc pull goldens.dvc` (repository root /r)"
    assert problem_annotation(gate) == f"::error title=mnn-parity%3A setup::{gate}"


def test_failing_cases_annotate_their_model_entry_once_per_model():
    found = case_annotations(_Outcome(_suite(), mixed(), (ROOT / "reports/ocr.md", ROOT / "reports/ocr.json")))
    by_model = {line.split("ocr/")[1].split("%3A")[0]: line for line in found if "ocr/" in line}
    assert list(by_model) == ["det", "cls", "rec", "vad"]
    assert by_model["det"] == (
        "::error file=suites/ocr.yaml,line=22,title=mnn-parity ocr/det%3A 1 FAIL::"
        "doc-fail [cpu-fp32] FAIL out-of-tolerance: sigmoid_0.tmp_0: 12.5%25 of elements differ by more than atol "
        "0.0001 + rtol 0.001 x |reference|; worst at [0]: MNN -0.968 vs reference -1 (max abs 3.2e-02, co…"
        "%0AReport: reports/ocr.md")
    assert by_model["rec"].startswith("::error file=suites/ocr.yaml,line=57,title=mnn-parity ocr/rec%3A 1 ERROR::"
                                      "line [cpu-fp32] ERROR: conversion failed: unsupported op ConvInteger%0A")
    # vad: the CRASH fails the run, the XPASS beside it is news; the XFAIL is as expected and not named.
    assert by_model["vad"].startswith("::error file=suites/ocr.yaml,line=74,title=mnn-parity ocr/vad%3A 1 CRASH::"
                                      "speech [cpu-fp32] CRASH: SIGSEGV in MNN worker")
    assert "noise" not in by_model["vad"]
    assert not any("stale" in line for line in found)     # stale goldens do not fail this run


def test_xpass_alone_is_a_warning_and_failing_drift_and_stale_are_errors():
    s = summary([case("det", "a", Verdict.PASS).expecting(EXPECT),
                 case("cls", "b", Verdict.PASS, drift=drift(DriftClass.REGRESSED, note="golden hash differs")),
                 case("rec", "c", Verdict.PASS, drift=drift(DriftClass.DRIFTED))],
                stale=[("rec", "gone", "cpu-fp32")], fail_on={"regressed", "stale"})
    found = case_annotations(_Outcome(_suite(), s))
    assert found == [
        "::warning file=suites/ocr.yaml,line=22,title=mnn-parity ocr/det%3A 1 XPASS::"
        f"a [cpu-fp32] XPASS: expected to fail ({EXPECT}), but passed",
        "::error file=suites/ocr.yaml,line=40,title=mnn-parity ocr/cls%3A 1 regressed::"
        "b [cpu-fp32] PASS, regressed since the golden: golden hash differs",
        "::error file=suites/ocr.yaml,title=mnn-parity ocr%3A stale goldens::"
        "1 stale golden(s), no case left: rec/gone [cpu-fp32]"]


def test_many_failures_of_one_model_name_a_few_and_count_the_rest():
    s = summary([case("det", f"c{i}", Verdict.FAIL, [bad_output()]) for i in range(12)])
    [line] = case_annotations(_Outcome(_suite(), s))
    assert "title=mnn-parity ocr/det%3A 12 FAIL::" in line
    assert line.count("[cpu-fp32] FAIL") == 5 and line.endswith("%0A… and 7 more")


def test_paths_are_relative_to_the_checkout_when_the_root_is_inside_it():
    [line] = case_annotations(_Outcome(_suite(), summary([case("det", "a", Verdict.CRASH)])), workspace="/")
    assert line.startswith("::error file=repo/suites/ocr.yaml,line=22,")


def test_model_entries_carry_their_manifest_line(tmp_path):
    onnx_models.conv_relu(tmp_path / "conv.onnx")
    np.save(tmp_path / "a.npy", np.ones((1, 3, 8, 8), np.float32))
    entry = "  - name: {}\n    onnx: conv.onnx\n    inputs:\n      x:\n        files: a.npy\n" \
            "        preprocess: [{{load: {{}}}}]\n"
    (tmp_path / "s.yaml").write_text("suite: s\n# a comment\nmodels:\n" + entry.format("one") + "\n"
                                     + entry.format("two"))
    suite = load_suite(tmp_path / "s.yaml", tmp_path)
    assert [(m.name, m.line) for m in suite.models] == [("one", 4), ("two", 11)]


def test_step_summary_is_appended_not_overwritten(tmp_path):
    target = tmp_path / "summary.md"
    target.write_text("# from an earlier step\n")
    result = _Result(outcomes=(_Outcome(_suite(), mixed()),), problems=("suites/x.yaml:3: suite: bad",))
    out = io.StringIO()
    github_outputs(result, {"GITHUB_STEP_SUMMARY": str(target)}, out)
    github_outputs(result, {"GITHUB_STEP_SUMMARY": str(target)}, out)
    text = target.read_text()
    assert text.startswith("# from an earlier step\n# mnn-parity: ocr ❌")
    assert text.count(github.summary_markdown(mixed())) == 2
    assert text.count("## mnn-parity: 1 problem(s) in manifests or setup\n\n```text\nsuites/x.yaml:3: suite: bad") == 2
    assert out.getvalue() == ""                           # not in GitHub Actions: no workflow commands printed


def test_the_step_summary_names_the_html_report_instead_of_a_link_that_leads_nowhere():
    # relative to the job's summary page, `[ocr.html](ocr.html)` is a 404: the HTML is in the reports artifact
    assert "[ocr.html](ocr.html)" in render_markdown(mixed())
    shown = step_summary(_Result(outcomes=(_Outcome(_suite(), mixed()),)))
    assert "(ocr.html)" not in shown
    assert "Plots and every table: `ocr.html`, in the run's reports artifact." in shown.splitlines()
    assert shown.replace("Plots and every table: `ocr.html`, in the run's reports artifact.", "") == \
        render_markdown(mixed()).replace(next(line for line in render_markdown(mixed()).splitlines()
                                              if line.startswith("Plots and every table")), "")


def test_annotations_are_printed_only_inside_github_actions(tmp_path):
    result = _Result(outcomes=(_Outcome(_suite(), mixed()),), problems=("suites/x.yaml:3: suite: bad",))
    out = io.StringIO()
    github_outputs(result, {"GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": "/repo"}, out)
    assert out.getvalue().splitlines() == annotations(result, "/repo")
    assert out.getvalue().startswith("::error file=suites/x.yaml,line=3,title=mnn-parity%3A manifest::suite: bad\n")
    assert list(tmp_path.iterdir()) == []
    quiet = io.StringIO()
    github_outputs(result, {}, quiet)
    assert quiet.getvalue() == ""


def test_step_summary_leaves_out_suites_past_githubs_limit(monkeypatch):
    one = len(render_markdown(mixed()).encode())
    monkeypatch.setattr(github, "STEP_SUMMARY_MAX", 2 * one + 10_000 + 1)
    outcomes = tuple(_Outcome(_suite(name), summary(mixed().results, suite=name)) for name in ("a", "b", "c", "d"))
    text = step_summary(_Result(outcomes))
    assert text.count("# mnn-parity: ") == 2
    assert "2 more suite report(s) left out to fit the step summary: c, d (see the reports artifact)." in text
