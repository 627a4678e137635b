"""MNN, the engine under test. Runs inside the worker process; imports only numpy and MNN.

How pymnn 3.x moves tensors (pymnn/src/util.h, expr.h) decides what is fed and how:
- `MNN.expr.const(ndarray, shape, fmt, dtype)` memcpy's the array's bytes and labels them with `dtype2htype(dtype)`,
  which maps `double` to float32 and `int64` to int32: a float64 or int64 buffer becomes garbage. It also refuses
  an int8 array outright. Given `bytes`, it copies them (slowly) and labels them the same way: the path int8 needs.
- A converted model's inputs are float32, int32, uint8 or int8 (the converter turns float16/float64 into float32,
  bool/int16/int64 into int32). So each feed is cast to the type MNN declares for it, range-checked, and read back
  before use (const has produced garbage silently before).
- `Var.read()` fails ("call to readMap meet a error") on an empty tensor: an empty output is rebuilt from the shape
  and type MNN reports, and an empty input is not read back.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from mnn_parity.engines.protocol import EngineSpec

# MNN's declared type (as `mnn_dtype` names it) -> the numpy type its buffer holds.
FEEDABLE = {"float32": np.float32, "int32": np.int32, "int64": np.int32, "uint8": np.uint8, "int8": np.int8}


class InputRefused(ValueError):
    """A feed MNN cannot take as it is (a type it has no buffer for, values outside its range): never retried."""


class MnnEngine:
    def __init__(self, spec: EngineSpec):
        import MNN.expr as F
        import MNN.nn as nn

        import MNN

        self.F = F
        self.version = MNN.version()
        model, config = str(spec.model), spec.config
        named = F.load_as_dict(model)
        graph_inputs, _ = F.get_inputs_and_outputs(named)
        self.input_info = {
            name: {"shape": [int(d) for d in var.shape], "dtype": mnn_dtype(var.dtype),
                   "format": str(var.data_format).split(".")[-1]}
            for name, var in graph_inputs.items()
        }
        # Every runtime setting explicitly: MNN's documented defaults and its code disagree.
        runtime = {
            "backend": config.get("device", "CPU"),
            "precision": config.get("precision", "high"),
            "numThread": int(config.get("threads", 1)),
            "memory": config.get("memory", "normal"),
            "power": config.get("power", "normal"),
        }
        self.runtime_manager = nn.create_runtime_manager((runtime,))
        self.input_names = list(spec.inputs) or list(graph_inputs)
        # An output MNN's optimizer removed or renamed makes the whole load fail; loaded without it, the others are
        # judged and it is reported missing by name.
        self.output_names = [n for n in spec.outputs if n in named] or list(spec.outputs)
        self.module = nn.load_module_from_file(
            model, self.input_names, self.output_names, runtime_manager=self.runtime_manager,
            shape_mutable=True, rearrange=False,
        )

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.module.forward([self._var(name, feeds[name]) for name in self.input_names])
        if not isinstance(results, (list, tuple)):
            results = [results]
        if len(results) < len(self.output_names):
            # MNN reports a failed forward (allocation, shape inference) only on stderr and returns nothing
            raise RuntimeError(f"MNN's forward produced {len(results)} of {len(self.output_names)} outputs")
        return {name: read_output(self.F, name, var) for name, var in zip(self.output_names, results)}

    def close(self) -> None:
        self.module = self.runtime_manager = None

    def _var(self, name: str, array: np.ndarray):
        return make_input(self.F, name, array, self.input_info.get(name, {}))


def read_output(F, name: str, var) -> np.ndarray:
    """An output as a numpy array of the shape and type MNN reports, copied out of MNN's buffer."""
    if var.data_format == F.NC4HW4:
        var = F.convert(var, F.NCHW)
    shape, kind = [int(d) for d in var.shape], mnn_dtype(var.dtype)
    numpy_type = {**FEEDABLE, "int64": np.int64}.get(kind)
    if numpy_type is None:
        raise RuntimeError(f"output {name!r}: MNN cannot produce dtype {kind} (shape {shape})")
    if any(d == 0 for d in shape):   # read() fails on an empty tensor; there is nothing to read anyway
        return np.zeros(shape, numpy_type)
    try:
        array = var.read()
    except Exception as error:   # pymnn raises SystemError when readMap fails
        raise RuntimeError(f"output {name!r}: MNN cannot read back its {kind} output of shape {shape}: "
                           f"{type(error).__name__}: {error}") from None
    return np.array(array, copy=True).reshape(shape)


def make_input(F, name: str, array: np.ndarray, info: dict):
    """An MNN variable holding `array` as MNN declares the input (`info`: dtype and format from the model)."""
    array = np.ascontiguousarray(feed_array(name, array, info.get("dtype")))
    dtype = {np.float32: F.float, np.int32: F.int, np.uint8: F.uint8, np.int8: F.int8}[array.dtype.type]
    fmt = F.NHWC if info.get("format") == "NHWC" else F.NCHW
    # numpy's buffer is memcpy'd; int8 has no numpy path in pymnn, and its bytes path copies element by element
    value = array.tobytes() if dtype == F.int8 else array
    var = F.const(value, list(array.shape), fmt, dtype)
    check_read_back(name, array, var)
    if info.get("format") == "NC4HW4":   # converted without keepInputFormat: the model wants packed input
        var = F.convert(var, F.NC4HW4)
    return var


def check_read_back(name: str, array: np.ndarray, var) -> None:
    """MNN.expr.const has produced garbage silently before: read it back. NaN equals itself here; an empty tensor
    has only its shape to check (read() fails on it)."""
    shape = tuple(int(d) for d in var.shape)
    if shape != array.shape:
        raise ValueError(f"input {name!r}: MNN made a tensor of shape {list(shape)} from one of {list(array.shape)}")
    if array.size == 0:
        return
    back = var.read()
    if back.dtype != array.dtype or not np.array_equal(back.reshape(array.shape), array,
                                                       equal_nan=array.dtype.kind == "f"):
        raise ValueError(f"input {name!r}: MNN read back a different tensor than it was given "
                         f"({back.dtype} for {array.dtype}, shape {list(array.shape)})")


def feed_array(name: str, array: np.ndarray, want) -> np.ndarray:
    """The array in the type MNN declares for this input (or, undeclared, the nearest type MNN takes)."""
    target = FEEDABLE.get(want) if want else nearest_type(array.dtype)
    if target is None:
        raise InputRefused(f"input {name!r}: MNN cannot take dtype {want} (shape {list(array.shape)})")
    target = np.dtype(target)
    if array.dtype.kind not in "biuf":
        raise InputRefused(f"input {name!r}: MNN cannot take dtype {array.dtype} (shape {list(array.shape)})")
    if target.kind in "iu" and array.dtype.kind in "iu" and array.size:
        limits = np.iinfo(target)
        if array.max() > limits.max or array.min() < limits.min:
            was = f"{want} inputs" if want and want != target.name else "this input"
            raise InputRefused(f"input {name!r} has values outside {target.name}, which MNN uses for {was}")
    return array.astype(target, copy=False)


def nearest_type(dtype: np.dtype):
    if dtype.kind == "f":
        return np.float32
    if dtype in (np.dtype(np.uint8), np.dtype(np.int8)):
        return dtype.type
    return np.int32 if dtype.kind in "biu" else None


def mnn_dtype(dtype) -> str:
    text = str(dtype).split(".")[-1]
    return {"float": "float32", "double": "float64", "int": "int32", "int64": "int64",
            "uint8": "uint8", "int8": "int8"}.get(text, text)
