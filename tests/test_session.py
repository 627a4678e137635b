"""The session's own rules, on the real engines with a tiny Conv: gates that must not switch themselves off,
one bad manifest not stopping the good ones, --fail-on, internal errors, and Ctrl-C."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mnn_parity.cli import fail_on, main
from mnn_parity.session import DEFAULT_FAIL_ON, Events, Session, SessionConfig
from tests import onnx_models
from tests.repos import make_repo, one_model_manifest

@pytest.fixture()
def repo(tmp_path: Path, monkeypatch) -> Path:
    return make_repo(tmp_path, monkeypatch, {"good": one_model_manifest("good", "conv", "latency: {warmup: 0, repeat: 1}")},
                     onnx_models.conv_relu, "conv", {"a": np.random.RandomState(1).rand(1, 3, 8, 8).astype(np.float32)})


def test_one_bad_manifest_does_not_stop_the_good_suite(repo: Path, capsys):
    (repo / "suites/bad.yaml").write_text("suite: bad\nmodels:\n  - name: m\n    onnx: models/none.onnx\n"
                                          "    inputs: {x: {files: inputs/*.npy, preprocess: [{load: {}}]}}\n")
    assert main(["run"]) == 2
    assert json.loads((repo / "reports/good.json").read_text())["counts"]["verdict"] == {"PASS": 1}
    assert not (repo / "reports/bad.json").exists()
    assert "bad.yaml" in capsys.readouterr().err


def test_goldens_tracked_by_dvc_but_not_pulled_is_a_setup_error(repo: Path, capsys):
    (repo / "goldens.dvc").write_text("outs:\n- path: goldens\n")
    assert main(["run"]) == 2
    assert "run `dvc pull goldens.dvc`" in capsys.readouterr().err
    assert not (repo / "reports").exists()           # nothing ran: a forgotten pull checks nothing, loudly


def test_fail_on_adds_to_the_defaults_and_none_switches_gating_off():
    assert fail_on(None) == DEFAULT_FAIL_ON
    assert fail_on(["drifted"]) == DEFAULT_FAIL_ON | {"drifted"}
    assert fail_on(["none"]) == frozenset()
    assert fail_on(["none", "stale"]) == frozenset({"stale"})


def test_an_internal_error_is_exit_status_2_not_a_test_failure(repo: Path, monkeypatch, capsys):
    def broken(self, paths):
        raise RuntimeError("a bug of ours")
    monkeypatch.setattr(Session, "run", broken)
    assert main(["run"]) == 2
    assert "internal error: RuntimeError: a bug of ours" in capsys.readouterr().err


def test_the_session_reports_cases_as_they_finish_and_returns_the_records(repo: Path):
    seen = []

    class Collect(Events):
        def case_done(self, result):
            seen.append(result)

    result = Session(SessionConfig(root=repo, report_dir=repo / "out", goldens_dir=repo / "g"), Collect()) \
        .run([repo / "suites"])
    assert result.exit_status == 0 and not result.problems
    assert [r.verdict.value for r in seen] == ["PASS"]
    (outcome,) = result.outcomes
    assert outcome.runs[0].result.drift.drift_class.value == "new"     # drift attached as a new record ...
    assert seen[0].drift is None                                         # ... the one reported live is untouched
    assert {p.name for p in outcome.report_paths} == {"good.md", "good.json", "good.html"}


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_ctrl_c_stops_children_within_seconds_and_writes_a_partial_report(tmp_path: Path, executor: str):
    from onnx import TensorProto, helper, numpy_helper

    # A chain of big MatMuls: seconds of work per engine call, so Ctrl-C lands while children compute.
    size, depth = 1024, 200
    weight = numpy_helper.from_array(np.eye(size, dtype=np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x" if i == 0 else f"h{i}", "w"], [f"h{i + 1}"]) for i in range(depth)]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])],
                              [helper.make_tensor_value_info(f"h{depth}", TensorProto.FLOAT, [size, size])], [weight])
    import onnx
    (tmp_path / "models").mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8),
              str(tmp_path / "models/chain.onnx"))
    (tmp_path / "inputs").mkdir()
    for i in range(3):
        np.save(tmp_path / f"inputs/c{i}.npy", np.ones((size, size), np.float32))
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites/slow.yaml").write_text(one_model_manifest("slow", "chain", "limits: {timeout_s: 600}\n"
                                                                  "latency: {warmup: 0, repeat: 0}"))
    env = {**os.environ, "MNN_PARITY_ROOT": str(tmp_path), "MNN_PARITY_CACHE_DIR": str(tmp_path / ".cache")}
    proc = subprocess.Popen([sys.executable, "-m", "mnn_parity.cli", "run", "--executor", executor, "--jobs", "2"],
                            cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(8)                                  # conversion done, engines busy
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert time.monotonic() - started < 5, err
    report = json.loads((tmp_path / "reports/slow.json").read_text())
    assert "partial" in report["environment"]["interrupted"]
    # the model Ctrl-C cut short is left out, not reported as MNN crashing (killed by the runner's own SIGKILL)
    assert [c["verdict"] for c in report["cases"] if c["verdict"] == "CRASH"] == []
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path / ".cache")], capture_output=True, text=True).stdout
    assert not leftover.strip()


def test_each_command_finds_its_own_root_not_the_previous_ones(tmp_path: Path, monkeypatch):
    """Two repositories in one process (a test run, a notebook): the root comes from each manifest named."""
    monkeypatch.delenv("MNN_PARITY_ROOT", raising=False)
    for name, model in (("one", "conv"), ("two", "other")):     # different files: the wrong root cannot pass
        repo = tmp_path / name
        (repo / ".git").mkdir(parents=True)
        onnx_models.conv_relu(repo / f"models/{model}.onnx")
        (repo / "inputs").mkdir()
        np.save(repo / "inputs/a.npy", np.zeros((1, 3, 8, 8), np.float32) + 0.5)
        (repo / "suites").mkdir()
        (repo / "suites/s.yaml").write_text(one_model_manifest(name, model))
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(tmp_path / "one/suites/s.yaml")]) == 0
    assert main(["validate", str(tmp_path / "two/suites/s.yaml")]) == 0


def test_a_missing_manifest_names_the_working_folder_and_the_root(tmp_path: Path, monkeypatch, capsys):
    from mnn_parity.cli import main

    (tmp_path / "team/.git").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.delenv("MNN_PARITY_ROOT", raising=False)
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["--root", str(tmp_path / "team"), "validate", "suites/cls.yaml"]) == 2
    said = capsys.readouterr().err
    assert str(tmp_path / "elsewhere/suites/cls.yaml") in said
    assert f"working folder, {tmp_path / 'elsewhere'}" in said and f"repository root is {tmp_path / 'team'}" in said
