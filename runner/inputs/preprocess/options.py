"""Checking a step's options. Each validator takes (option name, raw value) and returns the cleaned value or
raises StepError. They repeat what the JSON Schema says so that a pipeline run outside manifest validation fails
just as clearly.
"""
from __future__ import annotations

import difflib
import math
from typing import Any, Callable, Iterable, Optional, Union

from mnn_parity.inputs.preprocess.errors import StepError

REQUIRED = object()   # the default of an option that must be given
DTYPES = ("float32", "float16", "int32", "int64", "uint8", "int8", "bool")
INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area")
LAYOUTS = ("NCHW", "NHWC", "CHW", "HWC")

Check = Callable[[str, Any], Any]
Fields = dict[str, tuple[Check, Any]]   # option name → (validator, default or REQUIRED)
Options = dict[str, Any]                # a parsed step: every option present


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def hint(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    if not close:  # "rgb" → "RGB": case slips are the common typo for enumerated values
        close = [c for c in candidates if c.lower() == word.lower()]
    return f" (did you mean '{close[0]}'?)" if close else ""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(minimum: Optional[int] = None) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        # JSON Schema counts 3.0 as an integer; accept it too so the two never disagree.
        if not _is_number(value) or float(value) != int(value):
            raise StepError(f"'{name}' must be an integer, got {show(value)}")
        if minimum is not None and value < minimum:
            raise StepError(f"'{name}' must be >= {minimum}, got {value}")
        return int(value)
    return check


def number(name: str, value: Any) -> float:
    if not _is_number(value):
        raise StepError(f"'{name}' must be a number, got {show(value)}")
    return float(value)


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise StepError(f"'{name}' must be true or false, got {show(value)}")
    return value


def choice(*choices: str) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if value not in choices:
            raise StepError(f"'{name}' must be one of {', '.join(choices)}, got {show(value)}"
                            + hint(str(value), choices))
        return value
    check.choices = choices  # type: ignore[attr-defined]  # read by the schema-parity test
    return check


def number_or_list(name: str, value: Any) -> Union[float, tuple[float, ...]]:
    if _is_number(value):
        return float(value)
    if isinstance(value, list) and value and all(_is_number(v) for v in value):
        return tuple(float(v) for v in value)
    raise StepError(f"'{name}' must be a number or a non-empty list of numbers, got {show(value)}")


def integer_list(minimum: int) -> Callable[[str, Any], tuple[int, ...]]:
    def check(name: str, value: Any) -> tuple[int, ...]:
        if not isinstance(value, list):
            raise StepError(f"'{name}' must be a list of integers, got {show(value)}")
        one = integer(minimum)
        return tuple(one(f"{name}[{i}]", v) for i, v in enumerate(value))
    return check


def text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise StepError(f"'{name}' must be a non-empty string, got {show(value)}")
    return value


def nested_data(name: str, value: Any) -> Any:
    if isinstance(value, bool) or _is_number(value):
        return value
    if isinstance(value, list):
        for i, item in enumerate(value):
            nested_data(f"{name}[{i}]", item)
        return value
    raise StepError(f"'{name}' must be a number, a boolean or a nested list of them, got {show(value)}")


def parse_object(raw: Any, fields: Fields) -> dict[str, Any]:
    """The options of a mapping step, every one present: given, checked, or its default."""
    if not isinstance(raw, dict):
        raise StepError(f"options must be a mapping with keys {', '.join(fields)}; got {show(raw)}")
    for key in raw:
        if key not in fields:
            raise StepError(f"unknown option '{key}'{hint(str(key), fields)}; options are {', '.join(fields)}")
    options = {}
    for name, (check, default) in fields.items():
        if name in raw:
            options[name] = check(name, raw[name])
        elif default is REQUIRED:
            raise StepError(f"missing option '{name}'")
        else:
            options[name] = default
    return options
