"""`--executor processes`: models on `--jobs` worker processes of this machine, each with its own engine pool.

Threads share one interpreter lock, and the runner's own Python per model (paths, feeds, comparison, records)
holds it: on the 1538 conformance node tests, two threads spent 20 % longer per model than one did, and ran
1.5-1.7x faster than one thread where two separate processes, each with half the tests, ran 1.85x faster. Here
each process runs whole models (`worker_pools.run_items`) and hands back their `ModelOutcome`s; the driver (this
process) reports progress as each chunk completes and writes goldens and reports, as with Dask.

Tiny models go in chunks (up to CHUNK models per round trip, fewer when there are few models, so both processes
stay busy to the end). Workers start from a fork server (never a fork of this threaded process), so they see
the environment of the first run of this process, and ignore Ctrl-C, which the driver handles: it kills the worker processes, whose engine and converter children die with
them (parent-death signal), and reports the models that had finished. A worker process that dies (the runner
itself crashing, the kernel's OOM killer) takes its chunk with it: its models are run again once in a new pool,
and reported as ERROR if that fails too.
"""
from __future__ import annotations

import multiprocessing
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Optional, Sequence

from mnn_parity.execution.executors import Interrupted
from mnn_parity.execution.model_work import ModelOutcome, Phase, Progress
from mnn_parity.execution.plan import WorkItem

CHUNK = 8
RETRIES = 1


def _ignore_ctrl_c() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def chunks(count: int, jobs: int, most: int = CHUNK) -> list[range]:
    """Consecutive index ranges: at most `most` models each, and at least four chunks per process when there are
    enough models, so that no process idles while the other finishes a long last chunk."""
    size = max(1, min(most, count // (4 * max(1, jobs))))
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


class ProcessExecutor:
    def __init__(self, jobs: int):
        self.jobs = max(1, jobs)
        self.pool: Optional[ProcessPoolExecutor] = None

    def start(self) -> "ProcessExecutor":
        return self

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def _new_pool(self) -> ProcessPoolExecutor:
        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            # the server imports the runner once; each worker forked from it starts with it imported (no effect
            # once the server runs)
            context.set_forkserver_preload(["mnn_parity.execution.worker_pools"])
        else:
            context = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(self.jobs, mp_context=context, initializer=_ignore_ctrl_c)

    def run(self, items: Sequence[WorkItem], progress: Progress,
            phase: Phase = lambda model, what: None) -> list[ModelOutcome]:
        from mnn_parity.execution.worker_pools import run_items

        outcomes: list[Optional[ModelOutcome]] = [None] * len(items)
        todo = list(range(len(items)))
        try:
            for attempt in range(RETRIES + 1):
                if not todo:
                    break
                self.pool = self.pool or self._new_pool()
                futures: dict[Future, list[int]] = {}
                for part in chunks(len(todo), self.jobs):
                    indices = [todo[k] for k in part]
                    futures[self.pool.submit(run_items, [items[i] for i in indices])] = indices
                for index in todo:
                    phase(items[index].model.name, "queued for a worker process")
                todo = self._collect(futures, items, outcomes, progress, phase, last=attempt == RETRIES)
        except KeyboardInterrupt:
            self._kill()
            raise Interrupted([o for o in outcomes if o is not None]) from None
        return [o for o in outcomes if o is not None]

    def _collect(self, futures: dict, items, outcomes: list, progress: Progress, phase: Phase,
                 last: bool) -> list[int]:
        """Outcomes of each chunk as it completes; returns the indices of the models a dead worker took with it."""
        from concurrent.futures import as_completed

        from mnn_parity.execution.worker_pools import lost

        again: list[int] = []
        for future in as_completed(futures):
            indices = futures[future]
            try:
                done = future.result()
            except BrokenProcessPool as error:
                if not last:
                    again.extend(indices)
                    continue
                done = [lost(items[i], f"its worker process died twice: {error}") for i in indices]
            except Exception as error:   # a result that could not travel back, or a bug outside run_safely
                done = [lost(items[i], f"{type(error).__name__}: {error}") for i in indices]
            for index, outcome in zip(indices, done):
                outcomes[index] = outcome
                phase(items[index].model.name, "done in a worker process")
                for run in outcome.runs:
                    progress(run.result)
        if again:   # the pool is broken for every future once one worker died: a fresh one for the rest
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None
        return sorted(again)

    def _kill(self) -> None:
        pool, self.pool = self.pool, None
        if pool is None:
            return
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()   # its engines and converters die with it (sandbox: parent-death signal)
        pool.shutdown(wait=True, cancel_futures=True)
