"""`mnn-parity conformance` on a handful of real ONNX node tests, through the real engines: each kind of outcome
(pass, MNN crash, refused conversion, a reference that disagrees with the shipped output, a reference that cannot
run, a test no engine takes) lands in its own column of the per-op table; and the pure logic beneath it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnn_parity.cli import main
from mnn_parity.conformance import report
from mnn_parity.conformance.build import ONNX_TOLERANCE, build_suite, load_tests, select
from mnn_parity.conformance.coverage import NodeOutcome, case_outcome, changes, crash_kind, node_outcome, op_rows
from mnn_parity.conformance.run import run_conformance

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {
    "test_relu": ("Relu", "pass", ""),
    "test_add": ("Add", "pass", ""),
    "test_matmul_2d": ("MatMul", "pass", ""),
    # ONNX Runtime (and MNN with it) disagree with the shipped output: not counted against MNN
    "test_maxunpool_export_with_output_shape": ("MaxUnpool", "reference-wrong", "MNN vs shipped: out-of-tolerance"),
    "test_averagepool_2d_default": ("AveragePool", "crash", "SIGFPE"),
    "test_adagrad": ("ai.onnx.preview.training:Adagrad", "not-converted", "refused"),
    "test_max_int16": ("Max", "reference-error", ""),      # ONNX Runtime has no int16 Max kernel
    "test_equal_string": ("Equal", "skipped", ""),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("conformance-cache")


@pytest.fixture(scope="module")
def sample_run(cache):
    return run_conformance(ROOT, jobs=2, names=list(EXPECTED), cache_dir=cache)


def test_the_suite_is_an_ordinary_suite_with_onnx_tolerance():
    _, tests = load_tests(ROOT)
    chosen = select(tests, names=["test_relu", "test_equal_string"])
    suite = build_suite(ROOT, chosen)
    assert [m.name for m in suite.models] == ["test_relu"]      # the skipped one is reported, never run
    model = suite.models[0]
    assert model.cases == "conformance/onnx-node/test_relu/inputs/*.npz" and list(model.inputs) == ["x"]
    tolerance = suite.tolerance_for(model, "y", "cpu-fp32")
    assert (tolerance.rtol, tolerance.atol) == (ONNX_TOLERANCE["rtol"], ONNX_TOLERANCE["atol"])
    assert {t.op for t in select(tests, ops=["relu"])} == {"Relu"}


def test_each_outcome_lands_in_its_own_column(sample_run):
    got = {o.name: (o.op, o.status, o.detail) for o in sample_run.outcomes}
    assert got == EXPECTED
    assert sample_run.environment["mnn_version"] and not sample_run.problems
    rows = {row.op: row for row in op_rows(sample_run.outcomes)}
    assert rows["AveragePool"].counts == {"crash": 1} and rows["AveragePool"].details == {"crash": {"SIGFPE": 1}}
    assert rows["AveragePool"].converted == 1
    assert rows["ai.onnx.preview.training:Adagrad"].converted == 0
    assert rows["Equal"].converted == 0 and rows["Equal"].counts == {"skipped": 1}


def test_report_has_totals_the_op_table_and_what_changed(sample_run, tmp_path):
    previous = {"environment": {"mnn_version": "0.0.1"},
                "tests": {"test_relu": {"status": "fail"}, "test_averagepool_2d_default": {"status": "pass"},
                          "test_maxunpool_export_with_output_shape": {"status": "pass"}}}
    (tmp_path / "old.json").write_text(json.dumps(previous))
    paths, moved = report.write(sample_run, tmp_path / "reports", tmp_path / "old.json")
    assert [p.name for p in paths] == ["conformance.md", "conformance.json",
                                       f"conformance-mnn-{sample_run.environment['mnn_version']}.json"]
    assert moved["fixed"] == [("Relu", "test_relu", "fail→pass")]
    assert moved["broken"] == [("AveragePool", "test_averagepool_2d_default", "pass→crash (SIGFPE)")]
    text = paths[0].read_text()
    assert "| 3 | 0 | 0 | 1 | 1 | 1 | 1 | 1 |" in text                   # totals, in STATUSES order
    assert "| AveragePool | 1 | 1 |  |  |  | 1 (SIGFPE) |" in text
    assert "**broken**: 1 test(s) in 1 op(s): AveragePool" in text
    doc = json.loads(paths[1].read_text())
    assert doc["totals"]["pass"] == 3 and doc["tests"]["test_adagrad"]["status"] == "not-converted"
    assert doc["ops"]["MaxUnpool"]["counts"] == {"reference-wrong": 1}


@pytest.mark.slow
def test_command_line_writes_reports_and_fails_on_a_broken_test(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("MNN_PARITY_CACHE_DIR", str(cache))
    out = tmp_path / "reports"
    assert main(["--root", str(ROOT), "conformance", "--test", "test_relu", "--report-dir", str(out), "-q"]) == 0
    assert json.loads((out / "conformance.json").read_text())["totals"]["pass"] == 1
    assert not list(out.glob("conformance-mnn-*.json"))     # a partial run keeps no per-release copy
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"tests": {"test_averagepool_2d_default": {"status": "pass"}}}))
    status = main(["--root", str(ROOT), "conformance", "--op", "AveragePool", "--test", "test_averagepool_2d_default",
                   "--report-dir", str(out), "--compare", str(old), "-q"])
    assert status == 1


@pytest.mark.slow
def test_a_local_dask_cluster_gives_the_same_outcomes_as_threads(sample_run, cache, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setenv("MNN_PARITY_CACHE_DIR", str(cache))
    out = tmp_path / "reports"
    names = [n for n in EXPECTED if n != "test_equal_string"]
    argv = ["--root", str(ROOT), "conformance", "--executor", "dask", "--jobs", "2", "--report-dir", str(out), "-q"]
    assert main(argv + [arg for name in names for arg in ("--test", name)]) == 0
    by_dask = json.loads((out / "conformance.json").read_text())["tests"]
    by_threads = {o.name: (o.status, o.detail) for o in sample_run.outcomes if o.name in names}
    assert {name: (t["status"], t["detail"]) for name, t in by_dask.items()} == by_threads


# ------------------------------------------------------------------------------------------------ pure logic

def test_markdown_stays_within_a_pull_request_comment():
    from mnn_parity.conformance.run import ConformanceRun

    many = tuple(NodeOutcome(f"test_op_{i}_with_a_long_name", f"Op{i % 150}", "error", "", "x" * 300)
                 for i in range(3000))
    text = report.render_markdown(ConformanceRun("src", many, {"mnn_version": "3.6.1"}, 1.0))
    assert len(text) < 60_000 and "more: every test is in conformance.json" in text
    assert "| Op149 | 20 | 20 |" in text        # the per-op table is complete; only the test list is cut


@pytest.mark.parametrize("verdict, cls, reason, ref, status, detail", [
    ("ERROR", None, "conversion failed: MNN cannot convert op(s): Pad", None, "not-converted", "refused"),
    ("ERROR", None, "conversion failed: converter crashed: killed by SIGSEGV; its log", None, "not-converted",
     "converter crashed"),
    ("CRASH", None, "reference (ONNX Runtime) killed by SIGSEGV", None, "reference-error", ""),
    ("CRASH", None, "MNN timeout: no answer within 60 s", None, "crash", "timeout"),
    ("FAIL", "shape-mismatch", "y: shape (1) vs reference ()", None, "fail", "shape-mismatch"),
    ("FAIL", "out-of-tolerance", "x", "out-of-tolerance", "reference-wrong", "MNN vs shipped: pass"),
    ("PASS", None, "within tolerance", None, "pass", ""),
])
def test_case_outcome(verdict, cls, reason, ref, status, detail):
    got = case_outcome(verdict, cls, reason, ref, "pass")
    assert (got.status, got.detail) == (status, detail)


def test_worst_case_names_the_test_and_crash_kinds():
    cases = [case_outcome("PASS", None, "", None), case_outcome("FAIL", "nan-inf", "", None)]
    assert node_outcome("t", "Op", cases).status == "fail"
    assert node_outcome("t", "Op", []).status == "error"
    assert crash_kind("MNN killed by SIGABRT") == "SIGABRT"
    assert crash_kind("MNN memory cap of 4096 MiB exceeded") == "memory cap"


def test_changes_ignore_the_reference_side():
    now = [NodeOutcome("a", "A", "pass"), NodeOutcome("b", "B", "reference-wrong"), NodeOutcome("c", "C", "error")]
    previous = {"a": {"status": "reference-wrong"}, "b": {"status": "pass"}, "c": {"status": "pass"}}
    assert changes(previous, now) == {"fixed": [], "broken": [("C", "c", "pass→error")]}
