"""The precision ladder: rendered from hand-made records, then from a real run of a tiny model and two variants."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mnn_parity.api import run
from mnn_parity.manifest.tolerance import Tolerance
from mnn_parity.records import CaseResult, OutputComparison, Verdict
from mnn_parity.reports import RunSummary
from mnn_parity.reports.json_report import render_json, validate_report
from mnn_parity.reports.ladder import MODEL_BYTES_KEY, fmt_bytes, ladder, ladder_json, ladder_md, model_bytes
from mnn_parity.reports.markdown import render_markdown
from tests import onnx_models


def result(model: str, case: str, backend: str = "cpu", verdict: Verdict = Verdict.PASS, cosine: float = 1.0,
           max_abs: float = 0.0, topk: float | None = None, mnn_ms: float | None = 10.0) -> CaseResult:
    output = OutputComparison("y", (1, 4), (1, 4), "float32", "float32", Tolerance(), max_abs=max_abs,
                              cosine=cosine, topk_agreement=topk)
    latency = {"reference": 5.0, **({"mnn": mnn_ms} if mnn_ms is not None else {})}
    return CaseResult("s", model, case, backend, verdict, outputs=(output,), latency_ms=latency)


def summary(results, sizes=None) -> RunSummary:
    environment = {"mnn_version": "3.6.1", **({MODEL_BYTES_KEY: sizes} if sizes else {})}
    return RunSummary("s", "", environment, tuple(results))


FAMILY = [
    result("m", "a", cosine=1 - 1e-9, max_abs=1e-6, topk=1.0, mnn_ms=10.0),
    result("m", "b", cosine=1 - 2e-9, max_abs=3e-6, topk=1.0, mnn_ms=30.0),
    result("m", "c", cosine=1 - 1e-9, max_abs=2e-6, topk=1.0, mnn_ms=20.0),
    result("m@int8", "a", verdict=Verdict.XFAIL, cosine=0.5, max_abs=0.9, topk=0.5, mnn_ms=40.0),
    result("m@int8", "b", verdict=Verdict.PASS, cosine=0.99, max_abs=0.1, topk=1.0, mnn_ms=40.0),
    result("m@int8", "c", verdict=Verdict.XFAIL, cosine=0.9, max_abs=0.2, topk=0.75, mnn_ms=40.0),
    result("m@fp16", "a", cosine=1 - 1e-4, max_abs=1e-2, topk=1.0, mnn_ms=10.0),
    result("m@fp16", "b", cosine=1 - 3e-4, max_abs=1e-3, topk=1.0, mnn_ms=10.0),
    result("m@fp16", "c", cosine=1 - 2e-4, max_abs=2e-3, topk=1.0, mnn_ms=10.0),
    result("other", "a"),                                            # no variants: no ladder
]
SIZES = {"m": 4_000_000, "m@fp16": 2_000_000, "m@int8": 1_000_000, "other": 10}


def test_rungs_take_the_worst_case_and_the_median_latency():
    (rungs,) = ladder(summary(FAMILY, SIZES))
    assert [(g.variant, g.model) for g in rungs] == [(None, "m"), ("int8", "m@int8"), ("fp16", "m@fp16")]
    base, int8, fp16 = rungs
    assert base.cosine == pytest.approx(1 - 2e-9) and base.max_abs == 3e-6 and base.mnn_ms == 20.0
    assert int8.cosine == 0.5 and int8.max_abs == 0.9 and int8.topk_agreement == 0.5 and int8.mnn_ms == 40.0
    assert int8.worst_verdict == "XFAIL" and int8.verdicts == {"XFAIL": 2, "PASS": 1}
    assert (base.model_bytes, fp16.model_bytes) == (4_000_000, 2_000_000) and base.reference_ms == 5.0


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the Markdown tables in `text`, as stripped cells."""
    lines = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| variant")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_markdown_section_shows_deltas_against_the_base_on_the_same_backend():
    text = "\n".join(ladder_md(summary(FAMILY, SIZES)))
    assert text.startswith("## Precision ladder") and "### m\n" in text and "### other" not in text
    base, int8, fp16 = table_rows(text)
    assert base == ["base", "cpu", "PASS", "3", "2.0e-09", "3.00e-06", "100%", "20.0", "4 MB"]
    assert int8 == ["int8", "cpu", "XFAIL (XFAIL 2, PASS 1)", "3", "5.0e-01", "9.00e-01", "50%", "40.0 (+100%)",
                    "1 MB (−75%)"]
    assert fp16 == ["fp16", "cpu", "PASS", "3", "3.0e-04", "1.00e-02", "100%", "10.0 (−50%)", "2 MB (−50%)"]
    assert "slower" in text                       # says plainly that lower precision is not always faster


def test_json_rows_carry_raw_figures_and_ratios_and_validate():
    doc = render_json(summary(FAMILY, SIZES))
    validate_report(doc)
    (family,) = doc["ladder"]
    base, int8, fp16 = family["rows"]
    assert family["family"] == "m" and base["variant"] is None and base["vs_base"] is None
    assert int8["vs_base"]["mnn_ms_ratio"] == 2.0 and int8["vs_base"]["size_ratio"] == 0.25
    assert fp16["vs_base"]["one_minus_cos"] == pytest.approx(3e-4 - 2e-9)
    assert fp16["mnn_model_bytes"] == 2_000_000 and int8["cases"] == 3 and int8["verdict"] == "XFAIL"


