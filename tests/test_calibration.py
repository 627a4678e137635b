"""Calibration samples: made by the preprocessing that makes the inference feeds, and written in MNN's sequence
format so that MNN reads back exactly those tensors."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from mnn_parity.execution.model_work import ModelWork
from mnn_parity.execution.plan import RunOptions, plan
from mnn_parity.inputs.calibration import (calibration_feeds, calibration_model, read_sequence, samples_sha256,
                                           write_sequence)
from mnn_parity.inputs.cases import constant_feeds, list_cases
from mnn_parity.inputs.preprocess import PreprocessError
from mnn_parity.manifest.load import load_suite
from mnn_parity.manifest.spec import QuantizeSpec, Suite
from mnn_parity.modelinfo import onnx_signature

ROOT = Path(__file__).resolve().parent.parent
# The bundled OCR suite's real images (data/, restored by `mnn-parity data restore`); the synthetic repository test
# below needs nothing.
needs_data = pytest.mark.skipif(not (ROOT / "data/models/ppocr/cls.onnx").exists(), reason="data/ is not restored")


def with_quantize(suite: Suite, name: str, spec: QuantizeSpec) -> Suite:
    models = tuple(dataclasses.replace(m, convert=dataclasses.replace(m.convert, quantize=spec)) if m.name == name
                   else m for m in suite.models)
    return dataclasses.replace(suite, models=models)


def inference_feeds(suite: Suite, name: str, tmp_path: Path) -> list[dict]:
    """The feeds a run gives the engines, from the run's own preparation step."""
    (item,) = [i for i in plan(suite, RunOptions(cache_dir=tmp_path / ".cache"), {}) if i.model.name == name]
    work = ModelWork(item, None, lambda result: None, lambda model, what: None)
    cases = list_cases(item.model, suite.root)
    prepared = work._prepare(cases, constant_feeds(item.model), onnx_signature(item.model.onnx)[0])
    assert not work.setup_errors
    return [feeds for _, feeds in prepared]


@pytest.mark.parametrize("name", ["ppocr-cls", "ppocr-rec"])
@needs_data
def test_mnn_reads_back_exactly_the_tensors_inference_feeds(tmp_path: Path, name: str):
    """The bundled OCR suite's real images and preprocessing: calibration folders, read as MNN reads them (text to
    double to the input's type), equal the run's feeds bit for bit."""
    suite = with_quantize(load_suite(ROOT / "suites/ocr.yaml", ROOT), name, QuantizeSpec(method="EMA"))
    model = next(m for m in suite.models if m.name == name)
    samples = calibration_feeds(model, ROOT, onnx_signature(model.onnx)[0])
    assert write_sequence(samples, tmp_path / "seq") == len(samples) == 7
    read = read_sequence(tmp_path / "seq")
    feeds = inference_feeds(suite, name, tmp_path)
    assert len(read) == len(feeds)
    for mnn_sees, inference in zip(read, feeds):
        assert set(mnn_sees) == set(inference) == {"x"}
        assert mnn_sees["x"].shape == inference["x"].shape
        assert np.array_equal(mnn_sees["x"].astype(inference["x"].dtype), inference["x"])


def test_the_sequence_folder_is_what_mnns_calibration_reader_expects(tmp_path: Path):
    samples = [{"x": np.arange(6, dtype=np.float32).reshape(1, 2, 3), "n": np.array([3, -4], np.int64)}]
    write_sequence(samples, tmp_path / "seq")
    assert sorted(p.name for p in (tmp_path / "seq").iterdir()) == ["00000"]   # every entry is taken as a sample
    sample = tmp_path / "seq/00000"
    assert json.loads((sample / "input.json").read_text()) == {
        "inputs": [{"name": "x", "shape": [1, 2, 3]}, {"name": "n", "shape": [2]}]}
    assert (sample / "x.txt").read_text().split() == ["0", "1", "2", "3", "4", "5"]
    assert (sample / "n.txt").read_text().split() == ["3", "-4"]


def test_awkward_float32_values_survive_the_text_round_trip(tmp_path: Path):
    tricky = np.array([1e-45, -0.0, 3.4028235e38, 0.1, 1 / 3, -2.5e-8, 16777217], np.float32)
    long = np.random.RandomState(0).randn(4096 * 2 + 5).astype(np.float32)   # whole lines and a remainder
    write_sequence([{"a": tricky, "b": long}], tmp_path / "seq")
    (back,) = read_sequence(tmp_path / "seq")
    assert np.array_equal(back["a"].astype(np.float32), tricky) and np.array_equal(back["b"].astype(np.float32), long)
    assert np.signbit(back["a"][1])


def test_an_input_name_that_climbs_out_of_the_sample_is_refused(tmp_path: Path):
    with pytest.raises(PreprocessError, match="cannot be a calibration file name"):
        write_sequence([{"../evil": np.zeros(1, np.float32)}], tmp_path / "seq")
    assert not (tmp_path / "evil.txt").exists()
    write_sequence([{"a/b": np.zeros(1, np.float32)}], tmp_path / "ok")      # MNN opens "<sample>/a/b.txt"
    assert (tmp_path / "ok/00000/a/b.txt").exists()


