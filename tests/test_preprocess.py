"""The preprocessing spec: each step against hand-computed results, real files written here, and the schema."""
from __future__ import annotations

import json
import wave
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

from mnn_parity.inputs import preprocess as pp
from mnn_parity.inputs.preprocess import (PreprocessError, check_steps, degenerate_reason, is_source_step, run_pipeline,
                               step_names)

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "preprocess.schema.json"


def run(steps, x):
    return run_pipeline(steps, np.asarray(x))


def hwc(h, w, c=3):
    return np.arange(h * w * c, dtype=np.uint8).reshape(h, w, c)


def write_png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)
    return path


def write_wav(path: Path, samples: np.ndarray, rate: int, width: int = 2, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
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
        fields = pp._STEPS[name].fields
        if fields is None:
            assert body.get("type") != "object", name
            continue
        assert body["additionalProperties"] is False, name
        assert list(body["properties"]) == list(fields), name
        required = [k for k, (_, default) in fields.items() if default is pp._REQUIRED]
        assert sorted(body.get("required", [])) == sorted(required), name
        for key, (check, default) in fields.items():
            spec = body["properties"][key]
            if "$ref" in spec:
                spec = {**schema["$defs"][spec["$ref"].split("/")[-1]], **spec}
            if hasattr(check, "choices"):
                assert spec["enum"] == list(check.choices), (name, key)
            if default is not pp._REQUIRED and default is not None:
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
]
BAD = [
    [{"resise": {"height": 1, "width": 1}}],
    [{"decode": {"color": "rgb"}}],
    [{"decode": {"colour": "RGB"}}],
    [{"resize": {"height": 1}}],
    [{"resize": {"height": 0, "width": 1}}],
    [{"decode": {}, "scale": 2}],
    [{"layout": "CHWN"}],
    [{"clip": {}}],
    [{"dtype": "float64"}],
    [{"zeros": {"shape": [2, -1]}}],
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


# --- source steps ----------------------------------------------------------------------------------------------

PIXELS = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]],
                   [[10, 20, 30], [128, 128, 128], [255, 255, 255]]], dtype=np.uint8)


def test_decode_rgb_bgr_gray(tmp_path):
    png = write_png(tmp_path / "x.png", PIXELS)
    rgb = run_pipeline([{"decode": {"color": "RGB"}}], png)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    np.testing.assert_array_equal(rgb, PIXELS)
    bgr = run_pipeline([{"decode": {"color": "BGR"}}], png)
    np.testing.assert_array_equal(bgr[0, 0], [0, 0, 255])
    np.testing.assert_array_equal(bgr, PIXELS[:, :, ::-1])
    gray = run_pipeline([{"decode": {"color": "GRAY"}}], str(png))
    assert gray.shape == (2, 3, 1)
    # ITU-R 601-2 luma: pure red 0.299*255 = 76.2, grey and white unchanged
    assert gray[0, 0, 0] == 76 and gray[1, 1, 0] == 128 and gray[1, 2, 0] == 255


def test_decode_drops_alpha_and_expands_palette(tmp_path):
    rgba = np.dstack([PIXELS, np.full((2, 3), 7, np.uint8)])
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    np.testing.assert_array_equal(run_pipeline([{"decode": {}}], path), PIXELS)
    Image.fromarray(PIXELS).convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(tmp_path / "p.png")
    np.testing.assert_array_equal(run_pipeline([{"decode": {}}], tmp_path / "p.png"), PIXELS)


