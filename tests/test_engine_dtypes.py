"""Every tensor type MNN takes is fed as MNN expects it and read back whole; empty and 0-d tensors work; what MNN
cannot take or produce is an error naming the type and the shape. Real MNN 3.6.1 and ONNX Runtime, tiny models."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mnn_parity.conversion.mnnconvert import ConvertFlags, ConverterEnv, convert
from mnn_parity.engines.host import EngineCrash, EngineError, EngineProcess, EngineSpec, Limits
from mnn_parity.engines.mnn import feed_array

ENV = ConverterEnv(Path(sys.executable), "3.6.1")
TYPES = {"float16": TensorProto.FLOAT16, "float64": TensorProto.DOUBLE, "int8": TensorProto.INT8,
         "uint8": TensorProto.UINT8, "int16": TensorProto.INT16, "int32": TensorProto.INT32,
         "int64": TensorProto.INT64, "bool": TensorProto.BOOL, "float32": TensorProto.FLOAT}


def save(path: Path, nodes, inputs, outputs) -> Path:
    model = helper.make_model(helper.make_graph(nodes, path.stem, inputs, outputs),
                              opset_imports=[helper.make_opsetid("", 14)])   # 14: Add over int8/int16
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def one_op(path: Path, op: str, dtype: str, shape: list, out_dtype: str = "", **attrs) -> Path:
    inputs = ["x", "x"] if op == "Add" else ["x"]
    return save(path, [helper.make_node(op, inputs, ["y"], **attrs)],
                [helper.make_tensor_value_info("x", TYPES[dtype], shape)],
                [helper.make_tensor_value_info("y", TYPES[out_dtype or dtype], None)])


def values(dtype: str, shape: tuple) -> np.ndarray:
    count = int(np.prod(shape))
    if dtype == "bool":
        return (np.arange(count) % 3 == 0).reshape(shape)
    return (np.arange(count) % 7 - 3).astype(dtype).reshape(shape)


def both(tmp_path: Path, onnx_path: Path, feeds: dict) -> tuple[dict, dict]:
    """ONNX Runtime's outputs and MNN's, each from its own worker."""
    conversion = convert(onnx_path, ConvertFlags(), ENV, tmp_path / "cache")
    assert conversion.ok, conversion.reason
    with EngineProcess(EngineSpec("onnxruntime", onnx_path, (), ("y",))) as reference:
        ref, _ = reference.infer(feeds)
    with EngineProcess(EngineSpec("mnn", conversion.mnn_model, tuple(feeds), ("y",)), Limits(timeout_s=60)) as mnn:
        out, _ = mnn.infer(feeds)
    return ref, out


@pytest.mark.parametrize("dtype", ["float16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool"])
def test_identity_of_every_input_type_gives_the_values_back(tmp_path: Path, dtype: str):
    feeds = {"x": values(dtype, (2, 3))}
    ref, out = both(tmp_path, one_op(tmp_path / f"id_{dtype}.onnx", "Identity", dtype, [2, 3]), feeds)
    assert out["y"].shape == (2, 3)
    np.testing.assert_array_equal(out["y"].astype(np.float64), ref["y"].astype(np.float64))


@pytest.mark.parametrize("dtype", ["float16", "float64", "int16", "int32", "int64"])
def test_add_over_every_input_type_computes(tmp_path: Path, dtype: str):
    feeds = {"x": values(dtype, (2, 3))}
    ref, out = both(tmp_path, one_op(tmp_path / f"add_{dtype}.onnx", "Add", dtype, [2, 3]), feeds)
    np.testing.assert_array_equal(out["y"].astype(np.float64), ref["y"].astype(np.float64))


CAST_INPUT = np.array([[-3.0, -1.0, 0.0], [1.0, 2.0, 5.0]], np.float32)


@pytest.mark.parametrize("dtype", ["float16", "float64", "int8", "int16", "int64", "int32"])
def test_cast_to_every_output_type_is_read_back(tmp_path: Path, dtype: str):
    """MNN produces these as float32, int32 or int8; each must come back with its values, whatever its type."""
    model = one_op(tmp_path / f"cast_{dtype}.onnx", "Cast", "float32", [2, 3], dtype, to=TYPES[dtype])
    ref, out = both(tmp_path, model, {"x": CAST_INPUT})
    np.testing.assert_array_equal(out["y"].astype(np.float64), ref["y"].astype(np.float64))


def test_a_cast_to_bool_is_read_back_as_mnn_computes_it(tmp_path: Path):
    """MNN 3.6.1 casts to bool as to int32, without mapping non-zero to 1: read back, it is MNN's wrong answer
    for the comparison to judge, not an error of the runner."""
    model = one_op(tmp_path / "cast_bool.onnx", "Cast", "float32", [2, 3], "bool", to=TensorProto.BOOL)
    ref, out = both(tmp_path, model, {"x": CAST_INPUT})
    assert ref["y"].dtype == np.bool_ and out["y"].dtype == np.int32
    assert out["y"].tolist() == [[-3, -1, 0], [1, 2, 5]]


def test_an_int8_input_reaches_mnn_as_int8(tmp_path: Path):
    """pymnn's const refuses an int8 array; passed as bytes labelled int8 it works, and comes back int8."""
    feeds = {"x": np.array([[-128, -1, 0], [1, 2, 127]], np.int8)}
    ref, out = both(tmp_path, one_op(tmp_path / "id_int8.onnx", "Identity", "int8", [2, 3]), feeds)
    assert out["y"].dtype == np.int8
    np.testing.assert_array_equal(out["y"], ref["y"])


