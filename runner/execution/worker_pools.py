"""The engine pools of a worker process (a Dask worker, or a process of `--executor processes`): module state, one
`WorkerPool` per limits, so that models with the same engine configuration reuse a running engine there.

No Dask here: the process executor's workers import this without it.
"""
from __future__ import annotations

import threading

from mnn_parity.engines.host import WorkerPool
from mnn_parity.execution.model_work import ModelOutcome, ModelWork, execute
from mnn_parity.execution.plan import WorkItem
from mnn_parity.manifest.spec import Limits

_POOLS: dict[Limits, WorkerPool] = {}
_POOLS_LOCK = threading.Lock()


def _pool(limits: Limits) -> WorkerPool:
    with _POOLS_LOCK:
        if limits not in _POOLS:
            _POOLS[limits] = WorkerPool(limits)
        return _POOLS[limits]


def run_item(item: WorkItem) -> ModelOutcome:
    """One model, with this worker process's engine pool."""
    return execute(item, _pool(item.suite.limits))


def run_items(items: list[WorkItem]) -> list[ModelOutcome]:
    """Several models in a row: one round trip to the driver for a chunk of tiny models instead of one each."""
    return [run_item(item) for item in items]


def close_pools() -> int:
    """Close this worker process's engine pools (teardown); returns how many there were."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.close()
    return len(pools)


def kill_children() -> int:
    """Ctrl-C on the driver: kill every engine and converter of this worker process now, so that a model in
    progress ends at once (its engines report a crash); later tasks start fresh pools. Returns the pools killed."""
    from mnn_parity.conversion.mnnconvert import kill_all_children

    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.kill_all()
    kill_all_children()
    return len(pools)


def lost(item: WorkItem, reason: str) -> ModelOutcome:
    """ERROR on every case of a model whose worker could not hand back an outcome, with the executor's reason."""
    from mnn_parity.inputs.cases import list_cases
    from mnn_parity.records import Verdict

    work = ModelWork(item, None, lambda result: None, lambda model, what: None)
    try:
        cases = [c.name for c in list_cases(item.model, item.suite.root)
                 if item.options.cases is None or c.name in item.options.cases]
    except Exception:   # the case files cannot be listed here either: one line for the model
        cases = []
    work.setup_errors.append(f"{item.model.name}: {reason}")
    work._fail_all(cases, Verdict.ERROR, reason)
    return work._outcome()
