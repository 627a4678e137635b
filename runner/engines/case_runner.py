"""One model's cases on pooled workers, each call's result as an `Attempt`, and when a result earns a rerun.

A worker serves model after model, and MNN keeps state across them: ONNX's test_matmul_1d_3d aborts in a process
that has just run test_matmul_1d_1d and passes in a fresh one. So a bad result from a worker with a past is run
once more in a fresh process (`wants_rerun`); when the two differ, the caller keeps the rerun's and says both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from mnn_parity.engines.host import EngineCrash, EngineError, EngineProcess, EngineSpec, WorkerPool

# What no rerun changes: our own refusal of a feed (engines/mnn.py) is decided before MNN sees anything.
NOT_RETRIED = ("InputRefused",)
HISTORY_SHOWN = 3
# Which bad results earn a rerun in a fresh worker: "crash" (the default), "bad" (ERROR and FAIL too), "never".
POLICIES = ("crash", "bad", "never")
DEFAULT_POLICY = "crash"


@dataclass(frozen=True)
class Attempt:
    """One try at one case: outputs, or why there are none; and what the worker had run before it."""
    outputs: Optional[dict[str, np.ndarray]] = None
    latency_ms: Optional[float] = None
    crash: str = ""                  # the worker died: signal, timeout, memory cap
    error: str = ""                  # the engine refused the load or the call
    problem: str = ""                # refused before any call (MNN's input shapes against ONNX's)
    kind: str = ""                   # the engine's exception class, for an error
    messages: tuple[str, ...] = ()   # what the engine printed during the call
    history: tuple[str, ...] = ()    # what the worker had run before: earlier models, earlier calls

    @property
    def fresh(self) -> bool:
        return not self.history


class PooledRunner:
    """Runs the cases of one model: keeps its worker between cases, replaces a dead one, gives it back at the end.
    `check` sees a new worker's input info and names a problem that stops the case before any call."""

    def __init__(self, pool: WorkerPool, spec: EngineSpec, check: Callable[[dict], Optional[str]] = lambda i: None):
        self.pool, self.spec, self.check = pool, spec, check
        self.worker: Optional[EngineProcess] = None

    def run(self, feeds: dict, stream: Optional[dict] = None, warmup: int = 0, repeat: int = 0,
            fresh: bool = False) -> Attempt:
        if fresh or self.worker is None or not self.worker.alive:
            self._drop()
            try:
                self.worker = self.pool.take(self.spec, fresh=fresh)
            except (EngineCrash, EngineError) as failure:
                return failed(failure)
            problem = self.check(self.worker.input_info)
            if problem:
                self._drop()
                return Attempt(problem=problem)
        history = self.worker.past()
        try:
            outputs, latency = self.worker.infer(feeds, stream, warmup, repeat)
        except (EngineCrash, EngineError) as failure:
            return failed(failure)
        return Attempt(outputs, latency, messages=self.worker.last_messages, history=history)

    def close(self) -> None:
        self._drop()

    def _drop(self) -> None:
        if self.worker is not None:
            self.pool.give_back(self.worker)   # a dead one is closed there
            self.worker = None


def failed(failure: Exception) -> Attempt:
    text = str(failure)
    common = {"messages": getattr(failure, "messages", ()), "history": getattr(failure, "history", ())}
    if isinstance(failure, EngineCrash):
        return Attempt(crash=text, **common)
    return Attempt(error=text, kind=getattr(failure, "kind", ""), **common)


def wants_rerun(verdict: str, attempt: Attempt, policy: str = DEFAULT_POLICY) -> bool:
    """Whether a fresh process could judge this case differently. A crash by signal always earns one (cheap, and
    a state-dependent crash is the case in point); a timeout or memory cap only when the worker had run something
    before; an ERROR or FAIL likewise, under the policy "bad" only (on the ONNX node tests it doubled the run's time
    and changed no verdict); a refusal decided before the engine ran, never."""
    if policy == "never" or verdict == "PASS" or attempt.problem or attempt.kind in NOT_RETRIED:
        return False
    if verdict == "CRASH":
        return attempt.crash.startswith("killed by") or not attempt.fresh
    return policy == "bad" and not attempt.fresh and verdict in ("ERROR", "FAIL")


def unstable_note(first_verdict: str, first_reason: str, first: Attempt, second_verdict: str) -> str:
    """Both outcomes, in one line for a report: the first run's with the worker's past, the rerun's verdict."""
    reason = first_reason if len(first_reason) <= 200 else first_reason[:197] + "..."
    return (f"{first_verdict} ({reason}) in a worker that had run {describe_history(first.history)}; "
            f"{second_verdict} when rerun in a fresh worker")


def describe_history(history: tuple[str, ...]) -> str:
    if not history:
        return "nothing before"
    shown = ", ".join(history[-HISTORY_SHOWN:])
    more = len(history) - HISTORY_SHOWN
    return shown + (f" (and {more} more before)" if more > 0 else "")
