"""The Markdown summary's newer parts: the model × backend roll-up, why each XFAIL was expected, failure classes
of unexpected failures only, and cosines printed as their distance from 1."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from mnn_parity.comparison import compare_output
from mnn_parity.manifest.tolerance import Tolerance
from mnn_parity.records import Verdict
from mnn_parity.reports import render_json, render_markdown
from mnn_parity.reports.formatting import fmt_cos
from mnn_parity.reports.markdown import MARKDOWN_LIMIT
from mnn_parity.reports.policy import SEVERITY, expected_reason
from tests.test_report_support import EXPECT, TOL, bad_output, case, dead_output, good_output, mixed, summary


def _section(md: str, start: str, end: str) -> str:
    return md[md.index(start):md.index(end, md.index(start))]


def _rollup_rows(md: str) -> dict[str, list[str]]:
    block = md[md.index("Worst verdict per model and backend:"):].split("\n\n")[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()]
    return {row[0]: row[1:] for row in rows if not set(row[0]) <= {"-"}}


def test_rollup_comes_right_after_the_counts_with_one_row_per_model_and_column_per_backend():
    md = render_markdown(mixed())
    assert md.index("| total") < md.index("Worst verdict per model and backend:") < md.index("Against the goldens")
    rows = _rollup_rows(md)
    assert rows["model"] == ["cpu-fp32", "cpu-low"]
    assert rows["det"] == ["**FAIL (FAIL 1, PASS 2)**", "–"]       # worst first, counts where verdicts mix
    assert rows["cls"] == ["–", "**FAIL**"]
    assert rows["rec"] == ["**ERROR**", "–"]
    assert rows["vad"] == ["**CRASH (CRASH 1, XPASS 1, XFAIL 1)**", "–"]
    assert list(rows)[1:] == ["det", "cls", "rec", "vad"]          # the order the run met them, not sorted


@pytest.mark.parametrize("worse, better", list(itertools.combinations(SEVERITY, 2)))
def test_rollup_cell_shows_the_worse_of_two_verdicts(worse, better):
    results = [case("m", "a", better), case("m", "b", worse), case("m", "c", worse)]
    cell = _rollup_rows(render_markdown(summary(results)))["m"][0]
    assert cell.strip("*").startswith(f"{worse.value} ({worse.value} 2, {better.value} 1)")


def test_rollup_of_expected_outcomes_is_not_stressed():
    rows = _rollup_rows(render_markdown(summary([case("m", "a", Verdict.PASS), case("m", "b", Verdict.PASS)])))
    assert rows["m"] == ["PASS"]


def test_xfail_table_says_why_each_case_was_expected_to_fail():
    md = render_markdown(mixed())
    xfail = _section(md, "## Expected failures (XFAIL) (1)", "## Passes")
    header = next(line for line in xfail.splitlines() if line.startswith("| model"))
    assert "expected because" in header and "what happened" in header
    row = next(line for line in xfail.splitlines() if line.startswith("| vad"))
    assert f"| {EXPECT} " in row
    assert "| FAIL: y: 12.5% of elements differ by more than atol 0.0001 + rtol 0.001 x \\|reference\\|" in row and "(expected:" not in row


def test_shrunk_report_still_says_why_xfails_were_expected():
    results = [case("det", f"c{i:04d}", Verdict.FAIL, [bad_output()]).expecting("fp16 weights: tracked in #9")
               for i in range(3000)]
    md = render_markdown(summary(results))
    assert len(md) <= MARKDOWN_LIMIT
    xfail = _section(md, "## Expected failures (XFAIL) (3000)", "<sub>")
    assert "expected because" in xfail and "| fp16 weights: tracked in #9 " in xfail


def test_expected_reason_takes_the_manifests_reason_from_the_end():
    tricky = case("m", "a", Verdict.FAIL, [bad_output()], reason="log says (expected: 3 inputs) got 2")
    happened, because = expected_reason(tricky.expecting("fails (expected: on ARM)"))
    assert because == "fails (expected: on ARM)"
    assert happened == "FAIL: log says (expected: 3 inputs) got 2"
    assert expected_reason(tricky.expecting("broken :( on ARM"))[1] == "broken :( on ARM"   # unbalanced
    assert expected_reason(case("m", "a", Verdict.PASS)) == ("", "")


def test_failure_classes_count_unexpected_failures_only():
    s = summary([case("m", "dead", Verdict.FAIL, [dead_output()]),
                 *(case("m", f"x{i}", Verdict.FAIL, [bad_output()]).expecting(EXPECT) for i in range(3))])
    md = render_markdown(s)
    assert "Failure classes (unexpected failures): dead-output 1\n" in md
    counts = render_json(s)["counts"]
    assert counts["failure_class"] == {"dead-output": 1}
    assert counts["expected_failure_class"] == {"out-of-tolerance": 3}
    only_expected = render_markdown(summary([case("m", "x", Verdict.FAIL, [bad_output()]).expecting(EXPECT)]))
    assert "Failure classes" not in only_expected


@pytest.mark.parametrize("cosine, text", [(1.0, "0"), (1 - 4.6e-10, "4.6e-10"), (0.996242, "3.8e-03"),
                                          (-1.0, "2.0e+00"), (float("nan"), "nan"), (None, "–")])
def test_cosine_prints_as_its_distance_from_one(cosine, text):
    assert fmt_cos(cosine) == text


def test_every_table_with_a_cosine_shows_one_minus_cos_so_near_ones_differ():
    ref = np.linspace(1, 2, 1000)
    near = compare_output("y", ref, ref * (1 + 1e-5 * np.sin(np.arange(1000))), TOL)
    assert 0.99999999 < near.cosine < 1.0
    expected = fmt_cos(near.cosine)
    s = summary([case("m", "near", Verdict.PASS, [near]), case("m", "bad", Verdict.FAIL, [near, bad_output("z")])])
    md = render_markdown(s)
    assert "cosine |" not in md and "lowest cosine" not in md and "1.000000" not in md.split("## Failures")[1]
    assert md.count(f"| {expected} ") >= 3          # the pass row, its per-output row, the failure's output row
    assert "1−cos (worst)" in md and "| 1−cos " in md
    assert fmt_cos(good_output().cosine) != "0"     # 1e-6 noise on 12 values: visible, not rounded to 1


def test_drift_sentences_say_no_golden_rather_than_question_marks():
    from mnn_parity.records import Drift, DriftClass
    from mnn_parity.reports.tables import drift_sentence

    assert drift_sentence(Drift(DriftClass.NEW)) == "Against the golden: no golden yet (new)"
    known = drift_sentence(Drift(DriftClass.REGRESSED, Verdict.PASS, "3.5.0"))
    assert known == "Against the golden (MNN 3.5.0, verdict PASS): regressed"


@pytest.mark.parametrize("flips, ties, cell", [
    (0, 0, "100% agree"), (0, 1, "100% agree (1 near tie)"), (2, 3, "98% agree (2 flips, 3 near ties)"),
])
def test_topk_cells_read_as_sentences(flips, ties, cell):
    from dataclasses import replace

    from mnn_parity.reports.tables import _topk_cell

    base = compare_output("y", np.ones(3, np.float32), np.ones(3, np.float32), Tolerance())
    agreement = 1.0 if not flips else 0.98
    o = replace(base, topk_agreement=agreement, topk_flips=flips, near_tie_flips=ties)
    assert _topk_cell(o) == cell


def test_the_tightest_tolerance_each_output_met_is_the_worst_over_its_cases_per_backend():
    from dataclasses import replace

    from mnn_parity.reports.tolerance_needed import tolerance_json

    ref = np.array([1.0, 2.0, -4.0, 0.5])
    a = compare_output("y", ref, ref + np.array([0.0, 0.01, 0.0, 0.0]), TOL)
    b = compare_output("y", ref, ref + np.array([0.0, 0.0, 0.2, 0.0]), TOL)
    other_backend = replace(case("m", "b", Verdict.FAIL, [b]), backend="cpu-low")
    s = summary([case("m", "a", Verdict.PASS, [a]), case("m", "b", Verdict.FAIL, [b]), other_backend])
    rows = {(r["output"], r["backend"]): r for r in tolerance_json(s)}
    fp32 = rows[("y", "cpu-fp32")]
    assert fp32["cases"] == 2 and fp32["atol"] == pytest.approx(0.2) and fp32["rtol"] == pytest.approx(0.05)
    assert fp32["cosine_min"] == min(a.cosine, b.cosine) and rows[("y", "cpu-low")]["cases"] == 1
    md = render_markdown(s)
    assert "Tightest tolerance each output met" in md and "| 2.00e-01 " in md
    render_json(s)          # validates against schemas/report.schema.json
