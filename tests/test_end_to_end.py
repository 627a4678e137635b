"""The runner end to end on the real MNN and ONNX Runtime: a manifest in, verdicts, reports and exit status out."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from mnn_parity.cli import main
from tests import onnx_models

MANIFEST = """\
suite: e2e
description: one model per verdict
backends:
  cpu-fp32: {engine: mnn, device: CPU, precision: high, threads: 1}
tolerance: {atol: 1.0e-4, rtol: 1.0e-3, cosine_min: 0.9999}
limits: {timeout_s: 60, memory_mb: 4096}
latency: {warmup: 0, repeat: 1}
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
  - name: convint
    onnx: models/convint.onnx
    inputs:
      x: {files: inputs/bytes/*.npy, preprocess: [{load: {}}]}
"""


@pytest.fixture()
def repo(tmp_path: Path, monkeypatch) -> Path:
    onnx_models.conv_relu(tmp_path / "models/conv.onnx")
    onnx_models.round_half(tmp_path / "models/round.onnx")
    onnx_models.maxpool_kernel_only(tmp_path / "models/maxpool.onnx")
    onnx_models.conv_integer(tmp_path / "models/convint.onnx")
    rng = np.random.RandomState(7)
    for index in range(2):
        (tmp_path / "inputs/image").mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / f"inputs/image/img{index}.npy", rng.rand(1, 3, 8, 8).astype(np.float32))
    (tmp_path / "inputs/halves").mkdir(parents=True)
    np.save(tmp_path / "inputs/halves/halves.npy", np.array([[0.5, 1.5, 2.5, -0.5, 3.5, 4.5, -2.5, 0.25]], np.float32))
    (tmp_path / "inputs/bytes").mkdir(parents=True)
    np.save(tmp_path / "inputs/bytes/b0.npy", rng.randint(0, 255, (1, 3, 8, 8)).astype(np.uint8))
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites/e2e.yaml").write_text(MANIFEST)
    monkeypatch.setenv("MNN_PARITY_ROOT", str(tmp_path))
    return tmp_path


def verdicts(report: dict) -> dict[tuple[str, str], dict]:
    return {(case["model"], case["case"]): case for case in report["cases"]}


@pytest.mark.slow
def test_each_model_gets_its_verdict_and_the_run_finishes(repo: Path, capsys):
    status = main(["run", "--junit", str(repo / "junit.xml"), "--jobs", "2"])
    report = json.loads((repo / "reports/e2e.json").read_text())
    cases = verdicts(report)

    assert status == 1                                   # a failure, a crash and an error: exit 1
    assert cases[("conv", "img0")]["verdict"] == "PASS"
    assert cases[("conv", "img1")]["verdict"] == "PASS"
    wrong = cases[("round", "halves")]
    assert wrong["verdict"] == "FAIL" and wrong["failure_class"] == "out-of-tolerance"
    assert all(case["verdict"] == "CRASH" for key, case in cases.items() if key[0] == "maxpool")
    assert "SIGFPE" in cases[("maxpool", "img0")]["reason"]
    unconvertible = cases[("convint", "b0")]
    assert unconvertible["verdict"] == "ERROR" and "ConvInteger" in unconvertible["reason"]

    markdown = (repo / "reports/e2e.md").read_text()
    assert "SIGFPE" in markdown and "ConvInteger" in markdown
    failures, passes = markdown.index("## Failures"), markdown.index("## Passes")
    assert failures < markdown.index("maxpool", failures) < passes          # failures are listed before passes
    suite = ET.parse(repo / "junit.xml").getroot()
    assert "failure" in ET.tostring(suite, encoding="unicode")


@pytest.mark.slow
def test_rerun_converts_nothing(repo: Path):
    main(["run", "--model", "conv"])
    converted = repo / ".cache/converted"
    before = {p: p.stat().st_mtime_ns for p in converted.rglob("model.mnn")}
    assert before
    main(["run", "--model", "conv"])
    after = {p: p.stat().st_mtime_ns for p in converted.rglob("model.mnn")}
    assert after == before


def test_expected_failure_is_xfail_and_not_fatal(repo: Path):
    manifest = (repo / "suites/e2e.yaml").read_text().replace(
        "    onnx: models/round.onnx\n", "    onnx: models/round.onnx\n    expect: {fail: MNN rounds half away from zero}\n")
    (repo / "suites/e2e.yaml").write_text(manifest)
    status = main(["run", "--model", "round", "--model", "conv"])
    cases = verdicts(json.loads((repo / "reports/e2e.json").read_text()))
    assert cases[("round", "halves")]["verdict"] == "XFAIL"
    assert status == 0


def test_bad_manifest_names_file_path_and_line_and_writes_no_report(repo: Path, capsys):
    manifest = (repo / "suites/e2e.yaml").read_text()
    manifest = manifest.replace("tolerance: {atol", "tolerence: {atol")                  # line 5: typo
    manifest = manifest.replace("x: {files: inputs/halves", "z: {files: inputs/halves")   # no input z
    (repo / "suites/e2e.yaml").write_text(manifest)
    status = main(["run"])
    err = capsys.readouterr().err
    assert status == 2
    assert "suites/e2e.yaml:5: tolerence: unknown key 'tolerence' (did you mean 'tolerance'?)" in err
    assert "suites/e2e.yaml:16: models[1].inputs.z: the model has no input 'z'" in err   # reported together
    assert not (repo / "reports").exists()


def test_semantic_errors_are_all_reported_at_once(repo: Path, capsys):
    manifest = (repo / "suites/e2e.yaml").read_text()
    manifest = manifest.replace("x: {files: inputs/halves", "z: {files: inputs/halves")
    manifest = manifest.replace("onnx: models/maxpool.onnx", "onnx: ../outside.onnx")
    manifest = manifest.replace("inputs/bytes/*.npy", "inputs/none/*.npy")
    (repo / "suites/e2e.yaml").write_text(manifest)
    assert main(["validate"]) == 2
    err = capsys.readouterr().err
    assert "models[1].inputs.z: the model has no input 'z'" in err
    assert "models[2].onnx: path '../outside.onnx' leaves the repository" in err
    assert "models[3].inputs.x.files: glob 'inputs/none/*.npy' matches no file" in err


def test_not_onnx_is_a_clear_error(repo: Path, capsys):
    (repo / "models/conv.onnx").write_text("this is not a model")
    assert main(["validate"]) == 2
    assert "models[0].onnx: 'models/conv.onnx' is not an ONNX model" in capsys.readouterr().err


def _two_input_add(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "add",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_npz_cases_feed_every_input_and_constant_inputs_are_not_flagged(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MNN_PARITY_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    _two_input_add(tmp_path / "add.onnx")
    (tmp_path / "cases").mkdir()
    rng = np.random.RandomState(5)
    for index in range(3):
        np.savez(tmp_path / f"cases/c{index}.npz", a=rng.rand(1, 4).astype(np.float32),
                 b=rng.rand(1, 4).astype(np.float32))
    np.savez(tmp_path / "cases/flat.npz", a=np.zeros((1, 4), np.float32), b=rng.rand(1, 4).astype(np.float32))
    (tmp_path / "suite.yaml").write_text(
        "suite: npz\nlatency: {repeat: 0}\nmodels:\n  - name: add\n    onnx: add.onnx\n    cases: cases/*.npz\n"
        "    inputs:\n      b: {preprocess: [{scale: 2.0}]}\n")
    assert main(["run", "suite.yaml"]) == 0
    cases = {c["case"]: c for c in json.loads((tmp_path / "reports/npz.json").read_text())["cases"]}
    assert set(cases) == {"c0", "c1", "c2", "flat"} and all(c["verdict"] == "PASS" for c in cases.values())
    assert any("'a'" in w and "not a meaningful test input" in w for w in cases["flat"]["warnings"])
    assert cases["c0"]["warnings"] == []
    assert "not a meaningful test input" in (tmp_path / "reports/npz.md").read_text()


def test_an_image_that_does_not_decode_fails_its_case_names_file_and_step_and_exits_2(repo: Path, capsys):
    from PIL import Image

    (repo / "images").mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray((np.random.RandomState(1).rand(8, 8, 3) * 255).astype(np.uint8)).save(repo / "images" / name)
    (repo / "images/c.png").write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    (repo / "suites/e2e.yaml").write_text(
        "suite: e2e\nlatency: {repeat: 0}\nmodels:\n  - name: conv\n    onnx: models/conv.onnx\n    inputs:\n"
        "      x:\n        files: images/*.png\n        preprocess: [{decode: {color: RGB}}, {scale: 0.0039}, "
        "{layout: NCHW}]\n")
    status = main(["run"])
    err = capsys.readouterr().err
    cases = verdicts(json.loads((repo / "reports/e2e.json").read_text()))
    assert status == 2                                           # bad data is a setup problem ...
    assert cases[("conv", "a")]["verdict"] == "PASS"             # ... that loses nothing else
    bad = cases[("conv", "c")]
    assert bad["verdict"] == "ERROR" and "images/c.png" in bad["reason"] and "step 1 (decode)" in bad["reason"]
    assert "images/c.png: step 1 (decode)" in err


def test_a_fault_in_one_model_fails_its_cases_and_the_others_still_run(repo: Path, monkeypatch, capsys):
    """Fault injection into the runner's own comparison for one model: the run goes on and says what happened."""
    import mnn_parity.execution.model_work as pipeline

    real = pipeline.compare_output

    def flaky(name, ref, mnn, tolerance, topk=None):
        if ref.shape == (1, 8):            # only the Round model's output
            raise RuntimeError("injected")
        return real(name, ref, mnn, tolerance, topk)

    monkeypatch.setattr(pipeline, "compare_output", flaky)
    status = main(["run", "--model", "conv", "--model", "round"])
    cases = verdicts(json.loads((repo / "reports/e2e.json").read_text()))
    assert status == 2
    assert cases[("conv", "img0")]["verdict"] == "PASS"
    assert cases[("round", "halves")]["verdict"] == "ERROR"
    assert "internal error while running this model: RuntimeError: injected" in cases[("round", "halves")]["reason"]
