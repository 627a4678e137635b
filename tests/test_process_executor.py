"""`--executor processes`: the same verdicts as threads, progress from the driver, a dead worker's models run
again, Ctrl-C reports what finished; conformance uses it by default."""
from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest

from mnn_parity.api import run
from mnn_parity.execution import process_executor
from mnn_parity.execution.executors import ThreadExecutor, make_executor
from mnn_parity.execution.process_executor import ProcessExecutor, chunks
from tests.test_dask_executor import repo, verdicts  # noqa: F401  (the fixture: three tiny models, one crashing)


def test_chunks_cover_every_model_once_and_leave_each_process_several():
    for count, jobs in ((1, 2), (5, 2), (37, 2), (1538, 2), (100, 8)):
        parts = chunks(count, jobs)
        assert [i for part in parts for i in part] == list(range(count))
        assert max(len(p) for p in parts) <= process_executor.CHUNK
        assert len(parts) >= min(count, 4 * jobs)


def test_one_job_runs_in_this_process():
    assert isinstance(make_executor("processes", 1), ThreadExecutor)
    assert isinstance(make_executor("processes", 2), ProcessExecutor)


class Seen:
    def __init__(self):
        self.cases: list[str] = []
        self.threads: set[str] = set()

    def case_done(self, result):
        self.cases.append(f"{result.model}/{result.case}")
        self.threads.add(threading.current_thread().name)

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


@pytest.mark.slow   # ~4 s: the suite twice, worker processes started
def test_threads_and_worker_processes_give_the_same_verdicts(repo: Path):  # noqa: F811
    threads = run(["suites"], root=repo, jobs=2, executor="threads", report_dir=repo / "threads", localise="never")
    seen = Seen()
    processes = run(["suites"], root=repo, jobs=2, executor="processes", report_dir=repo / "processes",
                    localise="never", events=seen)
    assert verdicts(processes) == verdicts(threads)
    assert set(verdicts(processes).values()) == {("PASS", None), ("FAIL", "out-of-tolerance"), ("CRASH", None)}
    assert sorted(seen.cases) == sorted(f"{m}/{c}" for m, c, _ in verdicts(threads))
    assert seen.threads == {"MainThread"}                                   # progress is the driver's
    assert processes.exit_status == threads.exit_status == 1
    report = json.loads((repo / "processes/scale.json").read_text())       # written by the driver
    assert "SIGFPE" in next(c["reason"] for c in report["cases"] if c["model"] == "maxpool")


def die_once(items):
    """A worker that dies under its first chunk (as under the OOM killer), then works. (The flag is found from
    the item: workers fork from a server started with the environment of the first run in this process.)"""
    flag = items[0].suite.root / "died"
    if not flag.exists():
        flag.write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)
    from mnn_parity.execution.worker_pools import run_items
    return run_items(items)


def die_always(items):
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow   # ~3 s: worker processes started three times
def test_a_worker_that_dies_costs_one_retry_then_an_error_never_a_lost_model(repo: Path, monkeypatch):  # noqa: F811
    from mnn_parity.execution import worker_pools

    monkeypatch.setattr(worker_pools, "run_items", die_once)
    once = run(["suites"], root=repo, jobs=2, executor="processes", report_dir=repo / "once", localise="never",
               models=frozenset({"conv"}))
    assert (repo / "died").exists() and set(verdicts(once).values()) == {("PASS", None)}
    monkeypatch.setattr(worker_pools, "run_items", die_always)
    always = run(["suites"], root=repo, jobs=2, executor="processes", report_dir=repo / "always",
                 localise="never", models=frozenset({"conv"}))
    assert set(verdicts(always).values()) == {("ERROR", None)}
    assert "worker process died twice" in always.outcomes[0].summary.results[0].reason