def test_no_ladder_without_variants_and_no_section_in_the_markdown():
    plain = summary([result("m", "a"), result("other", "a")])
    assert ladder(plain) == [] and render_json(plain)["ladder"] == []
    assert "Precision ladder" not in render_markdown(plain)
    assert "## Precision ladder" in render_markdown(summary(FAMILY))


def test_unknowns_render_as_dashes_and_nan_is_never_hidden():
    results = [result("m", "a", mnn_ms=None), result("m@x", "a", cosine=math.nan, max_abs=math.nan),
               result("m@x", "b", cosine=0.999, max_abs=0.01),
               CaseResult("s", "m@x", "c", "cpu", Verdict.ERROR, reason="conversion failed")]
    base, x = ladder(summary(results))[0]
    assert math.isnan(x.cosine) and math.isnan(x.max_abs) and x.worst_verdict == "ERROR"
    _, row = table_rows("\n".join(ladder_md(summary(results))))
    assert row == ["x", "cpu", "**ERROR (PASS 2, ERROR 1)**", "3", "nan", "nan", "–", "10.0", "–"]
    doc = render_json(summary(results))
    validate_report(doc)
    assert doc["ladder"][0]["rows"][1]["cosine"] == "NaN" and doc["ladder"][0]["rows"][1]["mnn_model_bytes"] is None


def test_a_family_run_on_two_backends_is_ordered_by_backend_then_variant():
    results = [result("m", "a", "b1"), result("m", "a", "b2"), result("m@h", "a", "b1", mnn_ms=5.0),
               result("m@h", "a", "b2", mnn_ms=30.0)]
    rungs = ladder(summary(results))[0]
    assert [(g.backend, g.label) for g in rungs] == [("b1", "base"), ("b1", "h"), ("b2", "base"), ("b2", "h")]
    rows = ladder_json(summary(results))[0]["rows"]
    assert [r["vs_base"]["mnn_ms_ratio"] if r["vs_base"] else None for r in rows] == [None, 0.5, None, 3.0]


def test_sizes_read_as_a_person_would():
    assert [fmt_bytes(n) for n in (None, 999, 1500, 4_740_000, 10_900_000)] == \
        ["–", "999 B", "1.5 kB", "4.74 MB", "10.9 MB"]


MANIFEST = """\
suite: ladder
backends:
  cpu-fp32: {engine: mnn, device: CPU, precision: high, threads: 1}
tolerance: {atol: 1.0e-4, rtol: 1.0e-3, cosine_min: 0.9999}
latency: {warmup: 0, repeat: 2}
models:
  - name: conv
    onnx: models/conv.onnx
    inputs:
      x: {files: inputs/*.npy, preprocess: [{load: {}}]}
    variants:
      fp16: {convert: {fp16: true}, tolerance: {atol: 0.05, rtol: 0.0, cosine_min: 0.99}}
      w8: {convert: {weight_quant_bits: 8}, tolerance: {atol: 0.5, rtol: 0.0, cosine_min: 0.9}}
"""


def test_a_real_run_of_a_tiny_model_with_fp16_and_int8_weight_variants(tmp_path: Path):
    onnx_models.conv_relu(tmp_path / "models/conv.onnx", channels=8, size=16)
    (tmp_path / "inputs").mkdir()
    rng = np.random.RandomState(3)
    for index in range(2):
        np.save(tmp_path / f"inputs/in{index}.npy", rng.rand(1, 8, 16, 16).astype(np.float32))
    (tmp_path / ".mnn-parity").write_text("")
    (tmp_path / "suite.yaml").write_text(MANIFEST)
    outcome = run(["suite.yaml"], root=tmp_path, report_dir=tmp_path / "reports", goldens_dir=tmp_path / "goldens",
                  cache_dir=tmp_path / "cache", localise="never").outcomes[0]
    assert {(r.model, r.verdict) for r in outcome.summary.results} == \
        {("conv", Verdict.PASS), ("conv@fp16", Verdict.PASS), ("conv@w8", Verdict.PASS)}
    sizes = model_bytes(outcome.runs)      # from each case's provenance: the .mnn each variant ran
    assert set(sizes) == {"conv", "conv@fp16", "conv@w8"} and all(size > 0 for size in sizes.values())
    assert sizes["conv@fp16"] < sizes["conv"]
    rows = json.loads((tmp_path / "reports/ladder.json").read_text())["ladder"][0]["rows"]
    assert [r["variant"] for r in rows] == [None, "fp16", "w8"]
    assert all(isinstance(r["cosine"], float) and 0.9 < r["cosine"] <= 1 and r["mnn_ms"] > 0 for r in rows)
    assert [r["mnn_model_bytes"] for r in rows] == [sizes["conv"], sizes["conv@fp16"], sizes["conv@w8"]]
    assert rows[0]["max_abs"] < 1e-4 < rows[1]["max_abs"]         # fp16 weights really moved the output
    assert "## Precision ladder" in (tmp_path / "reports/ladder.md").read_text()
    assert MODEL_BYTES_KEY not in (tmp_path / "reports/ladder.md").read_text()   # a ladder column, not an env row
