"""MNN's int8 quantizer as a cached conversion step: the real quantizer on real models, its crashes and silent
failures judged, the cache keyed by the calibration data, and the manifest key that asks for it."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mnn_parity.conversion import quantize as quantize_module
from mnn_parity.conversion.mnnconvert import ConverterEnv, cache_key as convert_key, convert
from mnn_parity.conversion.quantize import cache_key, quantize, quantizer_config, samples_problem
from mnn_parity.engines.host import EngineProcess, EngineSpec
from mnn_parity.manifest.spec import ConvertFlags, QuantizeSpec
from tests import onnx_models
from tests.repos import guard_probe

ENV = ConverterEnv(Path(sys.executable), "3.6.1")
RUNTIME = {"device": "CPU", "precision": "high", "threads": 1}


def images(count: int, shape=(1, 3, 16, 16), seed: int = 0) -> list[dict]:
    rng = np.random.RandomState(seed)
    return [{"x": rng.rand(*shape).astype(np.float32)} for _ in range(count)]


def fp32_of(onnx_path: Path, tmp_path: Path):
    conversion = convert(onnx_path, ConvertFlags(), ENV, tmp_path / "converted")
    assert conversion.ok, conversion.reason
    return conversion


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_a_conv_net_quantizes_runs_close_to_onnxruntime_and_is_cached(tmp_path: Path):
    model = onnx_models.conv_relu(tmp_path / "conv.onnx", size=16)
    fp32 = fp32_of(model, tmp_path)
    samples = images(4)
    first = quantize(fp32, QuantizeSpec(method="EMA"), samples, ENV, tmp_path / "quantized")
    assert first.ok and not first.cached, first.reason
    assert "Quantize model done!" in first.log and first.mnn_model.stat().st_size > 0
    assert first.mnn_sha256 != fp32.mnn_sha256 and first.onnx_sha256 == fp32.onnx_sha256
    meta = json.loads((first.mnn_model.parent / "meta.json").read_text())
    assert meta["quantize"]["method"] == "EMA" and meta["samples"] == 4
    assert not (first.mnn_model.parent / "calibration").exists()     # the samples are not kept in the cache
    again = quantize(fp32, QuantizeSpec(method="EMA"), samples, ENV, tmp_path / "quantized")
    assert again.cached and again.mnn_model == first.mnn_model
    x = images(1, seed=7)[0]
    with EngineProcess(EngineSpec("onnxruntime", model, (), ("y",))) as reference:
        ref, _ = reference.infer(x)
    with EngineProcess(EngineSpec("mnn", first.mnn_model, ("x",), ("y",), RUNTIME)) as int8:
        out, _ = int8.infer(x)
    assert 0.99 < cosine(ref["y"], out["y"]) and not np.array_equal(ref["y"], out["y"])


def test_new_calibration_data_or_settings_quantize_again(tmp_path: Path):
    fp32 = fp32_of(onnx_models.conv_relu(tmp_path / "conv.onnx", size=16), tmp_path)
    first = quantize(fp32, QuantizeSpec(method="EMA"), images(3), ENV, tmp_path / "quantized")
    other_data = quantize(fp32, QuantizeSpec(method="EMA"), images(3, seed=1), ENV, tmp_path / "quantized")
    fewer_bits = quantize(fp32, QuantizeSpec(method="EMA", bits=6), images(3), ENV, tmp_path / "quantized")
    assert first.ok and other_data.ok and fewer_bits.ok
    assert not other_data.cached and not fewer_bits.cached
    assert len({first.key, other_data.key, fewer_bits.key}) == 3


def test_the_cache_key_covers_the_fp32_model_mnn_version_settings_and_data():
    base = cache_key("a" * 64, "3.6.1", QuantizeSpec(), "c" * 64)
    assert base == cache_key("a" * 64, "3.6.1", QuantizeSpec(), "c" * 64)
    variants = {cache_key("b" * 64, "3.6.1", QuantizeSpec(), "c" * 64),
                cache_key("a" * 64, "3.5.0", QuantizeSpec(), "c" * 64),
                cache_key("a" * 64, "3.6.1", QuantizeSpec(method="EMA"), "c" * 64),
                cache_key("a" * 64, "3.6.1", QuantizeSpec(skip_ops=("conv1",)), "c" * 64),
                cache_key("a" * 64, "3.6.1", QuantizeSpec(), "d" * 64)}
    assert base not in variants and len(variants) == 5


def test_quantization_settings_do_not_convert_the_fp32_model_again():
    plain = ConvertFlags()
    assert convert_key("a" * 64, "3.6.1", plain) == convert_key("a" * 64, "3.6.1",
                                                                ConvertFlags(quantize=QuantizeSpec(method="EMA")))


def test_a_quantizer_killed_by_a_signal_is_a_crash_with_its_log_and_is_not_remembered(tmp_path: Path):
    """Measured on MNN 3.6.1: KL calibration of a lone Round op dies of SIGSEGV while collecting distributions."""
    fp32 = fp32_of(onnx_models.round_half(tmp_path / "round.onnx"), tmp_path)
    samples = [{"x": np.random.RandomState(i).rand(1, 8).astype(np.float32)} for i in range(2)]
    crashed = quantize(fp32, QuantizeSpec(method="KL"), samples, ENV, tmp_path / "quantized")
    assert not crashed.ok and crashed.crash == "killed by SIGSEGV" and crashed.mnn_model is None
    assert crashed.reason.startswith("quantizer crashed: killed by SIGSEGV; its log ends:")
    assert "fake quant weights done" in crashed.reason or "CollectFeature" in crashed.reason
    assert crashed.log_path.exists() and "Use feature quantization method: KL" in crashed.log_path.read_text()
    again = quantize(fp32, QuantizeSpec(method="KL"), samples, ENV, tmp_path / "quantized")
    assert not again.ok and not again.cached
    assert [p for p in (tmp_path / "quantized").iterdir() if p.is_dir()] == []    # no entry, no staging left


@pytest.mark.parametrize("script, expected", [
    ("print('Quantize model done!')\n", "quantizer reported success but wrote no model file"),
    ("import sys\nopen(sys.argv[2], 'wb').write(b'x' * 64)\nprint('Calibrate the feature...')\n",
     "quantizer did not report success; its log ends: Calibrate the feature..."),
    ("import os, signal, sys\nopen(sys.argv[2], 'wb').write(b'x' * 64)\nprint('Quantize model done!', flush=True)\n"
     "os.kill(os.getpid(), signal.SIGABRT)\n", "quantizer crashed: killed by SIGABRT"),
])
def test_success_needs_the_done_line_a_model_file_and_a_clean_exit(tmp_path: Path, monkeypatch, script, expected):
    """`_tools.mnnquant` returns success whatever it did: each of the three signs alone is not enough."""
    fp32 = fp32_of(onnx_models.conv_relu(tmp_path / "conv.onnx"), tmp_path)
    fake = tmp_path / "fake_quantizer.py"
    fake.write_text(script)
    monkeypatch.setattr(quantize_module, "QUANTIZER_SCRIPT", fake)
    failed = quantize(fp32, QuantizeSpec(method="EMA"), images(1, (1, 3, 8, 8)), ENV, tmp_path / "quantized")
    assert not failed.ok and failed.mnn_model is None and failed.reason.startswith(expected)


def test_the_quantizer_never_touches_the_network_or_mnn_tools(tmp_path: Path, monkeypatch):
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    probe = guard_probe(tmp_path / "probe.py", 'MNN.tools.mnnquant', listener.getsockname()[1])
    monkeypatch.setattr(quantize_module, "QUANTIZER_SCRIPT", probe)
    fp32 = fp32_of(onnx_models.conv_relu(tmp_path / "conv.onnx"), tmp_path)
    probed = quantize(fp32, QuantizeSpec(method="EMA"), images(1, (1, 3, 8, 8)), ENV, tmp_path / "quantized")
    listener.close()
    assert "MNN.tools: blocked" in probed.log and "network: refused" in probed.log and not probed.ok


def test_a_failed_conversion_passes_through_untouched(tmp_path: Path):
    failed = convert(onnx_models.conv_integer(tmp_path / "ci.onnx"), ConvertFlags(), ENV, tmp_path / "converted")
    assert quantize(failed, QuantizeSpec(), images(1), ENV, tmp_path / "quantized") is failed
    assert not (tmp_path / "quantized").exists()


def test_samples_mnn_would_crash_on_or_misread_are_refused_before_it_runs():
    kl, ema = QuantizeSpec(method="KL"), QuantizeSpec(method="EMA")
    mixed = [{"x": np.zeros((1, 3, 8, 8), np.float32)}, {"x": np.zeros((1, 3, 8, 12), np.float32)}]
    assert "KL calibration needs every sample the same shape, got 2 shapes" in samples_problem(kl, mixed)
    assert samples_problem(ema, mixed) is None
    assert samples_problem(kl, []) == "no calibration samples"
    assert "different inputs" in samples_problem(ema, [{"x": np.zeros(2)}, {"y": np.zeros(2)}])
    assert "NaN or Inf in ['x']" in samples_problem(ema, [{"x": np.array([1.0, np.nan], np.float32)}])


def test_refused_samples_fail_the_model_without_running_the_quantizer(tmp_path: Path):
    fp32 = fp32_of(onnx_models.conv_relu(tmp_path / "conv.onnx"), tmp_path)
    mixed = [{"x": np.zeros((1, 3, 8, 8), np.float32)}, {"x": np.zeros((1, 3, 16, 16), np.float32)}]
    refused = quantize(fp32, QuantizeSpec(method="KL"), mixed, ENV, tmp_path / "quantized")
    assert not refused.ok and "same shape" in refused.reason and not (tmp_path / "quantized").exists()
    climbing = quantize(fp32, QuantizeSpec(method="EMA"), [{"../x": np.zeros(3, np.float32)}], ENV,
                        tmp_path / "quantized")
    assert not climbing.ok and "cannot be a calibration file name" in climbing.reason


def test_the_quantizer_config_is_sequence_mode_with_one_sample_per_batch(tmp_path: Path):
    config = quantizer_config(QuantizeSpec(method="EMA", weights="ADMM", bits=6, skip_ops=("conv1",)), tmp_path, 5)
    assert config == {"path": str(tmp_path), "used_sample_num": 5, "input_type": "sequence",
                      "feature_quantize_method": "EMA", "weight_quantize_method": "ADMM", "quant_bits": 6,
                      "batch_size": 1, "skip_quant_op_names": ["conv1"], "debug": False}


@pytest.mark.slow
@pytest.mark.skipif(not (Path(__file__).resolve().parent.parent / "data/models/ppocr/cls.onnx").exists(),
                    reason="data/ is not restored")
def test_the_bundled_angle_classifier_quantizes_with_ema_close_to_onnxruntime(tmp_path: Path):
    """cls.onnx calibrated on the seven text lines its suite runs (measured: EMA cosine 0.9994 over all seven)."""
    from mnn_parity.inputs.calibration import calibration_feeds
    from mnn_parity.manifest.load import load_suite

    root = Path(__file__).resolve().parent.parent
    model = next(m for m in load_suite(root / "suites/ocr.yaml", root).models if m.name == "ppocr-cls")
    spec = QuantizeSpec(method="EMA")
    import dataclasses
    model = dataclasses.replace(model, convert=dataclasses.replace(model.convert, quantize=spec))
    samples = calibration_feeds(model, root)
    fp32 = fp32_of(model.onnx, tmp_path)
    int8 = quantize(fp32, spec, samples, ENV, tmp_path / "quantized")
    assert int8.ok, int8.reason
    assert int8.mnn_model.stat().st_size < fp32.mnn_model.stat().st_size / 2
    output = "save_infer_model/scale_0.tmp_1"
    with EngineProcess(EngineSpec("onnxruntime", model.onnx, (), (output,))) as reference, \
            EngineProcess(EngineSpec("mnn", int8.mnn_model, ("x",), (output,), RUNTIME)) as mnn:
        refs = np.concatenate([reference.infer(s)[0][output] for s in samples])
        outs = np.concatenate([mnn.infer(s)[0][output] for s in samples])
    assert cosine(refs, outs) > 0.999 and (refs.argmax(1) == outs.argmax(1)).all()


# ------------------------------------------------------------------------------------------------ the manifest
QUANTIZED = """suite: q
latency: {warmup: 0, repeat: 0}
tolerance: {atol: 1.0, rtol: 0.0, cosine_min: 0.9}
models:
  - name: conv
    onnx: models/conv.onnx
    convert:
      quantize: {method: EMA, calibration: {files: {x: calibration/*.npy}, max_samples: 3}}
    inputs:
      x: {files: inputs/*.npy, preprocess: [{load: {}}]}
  - name: round
    onnx: models/round.onnx
    convert: {quantize: {method: KL}}
    inputs:
      x: {files: rows/*.npy, preprocess: [{load: {}}]}
"""


@pytest.fixture()
def quantized_repo(tmp_path: Path, monkeypatch) -> Path:
    from tests.repos import make_repo

    rng = np.random.RandomState(0)
    root = make_repo(tmp_path, monkeypatch, {"q": QUANTIZED}, lambda p: onnx_models.conv_relu(p, size=16), "conv",
                     {f"c{i}": rng.rand(1, 3, 16, 16).astype(np.float32) for i in range(2)})
    onnx_models.round_half(root / "models/round.onnx")
    for folder, shape, count in (("calibration", (1, 3, 16, 16), 5), ("rows", (1, 8), 2)):
        (root / folder).mkdir()
        for i in range(count):
            np.save(root / f"{folder}/s{i}.npy", rng.rand(*shape).astype(np.float32))
    return root


def test_a_run_quantizes_and_a_quantizer_crash_fails_only_its_model(quantized_repo: Path):
    from mnn_parity.cli import main

    assert main(["run", "--localise", "never"]) == 1
    report = json.loads((quantized_repo / "reports/q.json").read_text())
    verdicts = {(c["model"], c["case"]): (c["verdict"], c["reason"]) for c in report["cases"]}
    assert verdicts[("conv", "c0")][0] == verdicts[("conv", "c1")][0] == "PASS"
    verdict, reason = verdicts[("round", "s0")]
    assert verdict == "CRASH" and reason.startswith("quantization failed: quantizer crashed: killed by SIGSEGV")
    (entry,) = [p for p in (quantized_repo / ".cache/quantized").iterdir() if p.is_dir()]
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["samples"] == 3 and meta["quantize"]["calibration"]["files"] == {"x": ["calibration/*.npy"]}


def test_the_manifest_key_types_round_trips_and_stays_out_of_unquantized_provenance():
    flags = ConvertFlags.from_manifest({"quantize": {"method": "ADMM", "bits": 6, "skip_ops": ["conv1"],
                                                     "calibration": {"files": {"x": "cal/*.png"}}}})
    assert flags.quantize == QuantizeSpec("ADMM", "MAX_ABS", 6, (("x", ("cal/*.png",)),), None, ("conv1",))
    assert flags.quantize.samples == 1 and QuantizeSpec().samples == 16
    assert flags.as_dict()["quantize"] == {"method": "ADMM", "weights": "MAX_ABS", "bits": 6, "skip_ops": ["conv1"],
                                           "calibration": {"max_samples": 1, "files": {"x": ["cal/*.png"]}}}
    assert ConvertFlags.from_manifest(flags.as_dict()).as_dict() == flags.as_dict()
    assert "quantize" not in ConvertFlags.from_manifest({"fp16": True}).as_dict()


def manifest_issues(root: Path, quantize: str, extra: str = "") -> list[str]:
    from mnn_parity.manifest import ManifestError, load_suite

    (root / "m.yaml").write_text(QUANTIZED.split("  - name: round")[0].replace(
        "      quantize: {method: EMA, calibration: {files: {x: calibration/*.npy}, max_samples: 3}}",
        f"      quantize: {quantize}") + extra)
    try:
        load_suite(root / "m.yaml", root)
    except ManifestError as error:
        return [str(issue) for issue in error.issues]
    return []


@pytest.mark.parametrize("quantize, expected", [
    ("{method: MINMAX}", "models[0].convert.quantize.method"),
    ("{bits: 9}", "9 is greater than the maximum of 8"),
    ("{bits: 1}", "1 is less than the minimum of 2"),
    ("{method: EMA, colour: 1}", "unknown key 'colour'"),
    ("{calibration: {max_samples: 0}}", "0 is less than the minimum of 1"),
    ("{calibration: {files: {}}}", "models[0].convert.quantize.calibration.files"),
    ("{weights: KL}", "models[0].convert.quantize.weights"),
])
def test_the_schema_refuses_bad_quantize_settings(quantized_repo: Path, quantize, expected):
    issues = manifest_issues(quantized_repo, quantize)
    assert any(expected in issue for issue in issues), issues
    assert all(issue.startswith("m.yaml:8: ") for issue in issues), issues


@pytest.mark.parametrize("quantize, extra, expected", [
    ("{method: ADMM, calibration: {max_samples: 4}}", "",
     "calibration.max_samples: MNN's ADMM calibrates on the last sample only"),
    ("{calibration: {files: {y: calibration/*.npy}}}", "", "calibration.files.y: calibration files are for the input "
                                                           "that lists files (['x']), not 'y'"),
    ("{calibration: {files: {x: nowhere/*.npy}}}", "", "calibration.files.x: glob 'nowhere/*.npy'"),
    ("{calibration: {files: {x: ../*.npy}}}", "", "leaves the repository root"),
    ("{method: EMA}", "    stream: {input: x}\n", "a streamed model cannot be quantized"),
])
def test_what_mnns_quantizer_cannot_do_is_a_manifest_error(quantized_repo: Path, quantize, extra, expected):
    issues = manifest_issues(quantized_repo, quantize, extra)
    assert any(expected in issue for issue in issues), issues


def test_a_sound_quantize_entry_validates(quantized_repo: Path):
    assert manifest_issues(quantized_repo, "{method: ADMM, weights: ADMM, bits: 4, skip_ops: [conv1]}") == []
    assert manifest_issues(quantized_repo, "{calibration: {files: {x: [calibration/s1.npy, inputs/*.npy]}}}") == []


@pytest.mark.parametrize("crash, verdict_is_crash", [
    ("killed by SIGSEGV", True), ("timeout after 300 s", True), ("memory cap of 8192 MiB exceeded", True),
    ("exited with status 1", False), ("could not start /no/python: [Errno 2]", False), ("", False)])
def test_only_a_death_is_a_crash(crash, verdict_is_crash):
    from mnn_parity.conversion.result import Conversion

    assert Conversion(False, None, "", crash=crash).crashed is verdict_is_crash
