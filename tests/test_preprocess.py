"""The preprocessing spec as a whole: the schema against the step table, where steps may go, the errors a step
list gets, complex data, a whole pipeline on a real file, and degenerate inputs. Each step family has its own
file: test_preprocess_image.py, test_preprocess_audio.py, test_preprocess_numeric.py."""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

from mnn_parity.inputs.preprocess import (PreprocessError, check_steps, degenerate_reason, is_source_step, run_pipeline,
                                          step_names)
from mnn_parity.inputs.preprocess.options import REQUIRED
from mnn_parity.inputs.preprocess.pipeline import STEPS

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "preprocess.schema.json"
PIXELS = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]],
                   [[10, 20, 30], [128, 128, 128], [255, 255, 255]]], dtype=np.uint8)


def write_png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)
    return path


# --- schema ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def schema():
    return json.loads(SCHEMA_PATH.read_text())


@pytest.fixture(scope="module")
def validator(schema):
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_is_valid_and_names_the_same_steps(schema):
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$id"] == "https://mnn-parity.local/schemas/preprocess.schema.json"
    branches = [schema["$defs"][ref["$ref"].split("/")[-1]] for ref in schema["$defs"]["step"]["oneOf"]]
    names = [b["required"][0] for b in branches]
    assert names == step_names()
    for branch in branches:
        assert branch["additionalProperties"] is False and list(branch["properties"]) == branch["required"]


def test_schema_options_match_the_code(schema):
    for name in step_names():
        body = schema["$defs"][f"step_{name}"]["properties"][name]
        fields = STEPS[name].fields
        if fields is None:
            assert body.get("type") != "object", name
            continue
        assert body["additionalProperties"] is False, name
        assert list(body["properties"]) == list(fields), name
        required = [k for k, (_, default) in fields.items() if default is REQUIRED]
        assert sorted(body.get("required", [])) == sorted(required), name
        for key, (check, default) in fields.items():
            spec = body["properties"][key]
            if "$ref" in spec:
                spec = {**schema["$defs"][spec["$ref"].split("/")[-1]], **spec}
            if hasattr(check, "choices"):
                assert spec["enum"] == list(check.choices), (name, key)
            if default is not REQUIRED and default is not None:
                assert spec["default"] == default, (name, key)


GOOD = [
    [{"decode": {"color": "BGR"}}, {"resize": {"height": 32, "width": 64, "keep_ratio": True, "multiple_of": 32}},
     {"normalize": {"scale": 0.0039, "mean": [0.5, 0.5, 0.5], "std": 0.5}}, {"layout": "NCHW"}, {"dtype": "float32"}],
    [{"audio": {"sample_rate": 16000, "resample": True}}, {"frame": {"size": 512, "hop": 256}}],
    [{"zeros": {"shape": [2, 1, 128], "dtype": "float32"}}],
    [{"value": {"data": [[1, 2], [3, 4]], "dtype": "int64", "shape": [4]}}, {"clip": {"max": 3}}],
    [{"load": {"key": "x"}}, {"batch": True}, {"expand": {"axis": -1}}, {"reshape": [1, -1]}, {"transpose": [1, 0]}],
    [{"decode": {}}, {"letterbox": {"height": 640, "width": 640, "value": [114, 114, 114]}},
     {"crop": {"height": 600, "width": 600, "mode": "topleft"}}, {"pad": {"height": 640, "width": 640}},
     {"scale": 0.5}],
    [{"decode": {}}, {"resize": {"short_side": 256, "interpolation": "bicubic"}}, {"crop": {"height": 224, "width": 224}}],
    [{"decode": {}}, {"resize": {"short_side": 256, "multiple_of": 32, "keep_ratio": False}}],
]
BAD = [
    [{"resise": {"height": 1, "width": 1}}],
    [{"decode": {"color": "rgb"}}],
    [{"decode": {"colour": "RGB"}}],
    [{"resize": {"height": 1}}],
    [{"resize": {"height": 0, "width": 1}}],
    [{"resize": {}}],
    [{"resize": {"short_side": 0}}],
    [{"resize": {"short_side": 256, "height": 224}}],
    [{"resize": {"short_side": 256, "height": 224, "width": 224}}],
    [{"resize": {"short_side": 256, "keep_ratio": True}}],
    [{"decode": {}, "scale": 2}],
    [{"layout": "CHWN"}],
    [{"clip": {}}],
    [{"dtype": "float64"}],
    [{"dtype": "complex64"}],
    [{"dtype": "complex128"}],
    [{"zeros": {"shape": [2, -1]}}],
    [{"zeros": {"shape": [2], "dtype": "complex64"}}],
    [{"batch": "yes"}],
]


