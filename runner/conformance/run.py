"""`mnn-parity conformance`: build the suite, run it through the same `Session` as `run`, check the reference
against the shipped outputs, classify each test. No second orchestrator: this only wraps the session's result."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Optional

from mnn_parity.conformance.build import BACKEND, ONNX_TOLERANCE, build_suite, load_tests, select
from mnn_parity.conformance.coverage import CaseOutcome, NodeOutcome, case_outcome, node_outcome
from mnn_parity.conformance.reference_check import expected_outputs, judge_against
from mnn_parity.conformance.source import TREE
from mnn_parity.manifest.tolerance import cascade
from mnn_parity.records import CaseRun


# The default executor: worker processes from this many tests, threads below. Processes keep each test's Python
# apart (all 1538 tests at --jobs 2: 1.84x --jobs 1, threads 1.64x), but cost ~0.5 s to start, which a sample of
# 60 tests did not earn back (1.02-1.2x, threads 1.31x; bench/scaling.py, bench/conformance.py).
PROCESSES_FROM = 200


@dataclass(frozen=True)
class ConformanceRun:
    source: str
    outcomes: tuple[NodeOutcome, ...]       # every selected test, skipped ones included
    environment: dict
    duration_s: float
    problems: tuple[str, ...] = ()
    interrupted: bool = False


def run_conformance(root: Path, *, mnn: Optional[str] = None, jobs: int = 0, ops: Optional[Iterable[str]] = None,
                    names: Optional[Iterable[str]] = None, tree: str = TREE, events=None,
                    cache_dir: Optional[Path] = None, converter: str = "persistent",
                    executor: Optional[str] = None) -> ConformanceRun:
    from mnn_parity.session import Session, SessionConfig

    root = Path(root).resolve()
    source, every = load_tests(root, tree)
    tests = select(every, ops, names)
    suite = build_suite(root, tests, tree, source)
    executor = executor or ("processes" if len(suite.models) >= PROCESSES_FROM else "threads")
    config = SessionConfig(root=root, mnn=mnn, jobs=jobs, cache_dir=cache_dir, localise="never", converter=converter,
                           executor=executor)
    # Goldens play no part: a folder that never exists keeps the session's golden gate and drift out of the way.
    config = replace(config, goldens_dir=config.cache / "conformance-no-goldens")
    clock = time.monotonic()
    result = Session(config, events).run_suites([suite], write_reports=False) if suite.models else None
    duration = time.monotonic() - clock
    runs = [r for o in result.outcomes for r in o.runs] if result else []
    environment = dict(result.outcomes[0].summary.environment) if result and result.outcomes else {}
    outcomes = classify(root / tree, tests, runs)
    return ConformanceRun(source, tuple(outcomes), environment, duration,
                          tuple(result.problems) if result else (), bool(result and result.interrupted))


def classify(tree: Path, tests, runs: list[CaseRun]) -> list[NodeOutcome]:
    tolerance = cascade(ONNX_TOLERANCE)
    by_test: dict[str, list[CaseOutcome]] = {}
    for run in runs:
        if run.result.backend != BACKEND:
            continue
        by_test.setdefault(run.result.model, []).append(judge_run(tree, run, tolerance))
    return [NodeOutcome(t.name, t.op, "skipped", "", t.skipped) if t.skipped
            else node_outcome(t.name, t.op, by_test.get(t.name, ())) for t in tests]


def judge_run(tree: Path, run: CaseRun, tolerance) -> CaseOutcome:
    r = run.result
    failure = r.failure_class.value if r.failure_class else None
    reference_problem, mnn_on_expected = None, ""
    if run.ref_outputs:
        expected = expected_outputs(tree, r.model, r.case)
        ref_class, ref_reason = judge_against(expected, run.ref_outputs, tolerance)
        if ref_class is not None:
            reference_problem = ref_class.value
            mnn_class, _ = judge_against(expected, run.mnn_outputs, tolerance) if run.mnn_outputs else (None, "")
            mnn_on_expected = ("no output" if not run.mnn_outputs
                               else "pass" if mnn_class is None else mnn_class.value)
            return case_outcome(r.verdict.value, failure, f"{r.reason}; ONNX Runtime vs shipped: {ref_reason}",
                                reference_problem, mnn_on_expected)
    return case_outcome(r.verdict.value, failure, r.reason, reference_problem, mnn_on_expected)
