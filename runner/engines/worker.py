"""Engine worker: a child process that loads one model into one engine and answers inference requests.

Run as a script (`python worker.py`), possibly under another virtual environment's interpreter (`--mnn VERSION`),
so it imports nothing from the runner package: only numpy and the engine itself.

Protocol: one JSON request per line on stdin, one JSON reply per line on the protocol fd (the original stdout).
File descriptor 1 is pointed at stderr before any engine is imported, because MNN's C++ code prints to stdout and
would corrupt the replies. Arrays travel as .npz files in a directory the parent owns.

Requests:
  {"op": "load", "engine": "mnn"|"onnxruntime", "model": PATH, "inputs": [..], "outputs": [..], "config": {..}}
      -> {"ok": true, "inputs": {name: {"shape": [..], "dtype": ".."}}, "outputs": [..], "version": ".."}
  {"op": "infer", "feeds": NPZ, "out": NPZ, "stream": null|{"input": NAME, "carry": {in: out}},
   "warmup": N, "repeat": N}
      -> {"ok": true, "latency_ms": float|null}
A failure the engine reports as an exception is {"ok": false, "error": "..."}; a crash ends the process.
"""
from __future__ import annotations

import json
import os
import sys
import time


def _protocol_stream():
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return proto


class OnnxRuntimeEngine:
    def __init__(self, model: str, inputs: list[str], outputs: list[str], config: dict):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(config.get("threads", 1))
        options.inter_op_num_threads = 1
        level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[config.get("graph_optimization", "all")]
        options.graph_optimization_level = level
        providers = config.get("providers") or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(model, options, providers=providers)
        self.version = ort.__version__
        self.output_names = outputs or [o.name for o in self.session.get_outputs()]
        self._dtypes = {i.name: _ort_dtype(i.type) for i in self.session.get_inputs()}
        self.input_info = {
            i.name: {"shape": [d if isinstance(d, int) else None for d in i.shape], "dtype": _ort_dtype(i.type)}
            for i in self.session.get_inputs()
        }

    def infer(self, feeds: dict) -> dict:
        import numpy as np

        cast = {k: np.asarray(v, dtype=self._dtypes.get(k, v.dtype)) for k, v in feeds.items()}
        values = self.session.run(self.output_names, cast)
        return dict(zip(self.output_names, values))


def _ort_dtype(type_string: str) -> str:
    inner = type_string[len("tensor("):-1] if type_string.startswith("tensor(") else type_string
    return {"float": "float32", "double": "float64", "float16": "float16"}.get(inner, inner)


