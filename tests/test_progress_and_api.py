"""What the terminal shows, and the Python API running the same session as the command line."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from mnn_parity import api
from mnn_parity.progress import LiveEvents, PlainEvents, terminal_events
from mnn_parity.records import CaseResult, Verdict
from tests import onnx_models


def result(verdict: Verdict, reason: str = "") -> CaseResult:
    return CaseResult("s", "m", "c", "cpu", verdict, reason=reason)


def test_plain_lines_show_every_case_and_quiet_only_problems(capsys):
    PlainEvents(1).case_done(result(Verdict.PASS))
    PlainEvents(0).case_done(result(Verdict.PASS))
    PlainEvents(0).case_done(result(Verdict.CRASH, "killed by SIGFPE"))
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["  . m/c [cpu] PASS", "  C m/c [cpu] CRASH — killed by SIGFPE"]


def test_a_terminal_gets_the_live_display_and_a_pipe_plain_lines():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    assert isinstance(terminal_events(1, Tty()), LiveEvents)
    assert type(terminal_events(1, io.StringIO())) is PlainEvents


def test_the_live_display_counts_cases_and_keeps_problems_on_screen(capsys):
    live = LiveEvents(1)
    suite = type("S", (), {"name": "s", "path": Path("suites/s.yaml")})()
    live.suite_started(suite, "3.6.1", 2)
    live.phase("m", "converting")
    live.case_done(result(Verdict.PASS))
    live.case_done(result(Verdict.FAIL, "y: cosine 0.9"))
    task = live.bar.tasks[0]
    assert (task.completed, task.total) == (2, 2)
    live.close()
    err = capsys.readouterr().err
    assert "FAIL — y: cosine 0.9" in err and "PASS" not in err.replace("suite s", "")


def _api_repo(root: Path) -> Path:
    """suites/api.yaml: one conv model on one real-valued input."""
    onnx_models.conv_relu(root / "models/conv.onnx")
    (root / "inputs").mkdir()
    np.save(root / "inputs/a.npy", np.random.RandomState(0).rand(1, 3, 8, 8).astype(np.float32))
    (root / "suites").mkdir()
    (root / "suites/api.yaml").write_text(
        "suite: api\nlatency: {repeat: 0}\nmodels:\n  - name: conv\n    onnx: models/conv.onnx\n"
        "    inputs: {x: {files: inputs/*.npy, preprocess: [{load: {}}]}}\n")
    return root


def test_the_api_runs_the_session_and_returns_the_records(tmp_path: Path, monkeypatch):
    _api_repo(tmp_path)
    monkeypatch.setenv("MNN_PARITY_CACHE_DIR", str(tmp_path / ".cache"))
    outcome = api.run(["suites"], root=tmp_path, goldens_dir=tmp_path / "g")
    assert outcome.exit_status == 0
    (suite,) = outcome.outcomes
    assert [r.verdict for r in suite.summary.results] == [Verdict.PASS]
    assert json.loads((tmp_path / "reports/api.json").read_text())["counts"]["verdict"] == {"PASS": 1}


def test_the_live_display_labels_elapsed_and_left_time():
    live = LiveEvents(1)
    suite = type("S", (), {"name": "s", "path": Path("suites/s.yaml")})()
    live.suite_started(suite, "3.6.1", 2)
    live.case_done(result(Verdict.PASS))
    task = live.bar.tasks[0]
    texts = [column.render(task) for column in live.bar.columns]
    live.close()
    shown = " ".join(str(getattr(t, "plain", t)) for t in texts)
    # "0:00:00 elapsed, 0:00:01 left", not "0:00:00 left 0:00:01": the elapsed time is not the time left
    assert " elapsed, " in shown and shown.rstrip().endswith(" left")


def test_the_api_finds_the_repository_root_from_a_subfolder(tmp_path: Path, monkeypatch):
    _api_repo(tmp_path)
    (tmp_path / ".git").mkdir()
    monkeypatch.delenv("MNN_PARITY_ROOT", raising=False)
    monkeypatch.setenv("MNN_PARITY_CACHE_DIR", str(tmp_path / ".cache"))
    monkeypatch.chdir(tmp_path / "inputs")     # as the command line does: the nearest folder holding .git
    assert api.validate().exit_status == 0
    outcome = api.run(["suites/api.yaml"], goldens_dir=tmp_path / "g")
    assert outcome.exit_status == 0, outcome.problems
    assert [r.verdict for r in outcome.outcomes[0].summary.results] == [Verdict.PASS]
    assert (tmp_path / "reports/api.json").exists() and not (tmp_path / "inputs/reports").exists()