@pytest.mark.parametrize("steps", GOOD)
def test_schema_and_code_accept_the_same_good_steps(validator, steps):
    assert list(validator.iter_errors(steps)) == []
    source = "none" if is_source_step(steps[0]) and steps[0].get("zeros", steps[0].get("value")) else "file"
    assert check_steps(steps, source) == []


@pytest.mark.parametrize("steps", BAD)
def test_schema_and_code_reject_the_same_bad_steps(validator, steps):
    assert list(validator.iter_errors(steps))
    assert check_steps(steps, "file")


def test_manifest_schema_can_ref_the_steps(schema):
    from referencing import Registry, Resource
    manifest = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                "$id": "https://mnn-parity.local/schemas/manifest.schema.json",
                "type": "object", "properties": {"preprocess": {"$ref": "preprocess.schema.json#/$defs/steps"}}}
    registry = Registry().with_resource(schema["$id"], Resource.from_contents(schema))
    v = jsonschema.Draft202012Validator(manifest, registry=registry)
    assert v.is_valid({"preprocess": [{"layout": "NCHW"}]})
    assert not v.is_valid({"preprocess": [{"layout": "nchw"}]})


# --- where source steps may go ---------------------------------------------------------------------------------

def test_source_step_with_an_array_source_is_an_error():
    with pytest.raises(PreprocessError) as info:
        run_pipeline([{"scale": 2.0}, {"decode": {}}], np.zeros(3), label="data/vad/a.npz[input]")
    assert (info.value.file, info.value.step_index, info.value.step) == ("data/vad/a.npz[input]", 2, "decode")
    assert str(info.value).startswith("data/vad/a.npz[input]: step 2 (decode): decode is a source step")


def test_placement_of_source_steps(tmp_path):
    png = write_png(tmp_path / "x.png", PIXELS)
    with pytest.raises(PreprocessError, match=r"x\.png: step 1 \(zeros\): this input has files"):
        run_pipeline([{"zeros": {"shape": [1]}}], png)
    with pytest.raises(PreprocessError, match=r"x\.png: step 1 \(scale\): this input has files"):
        run_pipeline([{"scale": 2.0}], png)
    with pytest.raises(PreprocessError, match=r"step 1 \(decode\): decode reads a file, but this input has no files"):
        run_pipeline([{"decode": {}}])
    with pytest.raises(PreprocessError, match=r"step 2 \(zeros\): zeros is a source step and must be the first"):
        run_pipeline([{"zeros": {"shape": [1]}}, {"zeros": {"shape": [1]}}])
    with pytest.raises(PreprocessError, match="no steps"):
        run_pipeline([], png)
    assert run_pipeline([], np.ones(2)).tolist() == [1.0, 1.0]   # a .npz case needs no steps


def test_unknown_step_and_option_name_file_and_step(tmp_path):
    png = write_png(tmp_path / "x.png", PIXELS)
    with pytest.raises(PreprocessError) as info:
        run_pipeline([{"decode": {}}, {"resise": {"height": 2, "width": 2}}], png)
    assert str(info.value) == f"{png}: step 2 (resise): unknown step 'resise' (did you mean 'resize'?)"
    with pytest.raises(PreprocessError, match=r"step 2 \(resize\): unknown option 'hieght' \(did you mean 'height'\?\)"):
        run_pipeline([{"decode": {}}, {"resize": {"hieght": 2, "width": 2}}], png)
    with pytest.raises(PreprocessError, match=r"step 1: a step is a one-key map"):
        run_pipeline([{"decode": {}, "scale": 2}], png)


