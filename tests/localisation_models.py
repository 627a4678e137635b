"""Tiny ONNX models for localisation, each provoking one situation in the real MNN 3.6.1 and ONNX Runtime.

- round_chain: Conv(1x1, identity) → Relu → Round → Mul → Add; on inputs at k + 0.5 MNN's Round (half away from
  zero) differs from ONNX's (half to even): one wrong op in a chain.
- fusable: Conv+BN+Relu, Conv+Add+Relu, MatMul+Add, Conv+Sigmoid+Mul, Clip, GlobalAveragePool: MNN fuses most of
  it and agrees with ONNX Runtime.
- conv_chain: a deep chain of 3x3 convolutions; with fp16 weights its error grows layer by layer.
- fused_conv_round: Conv1D (negative outputs) → Relu → Round: MNN folds the Relu into the Conv and leaves the
  Conv's name on another op's result (the Round's), which a naive comparison would blame on the Conv.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests.onnx_models import _save


def _const(name: str, array: np.ndarray):
    return numpy_helper.from_array(np.asarray(array, np.float32), name)


def halves(shape: tuple, seed: int = 0) -> np.ndarray:
    """Mostly 0.5 and 2.5: ONNX rounds them to 0 and 2, MNN to 1 and 3."""
    rng = np.random.RandomState(seed)
    return (rng.choice([0.5, 0.5, 2.5, 1.25], size=shape)).astype(np.float32)


def round_chain(path: Path, channels: int = 4, size: int = 4) -> Path:
    eye = np.eye(channels, dtype=np.float32).reshape(channels, channels, 1, 1)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["conv"], name="conv"),
             helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
             helper.make_node("Round", ["relu"], ["round"], name="round"),
             helper.make_node("Mul", ["round", "two"], ["mul"], name="mul"),
             helper.make_node("Add", ["mul", "one"], ["y"], name="add")]
    shape = [1, channels, size, size]
    return _save(path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                 [_const("w", eye), _const("b", np.zeros(channels)), _const("two", 2.0), _const("one", 1.0)])


def fused_conv_round(path: Path, channels: int = 4, size: int = 8) -> Path:
    """A Conv1D: half its outputs negative (the Relu zeroes them), the rest at k + 0.5. MNN 3.6.1 computes
    Conv+Relu under the name `relu` and puts the Round's result under the name `conv`."""
    weights = -np.eye(channels, dtype=np.float32).reshape(channels, channels, 1)
    weights[: channels // 2] *= -1.0
    nodes = [helper.make_node("Conv", ["x", "w"], ["conv"], name="conv"),
             helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
             helper.make_node("Round", ["relu"], ["y"], name="round")]
    shape = [1, channels, size]
    return _save(path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [_const("w", weights)])


def fusable(path: Path, channels: int = 8, size: int = 8) -> Path:
    rng = np.random.RandomState(1)
    w = lambda *s: _const(f"w{len(inits)}", rng.randn(*s) * 0.3)   # noqa: E731
    inits: list = []
    for shape in ((channels, 3, 3, 3), (channels, channels, 3, 3), (channels, channels, 1, 1)):
        inits.append(w(*shape))
    inits += [_const("scale", rng.rand(channels) + 0.5), _const("bias", rng.randn(channels) * 0.1),
              _const("mean", rng.randn(channels) * 0.1), _const("var", rng.rand(channels) + 0.5),
              _const("fc", rng.randn(channels, 5) * 0.3), _const("fcb", rng.randn(5) * 0.1),
              _const("lo", 0.0), _const("hi", 6.0)]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c0", "scale", "bias", "mean", "var"], ["bn"]),
             helper.make_node("Relu", ["bn"], ["r0"]),
             helper.make_node("Conv", ["r0", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c1", "r0"], ["res"]),
             helper.make_node("Relu", ["res"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"]),
             helper.make_node("Sigmoid", ["c2"], ["sg"]),
             helper.make_node("Mul", ["c2", "sg"], ["silu"]),
             helper.make_node("Clip", ["silu", "lo", "hi"], ["clip"]),
             helper.make_node("GlobalAveragePool", ["clip"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["flat"]),
             helper.make_node("MatMul", ["flat", "fc"], ["mm"]),
             helper.make_node("Add", ["mm", "fcb"], ["y"])]
    return _save(path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)


def conv_chain(path: Path, depth: int = 12, channels: int = 16, size: int = 16) -> Path:
    rng = np.random.RandomState(2)
    nodes, inits, previous = [], [], "x"
    for layer in range(depth):
        inits.append(_const(f"w{layer}", rng.randn(channels, channels, 3, 3) * (1.0 / np.sqrt(channels * 9))))
        nodes.append(helper.make_node("Conv", [previous, f"w{layer}"], [f"c{layer}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Tanh", [f"c{layer}"], [f"t{layer}"]))
        previous = f"t{layer}"
    nodes[-1].output[0] = "y"
    shape = [1, channels, size, size]
    return _save(path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)


def gru_sequence(path: Path, steps: "int | str" = 10, hidden: int = 8, features: int = 4,
                 linear_before_reset: int = 0) -> Path:
    """Relu → GRU → Squeeze → Tanh over a sequence axis of `steps` (a name leaves it dynamic). On MNN 3.6.1 a GRU
    with linear_before_reset=0 gives a wrong state (cosine ~0.996) with static dims, and with a dynamic sequence
    axis the model does not run at all (a Reshape error)."""
    rng = np.random.RandomState(0)
    inits = [_const("W", rng.randn(1, 3 * hidden, features) * 0.5), _const("R", rng.randn(1, 3 * hidden, hidden) * 0.5),
             _const("B", rng.randn(1, 6 * hidden) * 0.1), numpy_helper.from_array(np.array([1], np.int64), "axis")]
    nodes = [helper.make_node("Relu", ["x"], ["xr"], name="relu"),
             helper.make_node("GRU", ["xr", "W", "R", "B"], ["Y", "Yh"], name="gru", hidden_size=hidden,
                              linear_before_reset=linear_before_reset),
             helper.make_node("Squeeze", ["Y", "axis"], ["ys"], name="squeeze"),
             helper.make_node("Tanh", ["ys"], ["y"], name="tanh")]
    return _save(path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [steps, 1, features])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [steps, 1, hidden]),
                  helper.make_tensor_value_info("Yh", TensorProto.FLOAT, [1, 1, hidden])], inits)


def gelu_then_round(path: Path, rows: int = 4, width: int = 16) -> Path:
    """MatMul → Add → erf-GELU, plus Round(h) added to it. MNN 3.6.1 fuses the GELU and leaves its result under
    the Add's name (`add`), which diverges from ONNX's Add with exact inputs: only the alias check keeps it from
    being blamed before the Round."""
    rng = np.random.RandomState(0)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"], name="matmul"),
             helper.make_node("Add", ["mm", "b"], ["add"], name="add"),
             helper.make_node("Div", ["add", "sqrt2"], ["div"], name="div"),
             helper.make_node("Erf", ["div"], ["erf"], name="erf"),
             helper.make_node("Add", ["erf", "one"], ["erf1"], name="add1"),
             helper.make_node("Mul", ["add", "erf1"], ["m1"], name="mul1"),
             helper.make_node("Mul", ["m1", "half"], ["gelu"], name="mul2"),
             helper.make_node("Round", ["h"], ["rounded"], name="round"),
             helper.make_node("Add", ["gelu", "rounded"], ["y"], name="sum")]
    inits = [_const("w", rng.randn(width, width) * 0.3), _const("b", rng.randn(width) * 0.1),
             _const("sqrt2", np.sqrt(2.0)), _const("one", 1.0), _const("half", 0.5)]
    shape = [rows, width]
    return _save(path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
                               helper.make_tensor_value_info("h", TensorProto.FLOAT, shape)],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)


def stateful_round(path: Path, width: int = 4) -> Path:
    """A streamed model: s = x + h; y = Round(s) * 2; h_next = s * 0.5. Frames whose s lands on k + 0.5 make MNN's
    Round (half away from zero) differ from ONNX's (half to even); `stateful_frames` does so from frame 2 on."""
    nodes = [helper.make_node("Add", ["x", "h"], ["s"], name="add"),
             helper.make_node("Round", ["s"], ["r"], name="round"),
             helper.make_node("Mul", ["r", "two"], ["y"], name="mul"),
             helper.make_node("Mul", ["s", "half"], ["h_next"], name="decay")]
    shape = [1, width]
    return _save(path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape),
                               helper.make_tensor_value_info("h", TensorProto.FLOAT, shape)],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape),
                  helper.make_tensor_value_info("h_next", TensorProto.FLOAT, shape)],
                 [_const("two", 2.0), _const("half", 0.5)])


def stateful_frames() -> np.ndarray:
    """(4 frames, 1, 4), binary fractions so that every sum is exact: with h0 = 0, s reaches [0.5, 2.5, 1.5, 0.5]
    at frame 2 (frames 0 and 1 round alike in both engines)."""
    return np.array([[[0.25, 0.125, 0.375, 0.125]], [[0.125, 0.25, 0.125, 0.25]],
                     [[0.375, 2.34375, 1.34375, 0.34375]], [[0.0, 0.0, 0.0, 0.0]]], np.float32)
