"""`topk: {axis}` is checked against the output's rank from the ONNX model: an axis past the rank used to wrap onto
the batch axis at run time and report 100 % agreement on a comparison that compared nothing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mnn_parity.manifest import ManifestError, load_suite
from tests import onnx_models

MANIFEST = """\
suite: topk
models:
  - name: scores
    onnx: models/{model}.onnx
    inputs:
      x:
        files: inputs/*.npy
        preprocess:
          - load: {{}}
    outputs:
      y:
        topk: {{k: 1, axis: {axis}}}
"""


def _no_shape_model(path: Path) -> Path:
    """An output whose rank the model does not declare (no shape at all): only run time can know it."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "unknown",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    onnx_models.round_half(tmp_path / "models/rank2.onnx")          # y: [1, 8]
    onnx_models.conv_relu(tmp_path / "models/rank4.onnx", size=4)   # y: [1, 4, 4, 4]
    _no_shape_model(tmp_path / "models/unknown.onnx")
    (tmp_path / "inputs").mkdir()
    np.save(tmp_path / "inputs/a.npy", np.ones((1, 8), np.float32))
    return tmp_path


def _load(root: Path, model: str, axis: int, extra: str = ""):
    path = root / "suite.yaml"
    path.write_text(MANIFEST.format(model=model, axis=axis) + extra)
    return load_suite(path, root)


def _issues(root: Path, model: str, axis: int, extra: str = "") -> list[str]:
    with pytest.raises(ManifestError) as caught:
        _load(root, model, axis, extra)
    return [str(issue) for issue in caught.value.issues]


def test_an_axis_past_a_rank_2_output_is_an_error_with_key_path_and_line(root):
    assert _issues(root, "rank2", 2) == [
        "suite.yaml:12: models[0].outputs.y.topk.axis: axis 2 is outside a rank-2 output: "
        "use 0 to 1, or -2 to -1 from the end"]


@pytest.mark.parametrize("axis", [0, 1, -1, -2])
def test_every_axis_inside_the_rank_is_accepted(root, axis):
    assert _load(root, "rank2", axis).models[0].outputs["y"].topk.axis == axis


def test_a_negative_axis_past_the_rank_is_an_error_too(root):
    assert "axis -3 is outside a rank-2 output" in _issues(root, "rank2", -3)[0]


def test_the_rank_comes_from_each_model(root):
    assert _load(root, "rank4", 3).models[0].outputs["y"].topk.axis == 3
    assert "axis 4 is outside a rank-4 output" in _issues(root, "rank4", 4)[0]


def test_an_output_of_unknown_rank_is_left_to_run_time(root):
    assert _load(root, "unknown", 7).models[0].outputs["y"].topk.axis == 7


def test_a_streamed_model_stacks_its_frames_on_a_new_axis(root):
    stream = "    stream: {input: x}\n"
    assert _load(root, "rank2", 2, stream).models[0].outputs["y"].topk.axis == 2
    assert "axis 3 is outside a rank-3 output (its frames stacked on axis 0)" in _issues(root, "rank2", 3, stream)[0]
