"""What a run's results mean before any rendering: the exit status, and a summary that cannot change under it."""
from __future__ import annotations

import dataclasses
from dataclasses import replace

import pytest

from mnn_parity.records import DriftClass, Verdict
from mnn_parity.reports import RunSummary, exit_status, render_json
from tests.test_report_support import bad_output, case, drift, summary


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
    assert exit_status([replace(stale, fail_on=frozenset({"stale"}))]) == 1


def test_summary_keeps_what_it_was_given_when_the_caller_changes_its_lists():
    results, stale, fail_on, env = [case("m", "a", Verdict.PASS)], [["m", "gone", "cpu"]], {"changed"}, {"python": "3"}
    s = RunSummary(suite="ocr", description="", environment=env, results=results, stale=stale, fail_on=fail_on)
    results.append(case("m", "b", Verdict.CRASH))
    stale.clear()
    fail_on.add("stale")
    env["python"] = "4"
    assert exit_status([s]) == 0
    assert (len(s.results), s.stale, s.fail_on, s.environment["python"]) == (1, (("m", "gone", "cpu"),),
                                                                            frozenset({"changed"}), "3")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.fail_on = frozenset({"stale"})
    with pytest.raises(TypeError):
        s.environment["python"] = "4"