def test_decode_of_a_non_image_names_file_and_step(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(PreprocessError) as info:
        run_pipeline([{"decode": {"color": "RGB"}}, {"resize": {"height": 2, "width": 2}}], bad)
    e = info.value
    assert (e.file, e.step_index, e.step) == (str(bad), 1, "decode")
    assert str(e).startswith(f"{bad}: step 1 (decode): ") and "decode" in e.message


def test_wav_16bit_exact_values(tmp_path):
    samples = np.array([0, 16384, -16384, 32767, -32768, 1], dtype="<i2")
    x = run_pipeline([{"audio": {"sample_rate": 8000}}], write_wav(tmp_path / "a.wav", samples, 8000))
    assert x.dtype == np.float32 and x.shape == (6,)
    np.testing.assert_array_equal(x, np.float32([0, 0.5, -0.5, 32767 / 32768, -1.0, 1 / 32768]))


def test_wav_8_24_32_bit_and_stereo(tmp_path):
    u8 = np.array([128, 192, 0, 255], dtype=np.uint8)
    x = run_pipeline([{"audio": {"sample_rate": 8000}}], write_wav(tmp_path / "u8.wav", u8, 8000, width=1))
    np.testing.assert_array_equal(x, np.float32([0, 0.5, -1, 127 / 128]))
    # 24-bit little-endian: 0x400000 = 0.5, 0xC00000 = -0.5, 0x800000 = -1
    raw24 = np.frombuffer(bytes([0, 0, 0x40, 0, 0, 0xC0, 0, 0, 0x80]), dtype=np.uint8)
    x = run_pipeline([{"audio": {"sample_rate": 8000}}], write_wav(tmp_path / "s24.wav", raw24, 8000, width=3))
    np.testing.assert_array_equal(x, np.float32([0.5, -0.5, -1]))
    i32 = np.array([2 ** 30, -(2 ** 31)], dtype="<i4")
    x = run_pipeline([{"audio": {"sample_rate": 8000}}], write_wav(tmp_path / "s32.wav", i32, 8000, width=4))
    np.testing.assert_array_equal(x, np.float32([0.5, -1]))
    stereo = np.array([16384, 0, -16384, -16384], dtype="<i2")   # frames (L, R): (0.5, 0), (-0.5, -0.5)
    path = write_wav(tmp_path / "st.wav", stereo, 8000, channels=2)
    np.testing.assert_array_equal(run_pipeline([{"audio": {"sample_rate": 8000}}], path), np.float32([0.25, -0.5]))
    both = run_pipeline([{"audio": {"sample_rate": 8000, "mono": False}}], path)
    np.testing.assert_array_equal(both, np.float32([[0.5, 0], [-0.5, -0.5]]))


def test_wav_wrong_rate_without_resample_is_an_error(tmp_path):
    path = write_wav(tmp_path / "a.wav", np.zeros(80, "<i2"), 8000)
    with pytest.raises(PreprocessError) as info:
        run_pipeline([{"audio": {"sample_rate": 16000}}], path)
    assert str(info.value).startswith(f"{path}: step 1 (audio): sample rate is 8000 Hz")
    assert "resample: true" in str(info.value)


def test_wav_resample_8000_to_16000(tmp_path):
    t = np.arange(800) / 8000
    samples = (np.sin(2 * np.pi * 440 * t) * 16000).astype("<i2")
    x = run_pipeline([{"audio": {"sample_rate": 16000, "resample": True}}], write_wav(tmp_path / "a.wav", samples, 8000))
    assert x.dtype == np.float32 and x.shape == (1600,)
    # a 440 Hz tone survives: every second sample of the resampled signal tracks the original away from the edges
    np.testing.assert_allclose(x[200:1400:2], samples[100:700] / 32768, atol=0.01)


def test_non_wav_is_an_error(tmp_path):
    path = tmp_path / "a.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00JUNK")
    with pytest.raises(PreprocessError, match=r"a\.wav: step 1 \(audio\): not a PCM WAV"):
        run_pipeline([{"audio": {}}], path)


