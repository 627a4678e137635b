"""Conversion through MNN's converter extension: judged by its log, cached, flags mapped, failures named."""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mnn_parity.conversion import mnnconvert
from mnn_parity.conversion.mnnconvert import (ConverterEnv, cache_key, convert, converter_args, judge_log,
                                              parse_unsupported)
from mnn_parity.manifest.spec import ConvertFlags
from mnn_parity.hashing import sha256_file
from tests import onnx_models
from tests.repos import guard_probe

ENV = ConverterEnv(Path(sys.executable), "3.6.1")


def test_success_is_cached_and_a_flag_change_converts_again(tmp_path: Path):
    model = onnx_models.conv_relu(tmp_path / "conv.onnx")
    first = convert(model, ConvertFlags(), ENV, tmp_path / "cache")
    again = convert(model, ConvertFlags(), ENV, tmp_path / "cache")
    fp16 = convert(model, ConvertFlags(fp16=True), ENV, tmp_path / "cache")
    assert first.ok and not first.cached and "Converted Success!" in first.log
    assert again.cached and again.mnn_model == first.mnn_model and again.mnn_sha256 == first.mnn_sha256
    assert first.onnx_sha256 == again.onnx_sha256 == sha256_file(model)
    assert fp16.ok and not fp16.cached and fp16.mnn_model != first.mnn_model
    assert fp16.mnn_model.stat().st_size < first.mnn_model.stat().st_size or fp16.mnn_sha256 != first.mnn_sha256


def test_unsupported_op_is_named_and_the_failure_is_remembered(tmp_path: Path):
    model = onnx_models.conv_integer(tmp_path / "convint.onnx")
    failed = convert(model, ConvertFlags(), ENV, tmp_path / "cache")
    assert not failed.ok and failed.unsupported_ops == ("ConvInteger",)
    assert failed.reason == "MNN cannot convert op(s): ConvInteger" + mnnconvert.QUANTIZED_HINT
    assert failed.mnn_model is None
    assert convert(model, ConvertFlags(), ENV, tmp_path / "cache").cached


def test_a_file_that_is_not_onnx_fails_with_the_converters_words(tmp_path: Path):
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    failed = convert(junk, ConvertFlags(), ENV, tmp_path / "cache")
    assert not failed.ok and "did not report success" in failed.reason and "file format" in failed.reason


