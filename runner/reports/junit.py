"""JUnit XML for CI: one <testsuite> per suite, one <testcase> per case and backend."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from typing import Optional, Sequence

from mnn_parity.records import CaseResult, Verdict
from mnn_parity.reports.formatting import ONE_MINUS_COS, enum_value, first_line, fmt_cos, fmt_e, fmt_pct, short
from mnn_parity.reports.policy import RunSummary, by_place, drift_fails, stale_fails

COUNT_KEYS = ("tests", "failures", "errors", "skipped")
MESSAGE_MAX = 500   # CI front ends show the message on one line; the body holds the rest


def render_junit(summaries: Sequence[RunSummary]) -> str:
    """FAIL → <failure>, ERROR/CRASH → <error>, XFAIL → <skipped>; a failing drift on a passing case → <failure>."""
    root = ET.Element("testsuites", name="mnn-parity")
    totals: Counter = Counter()
    for s in summaries:
        totals.update(_testsuite(root, s))
    for key in COUNT_KEYS:
        root.set(key, str(totals[key]))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _testsuite(root: ET.Element, s: RunSummary) -> Counter:
    suite = ET.SubElement(root, "testsuite", name=s.suite, timestamp=s.started or "",
                          time=f"{float(s.duration_s):.3f}")
    props = ET.SubElement(suite, "properties")
    for key, value in s.environment.items():
        if value is not None:
            ET.SubElement(props, "property", name=str(key), value=str(value))
    counts: Counter = Counter()
    for r in by_place(s.results):
        counts["tests"] += 1
        case = ET.SubElement(suite, "testcase", classname=f"{s.suite}.{r.model}", name=f"{r.case}[{r.backend}]")
        outcome = _outcome(case, r, s)
        if outcome is not None:
            counts[outcome] += 1
        if r.warnings:
            ET.SubElement(case, "system-err").text = "\n".join(r.warnings)
    if stale_fails(s):
        for m, c, b in s.stale:
            counts.update(("tests", "failures"))
            case = ET.SubElement(suite, "testcase", classname=f"{s.suite}.{m}", name=f"{c}[{b}]")
            ET.SubElement(case, "failure", type="drift:stale", message="stale golden: no case left")
    for key in COUNT_KEYS:
        suite.set(key, str(counts[key]))
    return counts


def _outcome(case: ET.Element, r: CaseResult, s: RunSummary) -> Optional[str]:
    """Add the element that says how `r` went under `case`; returns the count it falls in, if any."""
    if r.verdict is Verdict.FAIL:
        _with_body(case, "failure", r, message=_message(first_line(r.reason)),
                   type=enum_value(r.failure_class) or "FAIL")
        return "failures"
    if r.verdict in (Verdict.ERROR, Verdict.CRASH):
        _with_body(case, "error", r, message=_message(first_line(r.reason)), type=r.verdict.value)
        return "errors"
    if drift_fails(r, s.fail_on):
        drift_class = r.drift.drift_class.value
        _with_body(case, "failure", r, type=f"drift:{drift_class}",
                   message=_message(f"{drift_class} since the golden: {r.drift.note}".rstrip(": ")))
        return "failures"
    if r.verdict is Verdict.XFAIL:
        ET.SubElement(case, "skipped", message=_message(f"expected failure: {first_line(r.reason)}"))
        return "skipped"
    if r.verdict is Verdict.XPASS:
        ET.SubElement(case, "system-out").text = "XPASS: expected to fail, but passed\n" + _body(r)
    return None


def _with_body(case: ET.Element, tag: str, r: CaseResult, **attributes: str) -> None:
    ET.SubElement(case, tag, **attributes).text = _body(r)


def _message(s: str) -> str:
    return short(s, MESSAGE_MAX)


def _body(r: CaseResult) -> str:
    lines = [r.reason] if r.reason else []
    for o in r.outputs:
        lines.append(f"{o.name}: max_abs={fmt_e(o.max_abs)} {ONE_MINUS_COS}={fmt_cos(o.cosine)} "
                     f"mismatch={fmt_pct(o.mismatch_fraction)}"
                     + (f" [{enum_value(o.failure_class)}]" if not o.passed else ""))
    return "\n".join(lines)