def test_values_outside_the_type_mnn_declares_are_refused_naming_it():
    with pytest.raises(ValueError, match="outside int8"):
        feed_array("x", np.array([1, 300], np.int16), "int8")
    with pytest.raises(ValueError, match="MNN cannot take dtype complex64 \\(shape \\[2\\]\\)"):
        feed_array("x", np.zeros(2, np.complex64), "float32")
    with pytest.raises(ValueError, match="MNN cannot take dtype float16 \\(shape \\[3\\]\\)"):
        feed_array("x", np.zeros(3, np.float16), "float16")   # a type MNN never declares
    assert feed_array("x", np.array([True, False]), "int32").dtype == np.int32


def test_empty_inputs_and_outputs_run_and_keep_their_shape(tmp_path: Path):
    feeds = {"x": np.zeros((2, 0, 4), np.float32)}
    ref, out = both(tmp_path, one_op(tmp_path / "neg_empty.onnx", "Neg", "float32", [2, 0, 4]), feeds)
    assert ref["y"].shape == out["y"].shape == (2, 0, 4) and out["y"].dtype == np.float32


def test_a_reduction_over_an_empty_axis_reads_a_non_empty_output(tmp_path: Path):
    feeds = {"x": np.zeros((2, 0, 4), np.float32)}
    model = save(tmp_path / "sum_empty.onnx", [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 0, 4]),
                  helper.make_tensor_value_info("axes", TensorProto.INT64, [1])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 1, 4])])
    ref, out = both(tmp_path, model, {**feeds, "axes": np.array([1], np.int64)})
    assert out["y"].shape == (2, 1, 4)
    np.testing.assert_array_equal(out["y"], ref["y"])


def test_zero_dimensional_inputs_and_outputs(tmp_path: Path):
    """A scalar in, a scalar out (MatMul of two vectors), both with shape ()."""
    model = save(tmp_path / "dot.onnx", [helper.make_node("MatMul", ["a", "b"], ["y"])],
                 [helper.make_tensor_value_info("a", TensorProto.FLOAT, [3]),
                  helper.make_tensor_value_info("b", TensorProto.FLOAT, [3])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    ref, out = both(tmp_path, model, {"a": np.array([1, 2, 3], np.float32), "b": np.array([4, 5, 6], np.float32)})
    assert out["y"].shape == ref["y"].shape == () and float(out["y"]) == 32.0
    scaled = save(tmp_path / "scale.onnx", [helper.make_node("Mul", ["x", "s"], ["y"])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2]),
                   helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])])
    ref, out = both(tmp_path, scaled, {"x": np.ones((2, 2), np.float32), "s": np.array(2.5, np.float32)})
    np.testing.assert_array_equal(out["y"], np.full((2, 2), 2.5, np.float32))


def test_a_refused_input_is_an_engine_error_with_its_kind_and_the_worker_lives(tmp_path: Path):
    model = one_op(tmp_path / "id_int8.onnx", "Identity", "int8", [2])
    conversion = convert(model, ConvertFlags(), ENV, tmp_path / "cache")
    with EngineProcess(EngineSpec("mnn", conversion.mnn_model, ("x",), ("y",))) as mnn:
        with pytest.raises(EngineError, match="outside int8") as refused:
            mnn.infer({"x": np.array([1, 1000], np.int64)})
        assert refused.value.kind == "InputRefused"
        assert mnn.infer({"x": np.array([1, -1], np.int8)})[0]["y"].tolist() == [1, -1]


def test_an_8_bit_add_that_kills_mnn_is_a_crash_not_an_error(tmp_path: Path):
    """MNN 3.6.1's binary ops on int8 tensors segfault: fed as MNN declares, the case is MNN's crash to own."""
    model = one_op(tmp_path / "add_int8.onnx", "Add", "int8", [2, 3])
    conversion = convert(model, ConvertFlags(), ENV, tmp_path / "cache")
    with EngineProcess(EngineSpec("mnn", conversion.mnn_model, ("x",), ("y",)), Limits(timeout_s=60)) as mnn:
        with pytest.raises(EngineCrash, match="killed by SIG"):
            mnn.infer({"x": values("int8", (2, 3))})


def test_an_output_the_converter_removed_is_missing_and_the_others_still_run(tmp_path: Path):
    """MNN fails the whole load when asked for an output its converted graph lacks: asked only for those it has,
    the engine answers with them, and the absent one is missing by name (judged downstream, not an ERROR)."""
    from mnn_parity.engines.host import EngineProcess

    model = one_op(tmp_path / "neg.onnx", "Neg", "float32", [2])
    conversion = convert(model, ConvertFlags(), ENV, tmp_path / "cache")
    with EngineProcess(EngineSpec("mnn", conversion.mnn_model, ("x",), ("y", "not_in_the_graph"))) as mnn:
        out, _ = mnn.infer({"x": np.array([1.0, -2.0], np.float32)})
    assert out["y"].tolist() == [-1.0, 2.0] and "not_in_the_graph" not in out
