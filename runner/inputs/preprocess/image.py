"""Image steps: `decode` reads a file into HWC uint8; resize, crop, pad, letterbox and normalize take HWC and give
HWC; `layout` turns HWC (or NHWC) into the layout the model wants. Sizes are computed in integers, so a side
never moves by a pixel between machines.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from mnn_parity.inputs.preprocess.errors import StepError
from mnn_parity.inputs.preprocess.options import Options, show
from mnn_parity.inputs.preprocess.tensor import need_rank

Fill = Union[float, tuple[float, ...]]


def _round_half_up(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)


def fit_size(h: int, w: int, height: int, width: int) -> tuple[int, int]:
    """The largest (h', w') with the ratio of (h, w) inside height × width; sides round half up, at least 1."""
    if height * w <= width * h:   # height is the binding side
        return height, max(1, min(width, _round_half_up(w * height, h)))
    return max(1, min(height, _round_half_up(h * width, w))), width


def short_side_size(h: int, w: int, side: int) -> tuple[int, int]:
    """(h', w') with the shorter of h, w made `side` and the longer floor(long * side / short), at least 1.

    Floor, not round: torchvision's `Resize(256)` truncates, and "resize 256, crop 224" is usually ported from it.
    """
    if h <= w:
        return side, max(1, w * side // h)
    return max(1, h * side // w), side


def round_to_multiple(side: int, multiple: int) -> int:
    """Nearest multiple of `multiple` (halves round up), never below `multiple`."""
    return max(multiple, _round_half_up(side, multiple) * multiple)


def _pillow_filter(interpolation: str) -> Any:
    from PIL import Image
    return {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST,
            "bicubic": Image.Resampling.BICUBIC, "area": Image.Resampling.BOX}[interpolation]


def _resize_hwc(x: np.ndarray, height: int, width: int, interpolation: str) -> np.ndarray:
    """Resize each channel as its own Pillow image: 'L' for uint8, 'F' (float32) for anything else.

    Channel by channel gives the same bytes as Pillow's RGB resize, works for any channel count, and keeps
    Pillow from premultiplying alpha in a 4-channel image.
    """
    from PIL import Image
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number):
        raise StepError(f"cannot resize {x.dtype} data; resize needs numbers")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise StepError(f"cannot resize an empty image of shape {tuple(x.shape)}")
    work = np.uint8 if x.dtype == np.uint8 else np.float32
    resample = _pillow_filter(interpolation)
    out = np.empty((height, width, x.shape[2]), dtype=work)
    for c in range(x.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(x[:, :, c], dtype=work))
        out[:, :, c] = np.asarray(plane.resize((width, height), resample=resample))
    return out


def _fill(dtype: np.dtype, shape: tuple[int, ...], value: Fill) -> np.ndarray:
    if isinstance(value, tuple) and len(value) != shape[-1]:
        raise StepError(f"'value' has {len(value)} entries but the image has {shape[-1]} channels")
    out = np.empty(shape, dtype=dtype)
    fill = np.asarray(value, dtype=np.float64)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if np.any(fill != np.round(fill)) or np.any(fill < info.min) or np.any(fill > info.max):
            raise StepError(f"'value' {show(value)} does not fit the image's {np.dtype(dtype).name} data")
    out[...] = fill.astype(dtype)
    return out


def _pad_to(x: np.ndarray, height: int, width: int, value: Fill, center: bool) -> np.ndarray:
    h, w = x.shape[:2]
    if h > height or w > width:
        raise StepError(f"image {h}x{w} (HxW) is larger than the padded size {height}x{width}; resize or crop first")
    top, left = ((height - h) // 2, (width - w) // 2) if center else (0, 0)
    out = _fill(x.dtype, (height, width, x.shape[2]), value)
    out[top:top + h, left:left + w] = x
    return out


def decode(path: Path, o: Options) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            image.load()
            # Pillow's own conversions: palette and 16-bit images become 8-bit, alpha is dropped, and GRAY is
            # ITU-R 601-2 luma. EXIF orientation is deliberately not applied: the tensor is the stored pixels.
            converted = image.convert("L" if o["color"] == "GRAY" else "RGB")
    except UnidentifiedImageError:
        raise StepError("not an image Pillow can decode") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise StepError(f"could not decode image: {e}") from None
    x = np.asarray(converted, dtype=np.uint8)
    if o["color"] == "GRAY":
        return x[:, :, None].copy()
    return np.ascontiguousarray(x[:, :, ::-1]) if o["color"] == "BGR" else x.copy()


def check_resize(o: Options) -> None:
    """Exactly one way to give the size: height and width, or short_side (which always keeps the ratio)."""
    sides = [name for name in ("height", "width") if o[name] is not None]
    if o["short_side"] is not None:
        if sides or o["keep_ratio"]:
            given = ", ".join(sides + (["keep_ratio"] if o["keep_ratio"] else []))
            raise StepError(f"give either height and width, or short_side (which keeps the ratio), not both: "
                            f"remove {given}")
    elif len(sides) < 2:
        missing = [name for name in ("height", "width") if name not in sides]
        raise StepError(f"missing option '{missing[0]}': give height and width, or short_side")


def resize(x: np.ndarray, o: Options) -> np.ndarray:
    """HWC → HWC. With height and width: that size, or with keep_ratio the largest size of the image's ratio
    inside it (each side rounded half up, at least 1). With short_side: the shorter side becomes short_side and
    the longer floor(long * short_side / short), at least 1, in integer arithmetic (torchvision's `Resize(int)`);
    a square image becomes short_side x short_side. Then multiple_of rounds each side to its nearest multiple
    (halves up, never below one multiple).
    """
    need_rank(x, (3,), "an HWC image")
    h, w = x.shape[:2]
    if o["short_side"] is not None:
        height, width = short_side_size(h, w, o["short_side"])
    elif o["keep_ratio"]:
        height, width = fit_size(h, w, o["height"], o["width"])
    else:
        height, width = o["height"], o["width"]
    if o["multiple_of"] is not None:
        height, width = round_to_multiple(height, o["multiple_of"]), round_to_multiple(width, o["multiple_of"])
    return _resize_hwc(x, height, width, o["interpolation"])


def crop(x: np.ndarray, o: Options) -> np.ndarray:
    need_rank(x, (3,), "an HWC image")
    h, w = x.shape[:2]
    height, width = o["height"], o["width"]
    if height > h or width > w:
        short = " and ".join(f"{what} {have} < {want}" for what, have, want
                             in (("height", h, height), ("width", w, width)) if have < want)
        sized_by: Optional[str] = o.get("sized_by")
        where = f"after {sized_by} the image is" if sized_by else "the image is"
        fix = (f"make {sized_by} give at least {height}x{width}, or crop less" if sized_by
               else "resize it first, or crop less")
        raise StepError(f"{where} {h}x{w} (HxW), smaller than the {height}x{width} crop ({short}); {fix}")
    top, left = ((h - height) // 2, (w - width) // 2) if o["mode"] == "center" else (0, 0)
    return x[top:top + height, left:left + width].copy()


def pad(x: np.ndarray, o: Options) -> np.ndarray:
    need_rank(x, (3,), "an HWC image")
    return _pad_to(x, o["height"], o["width"], o["value"], center=o["align"] == "center")


def letterbox(x: np.ndarray, o: Options) -> np.ndarray:
    need_rank(x, (3,), "an HWC image")
    height, width = fit_size(x.shape[0], x.shape[1], o["height"], o["width"])
    resized = _resize_hwc(x, height, width, o["interpolation"])
    return _pad_to(resized, o["height"], o["width"], o["value"], center=True)


def normalize(x: np.ndarray, o: Options) -> np.ndarray:
    need_rank(x, (1, 2, 3, 4, 5), "channels-last data")
    channels = x.shape[-1]
    for name in ("mean", "std"):
        if isinstance(o[name], tuple) and len(o[name]) != channels:
            raise StepError(f"'{name}' has {len(o[name])} values but the last axis has {channels} "
                            f"(shape {tuple(x.shape)}); normalize works on channels-last data, before layout")
    std = np.asarray(o["std"], dtype=np.float64)
    if np.any(std == 0):
        raise StepError("'std' must not contain 0")
    # One rounding to float32 at the end, so the result is the exact float32 of (x*scale - mean)/std.
    return ((x.astype(np.float64) * o["scale"] - np.asarray(o["mean"], dtype=np.float64)) / std).astype(np.float32)


def layout(x: np.ndarray, name: str) -> np.ndarray:
    need_rank(x, (3, 4), "HWC (or NHWC) data")
    if x.ndim == 3:
        perm = {"NCHW": (2, 0, 1), "CHW": (2, 0, 1), "NHWC": (0, 1, 2), "HWC": (0, 1, 2)}[name]
        y = x.transpose(perm)
        return np.ascontiguousarray(y[None] if name.startswith("N") else y)
    if name in ("CHW", "HWC"):
        raise StepError(f"cannot make {name} from 4-D (NHWC) data of shape {tuple(x.shape)}: it has a batch axis")
    return np.ascontiguousarray(x.transpose((0, 3, 1, 2)) if name == "NCHW" else x)
