"""The declarative preprocessing spec: one list of steps turns a case file into the tensor both engines get.

A manifest input lists `preprocess:` steps, each a one-key map (`- resize: {height: 736, width: 1472}`),
applied in order. A *source* step makes the first array: `decode`, `audio` and `load` read the case file,
`zeros` and `value` make constants. Every other step is a pure function from array to array.

Feeding both engines from this one pipeline is the point: a model that "breaks" after conversion because two
scripts preprocessed differently is the commonest false alarm. The JSON Schema in
`schemas/preprocess.schema.json` mirrors the option tables here; a test keeps the two in step.

Errors name the file and the 1-based step: ``data/x.png: step 2 (resize): ...``.
"""
from __future__ import annotations

import difflib
import math
import os
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import numpy as np

SourceKind = Literal["file", "array", "none"]


class PreprocessError(Exception):
    """A step could not run. `step_index` is 1-based, as in the message; `step` is the step's name."""

    def __init__(self, message: str, file: Optional[str] = None, step_index: Optional[int] = None,
                 step: Optional[str] = None) -> None:
        # All four in args: an error sent back from a worker process is rebuilt from args, intact.
        super().__init__(message, file, step_index, step)
        self.file = file
        self.step_index = step_index
        self.step = step
        self.message = message

    def __str__(self) -> str:
        where = []
        if self.file is not None:
            where.append(f"{self.file}: ")
        if self.step_index is not None:
            where.append(f"step {self.step_index}" + (f" ({self.step})" if self.step else "") + ": ")
        elif self.step:
            where.append(f"{self.step}: ")
        return "".join(where) + self.message

    def located(self, file: Optional[str]) -> "PreprocessError":
        return PreprocessError(self.message, file=file, step_index=self.step_index, step=self.step)


class _Invalid(Exception):
    """A bad option or input inside one step; the pipeline adds the file and the step."""


# ---------------------------------------------------------------------------------------------------------------
# Option checking. Each validator takes (option name, raw value) and returns the cleaned value or raises _Invalid.
# They repeat what the JSON Schema says so that a pipeline run outside manifest validation fails just as clearly.

_REQUIRED = object()
DTYPES = ("float32", "float16", "int32", "int64", "uint8", "int8", "bool")
INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area")
LAYOUTS = ("NCHW", "NHWC", "CHW", "HWC")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(minimum: Optional[int] = None) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        # JSON Schema counts 3.0 as an integer; accept it too so the two never disagree.
        if not _is_number(value) or float(value) != int(value):
            raise _Invalid(f"'{name}' must be an integer, got {_show(value)}")
        if minimum is not None and value < minimum:
            raise _Invalid(f"'{name}' must be >= {minimum}, got {value}")
        return int(value)
    return check


def _number(name: str, value: Any) -> float:
    if not _is_number(value):
        raise _Invalid(f"'{name}' must be a number, got {_show(value)}")
    return float(value)


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"'{name}' must be true or false, got {_show(value)}")
    return value


def _choice(*choices: str) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if value not in choices:
            raise _Invalid(f"'{name}' must be one of {', '.join(choices)}, got {_show(value)}"
                           + _hint(str(value), choices))
        return value
    check.choices = choices  # type: ignore[attr-defined]  # read by the schema-parity test
    return check


def _number_or_list(name: str, value: Any) -> Union[float, tuple[float, ...]]:
    if _is_number(value):
        return float(value)
    if isinstance(value, list) and value and all(_is_number(v) for v in value):
        return tuple(float(v) for v in value)
    raise _Invalid(f"'{name}' must be a number or a non-empty list of numbers, got {_show(value)}")


def _integer_list(minimum: int) -> Callable[[str, Any], tuple[int, ...]]:
    def check(name: str, value: Any) -> tuple[int, ...]:
        if not isinstance(value, list):
            raise _Invalid(f"'{name}' must be a list of integers, got {_show(value)}")
        one = _integer(minimum)
        return tuple(one(f"{name}[{i}]", v) for i, v in enumerate(value))
    return check