def test_the_converter_never_touches_the_network_or_mnn_tools(tmp_path: Path, monkeypatch):
    """The converter's child starts behind the sandbox: a probe put in the converter's place finds MNN.tools (which
    pip-installs a logging SDK) unimportable and cannot open a TCP connection to a server listening right here."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    probe = guard_probe(tmp_path / "probe.py", 'MNN.tools', listener.getsockname()[1])
    monkeypatch.setattr(mnnconvert, "CONVERTER_SCRIPT", probe)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    probed = convert(onnx_models.conv_relu(tmp_path / "conv.onnx"), ConvertFlags(), ENV, tmp_path / "cache")
    listener.close()
    assert "MNN.tools: blocked" in probed.log
    assert "network: refused [Errno 13] Permission denied" in probed.log
    assert not probed.ok and "did not report success" in probed.reason
    monkeypatch.undo()
    conversion = convert(onnx_models.conv_relu(tmp_path / "conv.onnx"), ConvertFlags(), ENV, tmp_path / "cache2")
    assert conversion.ok and "aliyun" not in conversion.log and "pip install" not in conversion.log


def test_a_crashed_converter_keeps_its_log_and_quotes_its_tail(tmp_path: Path, monkeypatch):
    """As an ONNX-Runtime-quantized model did: the log shows the permuted input shape, then the converter dies."""
    crasher = tmp_path / "crash.py"
    crasher.write_text("import os, signal, sys\n"
                       "print('Start to Optimize the MNN Net...')\n"
                       "print('\t**Tensor shape**: 3, 1, 416, 416, ', flush=True)\n"
                       "os.kill(os.getpid(), signal.SIGSEGV)\n")
    monkeypatch.setattr(mnnconvert, "CONVERTER_SCRIPT", crasher)
    model = onnx_models.conv_relu(tmp_path / "conv.onnx")
    crashed = convert(model, ConvertFlags(), ENV, tmp_path / "cache")
    assert not crashed.ok and crashed.reason.startswith("converter crashed: killed by SIGSEGV")
    assert "**Tensor shape**: 3, 1, 416, 416" in crashed.reason
    assert crashed.log_path.exists() and "3, 1, 416, 416" in crashed.log_path.read_text()
    assert not convert(model, ConvertFlags(), ENV, tmp_path / "cache").cached     # a crash is not remembered
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".") and p.is_dir()] == []
    monkeypatch.undo()
    fixed = convert(model, ConvertFlags(), ENV, tmp_path / "cache")
    assert fixed.ok and not crashed.log_path.exists()      # the crash log goes once the key converts


def test_a_crash_keeps_what_the_converter_wrote_through_c_stdio(tmp_path: Path, monkeypatch):
    """MNN's converter writes through C stdio, which buffers in blocks into a file: a child killed by a signal took
    its last block with it, and the crash reason named only the signal. Not so with output unbuffered."""
    crasher = tmp_path / "c_crash.py"
    crasher.write_text("import ctypes, os, signal\n"
                       "libc = ctypes.CDLL(None)\n"
                       "libc.printf(b'Start to Optimize the MNN Net...\\n')\n"
                       "libc.printf(b'\\t**Tensor shape**: 3, 1, 416, 416, \\n')\n"
                       "os.kill(os.getpid(), signal.SIGSEGV)\n")
    monkeypatch.setattr(mnnconvert, "CONVERTER_SCRIPT", crasher)
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)     # the runner's own environment may not set it
    crashed = convert(onnx_models.conv_relu(tmp_path / "conv.onnx"), ConvertFlags(), ENV, tmp_path / "cache")
    assert crashed.crash == "killed by SIGSEGV"
    assert crashed.reason == ("converter crashed: killed by SIGSEGV; its log ends: "
                              "Start to Optimize the MNN Net... | **Tensor shape**: 3, 1, 416, 416,")


def test_kill_all_children_cancels_a_running_conversion_and_spares_engine_workers(tmp_path: Path, monkeypatch):
    from mnn_parity.engines.host import EngineProcess, EngineSpec

    hang = tmp_path / "hang.py"
    started = tmp_path / "started"
    hang.write_text(f"import time\nopen({str(started)!r}, 'w').close()\ntime.sleep(600)\n")
    model = onnx_models.conv_relu(tmp_path / "conv.onnx")
    worker = EngineProcess(EngineSpec("onnxruntime", model, (), ("y",)))
    monkeypatch.setattr(mnnconvert, "CONVERTER_SCRIPT", hang)
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(convert(model, ConvertFlags(), ENV, tmp_path / "cache")))
    thread.start()
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert mnnconvert.kill_all_children() == 1
        thread.join(timeout=30)
        assert outcome and "converter crashed: killed by SIGKILL" in outcome[0].reason
        assert worker.alive
    finally:
        worker.close()


def test_two_converters_racing_on_an_empty_cache_both_get_a_readable_model(tmp_path: Path):
    model = onnx_models.conv_relu(tmp_path / "conv.onnx")
    for round_ in range(3):
        cache = tmp_path / f"cache{round_}"
        results = []
        threads = [threading.Thread(target=lambda: results.append(convert(model, ConvertFlags(), ENV, cache)))
                   for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [r.ok for r in results] == [True] * 3, [r.reason for r in results]
        assert len({r.mnn_model for r in results}) == 1 and results[0].mnn_model.stat().st_size > 0
        assert sorted(p.name for p in cache.iterdir()) == [results[0].key]    # no staging left behind


def test_the_loser_of_a_race_uses_the_winners_entry_and_never_replaces_it(tmp_path: Path, monkeypatch):
    model = onnx_models.conv_relu(tmp_path / "conv.onnx")
    winner = convert(model, ConvertFlags(), ENV, tmp_path / "cache")
    inode = winner.mnn_model.stat().st_ino
    reader = open(winner.mnn_model, "rb")          # another process reading the entry meanwhile
    looked = []
    real_lookup = mnnconvert._from_entry

    def missed_once(*args):                        # this run looked before the winner had installed
        looked.append(1)
        return None if len(looked) == 1 else real_lookup(*args)

    monkeypatch.setattr(mnnconvert, "_from_entry", missed_once)
    loser = convert(model, ConvertFlags(), ENV, tmp_path / "cache")
    assert loser.ok and not loser.cached and loser.mnn_model == winner.mnn_model
    assert winner.mnn_model.stat().st_ino == inode and len(reader.read()) > 0
    reader.close()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [winner.key]


def test_stale_staging_of_a_dead_converter_is_removed_and_a_live_ones_kept(tmp_path: Path):
    import json
    import socket
    import subprocess

    cache = tmp_path / "cache"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folders = {}
    for name, pid in (("dead", dead.pid), ("live", os.getpid())):
        folders[name] = cache / f".{'0' * 24}-{name}"
        folders[name].mkdir(parents=True)
        (folders[name] / "owner.json").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    (cache / ".unowned").mkdir()
    assert convert(onnx_models.conv_relu(tmp_path / "conv.onnx"), ConvertFlags(), ENV, cache).ok
    assert not folders["dead"].exists() and folders["live"].exists() and (cache / ".unowned").exists()


def test_an_unusable_entry_is_converted_again(tmp_path: Path):
    model = onnx_models.conv_relu(tmp_path / "conv.onnx")
    first = convert(model, ConvertFlags(), ENV, tmp_path / "cache")
    first.mnn_model.unlink()                        # the model file went missing behind the cache's back
    again = convert(model, ConvertFlags(), ENV, tmp_path / "cache")
    assert again.ok and not again.cached and again.mnn_model.exists()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".lock")) == [first.key]


def test_unsupported_ops_separated_by_bars_are_named_without_a_stray_bar(tmp_path: Path):
    """MNN 3.6.1 lists several unsupported ops as "ONNX::ConvInteger | ONNX::MatMulInteger"."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("ConvInteger", ["x", "w"], ["c"]), helper.make_node("MatMulInteger", ["a", "b"], ["m"])],
        "two", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 8, 8]),
                helper.make_tensor_value_info("a", TensorProto.UINT8, [2, 8])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [1, 4, 6, 6]),
         helper.make_tensor_value_info("m", TensorProto.INT32, [2, 4])],
        [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.uint8), "w"),
         numpy_helper.from_array(np.ones((8, 4), np.uint8), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "two.onnx"))
    failed = convert(tmp_path / "two.onnx", ConvertFlags(), ENV, tmp_path / "cache")
    assert "ONNX::ConvInteger | ONNX::MatMulInteger" in failed.log
    assert failed.unsupported_ops == ("ConvInteger", "MatMulInteger")
    assert parse_unsupported("These Op Not Support: ONNX::A, ONNX::B |\n") == ("A", "B")


