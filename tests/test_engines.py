"""Engines in child processes with the real MNN and ONNX Runtime: results by name, and every way of dying named."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mnn_parity.conversion.mnnconvert import ConvertFlags, ConverterEnv, convert
from mnn_parity.engines.host import EngineCrash, EngineError, EngineProcess, EngineSpec, Limits
from mnn_parity.engines.transfer import read_arrays, write_arrays
from tests import onnx_models

ENV = ConverterEnv(Path(sys.executable), "3.6.1")


def to_mnn(onnx_path: Path, tmp_path: Path, **flags) -> Path:
    conversion = convert(onnx_path, ConvertFlags(**flags), ENV, tmp_path / "cache")
    assert conversion.ok, conversion.reason
    return conversion.mnn_model


def save(path: Path, nodes, inputs, outputs, initializers=()) -> Path:
    model = helper.make_model(helper.make_graph(nodes, path.stem, inputs, outputs, list(initializers)),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_mnn_matches_onnxruntime_by_name(tmp_path: Path):
    model = onnx_models.conv_relu(tmp_path / "conv.onnx")
    x = np.random.RandomState(0).rand(1, 3, 8, 8).astype(np.float32)
    with EngineProcess(EngineSpec("onnxruntime", model, (), ("y",))) as ort_engine:
        ref, _ = ort_engine.infer({"x": x})
    with EngineProcess(EngineSpec("mnn", to_mnn(model, tmp_path), ("x",), ("y",),
                                  {"device": "CPU", "precision": "high", "threads": 1})) as mnn_engine:
        out, latency = mnn_engine.infer({"x": x}, warmup=1, repeat=3)
        assert mnn_engine.version == "3.6.1"
        assert mnn_engine.input_info["x"]["shape"] == [1, 3, 8, 8]
    assert set(out) == {"y"} and out["y"].shape == (1, 4, 8, 8)
    assert np.abs(out["y"] - ref["y"]).max() < 1e-5
    assert latency is not None and latency > 0


def test_nc4hw4_input_without_keep_input_format_still_computes_right(tmp_path: Path):
    model = onnx_models.conv_relu(tmp_path / "conv.onnx")
    x = np.random.RandomState(1).rand(1, 3, 8, 8).astype(np.float32)
    with EngineProcess(EngineSpec("onnxruntime", model, (), ("y",))) as ort_engine:
        ref, _ = ort_engine.infer({"x": x})
    with EngineProcess(EngineSpec("mnn", to_mnn(model, tmp_path, keep_input_format=False), ("x",), ("y",))) as e:
        assert e.input_info["x"]["format"] == "NC4HW4"
        out, _ = e.infer({"x": x})
    assert np.abs(out["y"] - ref["y"]).max() < 1e-5


def test_int64_inputs_are_cast_to_int32_for_mnn(tmp_path: Path):
    """MNN.expr.const misreads int64 buffers; the worker must hand MNN int32 and get the right answer."""
    model = save(tmp_path / "add.onnx", [helper.make_node("Add", ["a", "b"], ["y"])],
                 [helper.make_tensor_value_info("a", TensorProto.INT64, [4]),
                  helper.make_tensor_value_info("b", TensorProto.INT64, [4])],
                 [helper.make_tensor_value_info("y", TensorProto.INT64, [4])])
    feeds = {"a": np.array([1, -2, 3, 40000], np.int64), "b": np.array([10, 20, 30, 40], np.int64)}
    with EngineProcess(EngineSpec("mnn", to_mnn(model, tmp_path), ("a", "b"), ("y",))) as e:
        out, _ = e.infer(feeds)
    assert out["y"].tolist() == [11, 18, 33, 40040]


def test_int64_input_outside_int32_is_refused_not_wrapped(tmp_path: Path):
    model = save(tmp_path / "neg.onnx", [helper.make_node("Neg", ["a"], ["y"])],
                 [helper.make_tensor_value_info("a", TensorProto.INT64, [2])],
                 [helper.make_tensor_value_info("y", TensorProto.INT64, [2])])
    with EngineProcess(EngineSpec("mnn", to_mnn(model, tmp_path), ("a",), ("y",))) as e:
        with pytest.raises(EngineError, match="outside int32"):
            e.infer({"a": np.array([1, 2**40], np.int64)})
        out, _ = e.infer({"a": np.array([1, 2], np.int64)})       # the worker survives a refused input
    assert out["y"].tolist() == [-1, -2]


def test_sigfpe_is_a_crash_naming_the_signal_and_a_new_worker_runs(tmp_path: Path):
    pool = to_mnn(onnx_models.maxpool_kernel_only(tmp_path / "pool.onnx"), tmp_path)
    x = np.random.RandomState(2).rand(1, 3, 8, 8).astype(np.float32)
    engine = EngineProcess(EngineSpec("mnn", pool, ("x",), ("y",)), Limits(timeout_s=30))
    with pytest.raises(EngineCrash, match="killed by SIGFPE"):
        engine.infer({"x": x})
    assert not engine.alive
    engine.close()
    good = to_mnn(onnx_models.conv_relu(tmp_path / "conv.onnx"), tmp_path)
    with EngineProcess(EngineSpec("mnn", good, ("x",), ("y",))) as fresh:
        assert fresh.infer({"x": x})[0]["y"].shape == (1, 4, 8, 8)


def test_allocation_beyond_the_memory_cap_is_a_crash_naming_the_cap(tmp_path: Path):
    """MNN does not die when an allocation fails: it logs "Alloc buffer error" and returns no outputs."""
    reps = numpy_helper.from_array(np.array([60000, 60000], np.int64), "reps")     # a 14 GB output
    model = save(tmp_path / "balloon.onnx", [helper.make_node("Tile", ["x", "reps"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [60000, 480000])], [reps])
    with pytest.raises(EngineCrash, match="memory cap of 2048 MiB exceeded.*Alloc buffer error"):
        with EngineProcess(EngineSpec("mnn", to_mnn(model, tmp_path), ("x",), ("y",)),
                           Limits(timeout_s=60, memory_mb=2048)) as e:
            e.infer({"x": np.ones((1, 8), np.float32)})


def slow_model(path: Path) -> Path:
    weights = numpy_helper.from_array(np.full((1024, 1024), 1e-3, np.float32), "w")
    nodes, previous = [], "x"
    for index in range(300):        # ~600 GFLOP: far beyond a one-second budget
        nodes.append(helper.make_node("MatMul", [previous, "w"], [f"h{index}"]))
        previous = f"h{index}"
    nodes.append(helper.make_node("Identity", [previous], ["y"]))
    return save(path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1024, 1024])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1024, 1024])], [weights])


@pytest.mark.slow
def test_a_hang_is_a_crash_after_the_timeout(tmp_path: Path):
    model = slow_model(tmp_path / "slow.onnx")
    engine = EngineProcess(EngineSpec("mnn", to_mnn(model, tmp_path), ("x",), ("y",)),
                           Limits(timeout_s=120, memory_mb=4096))
    engine.limits = Limits(timeout_s=1, memory_mb=4096)      # loading may be slow on a busy machine; inference hangs
    with pytest.raises(EngineCrash, match="timeout: no answer within 1 s"):
        engine.infer({"x": np.ones((1024, 1024), np.float32)})
    assert not engine.alive
    engine.close()


def test_streaming_carries_state_between_frames(tmp_path: Path):
    """acc_next = acc + x: streamed over frames, the carried state makes the output a running sum."""
    model = save(tmp_path / "acc.onnx", [helper.make_node("Add", ["acc", "x"], ["acc_next"])],
                 [helper.make_tensor_value_info("acc", TensorProto.FLOAT, [1, 2]),
                  helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                 [helper.make_tensor_value_info("acc_next", TensorProto.FLOAT, [1, 2])])
    frames = np.arange(8, dtype=np.float32).reshape(4, 1, 2)
    feeds = {"x": frames, "acc": np.zeros((1, 2), np.float32)}
    stream = {"input": "x", "carry": {"acc": "acc_next"}}
    with EngineProcess(EngineSpec("mnn", to_mnn(model, tmp_path), ("acc", "x"), ("acc_next",))) as e:
        mnn, _ = e.infer(feeds, stream)
    with EngineProcess(EngineSpec("onnxruntime", model, (), ("acc_next",))) as e:
        ref, _ = e.infer(feeds, stream)
    expected = np.cumsum(frames, axis=0)
    np.testing.assert_array_equal(mnn["acc_next"], expected)
    np.testing.assert_array_equal(ref["acc_next"], expected)


def test_a_pooled_worker_serves_the_next_model_and_a_crashed_one_is_replaced(tmp_path: Path):
    from mnn_parity.engines.host import WorkerPool

    x = np.random.RandomState(4).rand(1, 3, 8, 8).astype(np.float32)
    conv = to_mnn(onnx_models.conv_relu(tmp_path / "conv.onnx"), tmp_path)
    conv2 = to_mnn(onnx_models.conv_relu(tmp_path / "conv2.onnx", size=8), tmp_path, fp16=True)
    pool_model = to_mnn(onnx_models.maxpool_kernel_only(tmp_path / "pool.onnx"), tmp_path)
    pool = WorkerPool(Limits(timeout_s=30))
    try:
        first = pool.take(EngineSpec("mnn", conv, ("x",), ("y",), {"threads": 1}))
        first_pid = first._proc.pid
        pool.give_back(first)
        second = pool.take(EngineSpec("mnn", conv2, ("x",), ("y",), {"threads": 1}))
        assert second._proc.pid == first_pid and second.spec.model == conv2     # same process, new model
        assert second.infer({"x": x})[0]["y"].shape == (1, 4, 8, 8)
        pool.give_back(second)
        other = pool.take(EngineSpec("mnn", conv, ("x",), ("y",), {"threads": 2}))
        assert other._proc.pid != first_pid                                        # another config: its own worker
        pool.give_back(other)
        crashing = pool.take(EngineSpec("mnn", pool_model, ("x",), ("y",), {"threads": 1}))
        with pytest.raises(EngineCrash):
            crashing.infer({"x": x})
        pool.give_back(crashing)                                                    # dead: not kept
        fresh = pool.take(EngineSpec("mnn", conv, ("x",), ("y",), {"threads": 1}))
        assert fresh._proc.pid != first_pid and fresh.infer({"x": x})[0]["y"].shape == (1, 4, 8, 8)
        pool.give_back(fresh)
    finally:
        pool.close()


def test_a_nan_in_the_input_is_read_back_as_the_same_tensor(tmp_path: Path):
    """The read-back check must treat NaN as equal to NaN, or any NaN input is a false ERROR."""
    model = onnx_models.conv_relu(tmp_path / "conv.onnx")
    x = np.random.RandomState(5).rand(1, 3, 8, 8).astype(np.float32)
    x[0, 1, 4, 4] = np.nan
    with EngineProcess(EngineSpec("mnn", to_mnn(model, tmp_path), ("x",), ("y",))) as e:
        out, _ = e.infer({"x": x})
    with EngineProcess(EngineSpec("onnxruntime", model, (), ("y",))) as e:
        ref, _ = e.infer({"x": x})
    assert np.isnan(out["y"]).any()
    np.testing.assert_array_equal(np.isnan(out["y"]), np.isnan(ref["y"]))
    finite = ~np.isnan(ref["y"])
    assert np.abs(out["y"][finite] - ref["y"][finite]).max() < 1e-5


def test_an_unknown_engine_is_refused_before_any_process_starts(tmp_path: Path):
    with pytest.raises(EngineError, match="unknown engine 'tensorrt'; known engines: mnn, onnxruntime"):
        EngineProcess(EngineSpec("tensorrt", tmp_path / "m.onnx", (), ()))


def test_every_registered_engine_implements_the_protocol():
    import importlib

    from mnn_parity.engines.protocol import ENGINES

    assert set(ENGINES) == {"onnxruntime", "mnn"}
    for target in ENGINES.values():
        module, _, name = target.partition(":")
        engine = getattr(importlib.import_module(module), name)
        assert callable(engine.infer) and callable(engine.close)


def test_the_worker_runs_where_the_runner_is_not_installed(tmp_path: Path):
    """As under an `--mnn VERSION` interpreter: numpy and the engines importable, mnn_parity not. The worker finds
    its own modules from its file's location, and does not bring in onnx or the runner's other packages."""
    import json
    import site
    import subprocess

    from mnn_parity import sandbox
    from mnn_parity.engines.host import WORKER_SCRIPT

    env = {**sandbox.child_env(tmp_path / "scratch"), "PYTHONPATH": site.getsitepackages()[0]}
    bare = [sys.executable, "-S"]     # no site: the editable install's finder for mnn_parity is not loaded
    control = subprocess.run(bare + ["-c", "import numpy, MNN, onnxruntime\nimport mnn_parity"], env=env,
                             capture_output=True, text=True)
    assert "No module named 'mnn_parity'" in control.stderr
    model = onnx_models.conv_relu(tmp_path / "conv.onnx")
    argv = bare + sandbox.command(sys.executable, WORKER_SCRIPT)[1:]
    load = {"op": "load", **EngineSpec("onnxruntime", model, (), ("y",)).as_request()}
    arrays = write_arrays(str(tmp_path / "x.bin"), {"x": np.ones((1, 3, 8, 8), np.float32)})
    probe = {"op": "infer", "feeds": str(tmp_path / "x.bin"), "arrays": arrays, "out": str(tmp_path / "y.bin")}
    done = subprocess.run(argv, input=json.dumps(load) + "\n" + json.dumps(probe) + "\n", env=env,
                          capture_output=True, text=True, timeout=120)
    replies = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["ok"] for r in replies] == [True, True], done.stderr
    assert replies[0]["outputs"] == ["y"] and "seccomp" in replies[0]["sandbox"]
    assert read_arrays(str(tmp_path / "y.bin"), replies[1]["outputs"])["y"].shape == (1, 4, 8, 8)


@pytest.mark.slow
def test_kill_all_stops_a_busy_and_an_idle_worker_and_the_pool_starts_no_more(tmp_path: Path):
    import threading

    from mnn_parity.engines.host import WorkerPool

    conv = to_mnn(onnx_models.conv_relu(tmp_path / "conv.onnx"), tmp_path)
    slow = to_mnn(slow_model(tmp_path / "slow.onnx"), tmp_path)
    pool = WorkerPool(Limits(timeout_s=120, memory_mb=4096))
    idle = pool.take(EngineSpec("mnn", conv, ("x",), ("y",), {"threads": 1}))
    pool.give_back(idle)
    busy = pool.take(EngineSpec("mnn", slow, ("x",), ("y",), {"threads": 2}))
    caught = []

    def infer():
        try:
            busy.infer({"x": np.ones((1024, 1024), np.float32)})
        except EngineCrash as crash:
            caught.append(str(crash))

    thread = threading.Thread(target=infer)
    thread.start()
    time.sleep(1.0)                     # inside the forward pass by now
    started = time.monotonic()
    pool.kill_all()
    thread.join(timeout=30)
    try:
        assert caught == ["killed by SIGKILL"] and time.monotonic() - started < 10
        assert not idle.alive and not busy.alive
        with pytest.raises(EngineCrash, match="cancelled"):
            pool.take(EngineSpec("mnn", conv, ("x",), ("y",), {"threads": 1}))
    finally:
        pool.give_back(busy)
        pool.close()


def test_a_missing_interpreter_is_an_engine_error_not_a_traceback(tmp_path: Path):
    spec = EngineSpec("mnn", tmp_path / "m.mnn", (), (), python=tmp_path / "no-such-python")
    with pytest.raises(EngineError, match="cannot start an engine worker with .*no-such-python"):
        EngineProcess(spec)


def test_the_pool_keeps_as_many_idle_workers_as_were_busy_at_once_and_a_fresh_take_starts_a_process(tmp_path: Path):
    """Two threads' workers both survive being given back (the old pool closed one: a start per model at --jobs 2);
    `fresh` never hands out a worker with a past; a cap given explicitly is kept."""
    from mnn_parity.engines.host import WorkerPool

    conv = to_mnn(onnx_models.conv_relu(tmp_path / "conv.onnx"), tmp_path)
    spec = EngineSpec("mnn", conv, ("x",), ("y",), {"threads": 1}, label="conv")
    pool = WorkerPool(Limits(timeout_s=30))
    try:
        first, second = pool.take(spec), pool.take(spec)
        pids = {first.pid, second.pid}
        pool.give_back(first)
        pool.give_back(second)
        assert first.alive and second.alive and pool.started == 2
        again = pool.take(spec)
        assert again.pid in pids and again.past() == ("conv",)       # reused: it had run conv before
        fresh = pool.take(spec, fresh=True)
        assert fresh.pid not in pids and fresh.past() == () and pool.started == 3
        pool.give_back(again)
        pool.give_back(fresh)
        assert sum(w.alive for w in (first, second, fresh)) == 2      # capped at the two ever busy at once
    finally:
        pool.close()
    capped = WorkerPool(Limits(timeout_s=30), idle_per_kind=1)
    try:
        a, b = capped.take(spec), capped.take(spec)
        capped.give_back(a)
        capped.give_back(b)
        assert not a.alive and b.alive                                # the older idle one made room
    finally:
        capped.close()