def test_load_npy_and_npz(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.save(tmp_path / "a.npy", a)
    np.testing.assert_array_equal(run_pipeline([{"load": {}}], tmp_path / "a.npy"), a)
    np.savez(tmp_path / "b.npz", x=a, y=a * 2)
    np.testing.assert_array_equal(run_pipeline([{"load": {"key": "y"}}], tmp_path / "b.npz"), a * 2)
    with pytest.raises(PreprocessError, match=r"b\.npz: step 1 \(load\): no array 'z'.*holds x, y"):
        run_pipeline([{"load": {"key": "z"}}], tmp_path / "b.npz")
    with pytest.raises(PreprocessError, match="holds 2 arrays"):
        run_pipeline([{"load": {}}], tmp_path / "b.npz")


def test_zeros_and_value():
    z = run_pipeline([{"zeros": {"shape": [2, 1, 3]}}])
    assert z.dtype == np.float32 and z.shape == (2, 1, 3) and not z.any()
    sr = run_pipeline([{"value": {"data": 16000, "dtype": "int64"}}])
    assert sr.dtype == np.int64 and sr.shape == () and sr == 16000
    np.testing.assert_array_equal(run_pipeline([{"value": {"data": 2, "shape": [2, 2]}}]), np.full((2, 2), 2.0))
    np.testing.assert_array_equal(run_pipeline([{"value": {"data": [1, 2, 3, 4], "dtype": "int32", "shape": [2, 2]}}]),
                                  np.int32([[1, 2], [3, 4]]))
    with pytest.raises(PreprocessError, match="has 3 values but 'shape'"):
        run_pipeline([{"value": {"data": [1, 2, 3], "shape": [2, 2]}}])
    with pytest.raises(PreprocessError, match="cannot be made a float32 array"):
        run_pipeline([{"value": {"data": [[1, 2], [3]]}}])


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
    import copy
    e = copy.deepcopy(PreprocessError("bad", file="data/x.png", step_index=2, step="resize"))
    assert (e.file, e.step_index, e.step, e.message) == ("data/x.png", 2, "resize", "bad")
    assert str(e) == "data/x.png: step 2 (resize): bad"


def test_check_steps_collects_every_error():
    errors = check_steps([{"scale": "x"}, {"resise": {}}, {"layout": "NCHW"}, {"normalize": {}}], "array")
    assert [(e.step_index, e.step) for e in errors] == [(1, "scale"), (2, "resise"), (4, "normalize")]
    assert "move it before layout" in errors[2].message
    assert is_source_step({"zeros": {"shape": [1]}}) and is_source_step({"decode": {}})
    assert not is_source_step({"resize": {}}) and not is_source_step({"nope": {}})


# --- image steps -----------------------------------------------------------------------------------------------

def test_resize_exact_size_and_nearest_values():
    x = np.array([[[1], [2]], [[3], [4]]], dtype=np.uint8)
    y = run(x=x, steps=[{"resize": {"height": 4, "width": 4, "interpolation": "nearest"}}])
    assert y.dtype == np.uint8
    np.testing.assert_array_equal(y[:, :, 0], [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])


def test_resize_keep_ratio_and_multiple_of_dimensions():
    img = np.zeros((10, 20, 3), np.uint8)
    assert run([{"resize": {"height": 40, "width": 40, "keep_ratio": True}}], img).shape == (20, 40, 3)
    assert run([{"resize": {"height": 5, "width": 100, "keep_ratio": True}}], img).shape == (5, 10, 3)
    # 30x50 fits 100x100 at x2 → 60x100; to multiples of 32 (nearest, halves up) → 64x96
    img = np.zeros((30, 50, 3), np.uint8)
    assert run([{"resize": {"height": 100, "width": 100, "keep_ratio": True, "multiple_of": 32}}], img).shape == (64, 96, 3)
    # never below one multiple: 10 → 32
    assert run([{"resize": {"height": 10, "width": 48, "multiple_of": 32}}], img).shape == (32, 64, 3)
    assert pp.round_to_multiple(48, 32) == 64 and pp.round_to_multiple(47, 32) == 32
    assert pp.fit_size(3, 5, 4, 4) == (2, 4)   # 3*0.8 = 2.4 → 2


def test_resize_uint8_per_channel_matches_pillow_rgb_and_float_keeps_values():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    for interpolation, f in [("bilinear", Image.Resampling.BILINEAR), ("area", Image.Resampling.BOX),
                             ("bicubic", Image.Resampling.BICUBIC)]:
        ours = run([{"resize": {"height": 5, "width": 13, "interpolation": interpolation}}], x)
        np.testing.assert_array_equal(ours, np.asarray(Image.fromarray(x).resize((13, 5), f)))
    flat = np.full((4, 6, 2), -1.25, np.float32)
    y = run([{"resize": {"height": 3, "width": 3}}], flat)
    assert y.dtype == np.float32 and y.shape == (3, 3, 2)
    np.testing.assert_allclose(y, -1.25, rtol=1e-6)


def test_wrong_rank_is_an_error():
    with pytest.raises(PreprocessError, match=r"step 1 \(resize\): expects an HWC image \(rank 3\), got .*\(4, 4\)"):
        run([{"resize": {"height": 2, "width": 2}}], np.zeros((4, 4), np.uint8))
    with pytest.raises(PreprocessError, match=r"step 1 \(frame\): expects a 1-D signal"):
        run([{"frame": {}}], np.zeros((4, 4), np.float32))


def test_crop_center_and_topleft():
    x = hwc(4, 5, 1)
    np.testing.assert_array_equal(run([{"crop": {"height": 2, "width": 3}}], x)[:, :, 0], [[6, 7, 8], [11, 12, 13]])
    np.testing.assert_array_equal(run([{"crop": {"height": 2, "width": 2, "mode": "topleft"}}], x)[:, :, 0],
                                  [[0, 1], [5, 6]])
    with pytest.raises(PreprocessError, match="smaller than the crop"):
        run([{"crop": {"height": 5, "width": 2}}], x)


def test_pad_topleft_center_and_per_channel_value():
    x = np.ones((1, 2, 1), np.uint8)
    np.testing.assert_array_equal(run([{"pad": {"height": 2, "width": 3}}], x)[:, :, 0], [[1, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(run([{"pad": {"height": 3, "width": 4, "value": 9, "align": "center"}}], x)[:, :, 0],
                                  [[9, 9, 9, 9], [9, 1, 1, 9], [9, 9, 9, 9]])
    y = run([{"pad": {"height": 1, "width": 3, "value": [5, 6]}}], np.zeros((1, 1, 2), np.float32))
    np.testing.assert_array_equal(y[0], [[0, 0], [5, 6], [5, 6]])
    with pytest.raises(PreprocessError, match="does not fit"):
        run([{"pad": {"height": 2, "width": 2, "value": 300}}], x)


def test_letterbox_fits_and_centres():
    x = np.full((2, 4, 3), 200, np.uint8)
    y = run([{"letterbox": {"height": 8, "width": 8}}], x)   # 2x4 → 4x8, rows 2..5 of 8
    assert y.shape == (8, 8, 3)
    assert (y[:2] == 114).all() and (y[6:] == 114).all() and (y[2:6] == 200).all()


# --- numeric steps ---------------------------------------------------------------------------------------------

def test_scale_and_normalize_hand_computed():
    x = np.array([[[255, 0, 51]]], np.uint8)
    np.testing.assert_array_equal(run([{"scale": 0.5}], x), np.float32([[[127.5, 0, 25.5]]]))
    y = run([{"normalize": {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}], x)
    assert y.dtype == np.float32 and y.shape == (1, 1, 3)
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225]
    np.testing.assert_allclose(y[0, 0], expected, rtol=1e-6)
    assert y[0, 0, 0] == np.float32((255 / 255 - 0.485) / 0.229)
    np.testing.assert_array_equal(run([{"normalize": {"mean": 1, "std": 2}}], x)[0, 0], [127, -0.5, 25])


def test_normalize_channel_mismatch_and_zero_std():
    with pytest.raises(PreprocessError, match=r"'mean' has 3 values but the last axis has 2.*before layout"):
        run([{"normalize": {"mean": [1, 2, 3]}}], np.zeros((1, 3, 2)))
    with pytest.raises(PreprocessError, match="'std' must not contain 0"):
        run([{"normalize": {"std": [1, 0]}}], np.zeros((1, 1, 2)))


def test_dtype_casts_and_range_errors():
    assert run([{"dtype": "int32"}], np.float32([1.9, -1.9])).tolist() == [1, -1]   # truncates toward zero
    assert run([{"dtype": "bool"}], np.float32([0, 2])).tolist() == [False, True]
    assert run([{"dtype": "float16"}], np.float32([1.5])).dtype == np.float16
    with pytest.raises(PreprocessError, match=r"step 1 \(dtype\): values span \[-1.0, 300.0\], outside uint8"):
        run([{"dtype": "uint8"}], np.float32([-1, 300]))
    with pytest.raises(PreprocessError, match="NaN or Inf"):
        run([{"dtype": "int64"}], np.float32([np.nan]))
    with pytest.raises(PreprocessError, match="float16"):
        run([{"dtype": "float16"}], np.float32([70000]))


def test_layout_from_hwc_and_nhwc():
    x = hwc(2, 3, 4)
    y = run([{"layout": "NCHW"}], x)
    assert y.shape == (1, 4, 2, 3) and y.flags.c_contiguous
    for h, w, c in [(0, 0, 0), (1, 2, 3), (0, 2, 1)]:
        assert y[0, c, h, w] == x[h, w, c]
    assert run([{"layout": "CHW"}], x).shape == (4, 2, 3)
    assert run([{"layout": "NHWC"}], x).shape == (1, 2, 3, 4)
    np.testing.assert_array_equal(run([{"layout": "HWC"}], x), x)
    np.testing.assert_array_equal(run([{"layout": "NCHW"}], x[None]), y)
    with pytest.raises(PreprocessError, match="batch axis"):
        run([{"layout": "CHW"}], x[None])


def test_batch_expand_reshape_transpose_clip():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert run([{"batch": True}], x).shape == (1, 2, 3)
    assert run([{"batch": False}], x).shape == (2, 3)
    assert run([{"expand": {"axis": -1}}], x).shape == (2, 3, 1)
    assert run([{"expand": {}}], x).shape == (1, 2, 3)
    with pytest.raises(PreprocessError, match="axis 4 is out of range"):
        run([{"expand": {"axis": 4}}], x)
    assert run([{"reshape": [3, -1]}], x).tolist() == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(PreprocessError, match=r"cannot reshape \(2, 3\) \(6 values\) to \[4, -1\]"):
        run([{"reshape": [4, -1]}], x)
    assert run([{"transpose": [1, 0]}], x).tolist() == [[0, 3], [1, 4], [2, 5]]
    with pytest.raises(PreprocessError, match="not a permutation"):
        run([{"transpose": [0, 0]}], x)
    assert run([{"clip": {"min": 1.5, "max": 4}}], x).tolist() == [[1.5, 1.5, 2], [3, 4, 4]]
    clipped = run([{"clip": {"min": -5, "max": 2.5}}], np.uint8([0, 3, 255]))
    assert clipped.dtype == np.uint8 and clipped.tolist() == [0, 2, 2]


# --- audio steps -----------------------------------------------------------------------------------------------

def test_frame_ten_samples_size4_hop3():
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(run([{"frame": {"size": 4, "hop": 3}}], x),
                                  [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]])


def test_frame_pads_the_tail_or_drops_it():
    x = np.arange(1, 12, dtype=np.float32)   # 11 samples
    padded = run([{"frame": {"size": 4, "hop": 3}}], x)
    np.testing.assert_array_equal(padded, [[1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 10], [10, 11, 0, 0]])
    dropped = run([{"frame": {"size": 4, "hop": 3, "pad": False}}], x)
    np.testing.assert_array_equal(dropped, padded[:3])
    np.testing.assert_array_equal(run([{"frame": {"size": 4}}], np.float32([1, 2])), [[1, 2, 0, 0]])
    with pytest.raises(PreprocessError, match="fewer than one frame"):
        run([{"frame": {"size": 4, "pad": False}}], np.float32([1, 2]))


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


def test_frame_pad_start_gives_each_frame_the_previous_context():
    """Silero VAD's framing: 64 samples of context + 512 new ones; here 2 + 3 on a 7-sample signal."""
    signal = np.arange(1, 8, dtype=np.float32)
    frames = run_pipeline([{"frame": {"size": 5, "hop": 3, "pad_start": 2}}], signal)
    np.testing.assert_array_equal(frames, [[0, 0, 1, 2, 3], [2, 3, 4, 5, 6], [5, 6, 7, 0, 0]])
