"""Work items on Dask: a local cluster of worker processes, or the workers of a running scheduler.

Imported only when `--executor dask` or `dask://HOST:PORT` is chosen. The unit of work is one `WorkItem` (one
model); each Dask worker process keeps its own engine `WorkerPool` (`worker_pools.py`, closed by a worker plugin
at the worker's teardown), so models with the same engine configuration reuse a running engine on that worker.
Engines and converters are still children started through `sandbox.py` (no sockets, memory cap, die with the
worker); only the Dask worker processes themselves talk to the scheduler.

The driver (this process) receives each model's `ModelOutcome` as its future completes and hands its case
results to the progress callback then; goldens and reports are written by the session, in the driver.
A task is retried at most once (an exception, or a worker that died under it); a model that fails twice is
reported as ERROR on every case, not lost. Ctrl-C kills every engine and converter on the workers, cancels the
futures and closes the cluster.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator, Optional, Sequence

import dask
from distributed import Client, LocalCluster, WorkerPlugin, as_completed

from mnn_parity.execution.executors import ExecutorError, Interrupted
from mnn_parity.execution.model_work import ModelOutcome, Phase, Progress
from mnn_parity.execution.plan import WorkItem
from mnn_parity.execution.worker_pools import close_pools, kill_children, lost, run_item

RETRIES = 1
PLUGIN_NAME = "mnn-parity-engine-pools"
CONNECT_TIMEOUT = "10s"
# Dask serves nothing over HTTP for us: no dashboard, no metrics, no health routes; and a lost worker costs one
# retry, not three.
# The nanny's default pre-spawn environment (MALLOC_TRIM_THRESHOLD_, OMP/MKL/OPENBLAS_NUM_THREADS=1) was left in
# this process's environment and inherited by every engine child, where it changed how MNN's heap faults show:
# engines set their own threads, so none of it is wanted.
CONFIG = {"distributed.scheduler.http.routes": [], "distributed.worker.http.routes": [],
          "distributed.scheduler.allowed-failures": RETRIES, "distributed.nanny.pre-spawn-environ": {}}

# -------------------------------------------------------------------------------------------- worker side
# run_item, close_pools and kill_children run on the Dask workers (execution/worker_pools.py)


class EnginePools(WorkerPlugin):
    """Closes a worker's engine pools when the worker closes (its children would die with it anyway)."""

    def teardown(self, worker) -> None:
        close_pools()


# -------------------------------------------------------------------------------------------- driver side
class DaskExecutor:
    def __init__(self, jobs: int, address: Optional[str] = None):
        self.jobs = max(1, jobs)
        self.address = address            # None: start a local cluster of `jobs` worker processes
        self.cluster: Optional[LocalCluster] = None
        self.client: Optional[Client] = None

    def start(self) -> "DaskExecutor":
        with dask.config.set(CONFIG):
            try:
                if self.address is None:
                    with _workers_ignore_ctrl_c():
                        self.cluster = LocalCluster(
                            n_workers=self.jobs, threads_per_worker=1, processes=True, host="127.0.0.1",
                            dashboard_address=None, memory_limit=0,   # engines have their own caps, in children
                            silence_logs=logging.ERROR,   # a cancelled task is no news after Ctrl-C
                            scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
                    self.client = Client(self.cluster)
                else:
                    self.client = Client(self.address, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as error:
                self.close()
                where = self.address or "a local cluster"
                raise ExecutorError(f"cannot start Dask ({where}): {type(error).__name__}: {error}") from None
        self.client.register_plugin(EnginePools(), name=PLUGIN_NAME)
        return self

    def close(self) -> None:
        for part in (self.client, self.cluster):
            if part is not None:
                try:
                    part.close()
                except Exception:   # a cluster half torn down by Ctrl-C: nothing more to free here
                    pass
        self.client = self.cluster = None

    def run(self, items: Sequence[WorkItem], progress: Progress,
            phase: Phase = lambda model, what: None) -> list[ModelOutcome]:
        if not items:
            return []
        if self.client is None:
            self.start()
        futures = [self.client.submit(run_item, item, key=f"mnn-parity-{index}-{item.label}", pure=False,
                                      retries=RETRIES) for index, item in enumerate(items)]
        where = {future.key: index for index, future in enumerate(futures)}
        for item in items:
            phase(item.model.name, "queued on Dask")
        outcomes: list[Optional[ModelOutcome]] = [None] * len(items)
        try:
            for future in as_completed(futures):
                index = where[future.key]
                outcomes[index] = _collect(future, items[index])
                phase(items[index].model.name, "done on a Dask worker")
                for run in outcomes[index].runs:
                    progress(run.result)
        except KeyboardInterrupt:
            self._stop(futures)
            raise Interrupted([o for o in outcomes if o is not None]) from None
        return list(outcomes)

    def _stop(self, futures: list) -> None:
        try:
            self.client.run(kill_children)
        except Exception:   # a worker already gone took its children with it
            pass
        try:
            self.client.cancel(futures, force=True)
        except Exception:
            pass
        self.close()


@contextlib.contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """Worker processes started here inherit SIGINT ignored: Ctrl-C on a terminal reaches the whole process group,
    and the driver alone acts on it (kills the engines, cancels, closes the cluster) instead of every worker
    printing a KeyboardInterrupt traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _collect(future, item: WorkItem) -> ModelOutcome:
    """The model's outcome, or, when it failed on two workers, ERROR on each case with Dask's reason."""
    try:
        return future.result()
    except Exception as error:   # KilledWorker, a task that raised twice, a result that could not travel
        reason = f"the Dask task for this model failed {RETRIES + 1} times: {type(error).__name__}: {error}"
        return lost(item, reason)
