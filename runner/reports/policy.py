"""What a run's results mean, before any rendering: the exit status, which drift fails a run, which cases count
as slower than their golden, the counts every report shows, and the order in which problems are listed."""
from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterable, Mapping, Optional, Sequence, TypedDict

from mnn_parity.records import CaseResult, DriftClass, FailureClass, Verdict
from mnn_parity.reports.formatting import finite

DEFAULT_FAIL_ON = frozenset({DriftClass.REGRESSED.value, DriftClass.CHANGED.value})

# Failures first, the most actionable first; XFAIL and PASS are "as expected".
PROBLEM_ORDER = (Verdict.FAIL, Verdict.ERROR, Verdict.CRASH, Verdict.XPASS)

StaleKey = tuple[str, str, str]   # (model, case, backend) of a golden with no case left


@dataclass(frozen=True)
class RunSummary:
    suite: str
    description: str
    environment: Mapping[str, object]   # mnn_version, onnxruntime_version, python, platform, baseline_mnn_version…
    results: tuple[CaseResult, ...]
    stale: tuple[StaleKey, ...] = ()
    started: str = ""
    duration_s: float = 0.0
    fail_on: frozenset[str] = DEFAULT_FAIL_ON   # drift classes that fail the run
    slowdown_max: Optional[float] = 1.5   # flag MNN latency above this multiple of the golden's; None: never
    slowdown_floor_ms: float = 1.0        # ...and only when it also grew by more than this: sub-ms timings are noise

    def __post_init__(self) -> None:
        # Callers hand over lists, sets and dicts they may go on changing; a report must render what was summed up.
        object.__setattr__(self, "environment", MappingProxyType(dict(self.environment)))
        object.__setattr__(self, "results", tuple(self.results))
        object.__setattr__(self, "stale", tuple(tuple(key) for key in self.stale))
        object.__setattr__(self, "fail_on", frozenset(self.fail_on))


def drift_fails(result: CaseResult, fail_on: Iterable[str]) -> bool:
    return result.drift is not None and result.drift.drift_class.value in set(fail_on)


def stale_fails(summary: RunSummary) -> bool:
    return bool(summary.stale) and DriftClass.STALE.value in summary.fail_on


def exit_status(summaries: Sequence[RunSummary]) -> int:
    """0 when everything is as expected; 1 on any FAIL/ERROR/CRASH or a drift class listed in `fail_on`."""
    for s in summaries:
        if stale_fails(s):
            return 1
        if any(r.verdict.is_bad or drift_fails(r, s.fail_on) for r in s.results):
            return 1
    return 0


def slowdown(result: CaseResult) -> Optional[float]:
    """MNN latency now over MNN latency when the golden was blessed; None when either is unknown."""
    now = result.latency_ms.get("mnn")
    then = result.drift.latency_ms_golden.get("mnn") if result.drift is not None else None
    if not now or not then or not finite(now) or not finite(then):
        return None
    return float(now) / float(then)


def is_slow(result: CaseResult, s: RunSummary) -> bool:
    ratio = slowdown(result)
    if s.slowdown_max is None or ratio is None or ratio <= s.slowdown_max:
        return False
    then = float(result.drift.latency_ms_golden["mnn"])
    return float(result.latency_ms["mnn"]) - then > s.slowdown_floor_ms


class Counts(TypedDict):
    total: int
    verdict: dict[str, int]
    drift: dict[str, int]
    failure_class: dict[str, int]
    slowdowns: int


def counts(summary: RunSummary) -> Counts:
    """Counts per verdict, drift class and failure class in their declared order, leaving out zeros."""
    verdicts = Counter(r.verdict.value for r in summary.results)
    drifts = Counter(r.drift.drift_class.value for r in summary.results if r.drift is not None)
    if summary.stale:
        drifts[DriftClass.STALE.value] += len(summary.stale)
    classes = Counter(r.failure_class.value for r in summary.results if r.failure_class is not None)
    return Counts(total=len(summary.results), verdict=_in_order(verdicts, Verdict),
                  drift=_in_order(drifts, DriftClass), failure_class=_in_order(classes, FailureClass),
                  slowdowns=sum(1 for r in summary.results if is_slow(r, summary)))


def _in_order(counter: Counter, kinds: Iterable[enum.Enum]) -> dict[str, int]:
    return {k.value: counter[k.value] for k in kinds if counter[k.value]}


def problems(s: RunSummary) -> list[CaseResult]:
    """The cases a reader must look at, most actionable first."""
    found = [r for r in s.results if r.verdict in PROBLEM_ORDER]
    return sorted(found, key=lambda r: (PROBLEM_ORDER.index(r.verdict), r.model, r.backend, r.case))


def by_place(results: Iterable[CaseResult]) -> list[CaseResult]:
    return sorted(results, key=lambda r: (r.model, r.backend, r.case))
