"""Who executes work items: threads of this process today (models in parallel, one engine worker pool shared by
all of them); the interface is the one a Dask executor will implement: items in, outcomes out, in item order."""
from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Protocol, Sequence

from mnn_parity.engines.host import WorkerPool
from mnn_parity.execution.model_work import ModelOutcome, Phase, Progress, execute
from mnn_parity.execution.plan import WorkItem


class Interrupted(Exception):
    """Ctrl-C during execution: every child was killed; `outcomes` holds the models that had finished."""

    def __init__(self, outcomes: list[ModelOutcome]):
        super().__init__("interrupted")
        self.outcomes = outcomes


class Executor(Protocol):
    def run(self, items: Sequence[WorkItem], progress: Progress, phase: Phase) -> list[ModelOutcome]: ...


class ThreadExecutor:
    # How often the waiting main thread wakes: Ctrl-C is delivered to it, and must be acted on within 2 s.
    POLL_S = 0.2

    def __init__(self, jobs: int):
        self.jobs = max(1, jobs)

    def run(self, items: Sequence[WorkItem], progress: Progress,
            phase: Phase = lambda model, what: None) -> list[ModelOutcome]:
        if not items:
            return []
        workers = WorkerPool(items[0].suite.limits)
        pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="mnn-parity-model")
        futures = [pool.submit(execute, item, workers, progress, phase) for item in items]
        try:
            pending = set(futures)
            while pending:
                _, pending = wait(pending, timeout=self.POLL_S, return_when=FIRST_COMPLETED)
        except KeyboardInterrupt:
            _stop(workers, pool, futures)
            raise Interrupted([f.result() for f in futures if f.done() and not f.cancelled()
                               and f.exception() is None]) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            workers.close()
        return [f.result() for f in futures]


def _stop(workers: WorkerPool, pool: ThreadPoolExecutor, futures: list[Future]) -> None:
    """Kill every child now, so that threads blocked on a worker or converter return at once."""
    for future in futures:
        future.cancel()
    getattr(workers, "kill_all", workers.close)()
    from mnn_parity.conversion import mnnconvert
    getattr(mnnconvert, "kill_all_children", lambda: None)()
    pool.shutdown(wait=True, cancel_futures=True)