@pytest.mark.parametrize("flags, expected", [
    (ConvertFlags(), ["--optimizeLevel", "1"]),
    (ConvertFlags(fp16=True, weight_quant_bits=8, optimize_level=2),
     ["--optimizeLevel", "2", "--fp16", "--weightQuantBits", "8"]),
    (ConvertFlags(keep_input_format=False, weight_quant_asymmetric=True, weight_quant_bits=4),
     ["--optimizeLevel", "1", "--weightQuantBits", "4", "--weightQuantAsymmetric", "--keepInputFormat=false"]),
    (ConvertFlags.from_manifest({"extra_args": ["--saveStaticModel"]}), ["--optimizeLevel", "1", "--saveStaticModel"]),
])
def test_manifest_flags_map_to_converter_arguments(flags, expected):
    assert converter_args(flags) == expected


def test_cache_key_depends_on_model_version_and_flags():
    base = cache_key("a" * 64, "3.6.1", ConvertFlags())
    assert base == cache_key("a" * 64, "3.6.1", ConvertFlags())
    assert len({base, cache_key("b" * 64, "3.6.1", ConvertFlags()), cache_key("a" * 64, "3.5.0", ConvertFlags()),
                cache_key("a" * 64, "3.6.1", ConvertFlags(fp16=True))}) == 4


