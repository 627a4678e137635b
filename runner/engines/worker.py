"""Engine worker: the child process's entry point. Loads a model into a registered engine and answers requests.

Started as `python sandbox.py ... -- worker.py`, possibly under another virtual environment's interpreter
(`--mnn VERSION`) where the runner is not installed: it imports only numpy, the engine, and its sibling modules,
which it finds from its own file's location (the package's `__init__` files import nothing).

Protocol: one JSON request per line on stdin, one JSON reply per line on the protocol fd (the original stdout).
File descriptor 1 is pointed at stderr before any engine is imported, because MNN's C++ code prints to stdout and
would corrupt the replies. Arrays travel as files of `.npy` records (`transfer.py`) in a directory the parent owns.

Requests:
  {"op": "load", "engine": NAME, "model": PATH, "inputs": [..], "outputs": [..], "config": {..}}
      -> {"ok": true, "inputs": {name: {"shape": [..], "dtype": ".."}}, "outputs": [..], "version": "..",
          "sandbox": "what the sandbox could enforce"}
  {"op": "infer", "feeds": FILE, "names": [..], "out": FILE, "stream": null|{"input": NAME, "carry": {in: out}},
   "warmup": N, "repeat": N}
      -> {"ok": true, "outputs": [names of the arrays written to "out", in order], "latency_ms": float|null}
A failure the engine reports as an exception is {"ok": false, "error": "...", "kind": "ExceptionClassName"}; a crash
ends the process.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import time


def bootstrap_package() -> None:
    """Register `mnn_parity` from this file's own tree. Putting the parent's site-packages on sys.path instead would
    bring the parent's MNN into an `--mnn VERSION` interpreter, and this folder on sys.path would let the engine
    modules here (`onnxruntime.py`) shadow the engines themselves."""
    here = os.path.realpath(os.path.dirname(os.path.abspath(__file__)))
    sys.path[:] = [p for p in sys.path if os.path.realpath(os.path.abspath(p or os.curdir)) != here]
    if "mnn_parity" in sys.modules:
        return
    root = os.path.dirname(here)
    spec = importlib.util.spec_from_file_location("mnn_parity", os.path.join(root, "__init__.py"),
                                                  submodule_search_locations=[root])
    package = importlib.util.module_from_spec(spec)
    sys.modules["mnn_parity"] = package
    spec.loader.exec_module(package)


def protocol_stream():
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return proto


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


class Worker:
    """The requests one worker serves, one method per op; holds at most one loaded engine."""

    def __init__(self) -> None:
        self.engine = None

    def load(self, request: dict) -> dict:
        from mnn_parity.engines.protocol import EngineSpec, load_engine
        from mnn_parity.sandbox import STATUS_VARIABLE

        self.close({})   # free the previous model before loading the next
        self.engine = load_engine(EngineSpec.from_request(request))
        return {"ok": True, "inputs": self.engine.input_info, "outputs": list(self.engine.output_names),
                "version": self.engine.version, "sandbox": os.environ.get(STATUS_VARIABLE, "not sandboxed")}

    def infer(self, request: dict) -> dict:
        from mnn_parity.engines.transfer import read_arrays, write_arrays

        if self.engine is None:
            return {"ok": False, "error": "no model is loaded"}
        engine, stream = self.engine, request.get("stream")
        feeds = read_arrays(request["feeds"], request["arrays"])
        run = (lambda: run_stream(engine, feeds, stream)) if stream else (lambda: engine.infer(feeds))
        outputs, latency = timed(run, int(request.get("warmup", 0)), int(request.get("repeat", 0)))
        return {"ok": True, "outputs": write_arrays(request["out"], outputs), "latency_ms": latency}

    def close(self, request: dict) -> dict:
        if self.engine is not None:
            engine, self.engine = self.engine, None
            engine.close()
        return {"ok": True}

    def serve(self, requests, replies) -> None:
        ops = {"load": self.load, "infer": self.infer, "close": self.close}
        for line in requests:
            request = json.loads(line)
            try:
                op = ops.get(request.get("op"))
                reply = op(request) if op else {"ok": False, "error": f"unknown op {request.get('op')!r}"}
            except Exception as error:  # the engine's own complaint: reported, the worker lives on
                reply = {"ok": False, "error": f"{type(error).__name__}: {error}", "kind": type(error).__name__}
            replies.write(json.dumps(reply) + "\n")
            replies.flush()


if __name__ == "__main__":
    bootstrap_package()
    Worker().serve(sys.stdin, protocol_stream())