def test_error_rebuilds_from_its_reduce_tuple():
    # deepcopy goes through __reduce_ex__, the same path a worker process uses to send the error back
    e = copy.deepcopy(PreprocessError("bad", file="data/x.png", step_index=2, step="resize"))
    assert (e.file, e.step_index, e.step, e.message) == ("data/x.png", 2, "resize", "bad")
    assert str(e) == "data/x.png: step 2 (resize): bad"


def test_check_steps_collects_every_error():
    errors = check_steps([{"scale": "x"}, {"resise": {}}, {"layout": "NCHW"}, {"normalize": {}}], "array")
    assert [(e.step_index, e.step) for e in errors] == [(1, "scale"), (2, "resise"), (4, "normalize")]
    assert "move it before layout" in errors[2].message
    assert is_source_step({"zeros": {"shape": [1]}}) and is_source_step({"decode": {}})
    assert not is_source_step({"resize": {}}) and not is_source_step({"nope": {}})


# --- complex data ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps, step", [
    ([{"dtype": "float32"}], "dtype"),
    ([{"reshape": [-1]}, {"dtype": "int32"}], "reshape"),
    ([{"scale": 2.0}], "scale"),
])
def test_a_complex_array_is_refused_not_cast_to_its_real_part(steps, step):
    x = np.array([[1 + 2j, 3 - 4j]], dtype=np.complex128)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # numpy's ComplexWarning is what a silent cast would raise
        with pytest.raises(PreprocessError) as info:
            run_pipeline(steps, x, label="data/c.npz[x]")
    assert (info.value.file, info.value.step_index, info.value.step) == ("data/c.npz[x]", 1, step)
    assert "complex128" in info.value.message and "imaginary part" in info.value.message


def test_a_complex_array_with_no_steps_is_refused_too():
    with pytest.raises(PreprocessError, match=r"^data/c\.npz\[x\]: the array is complex \(complex64\)"):
        run_pipeline([], np.zeros(2, np.complex64), label="data/c.npz[x]")


# --- a whole pipeline ------------------------------------------------------------------------------------------

def test_ocr_style_pipeline_on_a_real_png(tmp_path):
    rng = np.random.default_rng(1)
    png = write_png(tmp_path / "doc.png", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    steps = [{"decode": {"color": "RGB"}},
             {"resize": {"height": 64, "width": 64, "keep_ratio": True, "multiple_of": 32}},
             {"normalize": {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}},
             {"layout": "NCHW"}, {"dtype": "float32"}]
    x = run_pipeline(steps, png)
    assert x.shape == (1, 3, 32, 64) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_array_equal(x, run_pipeline(steps, png))   # deterministic: both engines see these bytes


def test_imagenet_style_pipeline_short_side_then_centre_crop(tmp_path):
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    png = write_png(tmp_path / "photo.png", pixels)
    x = run_pipeline([{"decode": {}}, {"resize": {"short_side": 256}}, {"crop": {"height": 224, "width": 224}},
                      {"layout": "NCHW"}], png)
    # 300x400 → short side 256, long 400*256/300 = 341.33 → 341; centre crop starts at (16, 58)
    resized = np.asarray(Image.fromarray(pixels).resize((341, 256), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(x[0], resized[16:240, 58:282].transpose(2, 0, 1))


# --- degenerate inputs -----------------------------------------------------------------------------------------

def test_degenerate_reason():
    assert degenerate_reason(np.zeros((1, 3, 4, 4), np.float32)) == "constant: all 48 values are 0"
    assert degenerate_reason(np.ones(5, np.float16)) == "constant: all 5 values are 1"
    near = np.full(100, 1000.0, np.float64)
    near[0] += 1e-3                                   # std ~1e-4 <= 1e-6 * 1000
    assert "near-zero variance" in degenerate_reason(near)
    assert degenerate_reason(np.float32([0.0, 1e-3])) is None          # small but real variance at scale 1
    assert degenerate_reason(np.random.default_rng(0).standard_normal(64).astype(np.float32)) is None
    assert "NaN" in degenerate_reason(np.float32([1, np.nan, np.inf]))
    assert degenerate_reason(np.zeros(8, np.int64)) is None             # ids and masks are constant by nature
    assert degenerate_reason(np.float32([3.0])) is None
