"""Goldens with the real engines: bless, then reconvert, edit the data, or switch MNN release, and read the drift.

The model is a real Conv+ReLU; reconversion with fp16 or low-bit weights moves MNN's output by a measurable
amount, which the tolerances below put on either side of each drift class.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mnn_parity.cli import main
from tests import onnx_models

# Several real conversions and runs per test, and an --mnn environment: the slow tier.
pytestmark = pytest.mark.slow

MANIFEST = """\
suite: drift
backends:
  cpu: {engine: mnn, device: CPU, precision: high, threads: 1}
tolerance: {atol: TOL, rtol: 0.0, cosine_min: 0.9}
latency: {warmup: 0, repeat: 1}
models:
  - name: conv
    onnx: models/conv.onnx
    convert: {CONVERT}
    inputs:
      x: {files: inputs/*.npy, preprocess: [{load: {}}]}
"""


@pytest.fixture()
def repo(tmp_path: Path, monkeypatch) -> Path:
    onnx_models.conv_relu(tmp_path / "models/conv.onnx", size=16)
    (tmp_path / "inputs").mkdir()
    rng = np.random.RandomState(3)
    for index in range(2):
        np.save(tmp_path / f"inputs/case{index}.npy", rng.rand(1, 3, 16, 16).astype(np.float32))
    (tmp_path / "suites").mkdir()
    monkeypatch.setenv("MNN_PARITY_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def configure(repo: Path, tol: float, convert: str = "fp16: false") -> None:
    (repo / "suites/drift.yaml").write_text(MANIFEST.replace("TOL", repr(tol)).replace("CONVERT", convert))


def drift_of(repo: Path) -> dict[str, dict]:
    report = json.loads((repo / "reports/drift.json").read_text())
    return {case["case"]: case for case in report["cases"]}


def test_unchanged_rerun_is_identical(repo: Path):
    configure(repo, 1e-3)
    assert main(["bless"]) == 0
    assert main(["run"]) == 0
    cases = drift_of(repo)
    assert {c["drift"]["drift_class"] for c in cases.values()} == {"identical"}


def test_fp16_reconversion_drifts_within_tolerance_and_the_report_says_reconverted(repo: Path):
    configure(repo, 0.05)
    assert main(["bless"]) == 0
    configure(repo, 0.05, "fp16: true")
    assert main(["run"]) == 0
    cases = drift_of(repo)
    assert {c["drift"]["drift_class"] for c in cases.values()} == {"drifted"}
    golden_max_abs = cases["case0"]["drift"]["outputs"][0]["max_abs"]
    assert 0 < golden_max_abs < 0.05
    assert "flags" in cases["case0"]["drift"]["note"]
    assert "drifted" in (repo / "reports/drift.md").read_text()


def test_int_weights_regress_a_passing_case_and_fixing_them_is_reported(repo: Path):
    configure(repo, 1e-3)
    assert main(["bless"]) == 0
    configure(repo, 1e-3, "weight_quant_bits: 4")
    assert main(["run"]) == 1                                  # regressed fails the run by default
    cases = drift_of(repo)
    assert {c["drift"]["drift_class"] for c in cases.values()} == {"regressed"}
    assert all(c["verdict"] == "FAIL" for c in cases.values())

    assert main(["bless"]) == 0                                # bless the failing state ...
    configure(repo, 1e-3)
    assert main(["run"]) == 0                                  # ... and the fp32 conversion fixes it
    assert {c["drift"]["drift_class"] for c in drift_of(repo).values()} == {"fixed"}


def test_a_failing_case_that_changes_beyond_tolerance_is_changed(repo: Path):
    configure(repo, 1e-9, "fp16: true")                          # fails against the reference either way
    main(["bless"])
    configure(repo, 1e-9, "weight_quant_bits: 4")
    status = main(["run", "--fail-on", "changed"])
    cases = drift_of(repo)
    assert {c["drift"]["drift_class"] for c in cases.values()} == {"changed"}
    assert status == 1


def test_new_and_stale_cases(repo: Path):
    configure(repo, 1e-3)
    assert main(["bless"]) == 0
    (repo / "inputs/case0.npy").unlink()
    np.save(repo / "inputs/case9.npy", np.random.RandomState(9).rand(1, 3, 16, 16).astype(np.float32))
    assert main(["run"]) == 0                                 # new and stale inform; they do not fail by default
    report = json.loads((repo / "reports/drift.json").read_text())
    cases = {c["case"]: c for c in report["cases"]}
    assert cases["case9"]["drift"]["drift_class"] == "new"
    assert cases["case1"]["drift"]["drift_class"] == "identical"
    assert ["conv", "case0", "cpu"] in [list(s.values()) if isinstance(s, dict) else list(s) for s in report["stale"]]
    assert main(["run", "--fail-on", "stale"]) == 1


def test_bless_refuses_crashed_cases_and_keeps_the_rest(repo: Path, capsys):
    onnx_models.maxpool_kernel_only(repo / "models/pool.onnx", size=16)
    configure(repo, 1e-3)
    manifest = (repo / "suites/drift.yaml").read_text() + (
        "  - name: pool\n    onnx: models/pool.onnx\n"
        "    inputs:\n      x: {files: inputs/*.npy, preprocess: [{load: {}}]}\n")
    (repo / "suites/drift.yaml").write_text(manifest)
    assert main(["bless"]) == 1
    assert "not blessed: pool/case0 [cpu] CRASH" in capsys.readouterr().err
    assert sorted(p.name for p in (repo / "goldens").rglob("*.mnn.npz"))        # conv was blessed
    assert not [p for p in (repo / "goldens").rglob("*.npz") if "pool" in str(p)]


def test_bless_under_one_mnn_release_and_run_under_another(repo: Path):
    """The upgrade story on one machine: goldens from MNN 3.5.0, a run on the installed 3.6.1."""
    configure(repo, 1e-3)
    assert main(["bless", "--mnn", "3.5.0"]) == 0
    golden = next((repo / "goldens").rglob("*.json"))
    assert json.loads(golden.read_text())["mnn_version"] == "3.5.0"
    main(["run"])
    report = json.loads((repo / "reports/drift.json").read_text())
    assert report["environment"]["baseline_mnn_version"] == "3.5.0"
    assert report["environment"]["mnn_version"] == "3.6.1"
    assert all(c["drift"]["drift_class"] in ("identical", "drifted", "changed", "regressed") for c in report["cases"])
    assert "3.5.0 → 3.6.1" in (repo / "reports/drift.md").read_text()


def test_an_uninstallable_mnn_version_is_a_setup_error(repo: Path, capsys):
    configure(repo, 1e-3)
    assert main(["run", "--mnn", "0.0.1"]) == 2
    assert "cannot use MNN 0.0.1" in capsys.readouterr().err
    assert not (repo / "reports").exists()
