"""Conversion variants: one model entry checked as several conversions of the same ONNX model.

```yaml
  - name: ppocr-cls
    convert: {fp16: false}
    variants:
      fp16: {convert: {fp16: true}}
      w8:   {convert: {weight_quant_bits: 8}, tolerance: {cosine_min: 0.999}, expect: {fail: "why"}}
```

The entry is expanded, before any `ModelSpec` is built, into the model itself (unchanged) and one ordinary model
per variant named `<model>@<variant>`: conversion, goldens, reports, the pytest plugin and `--model` see plain
models. A model name cannot hold `@` (schema), so a variant's name never collides with another model's, and the
reports find a variant's family by splitting the name (`split_name`).

A variant merges `convert` and `tolerance` over the model's, key by key, and replaces `backends`; it does not
inherit `expect`: an expected failure is a claim about one conversion, and a variant saying nothing is expected
to pass.
"""
from __future__ import annotations

from typing import Iterator, Optional

from mnn_parity.manifest.issues import Issues
from mnn_parity.manifest.spec import ConvertFlags

SEPARATOR = "@"
MERGED = ("convert", "tolerance")     # merged key by key over the model's
REPLACED = ("backends", "expect", "description")


def variant_name(model: str, variant: str) -> str:
    return f"{model}{SEPARATOR}{variant}"


def split_name(name: str) -> tuple[str, Optional[str]]:
    """(family, variant) of a model name; (name, None) for a model that is not a variant."""
    family, separator, variant = name.partition(SEPARATOR)
    return (family, variant) if separator else (name, None)


def selected(name: str, wanted: Optional[frozenset[str]], with_variants: bool = True) -> bool:
    """Whether `--model` chose this model: every model when nothing was asked for; a name asks for that model and,
    `with_variants`, for its variants (`ppocr-cls` gives `ppocr-cls@fp16` too; `ppocr-cls@fp16` only itself)."""
    return wanted is None or name in wanted or (with_variants and split_name(name)[0] in wanted)


def expand(model: dict) -> Iterator[tuple[dict, Optional[str]]]:
    """The model's entry without `variants`, then each variant's entry: (entry, variant name or None)."""
    variants = model.get("variants") or {}
    base = {key: value for key, value in model.items() if key != "variants"}
    yield base, None
    for name, overrides in variants.items():
        yield variant_entry(base, name, overrides or {}), name


def variant_entry(base: dict, name: str, overrides: dict) -> dict:
    entry = {key: value for key, value in base.items() if key not in ("expect", "description")}
    entry["name"] = variant_name(base["name"], name)
    for key in MERGED:
        if key in overrides:
            entry[key] = {**(base.get(key) or {}), **(overrides[key] or {})}
    for key in REPLACED:
        if key in overrides:
            entry[key] = overrides[key]
    return entry


def variant_issues(model: dict, at: tuple, backends: set[str], issues: Issues) -> None:
    """What the schema cannot say about a model's variants: backends that exist, and conversions that differ."""
    variants = model.get("variants")
    if not isinstance(variants, dict):
        return
    seen: dict[str, str] = {}       # a conversion (as text) -> who converts that way
    seen[_conversion_key(model.get("convert"))] = "the model itself"
    for name, overrides in variants.items():
        where = at + ("variants", name)
        if not isinstance(overrides, dict):
            continue
        for position, backend in enumerate(overrides.get("backends") or []):
            if backend not in backends:
                issues.add(where + ("backends", position), f"no backend {backend!r} in this suite")
        for position, backend in enumerate((overrides.get("expect") or {}).get("backends") or []):
            if backend not in backends:
                issues.add(where + ("expect", "backends", position), f"no backend {backend!r} in this suite")
        merged = {**(model.get("convert") or {}), **(overrides.get("convert") or {})}
        key = _conversion_key(merged)
        if key in seen:
            issues.add(where + ("convert",), f"variant {name!r} converts exactly as {seen[key]}: "
                                             "a variant must change the conversion")
        seen.setdefault(key, f"variant {name!r}")


def _conversion_key(convert: Optional[dict]) -> str:
    """Flags with their defaults filled in, so `{}` and `{fp16: false}` read as the same conversion."""
    try:
        return repr(ConvertFlags.from_manifest(convert))
    except (AttributeError, TypeError, ValueError):    # the schema has said what is wrong with it
        return repr(sorted((convert or {}).items(), key=str))
