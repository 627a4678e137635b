"""Localisation wired into a run: a FAIL case names its first divergent op in the JSON report, with a reproducer
folder; a passing case is not localised by default; `mnn-parity localise` does one model on demand."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnn_parity.cli import main
from tests import localisation_models as models
from tests.repos import make_repo, one_model_manifest

@pytest.fixture()
def repo(tmp_path: Path, monkeypatch) -> Path:
    return make_repo(tmp_path, monkeypatch, {"loc": one_model_manifest("loc", "chain")}, models.round_chain, "chain",
                     {"halves": models.halves((1, 4, 4, 4))})


@pytest.mark.slow
def test_a_fail_case_carries_its_first_divergent_op_and_a_reproducer(repo: Path, capsys):
    assert main(["run"]) == 1
    (case,) = json.loads((repo / "reports/loc.json").read_text())["cases"]
    assert case["verdict"] == "FAIL"
    found = case["localisation"]
    assert found["status"] == "blamed" and found["op_type"] == "Round" and found["verified"] != "no"
    assert Path(found["repro"]).is_dir() and (Path(found["repro"]) / "ISSUE.md").exists()
    assert Path(found["repro"]).is_relative_to(repo / "reports/loc/repro")
    markdown = (repo / "reports/loc.md").read_text()
    assert "First divergent op:" in markdown and found["node"] in markdown
    assert "Per-layer" in (repo / "reports/loc.html").read_text()

    assert main(["run", "--localise", "never"]) == 1
    (case,) = json.loads((repo / "reports/loc.json").read_text())["cases"]
    assert "localisation" not in case

    assert main(["localise", "suites/loc.yaml", "--model", "chain", "--case", "halves"]) == 1
    assert "first divergent op" in capsys.readouterr().err