def test_judge_log_needs_both_the_success_line_and_the_file(tmp_path: Path):
    output = tmp_path / "m.mnn"
    assert judge_log("Converted Success!", output) == (False, "converter reported success but wrote no model file", ())
    output.write_bytes(b"x")
    assert judge_log("Start to Optimize\nConverted Success!\n", output)[0]
    failed = judge_log("[12:00] :220: These Op Not Support: ONNX::ConvInteger ONNX::DynamicQuantizeLSTM \n"
                       "Converted Failed!", output)
    assert failed == (False, "MNN cannot convert op(s): ConvInteger, DynamicQuantizeLSTM" + mnnconvert.QUANTIZED_HINT,
                      ("ConvInteger", "DynamicQuantizeLSTM"))
    plain = judge_log("These Op Not Support: ONNX::Einsum\nConverted Failed!", output)
    assert plain[1] == "MNN cannot convert op(s): Einsum"          # no quantization advice for a float op
    assert parse_unsupported("nothing here") == ()


def test_a_missing_interpreter_fails_the_conversion_without_remembering_it(tmp_path: Path):
    model = onnx_models.conv_relu(tmp_path / "conv.onnx")
    failed = convert(model, ConvertFlags(), ConverterEnv(tmp_path / "no-such-python", "3.6.1"), tmp_path / "cache")
    assert not failed.ok and "could not start" in failed.reason and "no-such-python" in failed.reason
    assert convert(model, ConvertFlags(), ENV, tmp_path / "cache").ok


@pytest.mark.slow
@pytest.mark.parametrize("converter, children", [("persistent", 1), ("fresh", 0)])
def test_a_run_converts_its_models_in_one_long_lived_child_unless_asked_for_fresh_ones(
        tmp_path: Path, monkeypatch, converter: str, children: int):
    import numpy as np

    from mnn_parity.conversion import batch
    from mnn_parity.session import Session, SessionConfig
    from tests.repos import make_repo

    models = "".join(f"  - name: conv{size}\n    onnx: models/conv{size}.onnx\n"
                     "    inputs:\n      x: {files: inputs/*.npy, preprocess: [{load: {}}]}\n" for size in (8, 9, 10))
    root = make_repo(tmp_path, monkeypatch, {"three": "suite: three\nlatency: {warmup: 0, repeat: 0}\nmodels:\n"
                                                      + models},
                     onnx_models.conv_relu, "conv8", {"a": np.ones((1, 3, 8, 8), np.float32)})
    import onnx

    for size in (9, 10):   # the same network under another doc string: three files, three conversions
        model = onnx.load(str(root / "models/conv8.onnx"))
        model.doc_string = f"copy {size}"
        onnx.save(model, str(root / f"models/conv{size}.onnx"))
    monkeypatch.setattr(batch, "_shared", None)
    config = SessionConfig(root=root, jobs=1, localise="never", converter=converter, report_dir=tmp_path / "r")
    result = Session(config).run([root / "suites/three.yaml"])
    assert sorted(r.verdict.value for o in result.outcomes for r in o.summary.results) == ["PASS"] * 3
    started = batch._shared.started if batch._shared is not None else 0
    assert started == children
    if batch._shared is not None:
        batch._shared.close()


def test_a_run_sweeps_what_killed_conversions_left_even_with_every_model_cached(tmp_path: Path, monkeypatch):
    import json
    import socket
    import subprocess

    from mnn_parity.cli import main
    from tests.repos import make_repo, one_model_manifest

    repo = make_repo(tmp_path, monkeypatch, {"s": one_model_manifest("s", "conv")}, onnx_models.conv_relu, "conv",
                     {"a": np.random.RandomState(0).rand(1, 3, 8, 8).astype(np.float32)})
    assert main(["run", "-q", "--localise", "never"]) == 0        # converts: the cache now holds the model
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = repo / ".cache/converted" / f".{'1' * 24}-killed"
    killed.mkdir()
    (killed / "owner.json").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    ownerless_old, ownerless_new = repo / ".cache/quantized/.old-x", repo / ".cache/quantized/.new-x"
    for folder in (ownerless_old, ownerless_new):
        folder.mkdir(parents=True)
    os.utime(ownerless_old, (time.time() - 7200, time.time() - 7200))   # died before writing its owner record
    assert main(["run", "-q", "--localise", "never"]) == 0        # nothing to convert: the sweep alone removes them
    assert not killed.exists() and not ownerless_old.exists() and ownerless_new.exists()
