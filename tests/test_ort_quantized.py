"""Models quantized with ONNX Runtime's own tools (quantize_static, QDQ and QOperator formats) through a real run:
what MNN gets wrong is reported in its own words; what it refuses is named, with the advice to let MNN quantize."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from mnn_parity.session import Session, SessionConfig
from tests import onnx_models
from tests.repos import make_repo

MANIFEST = """suite: ortq
latency: {warmup: 0, repeat: 0}
tolerance: {atol: 0.05, rtol: 0.0, cosine_min: 0.99}
models:
""" + "".join(f"""  - name: {fmt}
    onnx: models/{fmt}.onnx
    inputs:
      x: {{files: inputs/*.npy, preprocess: [{{load: {{}}}}]}}
""" for fmt in ("QDQ", "QOperator"))


class _Calibration:
    def __init__(self):
        self.samples = iter([{"x": np.random.RandomState(i).rand(1, 3, 16, 16).astype(np.float32)} for i in range(4)])

    def get_next(self):
        return next(self.samples, None)


def _quantize(root: Path) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    for fmt in (QuantFormat.QDQ, QuantFormat.QOperator):
        quantize_static(str(root / "models/float.onnx"), str(root / f"models/{fmt.name}.onnx"), _Calibration(),
                        quant_format=fmt, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def test_ort_quantized_models_are_judged_or_refused_with_the_advice_to_use_mnns_quantizer(tmp_path: Path,
                                                                                       monkeypatch):
    root = make_repo(tmp_path, monkeypatch, {"ortq": MANIFEST},
                     lambda path: onnx_models.conv_relu(path, channels=3, size=16), "float",
                     {"a": np.random.RandomState(7).rand(1, 3, 16, 16).astype(np.float32)})
    _quantize(root)
    result = Session(SessionConfig(root=root, localise="never", report_dir=tmp_path / "r")).run(
        [root / "suites/ortq.yaml"])
    cases = {c["model"]: c for c in json.loads((tmp_path / "r/ortq.json").read_text())["cases"]}
    # QDQ: MNN 3.6.1 converts it, then runs it with the input's batch and channel axes swapped (the failure users
    # reported on a 416x416 detector): an ERROR that quotes MNN's own account of the shape
    qdq = cases["QDQ"]
    assert qdq["verdict"] == "ERROR" and "Tensor shape**: 3, 1, 16, 16" in qdq["reason"]
    # QOperator: QLinearConv is refused, named, and the reason says what to do instead
    refused = cases["QOperator"]
    assert refused["verdict"] == "ERROR" and "QLinearConv" in refused["reason"]
    assert "let MNN quantize it" in refused["reason"] and result.exit_status == 1
