"""`mnn-parity new` writes a manifest from the model's signature that validates once the data is filled in."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from mnn_parity.cli import main
from tests import onnx_models


def test_new_writes_a_manifest_that_validates_once_filled_in(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("MNN_PARITY_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    onnx_models.conv_relu(tmp_path / "data/models/tiny conv.onnx")
    assert main(["new", "data/models/tiny conv.onnx"]) == 0
    manifest_path = tmp_path / "suites/tiny-conv.yaml"
    text = manifest_path.read_text()
    manifest = yaml.safe_load(text)
    model = manifest["models"][0]
    assert model["onnx"] == "data/models/tiny conv.onnx"
    assert model["inputs"]["x"]["shape"] == [1, 3, 8, 8]
    assert list(model["outputs"]) == ["y"]
    assert "TODO" in text

    # as written, it must not validate: the files are a TODO
    assert main(["validate", str(manifest_path)]) == 2
    assert "matches no file" in capsys.readouterr().err

    (tmp_path / "data/inputs").mkdir(parents=True)
    np.save(tmp_path / "data/inputs/a.npy", np.zeros((8, 8, 3), np.uint8) + np.arange(8, dtype=np.uint8)[:, None, None])
    from PIL import Image
    Image.fromarray(np.load(tmp_path / "data/inputs/a.npy")).save(tmp_path / "data/inputs/a.png")
    manifest_path.write_text(text.replace("TODO/path/to/inputs/*.png", "data/inputs/*.png"))
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
