"""The step table, and checking and running a list of steps against it.

The table lists every step in the order the README and the JSON Schema do; a test keeps the three in step.
Checking finds every error a step list has before any data is seen; running stops at the first.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import numpy as np

from mnn_parity.inputs.preprocess import audio, image, numeric
from mnn_parity.inputs.preprocess.errors import PreprocessError, StepError
from mnn_parity.inputs.preprocess.options import (DTYPES, INTERPOLATIONS, LAYOUTS, REQUIRED, Check, Fields, Options,
                                                  boolean, choice, hint, integer, integer_list, nested_data, number,
                                                  number_or_list, parse_object, show, text)
from mnn_parity.inputs.preprocess.tensor import contiguous, refuse_complex

SourceKind = Literal["file", "array", "none"]
Source = Union[str, "os.PathLike[str]", np.ndarray, None]


@dataclass(frozen=True)
class StepDef:
    name: str
    kind: Literal["file", "constant", "transform"]   # file: reads the case file; constant: makes an array
    fields: Optional[Fields]                         # options of a mapping step; None for a scalar-valued step
    check: Optional[Check]                           # the value's validator for a scalar-valued step
    apply: Callable[..., np.ndarray]
    check_all: Optional[Callable[[Options], None]] = None   # a rule between options (one of, not both)

    def parse(self, raw: Any) -> Any:
        if self.fields is None:
            assert self.check is not None
            return self.check(self.name, raw)
        options = parse_object(raw, self.fields)
        if self.check_all is not None:
            self.check_all(options)
        return options


_SIZE = integer(1)


def _image_size(**more: tuple[Check, Any]) -> Fields:
    return {"height": (_SIZE, REQUIRED), "width": (_SIZE, REQUIRED), **more}


STEPS: dict[str, StepDef] = {s.name: s for s in [
    StepDef("decode", "file", {"color": (choice("RGB", "BGR", "GRAY"), "RGB")}, None, image.decode),
    StepDef("audio", "file", {"sample_rate": (integer(1), 16000), "resample": (boolean, False),
                              "mono": (boolean, True)}, None, audio.audio),
    StepDef("load", "file", {"key": (text, None)}, None, numeric.load),
    StepDef("zeros", "constant", {"shape": (integer_list(0), REQUIRED), "dtype": (choice(*DTYPES), "float32")},
            None, numeric.zeros),
    StepDef("value", "constant", {"data": (nested_data, REQUIRED), "dtype": (choice(*DTYPES), "float32"),
                                  "shape": (integer_list(0), None)}, None, numeric.value),
    StepDef("resize", "transform", {"height": (_SIZE, None), "width": (_SIZE, None), "short_side": (_SIZE, None),
                                    "interpolation": (choice(*INTERPOLATIONS), "bilinear"),
                                    "keep_ratio": (boolean, False), "multiple_of": (_SIZE, None)},
            None, image.resize, check_all=image.check_resize),
    StepDef("crop", "transform", _image_size(mode=(choice("center", "topleft"), "center")), None, image.crop),
    StepDef("pad", "transform", _image_size(value=(number_or_list, 0.0), align=(choice("topleft", "center"), "topleft")),
            None, image.pad),
    StepDef("letterbox", "transform", _image_size(value=(number_or_list, 114.0),
                                                  interpolation=(choice(*INTERPOLATIONS), "bilinear")),
            None, image.letterbox),
    StepDef("scale", "transform", None, number, numeric.scale),
    StepDef("normalize", "transform", {"scale": (number, 1.0), "mean": (number_or_list, 0.0),
                                       "std": (number_or_list, 1.0)}, None, image.normalize),
    StepDef("dtype", "transform", None, choice(*DTYPES), numeric.dtype),
    StepDef("layout", "transform", None, choice(*LAYOUTS), image.layout),
    StepDef("batch", "transform", None, boolean, numeric.batch),
    StepDef("expand", "transform", {"axis": (integer(), 0)}, None, numeric.expand),
    StepDef("reshape", "transform", None, integer_list(-1), numeric.reshape),
    StepDef("transpose", "transform", None, integer_list(0), numeric.transpose),
    StepDef("clip", "transform", {"min": (number, None), "max": (number, None)}, None, numeric.clip,
            check_all=numeric.check_clip),
    StepDef("frame", "transform", {"size": (_SIZE, 512), "hop": (_SIZE, 512), "pad": (boolean, True),
                                   "pad_start": (integer(0), 0)}, None, audio.frame),
]}

# Steps that need channels-last (HWC) data: after a channels-first layout they would act on the wrong axis.
_CHANNELS_LAST = ("resize", "crop", "pad", "letterbox", "normalize")
# Steps that set an image's height and width: a crop too large for their result names the one that made it.
_SIZING = ("resize", "crop", "pad", "letterbox")


def step_names() -> list[str]:
    return list(STEPS)


def _step_name(step: Any) -> Optional[str]:
    if isinstance(step, dict) and len(step) == 1:
        (name,) = step
        return name if isinstance(name, str) else None
    return None


def is_source_step(step: dict) -> bool:
    """True for a step that makes the first array (decode, audio, load, zeros, value)."""
    name = _step_name(step)
    return name in STEPS and STEPS[name].kind != "transform"


def _placement_problem(name: str, kind: str, index: int, source: SourceKind) -> Optional[str]:
    if source == "array" and kind != "transform":
        return f"{name} is a source step, but this input's array comes from a .npz case; remove it"
    if kind != "transform" and index > 1:
        return f"{name} is a source step and must be the first step"
    if index == 1 and source == "file" and kind != "file":
        return "this input has files, so the first step must read one: decode, audio or load"
    if index == 1 and source == "none" and kind == "file":
        return f"{name} reads a file, but this input has no files; start with zeros or value"
    if index == 1 and source == "none" and kind == "transform":
        return "an input without files must start with a constant: zeros or value"
    return None


def _parse_step(index: int, step: Any) -> tuple[StepDef, Any]:
    name = _step_name(step)
    if name is None:
        raise PreprocessError(f"a step is a one-key map such as {{resize: {{...}}}}, got {show(step)}",
                              step_index=index)
    definition = STEPS.get(name)
    if definition is None:
        raise PreprocessError(f"unknown step '{name}'{hint(name, STEPS)}", step_index=index, step=name)
    try:
        return definition, definition.parse(step[name])
    except StepError as e:
        raise PreprocessError(str(e), step_index=index, step=name) from None


def _no_steps(source: SourceKind) -> PreprocessError:
    return PreprocessError("no steps: the first step must be a source step "
                           + ("(decode, audio or load) to read the file" if source == "file"
                              else "(zeros or value) for an input without files"))


def _check(steps: Any, source: SourceKind) -> tuple[list[PreprocessError], list[tuple[StepDef, Any]]]:
    if not isinstance(steps, list):
        return [PreprocessError(f"preprocess must be a list of steps, got {show(steps)}")], []
    errors = [_no_steps(source)] if not steps and source != "array" else []
    parsed: list[tuple[StepDef, Any]] = []
    channels_first: Optional[str] = None
    sized_by: Optional[str] = None
    for index, step in enumerate(steps, start=1):
        try:
            definition, options = _parse_step(index, step)
        except PreprocessError as e:
            errors.append(e)
            continue
        name = definition.name
        if name == "crop":   # only the order of the steps says which one made an image too small to crop
            options = {**options, "sized_by": sized_by}
        parsed.append((definition, options))
        problems = [_placement_problem(name, definition.kind, index, source)]
        if name == "layout":
            channels_first = options if options in ("NCHW", "CHW") else None
        elif name in _CHANNELS_LAST and channels_first:
            problems.append(f"{name} works on channels-last (HWC) data but comes after layout: {channels_first}; "
                            "move it before layout")
        errors += [PreprocessError(p, step_index=index, step=name) for p in problems if p]
        if name in _SIZING:
            sized_by = f"step {index} ({name})"
    return errors, parsed


def check_steps(steps: list[dict], source: SourceKind = "file") -> list[PreprocessError]:
    """Every error a step list has before any data is seen: unknown steps and options, bad values, a source
    step in the wrong place, a channels-last step after a channels-first layout. `source` says where the
    input's data comes from: "file" (a `files:` glob), "array" (a .npz case) or "none" (a constant)."""
    return _check(steps, source)[0]