class MnnEngine:
    """MNN through the Module API only: the Session API is deprecated and is where dead outputs come from."""

    def __init__(self, model: str, inputs: list[str], outputs: list[str], config: dict):
        import MNN.expr as F
        import MNN.nn as nn

        import MNN

        self.F = F
        self.version = MNN.version()
        declared = F.load_as_dict(model)
        graph_inputs, _ = F.get_inputs_and_outputs(declared)
        self.input_info = {
            name: {"shape": [int(d) for d in var.shape], "dtype": _mnn_dtype(var.dtype),
                   "format": str(var.data_format).split(".")[-1]}
            for name, var in graph_inputs.items()
        }
        runtime = {
            "backend": config.get("device", "CPU"),
            "precision": config.get("precision", "high"),
            "numThread": int(config.get("threads", 1)),
            "memory": config.get("memory", "normal"),
            "power": config.get("power", "normal"),
        }
        self.runtime_manager = nn.create_runtime_manager((runtime,))
        self.input_names = inputs or list(graph_inputs)
        self.output_names = outputs
        self.module = nn.load_module_from_file(
            model, self.input_names, self.output_names, runtime_manager=self.runtime_manager,
            shape_mutable=True, rearrange=False,
        )

    def _var(self, name, array):
        import numpy as np

        F = self.F
        info = self.input_info.get(name, {})
        want = info.get("dtype") or str(array.dtype)
        # MNN.expr.const silently produces garbage from float64 and int64 buffers: hand it the 32-bit type.
        if want in ("float32", "float64") or array.dtype.kind == "f":
            target = np.float32
        elif want in ("int64", "int32"):
            if array.size and (array.max() > np.iinfo(np.int32).max or array.min() < np.iinfo(np.int32).min):
                raise ValueError(f"input {name!r} has values outside int32, which MNN uses for int64 inputs")
            target = np.int32
        elif want == "uint8":
            target = np.uint8
        else:
            target = array.dtype
        array = np.ascontiguousarray(array.astype(target, copy=False))
        dtype = {np.dtype(np.float32): F.float, np.dtype(np.int32): F.int,
                 np.dtype(np.uint8): F.uint8}.get(array.dtype)
        if dtype is None:
            raise ValueError(f"input {name!r}: MNN cannot take dtype {array.dtype}")
        fmt = F.NHWC if info.get("format") == "NHWC" else F.NCHW
        var = F.const(array, list(array.shape), fmt, dtype)
        back = var.read()
        if back.shape != array.shape or not np.array_equal(back, array):
            raise ValueError(f"input {name!r}: MNN read back a different tensor than it was given")
        if info.get("format") == "NC4HW4":   # converted without keepInputFormat: the model wants packed input
            var = F.convert(var, F.NC4HW4)
        return var

    def infer(self, feeds: dict) -> dict:
        F = self.F
        vars_in = [self._var(name, feeds[name]) for name in self.input_names]
        results = self.module.forward(vars_in)
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


def _mnn_dtype(dtype) -> str:
    text = str(dtype).split(".")[-1]
    return {"float": "float32", "double": "float64", "int": "int32", "int64": "int64",
            "uint8": "uint8", "int8": "int8"}.get(text, text)


def run_stream(engine, feeds: dict, stream: dict) -> dict:
    """Run frames of one input in order, feeding named outputs back as inputs: how a stateful model is used."""
    import numpy as np

    frames = feeds[stream["input"]]
    carry = stream.get("carry", {})
    state = {k: v for k, v in feeds.items() if k != stream["input"]}
    collected: dict[str, list] = {}
    for frame in frames:
        outputs = engine.infer({**state, stream["input"]: frame})
        for name, value in outputs.items():
            collected.setdefault(name, []).append(value)
        for input_name, output_name in carry.items():
            state[input_name] = outputs[output_name]
    return {name: np.stack(values) for name, values in collected.items()}


def timed(run, warmup: int, repeat: int):
    """Outputs come from the first call; latency is the median of `repeat` further calls after `warmup`."""
    outputs = run()
    if repeat <= 0:
        return outputs, None
    for _ in range(max(warmup - 1, 0)):
        run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return outputs, times[len(times) // 2]


def serve(requests, replies) -> None:
    import numpy as np

    engine = None
    for line in requests:
        request = json.loads(line)
        try:
            if request["op"] == "load":
                kind = {"mnn": MnnEngine, "onnxruntime": OnnxRuntimeEngine}[request["engine"]]
                engine = kind(request["model"], request.get("inputs") or [], request.get("outputs") or [],
                              request.get("config") or {})
                reply = {"ok": True, "inputs": engine.input_info, "outputs": engine.output_names,
                         "version": engine.version}
            elif request["op"] == "infer":
                with np.load(request["feeds"], allow_pickle=False) as archive:
                    feeds = {k: archive[k] for k in archive.files}
                stream = request.get("stream")
                run = (lambda: run_stream(engine, feeds, stream)) if stream else (lambda: engine.infer(feeds))
                outputs, latency = timed(run, int(request.get("warmup", 0)), int(request.get("repeat", 0)))
                np.savez(request["out"], **outputs)
                reply = {"ok": True, "latency_ms": latency}
            else:
                reply = {"ok": False, "error": f"unknown op {request['op']!r}"}
        except Exception as error:  # the engine's own complaint: reported, the worker lives on
            reply = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


if __name__ == "__main__":
    protocol = _protocol_stream()
    serve(sys.stdin, protocol)
