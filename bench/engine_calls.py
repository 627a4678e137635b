"""What one engine call costs beyond the engine, and how many worker processes a run of many models starts.

    .venv/bin/python bench/engine_calls.py [--calls N] [--models N] [--jobs N]

1. Per call: a tiny model (Add over a small tensor) and a larger feed (1x3x224x224 float32) through
   `EngineProcess.infer`, against the engine's own time for the same call (`repeat` latency measured inside the
   worker); the difference is transfer (encoding arrays, the protocol) and process overhead.
2. Pool: N tiny models run through one `WorkerPool` by `--jobs` threads, each model taking an MNN and an ONNX
   Runtime worker as `execution/model_work.py` does; prints how many worker processes were started.
Prints figures only. To compare with another revision: `git archive REV runner | tar -x -C DIR`,
`ln -s DIR/runner DIR/mnn_parity`, then run this script with `PYTHONPATH=DIR`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mnn_parity.conversion.mnnconvert import ConvertFlags, ConverterEnv, convert  # noqa: E402
from mnn_parity.engines import host  # noqa: E402
from mnn_parity.engines.host import EngineProcess, EngineSpec, WorkerPool  # noqa: E402
from mnn_parity.manifest.spec import Limits  # noqa: E402


def add_model(path: Path, shape: list[int], bias: float = 1.0) -> Path:
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [bias])
    graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], path.stem,
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def per_call(engine: EngineProcess, feeds: dict, calls: int) -> tuple[float, float]:
    """Median wall time of a plain call, and the engine's own median time, in ms."""
    walls = []
    for _ in range(calls):
        start = time.perf_counter()
        engine.infer(feeds)
        walls.append((time.perf_counter() - start) * 1e3)
    _, inside = engine.infer(feeds, warmup=1, repeat=calls)
    return statistics.median(walls), inside or 0.0


def bench_calls(scratch: Path, calls: int) -> None:
    env = ConverterEnv(Path(sys.executable), "3.6.1")
    for label, shape in (("tiny [1,8]", [1, 8]), ("image [1,3,224,224]", [1, 3, 224, 224])):
        onnx_path = add_model(scratch / f"add{len(shape)}.onnx", shape)
        conversion = convert(onnx_path, ConvertFlags(), env, scratch / "cache")
        feeds = {"x": np.random.RandomState(0).rand(*shape).astype(np.float32)}
        for engine_name, model in (("mnn", conversion.mnn_model), ("onnxruntime", onnx_path)):
            with EngineProcess(EngineSpec(engine_name, model, ("x",), ("y",))) as engine:
                wall, inside = per_call(engine, feeds, calls)
            print(f"{label:22s} {engine_name:12s} call {wall:8.3f} ms   engine {inside:8.3f} ms   "
                  f"overhead {wall - inside:8.3f} ms ({wall / max(inside, 1e-6):6.1f}x)")


def bench_pool(scratch: Path, models: int, jobs: int) -> None:
    env = ConverterEnv(Path(sys.executable), "3.6.1")
    paths = []
    for index in range(models):
        onnx_path = add_model(scratch / f"m{index}.onnx", [1, 8], bias=float(index))
        paths.append((onnx_path, convert(onnx_path, ConvertFlags(), env, scratch / "cache").mnn_model))
    starts = []
    original = host.EngineProcess.__init__

    def counting(self, *args, **kwargs):
        starts.append(1)
        original(self, *args, **kwargs)

    host.EngineProcess.__init__ = counting
    pool, queue, lock = WorkerPool(Limits(timeout_s=60)), list(paths), threading.Lock()
    feeds = {"x": np.ones((1, 8), np.float32)}

    def work() -> None:
        while True:
            with lock:
                if not queue:
                    return
                onnx_path, mnn_path = queue.pop()
            for spec in (EngineSpec("onnxruntime", onnx_path, (), ("y",)), EngineSpec("mnn", mnn_path, ("x",), ("y",))):
                worker = pool.take(spec)
                worker.infer(feeds)
                time.sleep(0.005)   # judging, converting: the other thread's worker is in use meanwhile
                pool.give_back(worker)

    clock = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(jobs)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        pool.close()
        host.EngineProcess.__init__ = original
    print(f"pool: {models} models x 2 engines, --jobs {jobs}: {len(starts)} worker starts, "
          f"{time.perf_counter() - clock:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--models", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-engine-calls-") as scratch:
        bench_calls(Path(scratch), args.calls)
        bench_pool(Path(scratch), args.models, args.jobs)


if __name__ == "__main__":
    main()
