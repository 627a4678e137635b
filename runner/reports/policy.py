"""What a run's results mean, before any rendering: the exit status, which drift fails a run, which cases count
as slower than their golden, the counts every report shows, the model × backend roll-up, and the order in which
problems are listed."""
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
# Worst first, for the roll-up: a process that died hides more than one that could not start, which hides more than
# a wrong answer; XPASS is news a reader must act on (drop the expectation), XFAIL is not.
SEVERITY = (Verdict.CRASH, Verdict.ERROR, Verdict.FAIL, Verdict.XPASS, Verdict.XFAIL, Verdict.PASS)
EXPECTED_MARK = " (expected: "   # how CaseResult.expecting appends the manifest's `expect.fail` to a reason

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
    slowdown_floor_ms: float = 1.0        # ...and only when both medians are above this: sub-ms timings are noise

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
    """Slower than `slowdown_max` × the golden, judged only on medians stable enough to mean something.

    A median under a millisecond moves by half of itself from one run to the next (timer resolution, a cache miss,
    a scheduler tick), so a case is flagged only when both the golden's and the current MNN median are above
    `slowdown_floor_ms` and their ratio is beyond `slowdown_max`."""
    ratio = slowdown(result)
    if s.slowdown_max is None or ratio is None or ratio <= s.slowdown_max:
        return False
    then = float(result.drift.latency_ms_golden["mnn"])
    return min(then, float(result.latency_ms["mnn"])) > s.slowdown_floor_ms


def slow_cases(s: RunSummary) -> list[CaseResult]:
    """The flagged cases, the largest slowdown first."""
    return sorted((r for r in s.results if is_slow(r, s)), key=lambda r: (-(slowdown(r) or 0.0), r.model, r.case))


class Counts(TypedDict):
    total: int
    verdict: dict[str, int]
    drift: dict[str, int]
    failure_class: dict[str, int]            # unexpected failures (FAIL) only
    expected_failure_class: dict[str, int]   # XFAIL: failed as the manifest said it would
    slowdowns: int


def counts(summary: RunSummary) -> Counts:
    """Counts per verdict, drift class and failure class in their declared order, leaving out zeros."""
    verdicts = Counter(r.verdict.value for r in summary.results)
    drifts = Counter(r.drift.drift_class.value for r in summary.results if r.drift is not None)
    if summary.stale:
        drifts[DriftClass.STALE.value] += len(summary.stale)

    def classes(verdict: Verdict) -> dict[str, int]:
        found = Counter(r.failure_class.value for r in summary.results
                        if r.verdict is verdict and r.failure_class is not None)
        return _in_order(found, FailureClass)

    return Counts(total=len(summary.results), verdict=_in_order(verdicts, Verdict),
                  drift=_in_order(drifts, DriftClass), failure_class=classes(Verdict.FAIL),
                  expected_failure_class=classes(Verdict.XFAIL), slowdowns=len(slow_cases(summary)))


def _in_order(counter: Counter, kinds: Iterable[enum.Enum]) -> dict[str, int]:
    return {k.value: counter[k.value] for k in kinds if counter[k.value]}


def problems(s: RunSummary) -> list[CaseResult]:
    """The cases a reader must look at, most actionable first."""
    found = [r for r in s.results if r.verdict in PROBLEM_ORDER]
    return sorted(found, key=lambda r: (PROBLEM_ORDER.index(r.verdict), r.model, r.backend, r.case))


def by_place(results: Iterable[CaseResult]) -> list[CaseResult]:
    return sorted(results, key=lambda r: (r.model, r.backend, r.case))


def worst_verdict(verdicts: Iterable[Verdict]) -> Verdict:
    return min(verdicts, key=SEVERITY.index)


@dataclass(frozen=True)
class Rollup:
    """Model × backend: the verdicts of each cell's cases, models and backends in the order the run met them."""
    models: tuple[str, ...]
    backends: tuple[str, ...]
    cells: Mapping[tuple[str, str], Mapping[Verdict, int]]


def rollup(s: RunSummary) -> Rollup:
    cells: dict[tuple[str, str], Counter] = {}
    for r in s.results:
        cells.setdefault((r.model, r.backend), Counter())[r.verdict] += 1
    models = tuple(dict.fromkeys(m for m, _ in cells))
    backends = tuple(dict.fromkeys(b for _, b in cells))
    return Rollup(models, backends, MappingProxyType({k: MappingProxyType(dict(v)) for k, v in cells.items()}))


def expected_reason(r: CaseResult) -> tuple[str, str]:
    """An XFAIL's reason split into (what happened, why the manifest expected it); ("", "") for any other case."""
    if r.verdict is not Verdict.XFAIL:
        return "", ""
    at = _expected_mark(r.reason)
    if at < 0:
        return r.reason, ""
    return r.reason[:at], r.reason[at + len(EXPECTED_MARK):-1]


def _expected_mark(reason: str) -> int:
    """Where the mark that opens the manifest's reason starts, or -1.

    Either part may itself hold "(expected: " (a converter log, the user's own words), so the mark is the one whose
    parenthesis the reason's final ")" closes; only when the user's parentheses do not balance is it the last."""
    if not reason.endswith(")"):
        return -1
    depth = 0
    for at in range(len(reason) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(reason[at], 0)
        if depth == 0:
            start = at - 1
            return start if reason.startswith(EXPECTED_MARK, start) else reason.rfind(EXPECTED_MARK)
    return reason.rfind(EXPECTED_MARK)
