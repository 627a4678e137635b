"""Localisation on the real MNN 3.6.1 and ONNX Runtime, on tiny models built to provoke one situation each."""
from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from mnn_parity.conversion.mnnconvert import ConverterEnv, convert
from mnn_parity.localisation import Case, localise
from mnn_parity.manifest.spec import ConvertFlags
from tests import localisation_models as models

RUNTIME = {"device": "CPU", "precision": "high", "threads": 1, "memory": "normal", "power": "normal"}


def converted(onnx_path: Path, flags: ConvertFlags, tmp_path: Path) -> Path:
    conversion = convert(onnx_path, flags, ConverterEnv(Path(sys.executable), version("MNN")), tmp_path / "cache")
    assert conversion.ok, conversion.reason
    return conversion.mnn_model


def run_localise(tmp_path: Path, onnx_path: Path, feeds: dict, flags: ConvertFlags = ConvertFlags(),
                 hint: str = "high", repro: bool = False):
    mnn = converted(onnx_path, flags, tmp_path)
    return localise(onnx_path, mnn, feeds, RUNTIME, flags, hint, tmp_path / "work",
                    repro_dir=tmp_path / "repro" if repro else None, case=Case("chain", "halves", "cpu-fp32"))


@pytest.mark.slow   # ~2 s: two conversions, a verification and a whole `mnn-parity run`
def test_the_wrong_op_in_a_chain_is_blamed_verified_and_reproduced(tmp_path: Path, monkeypatch):
    from mnn_parity.cli import main

    onnx_path = models.round_chain(tmp_path / "round_chain.onnx")
    found = run_localise(tmp_path, onnx_path, {"x": models.halves((1, 4, 4, 4))}, repro=True)
    data = found.to_json()
    assert data["status"] == "blamed" and data["node"] == "round" and data["op_type"] == "Round"
    assert data["verified"] in ("symbolic", "concrete") and data["shortest"] == ["round"]
    assert data["kind"] == "single-op-fault" and data["inherited_error"] == 0.0
    folder = Path(data["repro"])
    assert {p.name for p in folder.iterdir()} >= {"model.onnx", "case.npz", "manifest.yaml", "ISSUE.md"}
    assert "3.6.1" in (folder / "ISSUE.md").read_text()
    # the reproducer fails on its own, through the ordinary run, writing only into tmp_path
    monkeypatch.setenv("MNN_PARITY_ROOT", str(folder))
    monkeypatch.setenv("MNN_PARITY_CACHE_DIR", str(tmp_path / "run-cache"))
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(folder / "manifest.yaml")]) == 1
    report = json.loads(next((folder / "reports").glob("*.json")).read_text())
    assert [case["verdict"] for case in report["cases"]] == ["FAIL"]


@pytest.mark.slow
def test_a_passing_model_full_of_fusions_blames_nothing(tmp_path: Path):
    onnx_path = models.fusable(tmp_path / "fusable.onnx")
    feeds = {"x": np.random.RandomState(3).randn(1, 3, 8, 8).astype(np.float32)}
    found = run_localise(tmp_path, onnx_path, feeds)
    assert found.status == "none" and found.node == "" and found.segment == ()
    assert len(found.profile) > 5                      # the profile is there all the same
    assert not any((tmp_path / "work").iterdir())      # its scratch folder (recorded tensors) is gone


@pytest.mark.slow
def test_quantised_weights_on_a_deep_chain_are_drift_not_a_single_op_fault(tmp_path: Path):
    # fp16 weights on this chain stay within 1e-3 on MNN 3.6.1 (the run passes), so 4-bit weights make the drift
    onnx_path = models.conv_chain(tmp_path / "chain.onnx")
    feeds = {"x": np.random.RandomState(3).randn(1, 16, 16, 16).astype(np.float32)}
    found = run_localise(tmp_path, onnx_path, feeds, ConvertFlags(weight_quant_bits=4), "low")
    assert found.status == "drift" and found.kind == "accumulated-drift"


@pytest.mark.slow
def test_a_name_mnn_reuses_for_a_fused_group_is_not_blamed(tmp_path: Path):
    onnx_path = models.fused_conv_round(tmp_path / "fused.onnx")
    found = run_localise(tmp_path, onnx_path, {"x": models.halves((1, 4, 8))})
    assert found.status == "blamed"
    assert found.node == "round" and found.op_type == "Round"
    assert "conv" not in found.shortest and all(row[0] != "conv" for row in found.profile)


@pytest.mark.slow
def test_a_recurrent_op_wrong_with_static_dims_is_blamed_and_verified(tmp_path: Path):
    onnx_path = models.gru_sequence(tmp_path / "gru.onnx", steps=10)
    feeds = {"x": np.random.RandomState(0).randn(10, 1, 4).astype(np.float32)}
    found = run_localise(tmp_path, onnx_path, feeds)
    assert found.status == "blamed" and found.op_type == "GRU" and found.node == "gru"
    assert found.verified == "concrete" and found.kind == "single-op-fault"


@pytest.mark.slow
def test_a_recurrent_op_over_a_dynamic_sequence_axis_is_an_error_with_mnns_reason(tmp_path: Path):
    # Looked for a shape-dependent fault (wrong only with dims unknown at conversion): on MNN 3.6.1 this GRU does
    # not run at all with a dynamic sequence axis, so the honest answer is "error", with MNN's own words.
    onnx_path = models.gru_sequence(tmp_path / "gru.onnx", steps="T")
    feeds = {"x": np.random.RandomState(0).randn(10, 1, 4).astype(np.float32)}
    found = run_localise(tmp_path, onnx_path, feeds)
    assert found.status == "error" and "Reshape" in found.suggestion


@pytest.mark.slow
def test_an_engine_crash_is_an_error_not_an_exception(tmp_path: Path):
    from tests import onnx_models

    onnx_path = onnx_models.maxpool_kernel_only(tmp_path / "maxpool.onnx")   # SIGFPE in MNN at inference
    found = run_localise(tmp_path, onnx_path, {"x": np.random.RandomState(0).rand(1, 3, 8, 8).astype(np.float32)})
    assert found.status == "error" and "SIGFPE" in found.suggestion


@pytest.mark.slow
def test_one_name_per_forward_gives_the_same_answer(tmp_path: Path):
    from mnn_parity.localisation import LocaliseOptions

    onnx_path = models.round_chain(tmp_path / "round_chain.onnx")
    mnn = converted(onnx_path, ConvertFlags(), tmp_path)
    found = localise(onnx_path, mnn, {"x": models.halves((1, 4, 4, 4))}, RUNTIME, {}, "high", tmp_path / "work",
                     options=LocaliseOptions(chunk=1, chunk_mb=0.0, reference_chunk=1))
    assert found.status == "blamed" and found.node == "round" and len(found.profile) == 4


@pytest.mark.slow
def test_a_fused_gelu_under_the_adds_name_is_an_alias_not_a_fault(tmp_path: Path):
    onnx_path = models.gelu_then_round(tmp_path / "gelu.onnx")
    feeds = {"x": np.random.RandomState(0).randn(4, 16).astype(np.float32), "h": models.halves((4, 16))}
    found = run_localise(tmp_path, onnx_path, feeds)
    assert found.status == "blamed" and found.node == "round" and found.verified != "no"
    assert all(row[0] != "add" for row in found.profile)   # found out as an alias: no longer trusted