def _apply(definition: StepDef, options: Any, file: Optional[Path], x: Optional[np.ndarray]) -> np.ndarray:
    if definition.kind == "file":
        assert file is not None   # _check allows a file step only when the source is a file
        return definition.apply(file, options)
    if definition.kind == "constant":
        return definition.apply(options)
    assert x is not None          # _check allows a transform only after a source step or on an array
    refuse_complex(x)
    return definition.apply(x, options)


def run_pipeline(steps: list[dict], source: Source = None, *, label: Optional[str] = None) -> np.ndarray:
    """Apply the steps in order and return a C-contiguous array.

    `source` is a case file (str or Path), the array a .npz case holds for this input, or None for a constant
    input. `label` names the data in errors when `source` is not a file (e.g. "data/vad/a.npz[input]").
    """
    path: Optional[Path] = None
    x: Optional[np.ndarray] = None
    kind: SourceKind
    if isinstance(source, np.ndarray):
        kind, x, file = "array", source, label
    elif source is None:
        kind, file = "none", label
    else:
        kind, path = "file", Path(source)
        file = os.fspath(source)
    errors, parsed = _check(steps, kind)
    if errors:
        raise errors[0].located(file)
    for index, (definition, options) in enumerate(parsed, start=1):
        try:
            x = _apply(definition, options, path, x)
        except StepError as e:
            raise PreprocessError(str(e), file=file, step_index=index, step=definition.name) from None
        except Exception as e:   # numpy or Pillow surprises still name the file and step
            raise PreprocessError(f"{type(e).__name__}: {e}", file=file, step_index=index,
                                  step=definition.name) from e
    result = np.asarray(x)
    try:
        refuse_complex(result)   # an array case with no steps: the engines would get it as it is
    except StepError as e:
        raise PreprocessError(str(e), file=file) from None
    return contiguous(result)
