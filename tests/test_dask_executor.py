"""`--executor dask`: the same suite gives the same verdicts on a local Dask cluster as in threads; a running
scheduler is used as it is; engine children on a Dask worker are still sandboxed; choices are checked."""
from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest

from mnn_parity.api import run
from mnn_parity.execution.executors import DASK_MISSING, ExecutorError, check_choice, make_executor
from tests import onnx_models

pytest.importorskip("distributed")

MANIFEST = """\
suite: scale
backends:
  cpu-fp32: {engine: mnn, device: CPU, precision: high, threads: 1}
limits: {timeout_s: 60, memory_mb: 4096}
latency: {warmup: 0, repeat: 0}
models:
  - name: conv
    onnx: models/conv.onnx
    inputs:
      x: {files: inputs/image/*.npy, preprocess: [{load: {}}]}
  - name: round
    onnx: models/round.onnx
    inputs:
      x: {files: inputs/halves/*.npy, preprocess: [{load: {}}]}
  - name: maxpool
    onnx: models/maxpool.onnx
    inputs:
      x: {files: inputs/image/*.npy, preprocess: [{load: {}}]}
"""


@pytest.fixture()
def repo(tmp_path: Path, monkeypatch) -> Path:
    onnx_models.conv_relu(tmp_path / "models/conv.onnx")
    onnx_models.round_half(tmp_path / "models/round.onnx")
    onnx_models.maxpool_kernel_only(tmp_path / "models/maxpool.onnx")
    rng = np.random.RandomState(3)
    (tmp_path / "inputs/image").mkdir(parents=True)
    for index in range(2):
        np.save(tmp_path / f"inputs/image/img{index}.npy", rng.rand(1, 3, 8, 8).astype(np.float32))
    (tmp_path / "inputs/halves").mkdir(parents=True)
    np.save(tmp_path / "inputs/halves/halves.npy", np.array([[0.5, 1.5, 2.5, -0.5, 3.5, 4.5, -2.5, 0.25]], np.float32))
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites/scale.yaml").write_text(MANIFEST)
    (tmp_path / ".mnn-parity").write_text("")
    monkeypatch.setenv("MNN_PARITY_CACHE_DIR", str(tmp_path / ".cache"))
    return tmp_path


def verdicts(result) -> dict:
    (outcome,) = result.outcomes
    return {(r.model, r.case, r.backend): (r.verdict.value, r.failure_class.value if r.failure_class else None)
            for r in outcome.summary.results}


@pytest.mark.slow
def test_threads_and_a_local_dask_cluster_give_the_same_verdicts(repo: Path):
    threads = run(["suites"], root=repo, jobs=2, executor="threads", report_dir=repo / "threads", localise="never")
    seen: list[str] = []

    class Events:
        def case_done(self, result):    # called in the driver, as each model's future completes
            seen.append(f"{result.model}/{result.case}")

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    import os

    before = dict(os.environ)
    dask = run(["suites"], root=repo, jobs=2, executor="dask", report_dir=repo / "dask", localise="never",
               events=Events())
    # Dask's nanny once left MALLOC_TRIM_THRESHOLD_ and OMP_NUM_THREADS here, for every later engine child
    added = {k: v for k, v in os.environ.items() if before.get(k) != v}
    assert not {"MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"} & set(added)
    assert verdicts(dask) == verdicts(threads)
    assert set(verdicts(dask).values()) == {("PASS", None), ("FAIL", "out-of-tolerance"), ("CRASH", None)}
    assert sorted(seen) == sorted(f"{m}/{c}" for m, c, _ in verdicts(threads))
    assert dask.exit_status == threads.exit_status == 1
    report = json.loads((repo / "dask/scale.json").read_text())          # written by the driver
    assert {c["verdict"] for c in report["cases"] if c["model"] == "maxpool"} == {"CRASH"}
    assert "SIGFPE" in next(c["reason"] for c in report["cases"] if c["model"] == "maxpool")


def engine_sandbox(onnx_path: str) -> str:
    """Runs on a Dask worker: start an engine as a run does and say how its child is guarded."""
    from mnn_parity.engines.host import EngineProcess, EngineSpec

    with EngineProcess(EngineSpec("onnxruntime", Path(onnx_path), (), ("y",))) as engine:
        return engine.sandbox


@pytest.mark.slow
def test_a_running_scheduler_is_used_and_engine_children_stay_sandboxed(repo: Path):
    import dask
    from distributed import Client, LocalCluster

    from mnn_parity.execution.dask_executor import CONFIG

    with dask.config.set(CONFIG), LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        address = cluster.scheduler_address.replace("tcp://", "dask://")
        result = run(["suites"], root=repo, executor=address, models=frozenset({"conv"}), report_dir=repo / "r")
        assert set(verdicts(result).values()) == {("PASS", None)} and result.exit_status == 0
        assert "network blocked by seccomp" in client.submit(engine_sandbox, str(repo / "models/conv.onnx")).result()
        # the run's engines were left idle in that worker's pool, for the next model of the same configuration
        from mnn_parity.execution.dask_executor import close_pools
        assert client.run(close_pools) == {next(iter(client.scheduler_info()["workers"])): 1}


def test_executor_choices_are_checked():
    assert [check_choice(c) for c in ("threads", "processes", "dask", "dask://10.0.0.5:8786")] == \
        ["threads", "processes", "dask", "dask://10.0.0.5:8786"]
    for bad in ("process", "dask://nohost", "dask://:8786", "tcp://h:1"):
        with pytest.raises(ExecutorError):
            check_choice(bad)


def test_asking_for_dask_without_dask_says_how_to_install_it(monkeypatch, repo: Path):
    real_import = builtins.__import__

    def no_distributed(name, *args, **kwargs):
        if name.split(".")[0] in ("distributed", "dask"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_distributed)
    with pytest.raises(ExecutorError, match=r"pip install 'mnn-parity\[dask\]'"):
        make_executor("dask", 2)
    result = run(["suites"], root=repo, executor="dask", report_dir=repo / "r")
    assert result.exit_status == 2 and result.problems == (DASK_MISSING,)