def _name(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid(f"'{name}' must be a non-empty string, got {_show(value)}")
    return value


def _nested_data(name: str, value: Any) -> Any:
    if isinstance(value, bool) or _is_number(value):
        return value
    if isinstance(value, list):
        for i, item in enumerate(value):
            _nested_data(f"{name}[{i}]", item)
        return value
    raise _Invalid(f"'{name}' must be a number, a boolean or a nested list of them, got {_show(value)}")


def _hint(word: str, candidates) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    if not close:  # "rgb" → "RGB": case slips are the common typo for enumerated values
        close = [c for c in candidates if c.lower() == word.lower()]
    return f" (did you mean '{close[0]}'?)" if close else ""


Fields = dict[str, tuple[Callable[[str, Any], Any], Any]]


def _parse_object(raw: Any, fields: Fields) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _Invalid(f"options must be a mapping with keys {', '.join(fields)}; got {_show(raw)}")
    for key in raw:
        if key not in fields:
            raise _Invalid(f"unknown option '{key}'{_hint(str(key), fields)}; options are {', '.join(fields)}")
    options = {}
    for name, (check, default) in fields.items():
        if name in raw:
            options[name] = check(name, raw[name])
        elif default is _REQUIRED:
            raise _Invalid(f"missing option '{name}'")
        else:
            options[name] = default
    return options


# ---------------------------------------------------------------------------------------------------------------
# Shared numeric helpers.

def _contiguous(x: np.ndarray) -> np.ndarray:
    # Not np.ascontiguousarray: it turns a 0-d array (a scalar input such as a sample rate) into shape (1,).
    return x if x.flags.c_contiguous else x.copy(order="C")


def _need_rank(x: np.ndarray, ranks: tuple[int, ...], what: str) -> None:
    if x.ndim not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise _Invalid(f"expects {what} (rank {want}), got an array of shape {tuple(x.shape)}")


def _round_half_up(numerator: int, denominator: int) -> int:
    # Integer arithmetic: float rounding must not move a side by a pixel between machines.
    return (2 * numerator + denominator) // (2 * denominator)


def fit_size(h: int, w: int, height: int, width: int) -> tuple[int, int]:
    """The largest (h', w') with the ratio of (h, w) inside height × width; sides round half up, at least 1."""
    if height * w <= width * h:   # height is the binding side
        return height, max(1, min(width, _round_half_up(w * height, h)))
    return max(1, min(height, _round_half_up(h * width, w))), width


def round_to_multiple(side: int, multiple: int) -> int:
    """Nearest multiple of `multiple` (halves round up), never below `multiple`."""
    return max(multiple, _round_half_up(side, multiple) * multiple)


def _pillow_filter(interpolation: str):
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
        raise _Invalid(f"cannot resize {x.dtype} data; resize needs numbers")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise _Invalid(f"cannot resize an empty image of shape {tuple(x.shape)}")
    work = np.uint8 if x.dtype == np.uint8 else np.float32
    resample = _pillow_filter(interpolation)
    out = np.empty((height, width, x.shape[2]), dtype=work)
    for c in range(x.shape[2]):
        plane = Image.fromarray(np.ascontiguousarray(x[:, :, c], dtype=work))
        out[:, :, c] = np.asarray(plane.resize((width, height), resample=resample))
    return out


def _fill(dtype: np.dtype, shape: tuple[int, ...], value: Union[float, tuple[float, ...]]) -> np.ndarray:
    if isinstance(value, tuple) and len(value) != shape[-1]:
        raise _Invalid(f"'value' has {len(value)} entries but the image has {shape[-1]} channels")
    out = np.empty(shape, dtype=dtype)
    fill = np.asarray(value, dtype=np.float64)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if np.any(fill != np.round(fill)) or np.any(fill < info.min) or np.any(fill > info.max):
            raise _Invalid(f"'value' {_show(value)} does not fit the image's {np.dtype(dtype).name} data")
    out[...] = fill.astype(dtype)
    return out


def _pad_to(x: np.ndarray, height: int, width: int, value, center: bool) -> np.ndarray:
    h, w = x.shape[:2]
    if h > height or w > width:
        raise _Invalid(f"image {h}x{w} (HxW) is larger than the padded size {height}x{width}; resize or crop first")
    top, left = ((height - h) // 2, (width - w) // 2) if center else (0, 0)
    out = _fill(x.dtype, (height, width, x.shape[2]), value)
    out[top:top + h, left:left + w] = x
    return out


# ---------------------------------------------------------------------------------------------------------------
# Source steps: they make the first array.

def _decode(path: Path, o: dict) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            image.load()
            # Pillow's own conversions: palette and 16-bit images become 8-bit, alpha is dropped, and GRAY is
            # ITU-R 601-2 luma. EXIF orientation is deliberately not applied: the tensor is the stored pixels.
            converted = image.convert("L" if o["color"] == "GRAY" else "RGB")
    except UnidentifiedImageError:
        raise _Invalid("not an image Pillow can decode") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _Invalid(f"could not decode image: {e}") from None
    x = np.asarray(converted, dtype=np.uint8)
    if o["color"] == "GRAY":
        return x[:, :, None].copy()
    return np.ascontiguousarray(x[:, :, ::-1]) if o["color"] == "BGR" else x.copy()


def _pcm_to_float(raw: bytes, width: int, channels: int) -> np.ndarray:
    frame_bytes = width * channels
    raw = raw[:len(raw) - len(raw) % frame_bytes]   # a truncated last frame is dropped
    if width == 1:    # 8-bit WAV is unsigned, centred on 128
        ints = np.frombuffer(raw, dtype=np.uint8).astype(np.int32) - 128
    elif width == 2:
        ints = np.frombuffer(raw, dtype="<i2").astype(np.int32)
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = ((b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) ^ 0x800000) - 0x800000   # sign-extend 24 bits
    elif width == 4:
        ints = np.frombuffer(raw, dtype="<i4").astype(np.int64)
    else:
        raise _Invalid(f"unsupported sample width {width * 8} bits; 8, 16, 24 and 32-bit PCM are read")
    # Divide by 2^(bits-1): full scale maps to [-1, 1) exactly, and 16-bit samples stay exact in float32.
    scaled = ints.astype(np.float64) / float(2 ** (8 * width - 1))
    return scaled.reshape(-1, channels)


def _audio(path: Path, o: dict) -> np.ndarray:
    try:
        with wave.open(os.fspath(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as e:
        raise _Invalid(f"not a PCM WAV file the stdlib wave module can read ({e}); "
                       "8, 16, 24 and 32-bit integer PCM are supported") from None
    except OSError as e:
        raise _Invalid(f"could not read: {e}") from None
    samples = _pcm_to_float(raw, width, channels)
    if o["mono"]:
        samples = samples.mean(axis=1)
    if rate != o["sample_rate"]:
        if not o["resample"]:
            raise _Invalid(f"sample rate is {rate} Hz but the step asks for {o['sample_rate']} Hz; "
                           "set resample: true to convert it")
        from scipy.signal import resample_poly
        g = math.gcd(o["sample_rate"], rate)
        samples = resample_poly(samples, o["sample_rate"] // g, rate // g, axis=0)
    return np.ascontiguousarray(samples, dtype=np.float32)


def _load(path: Path, o: dict) -> np.ndarray:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise _Invalid(f"could not load as .npy/.npz: {e}") from None
    if isinstance(loaded, np.ndarray):
        if o["key"] is not None:
            raise _Invalid(f"'key' is {o['key']!r} but the file is a .npy holding a single array")
        return loaded
    with loaded as archive:
        names = list(archive.files)
        key = o["key"]
        if key is None:
            if len(names) != 1:
                raise _Invalid(f"the .npz holds {len(names)} arrays ({', '.join(names)}); choose one with 'key'")
            key = names[0]
        if key not in names:
            raise _Invalid(f"no array '{key}' in the .npz{_hint(key, names)}; it holds {', '.join(names) or 'nothing'}")
        try:
            return np.array(archive[key])
        except ValueError as e:   # object arrays need pickle, which is never allowed
            raise _Invalid(f"could not load array '{key}': {e}") from None


def _zeros(o: dict) -> np.ndarray:
    return np.zeros(o["shape"], dtype=o["dtype"])


def _value(o: dict) -> np.ndarray:
    try:
        x = np.array(o["data"], dtype=o["dtype"])
    except (ValueError, OverflowError, TypeError) as e:
        raise _Invalid(f"'data' cannot be made a {o['dtype']} array: {e}") from None
    if o["shape"] is None:
        return x
    shape = o["shape"]
    if x.ndim == 0:
        return np.full(shape, x, dtype=x.dtype)
    if x.size != math.prod(shape):
        raise _Invalid(f"'data' has {x.size} values but 'shape' {list(shape)} needs {math.prod(shape)}")
    return x.reshape(shape)


# ---------------------------------------------------------------------------------------------------------------
# Image steps: HWC in, HWC out.

def _resize(x: np.ndarray, o: dict) -> np.ndarray:
    _need_rank(x, (3,), "an HWC image")
    h, w = x.shape[:2]
    height, width = fit_size(h, w, o["height"], o["width"]) if o["keep_ratio"] else (o["height"], o["width"])
    if o["multiple_of"] is not None:
        height, width = round_to_multiple(height, o["multiple_of"]), round_to_multiple(width, o["multiple_of"])
    return _resize_hwc(x, height, width, o["interpolation"])


def _crop(x: np.ndarray, o: dict) -> np.ndarray:
    _need_rank(x, (3,), "an HWC image")
    h, w = x.shape[:2]
    height, width = o["height"], o["width"]
    if height > h or width > w:
        raise _Invalid(f"image {h}x{w} (HxW) is smaller than the crop {height}x{width}; resize first")
    top, left = ((h - height) // 2, (w - width) // 2) if o["mode"] == "center" else (0, 0)
    return x[top:top + height, left:left + width].copy()


def _pad(x: np.ndarray, o: dict) -> np.ndarray:
    _need_rank(x, (3,), "an HWC image")
    return _pad_to(x, o["height"], o["width"], o["value"], center=o["align"] == "center")


def _letterbox(x: np.ndarray, o: dict) -> np.ndarray:
    _need_rank(x, (3,), "an HWC image")
    height, width = fit_size(x.shape[0], x.shape[1], o["height"], o["width"])
    resized = _resize_hwc(x, height, width, o["interpolation"])
    return _pad_to(resized, o["height"], o["width"], o["value"], center=True)


# ---------------------------------------------------------------------------------------------------------------
# Numeric steps.

def _scale(x: np.ndarray, s: float) -> np.ndarray:
    return (x.astype(np.float64) * s).astype(np.float32)


def _normalize(x: np.ndarray, o: dict) -> np.ndarray:
    _need_rank(x, (1, 2, 3, 4, 5), "channels-last data")
    channels = x.shape[-1]
    for name in ("mean", "std"):
        if isinstance(o[name], tuple) and len(o[name]) != channels:
            raise _Invalid(f"'{name}' has {len(o[name])} values but the last axis has {channels} "
                           f"(shape {tuple(x.shape)}); normalize works on channels-last data, before layout")
    std = np.asarray(o["std"], dtype=np.float64)
    if np.any(std == 0):
        raise _Invalid("'std' must not contain 0")
    # One rounding to float32 at the end, so the result is the exact float32 of (x*scale - mean)/std.
    return ((x.astype(np.float64) * o["scale"] - np.asarray(o["mean"], dtype=np.float64)) / std).astype(np.float32)


def _dtype(x: np.ndarray, name: str) -> np.ndarray:
    target = np.dtype(name)
    if x.dtype == target:
        return x
    if target.kind in "iu" and x.size:
        # A silent wrap-around (300 → 44 in uint8) or NaN → INT_MIN would make both engines agree on garbage.
        if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            raise _Invalid(f"cannot cast NaN or Inf to {name}")
        info = np.iinfo(target)
        lo, hi = x.min(), x.max()
        if lo < info.min or hi > info.max:
            raise _Invalid(f"values span [{lo}, {hi}], outside {name}'s [{info.min}, {info.max}]; add clip first")
    if target == np.float16 and x.size and np.issubdtype(x.dtype, np.number):
        limit = float(np.finfo(np.float16).max)
        finite = np.isfinite(x) if x.dtype.kind == "f" else np.ones(x.shape, bool)
        if np.any(np.abs(x[finite].astype(np.float64)) > limit):
            raise _Invalid(f"values beyond float16's range (±{limit:g}) would become Inf; add clip first")
    return x.astype(target)   # float → integer truncates toward zero


def _layout(x: np.ndarray, name: str) -> np.ndarray:
    _need_rank(x, (3, 4), "HWC (or NHWC) data")
    if x.ndim == 3:
        perm = {"NCHW": (2, 0, 1), "CHW": (2, 0, 1), "NHWC": (0, 1, 2), "HWC": (0, 1, 2)}[name]
        y = x.transpose(perm)
        return np.ascontiguousarray(y[None] if name.startswith("N") else y)
    if name in ("CHW", "HWC"):
        raise _Invalid(f"cannot make {name} from 4-D (NHWC) data of shape {tuple(x.shape)}: it has a batch axis")
    return np.ascontiguousarray(x.transpose((0, 3, 1, 2)) if name == "NCHW" else x)


def _batch(x: np.ndarray, on: bool) -> np.ndarray:
    return x[None] if on else x


def _expand(x: np.ndarray, o: dict) -> np.ndarray:
    axis = o["axis"]
    if not -(x.ndim + 1) <= axis <= x.ndim:
        raise _Invalid(f"axis {axis} is out of range for an array of rank {x.ndim} (valid: {-(x.ndim + 1)}..{x.ndim})")
    return np.expand_dims(x, axis)


def _reshape(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if sum(1 for d in shape if d == -1) > 1:
        raise _Invalid("at most one dimension may be -1")
    try:
        return x.reshape(shape)
    except ValueError:
        raise _Invalid(f"cannot reshape {tuple(x.shape)} ({x.size} values) to {list(shape)}") from None


def _transpose(x: np.ndarray, perm: tuple[int, ...]) -> np.ndarray:
    if sorted(perm) != list(range(x.ndim)):
        raise _Invalid(f"{list(perm)} is not a permutation of the axes of an array of rank {x.ndim}")
    return _contiguous(x.transpose(perm))


def _clip(x: np.ndarray, o: dict) -> np.ndarray:
    lo, hi = o["min"], o["max"]
    if lo is not None and hi is not None and lo > hi:
        raise _Invalid(f"'min' {lo} is greater than 'max' {hi}")
    if x.dtype.kind in "iu":
        # Bounds round inward and into the dtype's range, so the array keeps its integer dtype.
        info = np.iinfo(x.dtype)
        lo = None if lo is None else int(min(max(math.ceil(lo), info.min), info.max))
        hi = None if hi is None else int(max(min(math.floor(hi), info.max), info.min))
        return np.clip(x, lo, hi).astype(x.dtype)
    if x.dtype.kind != "f":
        raise _Invalid(f"cannot clip {x.dtype} data")
    return np.clip(x, lo, hi).astype(x.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Audio steps.

def _frame(x: np.ndarray, o: dict) -> np.ndarray:
    _need_rank(x, (1,), "a 1-D signal")
    size, hop = o["size"], o["hop"]
    if x.shape[0] == 0:
        raise _Invalid("the signal is empty")
    if o["pad_start"]:
        # Streaming models see the tail of the previous chunk as context (Silero VAD: 64 samples, zeros at first).
        x = np.concatenate([np.zeros(o["pad_start"], dtype=x.dtype), x])
    n = x.shape[0]
    if o["pad"]:
        # Enough frames to cover every sample; the tail is zero-padded.
        n_frames = -(-max(n - size, 0) // hop) + 1
        needed = (n_frames - 1) * hop + size
        x = np.concatenate([x, np.zeros(needed - n, dtype=x.dtype)]) if needed > n else x
    else:
        if n < size:
            raise _Invalid(f"the signal has {n} samples, fewer than one frame of {size}; set pad: true")
        n_frames = (n - size) // hop + 1
    windows = np.lib.stride_tricks.sliding_window_view(x, size)
    return np.ascontiguousarray(windows[::hop][:n_frames])


# ---------------------------------------------------------------------------------------------------------------
# The registry: one entry per step, in the order the README lists them.

@dataclass(frozen=True)
class _StepDef:
    name: str
    kind: Literal["file", "constant", "transform"]   # file: reads the case file; constant: makes an array
    fields: Optional[Fields]                         # options of a mapping step; None for a scalar-valued step
    check: Optional[Callable[[str, Any], Any]]       # the value's validator for a scalar-valued step
    apply: Callable[..., np.ndarray]
    needs_one: bool = False                          # a mapping step that must set at least one option

    def parse(self, raw: Any) -> Any:
        if self.fields is None:
            return self.check(self.name, raw)
        if self.needs_one and isinstance(raw, dict) and not raw:
            raise _Invalid(f"set at least one of {', '.join(self.fields)}")
        return _parse_object(raw, self.fields)


_SIZE = _integer(1)
_STEPS: dict[str, _StepDef] = {s.name: s for s in [
    _StepDef("decode", "file", {"color": (_choice("RGB", "BGR", "GRAY"), "RGB")}, None, _decode),
    _StepDef("audio", "file", {"sample_rate": (_integer(1), 16000), "resample": (_boolean, False),
                               "mono": (_boolean, True)}, None, _audio),
    _StepDef("load", "file", {"key": (_name, None)}, None, _load),
    _StepDef("zeros", "constant", {"shape": (_integer_list(0), _REQUIRED), "dtype": (_choice(*DTYPES), "float32")},
             None, _zeros),
    _StepDef("value", "constant", {"data": (_nested_data, _REQUIRED), "dtype": (_choice(*DTYPES), "float32"),
                                   "shape": (_integer_list(0), None)}, None, _value),
    _StepDef("resize", "transform", {"height": (_SIZE, _REQUIRED), "width": (_SIZE, _REQUIRED),
                                     "interpolation": (_choice(*INTERPOLATIONS), "bilinear"),
                                     "keep_ratio": (_boolean, False), "multiple_of": (_SIZE, None)}, None, _resize),
    _StepDef("crop", "transform", {"height": (_SIZE, _REQUIRED), "width": (_SIZE, _REQUIRED),
                                   "mode": (_choice("center", "topleft"), "center")}, None, _crop),
    _StepDef("pad", "transform", {"height": (_SIZE, _REQUIRED), "width": (_SIZE, _REQUIRED),
                                  "value": (_number_or_list, 0.0), "align": (_choice("topleft", "center"), "topleft")},
             None, _pad),
    _StepDef("letterbox", "transform", {"height": (_SIZE, _REQUIRED), "width": (_SIZE, _REQUIRED),
                                        "value": (_number_or_list, 114.0),
                                        "interpolation": (_choice(*INTERPOLATIONS), "bilinear")}, None, _letterbox),
    _StepDef("scale", "transform", None, _number, _scale),
    _StepDef("normalize", "transform", {"scale": (_number, 1.0), "mean": (_number_or_list, 0.0),
                                        "std": (_number_or_list, 1.0)}, None, _normalize),
    _StepDef("dtype", "transform", None, _choice(*DTYPES), _dtype),
    _StepDef("layout", "transform", None, _choice(*LAYOUTS), _layout),
    _StepDef("batch", "transform", None, _boolean, _batch),
    _StepDef("expand", "transform", {"axis": (_integer(), 0)}, None, _expand),
    _StepDef("reshape", "transform", None, _integer_list(-1), _reshape),
    _StepDef("transpose", "transform", None, _integer_list(0), _transpose),
    _StepDef("clip", "transform", {"min": (_number, None), "max": (_number, None)}, None, _clip, needs_one=True),
    _StepDef("frame", "transform", {"size": (_SIZE, 512), "hop": (_SIZE, 512), "pad": (_boolean, True),
                                    "pad_start": (_integer(0), 0)},
             None, _frame),
]}

# Steps that need channels-last (HWC) data: after a channels-first layout they would act on the wrong axis.
_CHANNELS_LAST = ("resize", "crop", "pad", "letterbox", "normalize")


def step_names() -> list[str]:
    return list(_STEPS)


def _step_name(step: Any) -> Optional[str]:
    if isinstance(step, dict) and len(step) == 1:
        (name,) = step
        return name if isinstance(name, str) else None
    return None


def is_source_step(step: dict) -> bool:
    """True for a step that makes the first array (decode, audio, load, zeros, value)."""
    name = _step_name(step)
    return name in _STEPS and _STEPS[name].kind != "transform"


def _check(steps: Any, source: SourceKind) -> tuple[list[PreprocessError], list[tuple[_StepDef, Any]]]:
    errors: list[PreprocessError] = []
    parsed: list[tuple[_StepDef, Any]] = []
    if not isinstance(steps, list):
        return [PreprocessError(f"preprocess must be a list of steps, got {_show(steps)}")], parsed
    if not steps and source != "array":
        errors.append(PreprocessError("no steps: the first step must be a source step "
                                      + ("(decode, audio or load) to read the file" if source == "file"
                                         else "(zeros or value) for an input without files")))
    channels_first: Optional[str] = None
    for index, step in enumerate(steps, start=1):
        name = _step_name(step)
        if name is None:
            errors.append(PreprocessError(f"a step is a one-key map such as {{resize: {{...}}}}, got {_show(step)}",
                                          step_index=index))
            continue
        definition = _STEPS.get(name)
        if definition is None:
            errors.append(PreprocessError(f"unknown step '{name}'{_hint(name, _STEPS)}", step_index=index, step=name))
            continue

        def fail(message: str) -> None:
            errors.append(PreprocessError(message, step_index=index, step=name))

        try:
            options = definition.parse(step[name])
        except _Invalid as e:
            fail(str(e))
            continue
        parsed.append((definition, options))
        kind = definition.kind
        if source == "array" and kind != "transform":
            fail(f"{name} is a source step, but this input's array comes from a .npz case; remove it")
        elif kind != "transform" and index > 1:
            fail(f"{name} is a source step and must be the first step")
        elif index == 1 and source == "file" and kind != "file":
            fail("this input has files, so the first step must read one: decode, audio or load")
        elif index == 1 and source == "none" and kind == "file":
            fail(f"{name} reads a file, but this input has no files; start with zeros or value")
        elif index == 1 and source == "none" and kind == "transform":
            fail("an input without files must start with a constant: zeros or value")
        if name == "layout":
            channels_first = options if options in ("NCHW", "CHW") else None
        elif name in _CHANNELS_LAST and channels_first:
            fail(f"{name} works on channels-last (HWC) data but comes after layout: {channels_first}; "
                 "move it before layout")
    return errors, parsed


def check_steps(steps: list[dict], source: SourceKind = "file") -> list[PreprocessError]:
    """Every error a step list has before any data is seen: unknown steps and options, bad values, a source
    step in the wrong place, a channels-last step after a channels-first layout. `source` says where the
    input's data comes from: "file" (a `files:` glob), "array" (a .npz case) or "none" (a constant)."""
    return _check(steps, source)[0]


def run_pipeline(steps: list[dict], source: "Path | np.ndarray | None" = None, *,
                 label: Optional[str] = None) -> np.ndarray:
    """Apply the steps in order and return a C-contiguous array.

    `source` is a case file (str or Path), the array a .npz case holds for this input, or None for a constant
    input. `label` names the data in errors when `source` is not a file (e.g. "data/vad/a.npz[input]").
    """
    if isinstance(source, np.ndarray):
        kind: SourceKind = "array"
    elif source is None:
        kind = "none"
    else:
        kind = "file"
    file = os.fspath(source) if kind == "file" else label
    errors, parsed = _check(steps, kind)
    if errors:
        raise errors[0].located(file)
    x: Optional[np.ndarray] = source if kind == "array" else None
    for index, (definition, options) in enumerate(parsed, start=1):
        try:
            if definition.kind == "file":
                x = definition.apply(Path(source), options)
            elif definition.kind == "constant":
                x = definition.apply(options)
            else:
                x = definition.apply(x, options)
        except _Invalid as e:
            raise PreprocessError(str(e), file=file, step_index=index, step=definition.name) from None
        except Exception as e:   # numpy or Pillow surprises still name the file and step
            raise PreprocessError(f"{type(e).__name__}: {e}", file=file, step_index=index,
                                  step=definition.name) from e
    return _contiguous(np.asarray(x))


def degenerate_reason(array: np.ndarray) -> Optional[str]:
    """Why a float input is not a meaningful test input, or None if it is. The reason is bare (the caller
    adds "not a meaningful test input"), e.g. "constant: all 48 values are 0".

    Flags NaN/Inf, a constant array, and (near) zero variance: std <= 1e-6 * max(1, |mean|). Such an input
    through a normalisation layer divides by ~sqrt(eps), so tiny engine differences explode. Integer and bool
    inputs (ids, masks, sizes) and arrays of fewer than two values are never flagged: being constant is their
    nature.
    """
    x = np.asarray(array)
    if x.dtype.kind != "f" or x.size < 2:
        return None
    finite = np.isfinite(x)
    if not finite.all():
        nan = int(np.isnan(x).sum())
        return f"{nan} NaN and {x.size - int(finite.sum()) - nan} Inf values"
    first = x.flat[0]
    if np.all(x == first):
        return f"constant: all {x.size} values are {float(first):g}"
    mean = float(np.mean(x, dtype=np.float64))
    std = float(np.std(x, dtype=np.float64))
    if std <= 1e-6 * max(1.0, abs(mean)):
        return f"near-zero variance (std {std:.3g}, mean {mean:.6g})"
    return None
