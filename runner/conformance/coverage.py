"""Per-test outcomes and the per-op table: pure functions over records.

A test's status, worst first over its data sets: `not-converted` (the converter refused or died), `crash` (MNN's
process died: the signal, a timeout or the memory cap), `error` (MNN could not run it), `fail` (MNN disagrees with
a reference that is right; the failure class says how), `reference-error` (ONNX Runtime could not run it, so MNN
was not judged), `reference-wrong` (ONNX Runtime disagrees with the shipped outputs), `pass`. Tests whose types
no engine takes are `skipped` and never run.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional

STATUSES = ("pass", "fail", "error", "crash", "not-converted", "reference-wrong", "reference-error", "skipped")
_WORST_FIRST = ("not-converted", "crash", "error", "fail", "reference-error", "reference-wrong", "pass")
_SIGNAL = re.compile(r"killed by (SIG\w+|signal \d+)|(timeout)|(memory cap)")


@dataclass(frozen=True)
class CaseOutcome:
    status: str
    detail: str = ""          # failure class, signal, or what MNN did on a reference-wrong case
    reason: str = ""


@dataclass(frozen=True)
class NodeOutcome:
    name: str
    op: str
    status: str
    detail: str = ""
    reason: str = ""

    def to_json(self) -> dict:
        return {"op": self.op, "status": self.status, "detail": self.detail, "reason": self.reason[:400]}


@dataclass(frozen=True)
class OpRow:
    op: str
    counts: Mapping[str, int]
    details: Mapping[str, Mapping[str, int]] = field(default_factory=dict)   # status -> detail -> count

    @property
    def tests(self) -> int:
        return sum(self.counts.values())

    @property
    def converted(self) -> int:
        return self.tests - self.counts.get("not-converted", 0) - self.counts.get("skipped", 0)


def crash_kind(reason: str) -> str:
    found = _SIGNAL.search(reason)
    if not found:
        return "died"
    return found.group(1) or found.group(2) or "memory cap"


def case_outcome(verdict: str, failure_class: Optional[str], reason: str, reference_problem: Optional[str],
                 mnn_on_expected: str = "") -> CaseOutcome:
    """One case's status from the session's verdict and the reference check.

    `reference_problem`: None when ONNX Runtime matched the shipped outputs, else its failure class.
    """
    if verdict in ("ERROR", "CRASH") and reason.startswith("conversion failed"):
        return CaseOutcome("not-converted", "converter crashed" if "converter crashed" in reason else "refused",
                           reason)
    if reason.startswith("reference (ONNX Runtime)"):
        return CaseOutcome("reference-error", "", reason)
    if verdict == "CRASH":
        return CaseOutcome("crash", crash_kind(reason), reason)
    if verdict == "ERROR":
        return CaseOutcome("error", failure_class or "", reason)
    if reference_problem is not None:
        return CaseOutcome("reference-wrong", f"MNN vs shipped: {mnn_on_expected or '?'}", reason)
    if verdict == "FAIL":
        return CaseOutcome("fail", failure_class or "", reason)
    return CaseOutcome("pass", "", reason)


def node_outcome(name: str, op: str, cases: Iterable[CaseOutcome]) -> NodeOutcome:
    cases = list(cases)
    if not cases:
        return NodeOutcome(name, op, "error", "", "no case ran")
    worst = min(cases, key=lambda c: _WORST_FIRST.index(c.status))
    return NodeOutcome(name, op, worst.status, worst.detail, worst.reason)


def op_rows(outcomes: Iterable[NodeOutcome]) -> list[OpRow]:
    counts: dict[str, Counter] = {}
    details: dict[str, dict[str, Counter]] = {}
    for o in outcomes:
        counts.setdefault(o.op, Counter())[o.status] += 1
        if o.detail and o.status not in ("pass", "skipped"):
            details.setdefault(o.op, {}).setdefault(o.status, Counter())[o.detail] += 1
    return [OpRow(op, dict(counts[op]), {s: dict(d) for s, d in details.get(op, {}).items()})
            for op in sorted(counts, key=str.lower)]


def totals(outcomes: Iterable[NodeOutcome]) -> dict[str, int]:
    counted = Counter(o.status for o in outcomes)
    return {status: counted.get(status, 0) for status in STATUSES}


def changes(previous: Mapping[str, Mapping], current: Iterable[NodeOutcome]) -> dict[str, list[tuple[str, str, str]]]:
    """Tests whose MNN status moved to or from `pass` since a previous conformance JSON, by op:
    {"fixed": [(op, test, "fail→pass")], "broken": [...]}. Changes on the reference's side are not MNN's."""
    reference_side = ("reference-wrong", "reference-error", "skipped")
    out: dict[str, list[tuple[str, str, str]]] = {"fixed": [], "broken": []}
    for now in current:
        before = (previous.get(now.name) or {}).get("status")
        if before is None or before == now.status or before in reference_side or now.status in reference_side:
            continue
        if now.status == "pass":
            out["fixed"].append((now.op, now.name, f"{before}→pass"))
        elif before == "pass":
            out["broken"].append((now.op, now.name, f"pass→{now.status}" + (f" ({now.detail})" if now.detail else "")))
    return out
