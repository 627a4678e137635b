"""MNN through the Module API only: the Session API is deprecated and is where dead outputs come from.

Runs inside the worker process, possibly under another MNN release's interpreter: imports only numpy and MNN.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from mnn_parity.engines.protocol import EngineSpec


class MnnEngine:
    def __init__(self, spec: EngineSpec):
        import MNN.expr as F
        import MNN.nn as nn

        import MNN

        self.F = F
        self.version = MNN.version()
        model, config = str(spec.model), spec.config
        graph_inputs, _ = F.get_inputs_and_outputs(F.load_as_dict(model))
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
        self.output_names = list(spec.outputs)
        self.module = nn.load_module_from_file(
            model, self.input_names, self.output_names, runtime_manager=self.runtime_manager,
            shape_mutable=True, rearrange=False,
        )

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        F = self.F
        results = self.module.forward([self._var(name, feeds[name]) for name in self.input_names])
        if not isinstance(results, (list, tuple)):
            results = [results]
        if len(results) < len(self.output_names):
            # MNN reports a failed forward (allocation, shape inference) only on stderr and returns nothing
            raise RuntimeError(f"MNN's forward produced {len(results)} of {len(self.output_names)} outputs")
        outputs = {}
        for name, var in zip(self.output_names, results):
            if var.data_format == F.NC4HW4:
                var = F.convert(var, F.NCHW)
            outputs[name] = var.read().copy()
        return outputs

    def close(self) -> None:
        self.module = self.runtime_manager = None

    def _var(self, name: str, array: np.ndarray):
        F = self.F
        info = self.input_info.get(name, {})
        array = np.ascontiguousarray(array.astype(mnn_input_type(name, array, info.get("dtype")), copy=False))
        dtype = {np.dtype(np.float32): F.float, np.dtype(np.int32): F.int,
                 np.dtype(np.uint8): F.uint8}.get(array.dtype)
        if dtype is None:
            raise ValueError(f"input {name!r}: MNN cannot take dtype {array.dtype}")
        fmt = F.NHWC if info.get("format") == "NHWC" else F.NCHW
        var = F.const(array, list(array.shape), fmt, dtype)
        # MNN.expr.const has produced garbage silently before: read it back. A NaN in the input equals itself here.
        back = var.read()
        if back.shape != array.shape or not np.array_equal(back, array, equal_nan=array.dtype.kind == "f"):
            raise ValueError(f"input {name!r}: MNN read back a different tensor than it was given")
        if info.get("format") == "NC4HW4":   # converted without keepInputFormat: the model wants packed input
            var = F.convert(var, F.NC4HW4)
        return var


def mnn_input_type(name: str, array: np.ndarray, want) -> type:
    """The 32-bit type MNN gets: MNN.expr.const silently produces garbage from float64 and int64 buffers."""
    want = want or str(array.dtype)
    if want in ("float32", "float64") or array.dtype.kind == "f":
        return np.float32
    if want in ("int64", "int32"):
        if array.size and (array.max() > np.iinfo(np.int32).max or array.min() < np.iinfo(np.int32).min):
            raise ValueError(f"input {name!r} has values outside int32, which MNN uses for int64 inputs")
        return np.int32
    if want == "uint8":
        return np.uint8
    return array.dtype.type


def mnn_dtype(dtype) -> str:
    text = str(dtype).split(".")[-1]
    return {"float": "float32", "double": "float64", "int": "int32", "int64": "int64",
            "uint8": "uint8", "int8": "int8"}.get(text, text)
