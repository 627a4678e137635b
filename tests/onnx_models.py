"""Tiny ONNX models that provoke one behaviour each in the real MNN 3.6.1 and ONNX Runtime.

Each was checked by hand against both engines:
- conv_relu: MNN matches ONNX Runtime to ~1e-6.
- round_half: ONNX rounds half to even (2.5 -> 2); MNN rounds half away from zero (2.5 -> 3): a real wrong output.
- maxpool_kernel_only: a MaxPool with only `kernel_shape` set kills MNN with SIGFPE at inference.
- conv_integer: ConvInteger, which MNN's converter cannot convert.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _save(path: Path, nodes, inputs, outputs, initializers=(), opset: int = 13) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def conv_relu(path: Path, channels: int = 3, size: int = 8) -> Path:
    weights = np.random.RandomState(0).randn(4, channels, 3, 3).astype(np.float32)
    return _save(path,
                 [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", ["c"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, size, size])],
                 [numpy_helper.from_array(weights, "w")])


def round_half(path: Path, width: int = 8) -> Path:
    return _save(path, [helper.make_node("Round", ["x"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])])


def maxpool_kernel_only(path: Path, channels: int = 3, size: int = 8) -> Path:
    return _save(path, [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, size - 1, size - 1])])


def conv_integer(path: Path) -> Path:
    weights = np.ones((4, 3, 3, 3), np.uint8)
    return _save(path, [helper.make_node("ConvInteger", ["x", "w"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 8, 8])],
                 [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 4, 6, 6])],
                 [numpy_helper.from_array(weights, "w")])
