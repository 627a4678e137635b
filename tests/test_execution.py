"""The execution layer's own rules, with a fake engine pool (the real engines are covered end to end elsewhere):
work items and outcomes are plain picklable data, and a reference that dies is a CRASH like MNN's."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from mnn_parity.engines.host import EngineCrash
from mnn_parity.execution.model_work import ModelOutcome, execute
from mnn_parity.execution.plan import RunOptions, plan
from mnn_parity.manifest import load_suite
from mnn_parity.records import Verdict
from tests import onnx_models
from tests.repos import one_model_manifest

MANIFEST = one_model_manifest("ex", "conv", "backends:\n  a: {engine: mnn}\n  b: {engine: mnn, precision: low}\n"
                                           "latency: {warmup: 0, repeat: 0}")


def suite_in(tmp_path: Path):
    onnx_models.conv_relu(tmp_path / "models/conv.onnx")
    (tmp_path / "inputs").mkdir()
    for i in range(2):
        np.save(tmp_path / f"inputs/c{i}.npy", np.random.RandomState(i).rand(1, 3, 8, 8).astype(np.float32))
    (tmp_path / "ex.yaml").write_text(MANIFEST)
    return load_suite(tmp_path / "ex.yaml", tmp_path)


class DyingReferencePool:
    """ONNX Runtime times out on every case; MNN is never reached."""

    def __init__(self):
        self.taken = []

    def take(self, spec):
        self.taken.append(spec.engine)
        if spec.engine == "onnxruntime":
            return self
        raise AssertionError("no MNN worker may start when the reference has nothing to compare with")

    alive, version = True, "fake"

    def infer(self, *args, **kwargs):
        raise EngineCrash("timeout: no answer within 1 s")

    def give_back(self, worker):
        pass


def test_work_items_and_outcomes_cross_process_boundaries(tmp_path: Path):
    suite = suite_in(tmp_path)
    (item,) = plan(suite, RunOptions(cache_dir=tmp_path / ".cache", backends=frozenset({"b"})), {"python": "3"})
    assert [b.name for b in item.backends] == ["b"]
    assert pickle.loads(pickle.dumps(item)) == item
    outcome = execute(item, DyingReferencePool())
    assert pickle.loads(pickle.dumps(outcome)) == outcome and isinstance(outcome, ModelOutcome)


def test_a_reference_that_times_out_is_a_crash_not_an_error(tmp_path: Path):
    (item,) = plan(suite_in(tmp_path), RunOptions(cache_dir=tmp_path / ".cache"), {})
    pool = DyingReferencePool()
    outcome = execute(item, pool)
    verdicts = {(r.result.case, r.result.backend): r.result for r in outcome.runs}
    assert set(verdicts) == {(c, b) for c in ("c0", "c1") for b in ("a", "b")}
    assert {r.verdict for r in verdicts.values()} == {Verdict.CRASH}
    assert all("reference (ONNX Runtime) timeout" in r.reason for r in verdicts.values())
    assert set(pool.taken) == {"onnxruntime"}