def test_the_samples_hash_changes_with_any_value_name_or_order():
    a, b = np.zeros((1, 4), np.float32), np.ones((1, 4), np.float32)
    base = samples_sha256([{"x": a}, {"x": b}])
    assert base == samples_sha256([{"x": a.copy()}, {"x": b.copy()}])
    changed = b.copy()
    changed[0, 3] = np.nextafter(np.float32(1), np.float32(2))
    assert len({base, samples_sha256([{"x": a}, {"x": changed}]), samples_sha256([{"y": a}, {"y": b}]),
                samples_sha256([{"x": b}, {"x": a}]), samples_sha256([{"x": a}]),
                samples_sha256([{"x": a.astype(np.float64)}, {"x": b}])}) == 6


@needs_data
def test_calibration_files_replace_the_case_files_with_the_same_preprocessing(tmp_path: Path):
    suite = load_suite(ROOT / "suites/ocr.yaml", ROOT)
    cls = next(m for m in suite.models if m.name == "ppocr-cls")
    spec = QuantizeSpec(method="EMA", files=(("x", ("data/images/text_lines/page_line0[23].pgm",)),))
    model = dataclasses.replace(cls, convert=dataclasses.replace(cls.convert, quantize=spec))
    assert calibration_model(model).inputs["x"].preprocess == cls.inputs["x"].preprocess
    samples = calibration_feeds(model, ROOT)
    feeds = inference_feeds(suite, "ppocr-cls", tmp_path)
    assert len(samples) == 2
    assert np.array_equal(samples[0]["x"], feeds[1]["x"]) and np.array_equal(samples[1]["x"], feeds[2]["x"])


@needs_data
def test_the_sample_count_is_capped_by_max_samples_and_by_the_models_own_max_cases():
    cls = next(m for m in load_suite(ROOT / "suites/ocr.yaml", ROOT).models if m.name == "ppocr-cls")
    quantized = dataclasses.replace(cls, convert=dataclasses.replace(cls.convert, quantize=QuantizeSpec(max_samples=3)))
    assert len(calibration_feeds(quantized, ROOT)) == 3
    assert len(calibration_feeds(dataclasses.replace(quantized, max_cases=2), ROOT)) == 2
    admm = dataclasses.replace(cls, convert=dataclasses.replace(cls.convert, quantize=QuantizeSpec(method="ADMM")))
    assert len(calibration_feeds(admm, ROOT)) == 1


@needs_data
def test_no_calibration_file_or_a_misfit_is_a_preprocessing_error():
    cls = next(m for m in load_suite(ROOT / "suites/ocr.yaml", ROOT).models if m.name == "ppocr-cls")
    none = QuantizeSpec(files=(("x", ("data/images/text_lines/*.nothing",)),))
    with pytest.raises(PreprocessError, match="no calibration samples"):
        calibration_feeds(dataclasses.replace(cls, convert=dataclasses.replace(cls.convert, quantize=none)), ROOT)
    det_sized = QuantizeSpec(files=(("x", ("data/images/documents/page.png",)),))
    unpadded = dataclasses.replace(cls, convert=dataclasses.replace(cls.convert, quantize=det_sized),
                                   inputs={"x": dataclasses.replace(cls.inputs["x"], preprocess=(
                                       {"decode": {"color": "BGR"}}, {"layout": "NCHW"}, {"dtype": "float32"}))})
    with pytest.raises(PreprocessError, match="calibration sample: input 'x': preprocessing gives shape"):
        calibration_feeds(unpadded, ROOT, {"x": (None, 3, 48, 192)})


def test_images_resized_in_a_small_repository_calibrate_on_the_run_feeds(tmp_path: Path, monkeypatch):
    """Without data/: PNG files, decoded, resized, normalised and padded by the pipeline a run uses."""
    from PIL import Image

    from tests import onnx_models

    onnx_models.conv_relu(tmp_path / "models/conv.onnx", size=16)
    (tmp_path / "images").mkdir()
    rng = np.random.RandomState(0)
    for i, (h, w) in enumerate([(20, 30), (17, 11), (40, 16)]):
        Image.fromarray(rng.randint(0, 256, (h, w, 3), np.uint8)).save(tmp_path / f"images/i{i}.png")
    (tmp_path / "s.yaml").write_text(
        "suite: s\nmodels:\n  - name: conv\n    onnx: models/conv.onnx\n"
        "    convert: {quantize: {method: KL, calibration: {max_samples: 2}}}\n"
        "    inputs:\n      x:\n        files: images/*.png\n        preprocess:\n"
        "          - decode: {color: RGB}\n          - resize: {height: 16, width: 16, keep_ratio: true}\n"
        "          - normalize: {scale: 0.00392156862745098, mean: 0.5, std: 0.25}\n"
        "          - pad: {height: 16, width: 16, value: 0}\n          - layout: NCHW\n          - dtype: float32\n")
    suite = load_suite(tmp_path / "s.yaml", tmp_path)
    samples = calibration_feeds(suite.models[0], tmp_path)
    write_sequence(samples, tmp_path / "seq")
    read = read_sequence(tmp_path / "seq")
    feeds = inference_feeds(suite, "conv", tmp_path)
    assert len(read) == 2 and len(feeds) == 3
    for mnn_sees, inference in zip(read, feeds):
        assert np.array_equal(mnn_sees["x"].astype(np.float32), inference["x"])
