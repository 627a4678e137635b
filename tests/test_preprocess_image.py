"""Image steps (decode, resize, crop, pad, letterbox, normalize, layout) against hand-computed results."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnn_parity.inputs.preprocess import PreprocessError, run_pipeline
from mnn_parity.inputs.preprocess.image import fit_size, round_to_multiple, short_side_size

PIXELS = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]],
                   [[10, 20, 30], [128, 128, 128], [255, 255, 255]]], dtype=np.uint8)


def run(steps, x):
    return run_pipeline(steps, np.asarray(x))


def hwc(h, w, c=3):
    return np.arange(h * w * c, dtype=np.uint8).reshape(h, w, c)


def write_png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)
    return path


# --- decode ----------------------------------------------------------------------------------------------------

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


# --- resize ----------------------------------------------------------------------------------------------------

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
    assert round_to_multiple(48, 32) == 64 and round_to_multiple(47, 32) == 32
    assert fit_size(3, 5, 4, 4) == (2, 4)   # 3*0.8 = 2.4 → 2


@pytest.mark.parametrize("h, w, side, expected", [
    (480, 640, 256, (256, 341)),   # 640*256/480 = 341.33 → 341
    (500, 333, 256, (384, 256)),   # 500*256/333 = 384.38 → 384
    (375, 500, 256, (256, 341)),   # 500*256/375 = 341.33 → 341
    (300, 300, 256, (256, 256)),   # square: both sides
    (3, 2, 3, (4, 3)),             # 3*3/2 = 4.5 → 4: the long side is floored, not rounded half up
    (5, 7, 4, (4, 5)),             # 7*4/5 = 5.6 → 5, where rounding would give 6
    (1, 1000, 1, (1, 1000)),
    (1000, 1, 1, (1000, 1)),
    (600, 800, 100, (100, 133)),   # down: 800*100/600 = 133.33 → 133
])
def test_resize_short_side_keeps_the_ratio_and_floors_the_long_side(h, w, side, expected):
    assert short_side_size(h, w, side) == expected
    assert run([{"resize": {"short_side": side}}], np.zeros((h, w, 1), np.uint8)).shape == (*expected, 1)


def test_resize_short_side_then_multiple_of():
    # 480x640 → 256x341; to multiples of 32: 256 stays, 341/32 = 10.66 → 11*32 = 352
    y = run([{"resize": {"short_side": 256, "multiple_of": 32}}], np.zeros((480, 640, 3), np.uint8))
    assert y.shape == (256, 352, 3)


def test_resize_short_side_is_one_way_to_give_the_size_not_a_second():
    x = np.zeros((4, 6, 3), np.uint8)
    with pytest.raises(PreprocessError, match=r"step 1 \(resize\): give either height and width, or short_side.*"
                                              r"remove height, keep_ratio"):
        run([{"resize": {"short_side": 2, "height": 2, "keep_ratio": True}}], x)
    with pytest.raises(PreprocessError, match=r"missing option 'width': give height and width, or short_side"):
        run([{"resize": {"height": 2}}], x)
    with pytest.raises(PreprocessError, match=r"missing option 'height'"):
        run([{"resize": {}}], x)


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


# --- crop, pad, letterbox --------------------------------------------------------------------------------------

def test_crop_center_and_topleft():
    x = hwc(4, 5, 1)
    np.testing.assert_array_equal(run([{"crop": {"height": 2, "width": 3}}], x)[:, :, 0], [[6, 7, 8], [11, 12, 13]])
    np.testing.assert_array_equal(run([{"crop": {"height": 2, "width": 2, "mode": "topleft"}}], x)[:, :, 0],
                                  [[0, 1], [5, 6]])


def test_crop_larger_than_the_image_gives_both_sizes_and_no_resize_advice_when_unneeded():
    with pytest.raises(PreprocessError) as info:
        run([{"crop": {"height": 5, "width": 2}}], hwc(4, 5, 1))
    assert info.value.message == ("the image is 4x5 (HxW), smaller than the 5x2 crop (height 4 < 5); "
                                  "resize it first, or crop less")


def test_crop_after_a_resize_names_the_resize_that_made_the_image_too_small():
    # 100x400 → short side 256: 256x1024; a 300x300 crop needs 300 rows
    steps = [{"scale": 1.0}, {"resize": {"short_side": 256}}, {"layout": "HWC"}, {"crop": {"height": 300, "width": 300}}]
    with pytest.raises(PreprocessError) as info:
        run(steps, np.zeros((100, 400, 3), np.float32))
    assert (info.value.step_index, info.value.step) == (4, "crop")
    assert info.value.message == ("after step 2 (resize) the image is 256x1024 (HxW), smaller than the 300x300 crop "
                                  "(height 256 < 300); make step 2 (resize) give at least 300x300, or crop less")
    assert "resize first" not in str(info.value)
    with pytest.raises(PreprocessError, match=r"after step 1 \(letterbox\) the image is 8x8 \(HxW\), smaller than the "
                                              r"9x10 crop \(height 8 < 9 and width 8 < 10\)"):
        run([{"letterbox": {"height": 8, "width": 8}}, {"crop": {"height": 9, "width": 10}}], hwc(2, 4))


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


# --- normalize, layout -----------------------------------------------------------------------------------------

def test_normalize_hand_computed():
    x = np.array([[[255, 0, 51]]], np.uint8)
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
