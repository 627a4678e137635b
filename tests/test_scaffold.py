"""`mnn-parity new` writes a manifest from the model's signature that validates once the data is filled in."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from mnn_parity.cli import main
from mnn_parity.scaffold import class_axis
from tests import onnx_models


def test_new_writes_a_manifest_that_validates_once_filled_in(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("MNN_PARITY_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    onnx_models.conv_relu(tmp_path / "models/tiny conv.onnx")
    assert main(["new", "models/tiny conv.onnx"]) == 0
    manifest_path = tmp_path / "suites/tiny-conv.yaml"
    text = manifest_path.read_text()
    manifest = yaml.safe_load(text)
    model = manifest["models"][0]
    assert model["onnx"] == "models/tiny conv.onnx"
    assert model["inputs"]["x"]["shape"] == [1, 3, 8, 8]
    assert list(model["outputs"]) == ["y"]
    assert "TODO" in text

    # as written, it must not validate: the files are a TODO
    assert main(["validate", str(manifest_path)]) == 2
    assert "matches no file" in capsys.readouterr().err

    (tmp_path / "inputs").mkdir(parents=True)
    from PIL import Image
    Image.fromarray(np.zeros((8, 8, 3), np.uint8) + np.arange(8, dtype=np.uint8)[:, None, None]).save(
        tmp_path / "inputs/a.png")
    manifest_path.write_text(text.replace("TODO/path/to/inputs/*.png", "inputs/*.png"))
    assert main(["validate", str(manifest_path)]) == 0


def test_new_marks_dynamic_dimensions_and_refuses_to_overwrite(tmp_path: Path, monkeypatch, capsys):
    import onnx
    from onnx import TensorProto, helper

    monkeypatch.setenv("MNN_PARITY_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "dyn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, "h", "w"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    (tmp_path / "m").mkdir()
    onnx.save(model, str(tmp_path / "m/dyn.onnx"))
    assert main(["new", "m/dyn.onnx"]) == 0
    text = (tmp_path / "suites/dyn.yaml").read_text()
    assert "shape: [null, 3, null, null]  # dynamic: batch, h, w" in text
    assert "resize: {height: TODO, width: TODO}" in text
    assert main(["new", "m/dyn.onnx"]) == 2
    assert "exists; pass --force" in capsys.readouterr().err


def test_new_rejects_a_file_that_is_not_onnx(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("MNN_PARITY_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01 not a protobuf at all")
    assert main(["new", "junk.onnx"]) == 2
    assert "not an ONNX model" in capsys.readouterr().err


def test_new_names_the_axes_of_dimensions_written_as_minus_one(tmp_path: Path, monkeypatch):
    import onnx
    from onnx import TensorProto, helper

    monkeypatch.setenv("MNN_PARITY_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "neg",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, -1, 192])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 3, -1, 192])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "neg.onnx"))
    assert main(["new", "neg.onnx"]) == 0
    text = (tmp_path / "suites/neg.yaml").read_text()
    assert "shape: [null, 3, null, 192]  # dynamic: axis 0, axis 2 — set by your preprocessing" in text


def _scores_model(path: Path, shape: list, elem_type: int = 1) -> Path:
    import onnx
    from onnx import helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["scores"])], "scores",
                              [helper.make_tensor_value_info("x", elem_type, shape)],
                              [helper.make_tensor_value_info("scores", elem_type, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.mark.parametrize("shape, axis", [
    ([1, 1000], 1),                     # [N, C] classifier
    ([1, 21, 64, 64], 1),               # [N, C, H, W] segmentation map: channels first
    (["n", 40, 6625], 2),               # [N, T, C] CTC recogniser: the class axis is the last
    ([1, "t", 6625], 2),
    ([1, 2, "length"], 1),              # [N, C, L]: a fixed class count, a dynamic length
    ([10], 0),
])
def test_new_suggests_topk_on_the_class_axis_decided_from_the_shape(tmp_path, monkeypatch, shape, axis):
    monkeypatch.setenv("MNN_PARITY_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    _scores_model(tmp_path / "scores.onnx", shape)
    assert main(["new", "scores.onnx"]) == 0
    line = next(l for l in (tmp_path / "suites/scores.yaml").read_text().splitlines() if "scores: {}" in l)
    assert "a suggestion, if these are class scores: " in line
    # what it suggests is the output's value as the manifest writes it
    assert yaml.safe_load(line.split("class scores: ")[1]) == {"topk": {"k": 1, "axis": axis}}
    assert class_axis(shape) == axis


def test_new_suggests_no_topk_for_a_scalar_or_integer_output(tmp_path, monkeypatch):
    from onnx import TensorProto

    monkeypatch.setenv("MNN_PARITY_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    _scores_model(tmp_path / "labels.onnx", [1, 10], TensorProto.INT64)
    assert main(["new", "labels.onnx"]) == 0
    assert "topk" not in (tmp_path / "suites/labels.yaml").read_text()
    assert class_axis([]) is None


def test_a_model_outside_the_repository_is_refused_with_where_to_put_it(tmp_path, monkeypatch, capsys):
    root, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    root.mkdir()
    monkeypatch.setenv("MNN_PARITY_ROOT", str(root))
    monkeypatch.chdir(root)
    onnx_models.conv_relu(elsewhere / "m.onnx")
    assert main(["new", str(elsewhere / "m.onnx")]) == 2
    said = capsys.readouterr().err
    assert "copy it into a folder of your own there (say models/" in said
    assert "not data/, which holds mnn-parity's bundled data set" in said
    assert "under data/" not in said
    assert not (root / "suites").exists()


def test_a_missing_model_names_where_it_was_looked_for(tmp_path: Path, monkeypatch, capsys):
    (tmp_path / ".git").mkdir()
    (tmp_path / "sub").mkdir()
    monkeypatch.delenv("MNN_PARITY_ROOT", raising=False)
    monkeypatch.chdir(tmp_path / "sub")
    assert main(["new", "models/nope.onnx"]) == 2
    said = capsys.readouterr().err
    assert f"looked for {tmp_path / 'sub/models/nope.onnx'}" in said and f"the repository root is {tmp_path}" in said
