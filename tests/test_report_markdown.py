"""The Markdown report: order, content, escaping, and shrinking to fit a pull-request comment."""
from __future__ import annotations

from dataclasses import replace

import pytest

from mnn_parity.records import Drift, DriftClass, Verdict
from mnn_parity.reports import render_json, render_markdown
from mnn_parity.reports.markdown import MARKDOWN_LIMIT
from tests.test_report_support import ENV, bad_output, case, drift, good_output, mixed, summary


def test_markdown_puts_summary_then_failures_before_passes():
    md = render_markdown(mixed())
    assert md.startswith("# mnn-parity: ocr ❌")
    order = [md.index(h) for h in ("## Summary", "## What changed since the goldens", "## Failures (5)",
                                   "## Passes (2)")]
    assert order == sorted(order)
    assert md.index("doc-fail") < md.index("doc-pass")
    assert md.index("| quiet") < md.index("## Passes")          # XPASS is news, listed with the failures
    assert "**MNN 3.0.0 → 3.6.1**" in md
    assert "ONNX Runtime 1.23.2" in md


def test_markdown_shows_reasons_classes_details_and_warnings():
    md = render_markdown(mixed())
    fail = mixed().results[2]
    assert fail.reason.startswith("sigmoid_0.tmp_0: 12.5% of elements differ by more than atol 0.0001 + rtol 0.001 x |reference|")
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


def test_what_changed_lists_only_changed_regressed_and_fixed():
    s = summary([
        *mixed().results,
        case("det", "doc-fixed", Verdict.PASS, drift=drift(DriftClass.FIXED, golden_verdict=Verdict.FAIL)),
        case("det", "doc-changed", Verdict.PASS, drift=drift(DriftClass.CHANGED)),
    ], stale=mixed().stale)
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


def test_slowdowns_are_listed_once_in_a_latency_section_not_flagged_per_row():
    md = render_markdown(mixed())
    failures = md[md.index("## Failures"):md.index("## Latency")]
    row = next(line for line in failures.splitlines() if line.startswith("| det") and "doc-fail" in line)
    assert "| 12.0 " in row and "| 10.0 " in row and "+200%" in row   # 12 ms now vs 4 ms at the golden
    assert "⚠️ slower" not in md
    latency = md[md.index("## Latency"):md.index("## Warnings")]
    assert "over 1.5× its golden's and both medians are above 1 ms" in latency
    assert "| det     | doc-fail | cpu-fp32  | 4.0             | 12.0         | **3.00×**  |" in latency
    assert "doc-pass" not in latency                                   # +9%: within the limit
    assert "1 case(s) ran slower than 1.5× their golden MNN latency: see [Latency](#latency)." in md


def _timed(name, now, then):
    return case("det", name, Verdict.PASS, latency={"reference": 1.0, "mnn": now},
                drift=drift(DriftClass.IDENTICAL, mnn_golden=then))


def test_only_medians_above_a_millisecond_on_both_sides_are_flagged():
    s = summary([_timed("tiny", 0.069, 0.045),        # +53%, both sub-millisecond: noise
                 _timed("from-tiny", 5.0, 0.9),       # 5.6×, but the golden's median was sub-millisecond
                 _timed("steady", 2.0, 1.2),          # 1.67×, both medians above 1 ms
                 _timed("within", 1.7, 1.2)])         # 1.42×: within the limit
    md = render_markdown(s)
    latency = md[md.index("## Latency"):md.index("## Passes")]
    assert "| steady " in latency
    assert not any(f"| {name} " in latency for name in ("tiny", "from-tiny", "within"))
    assert render_json(s)["counts"]["slowdowns"] == 1
    assert render_json(replace(s, slowdown_floor_ms=0.0))["counts"]["slowdowns"] == 3
    assert "## Latency" not in render_markdown(replace(s, slowdown_max=None))


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


@pytest.mark.slow
def test_run_with_more_failures_than_fit_says_how_many_are_left_out():
    results = [case("det", f"c{i:04d}", Verdict.FAIL, [bad_output()]) for i in range(3000)]
    md = render_markdown(summary(results))
    assert len(md) <= MARKDOWN_LIMIT
    assert "## Failures (3000)" in md
    failures = md[md.index("## Failures"):]
    listed = sum(1 for line in failures.splitlines() if line.startswith("| det "))
    assert 0 < listed < 3000
    assert f"… and {3000 - listed} more failures: full details in `ocr.json`." in md


def test_drifted_cases_say_how_far_they_moved_from_the_golden():
    moved = Drift(drift_class=DriftClass.DRIFTED, golden_verdict=Verdict.PASS, golden_mnn_version="3.0.0",
                  outputs=(bad_output("sigmoid"),))
    text = render_markdown(summary([case("det", "page", Verdict.PASS, drift=moved),
                                    case("det", "text", Verdict.PASS, drift=drift(DriftClass.IDENTICAL))]))
    changes = text[text.index("## What changed"):]
    assert "1 drifted within tolerance: how far" in changes
    row = next(line for line in changes.splitlines() if line.startswith("| det ") and "page" in line)
    assert "3.20e-02" in row                      # the golden comparison's max abs, not the reference's
    assert "| text " not in changes.split("## Passes")[0].split("how far")[1]


def test_a_description_of_many_lines_is_one_paragraph_above_the_summary():
    md = render_markdown(replace(mixed(), description="x\n" * 1000))
    head = md.splitlines()[:4]
    assert head[2] == " ".join(["x"] * 1000) and head[3] == ""
