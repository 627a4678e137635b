"""Who executes work items: items in, outcomes out, in item order.

- `threads` (the default of `run`): models in parallel in threads of this process, one engine worker pool shared
  by all.
- `processes` (`conformance`'s default from 200 tests): `--jobs` worker processes of this machine, each with its
  own engine pool (`process_executor.py`): no interpreter lock shared between models.
- `dask`: a local Dask cluster of worker processes (`--jobs` of them), each with its own engine pool.
- `dask://HOST:PORT`: the workers of a running Dask scheduler (`dask_executor.py`).

Heavy modules (numpy, the engines, Dask) are imported when an executor runs, so that the command line can check
`--executor` without them.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol, Sequence

if TYPE_CHECKING:
    from mnn_parity.engines.host import WorkerPool
    from mnn_parity.execution.model_work import ModelOutcome, Phase, Progress
    from mnn_parity.execution.plan import WorkItem

CHOICES = "threads, processes, dask or dask://HOST:PORT"
DASK_SCHEME = "dask://"
DASK_MISSING = ("--executor dask needs Dask, which is not installed here: "
                "pip install 'mnn-parity[dask]' (or 'dask[distributed]')")


class Interrupted(Exception):
    """Ctrl-C during execution: every child was killed; `outcomes` holds the models that had finished."""

    def __init__(self, outcomes: list[ModelOutcome]):
        super().__init__("interrupted")
        self.outcomes = outcomes


class ExecutorError(Exception):
    """The executor cannot start: an unknown choice, Dask missing, a scheduler out of reach (exit status 2)."""


class Executor(Protocol):
    def start(self) -> "Executor": ...

    def run(self, items: Sequence[WorkItem], progress: Progress, phase: Phase) -> list[ModelOutcome]: ...

    def close(self) -> None: ...


def check_choice(choice: str) -> str:
    """The choice itself when it names an executor, else ExecutorError saying what would."""
    if choice in ("threads", "processes", "dask"):
        return choice
    if choice.startswith(DASK_SCHEME):
        host, _, port = choice[len(DASK_SCHEME):].rpartition(":")
        if host and port.isdigit():
            return choice
        raise ExecutorError(f"executor {choice!r}: a scheduler is named dask://HOST:PORT, e.g. dask://10.0.0.5:8786")
    raise ExecutorError(f"unknown executor {choice!r}: choose {CHOICES}")


def make_executor(choice: str, jobs: int) -> Executor:
    """An executor not yet started; `jobs` is the thread count, or the local Dask cluster's worker count."""
    choice = check_choice(choice)
    if choice == "threads" or (choice == "processes" and jobs <= 1):   # one model at a time: no process to add
        return ThreadExecutor(jobs)
    if choice == "processes":
        from mnn_parity.execution.process_executor import ProcessExecutor

        return ProcessExecutor(jobs)
    try:
        import distributed  # noqa: F401  (only to say clearly that it is missing)
    except ImportError:
        raise ExecutorError(DASK_MISSING) from None
    from mnn_parity.execution.dask_executor import DaskExecutor

    address = "tcp://" + choice[len(DASK_SCHEME):] if choice.startswith(DASK_SCHEME) else None
    return DaskExecutor(jobs, address)


class ThreadExecutor:
    # How often the waiting main thread wakes: Ctrl-C is delivered to it, and must be acted on within 2 s.
    POLL_S = 0.2

    def __init__(self, jobs: int):
        self.jobs = max(1, jobs)

    def start(self) -> "ThreadExecutor":
        return self

    def close(self) -> None:
        pass

    def run(self, items: Sequence[WorkItem], progress: Progress,
            phase: Phase = lambda model, what: None) -> list[ModelOutcome]:
        from mnn_parity.engines.host import WorkerPool
        from mnn_parity.execution.model_work import execute

        if not items:
            return []
        workers = WorkerPool(items[0].suite.limits)
        pool = ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="mnn-parity-model")
        futures = [pool.submit(execute, item, workers, progress, phase) for item in items]
        all_done = _countdown(futures)
        try:
            # Not `wait(pending, FIRST_COMPLETED)` once per finished model: each call hooks a waiter onto every
            # pending future, O(models²) lock traffic under the GIL (2.3 s of CPU on 513 node tests).
            while not all_done.wait(self.POLL_S):
                pass
        except KeyboardInterrupt:
            # Taken before the kill: a model the kill cut short would come back with its cases CRASH, and the
            # partial report would blame MNN (and drift call them regressed) for what the user stopped.
            finished = [f for f in futures if f.done() and not f.cancelled() and f.exception() is None]
            _stop(workers, pool, futures)
            raise Interrupted([f.result() for f in finished]) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            workers.close()
        return [f.result() for f in futures]


def _countdown(futures: list[Future]) -> threading.Event:
    """An event set once every future is done, however it ended."""
    left, lock, done = [len(futures)], threading.Lock(), threading.Event()

    def one_done(_future: Future) -> None:
        with lock:
            left[0] -= 1
            if left[0] == 0:
                done.set()

    for future in futures:
        future.add_done_callback(one_done)
    return done


def _stop(workers: WorkerPool, pool: ThreadPoolExecutor, futures: list[Future]) -> None:
    """Kill every child now, so that threads blocked on a worker or converter return at once."""
    for future in futures:
        future.cancel()
    getattr(workers, "kill_all", workers.close)()
    from mnn_parity.conversion import mnnconvert
    getattr(mnnconvert, "kill_all_children", lambda: None)()
    pool.shutdown(wait=True, cancel_futures=True)
