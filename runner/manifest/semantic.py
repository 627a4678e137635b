"""The semantic pass: what the schema cannot know, checked against the files and the ONNX model.

Every path is checked where it really leads (`mnn_parity.paths`), after glob expansion and symlinks, and every
path problem names the repository root it was resolved against: "does not exist" is only useful with "where".
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

from mnn_parity.manifest.defaults import DEFAULT_BACKENDS
from mnn_parity.manifest.dvc import dvc_hint
from mnn_parity.manifest.issues import Issues, did_you_mean
from mnn_parity.manifest.logits import logits_issues
from mnn_parity.manifest.spec import CONSTANT_STEPS
from mnn_parity.manifest.variants import variant_issues
from mnn_parity.modelinfo import onnx_signature
from mnn_parity.paths import external_data_problems, inside, match_glob, resolved

Signature = tuple[dict[str, tuple], dict[str, tuple]]
SOURCE_STEPS = ("decode", "audio", "load")


def semantic_issues(data: dict, issues: Issues, root: Path, malformed: frozenset[int] = frozenset()) -> None:
    """Checks against the files and the models; entries in `malformed` (schema errors of their own) are skipped."""
    declared = data.get("backends") or DEFAULT_BACKENDS
    backends = set(declared) if isinstance(declared, dict) else set()
    models = data.get("models") if isinstance(data.get("models"), list) else []
    seen_models: set[str] = set()
    for index, model in enumerate(models):
        if index in malformed:
            continue
        at = ("models", index)
        _check_names(model, at, backends, seen_models, issues)
        variant_issues(model, at, backends, issues)
        signature = _check_onnx(model, at, root, issues)
        _check_case_sources(model, at, root, issues)
        _check_first_steps(model, at, issues)
        _check_quantize(model, at, root, issues)
        _check_variant_quantize(model, at, root, issues)
        if signature is not None:
            _check_inputs(model, at, signature, issues)
            _check_outputs(model, at, signature, issues)
            logits_issues(model, at, root, issues)
            _check_stream(model, at, signature, issues)


def _check_names(model: dict, at: tuple, backends: set[str], seen: set[str], issues: Issues) -> None:
    name = model.get("name")
    if name in seen:
        issues.add(at + ("name",), f"model name {name!r} is used twice")
    seen.add(name)
    for position, backend in enumerate(model.get("backends") or []):
        if backend not in backends:
            issues.add(at + ("backends", position),
                       f"no backend {backend!r} in this suite{did_you_mean(backend, backends)}")
    for position, backend in enumerate((model.get("expect") or {}).get("backends") or []):
        if backend not in backends:
            issues.add(at + ("expect", "backends", position), f"no backend {backend!r} in this suite")


def _check_onnx(model: dict, at: tuple, root: Path, issues: Issues) -> Optional[Signature]:
    where, written = at + ("onnx",), model["onnx"]
    path = root / written
    if not inside(root, path):
        issues.add(where, f"path {written!r} leaves the repository root {root}: it leads to "
                          f"{resolved(root, path) or 'a symlink loop'}")
        return None
    if not path.is_file():
        issues.add(where, f"no file {written!r} under the repository root {root}{dvc_hint(root, written)}")
        return None
    try:
        signature = onnx_signature(path)
    except Exception as error:  # onnx raises DecodeError, ValueError, ... for a file that is not ONNX
        issues.add(where, f"{written!r} is not an ONNX model: {type(error).__name__}: {error}")
        return None
    for problem in external_data_problems(path, root):
        issues.add(where, f"{written!r}: {problem}")
    return signature


def _case_globs(model: dict, at: tuple, file_inputs: list[str]) -> list[tuple[tuple, str]]:
    globs = [(at + ("cases",), model["cases"])] if model.get("cases") else []
    for name in file_inputs:
        files = model["inputs"][name]["files"]
        where = at + ("inputs", name, "files")
        globs += [(where, files)] if isinstance(files, str) else [(where + (i,), p) for i, p in enumerate(files)]
    return globs


def _check_case_sources(model: dict, at: tuple, root: Path, issues: Issues) -> None:
    inputs = model.get("inputs") or {}
    file_inputs = [name for name, spec in inputs.items() if spec.get("files")]
    if model.get("cases") and file_inputs:
        issues.add(at + ("cases",), "give cases either as `cases:` archives or as one input's `files:`, not both")
    if len(file_inputs) > 1:
        issues.add(at + ("inputs", file_inputs[1], "files"),
                   f"only one input may list files (one case per file); {file_inputs[0]!r} already does")
    if not model.get("cases") and not file_inputs:
        issues.add(at + ("inputs",), "no cases: give one input `files:` or the model `cases:` (a glob of .npz files)")
    for where, pattern in _case_globs(model, at, file_inputs):
        match = match_glob(root, pattern)
        hint = dvc_hint(root, pattern) if not match.files and not match.outside else ""
        for problem in match.problems:
            issues.add(where, problem + hint)


def _check_variant_quantize(model: dict, at: tuple, root: Path, issues: Issues) -> None:
    """A variant quantizes with its merged `convert`: the same checks, located at the variant."""
    variants = model.get("variants")
    for name, overrides in (variants.items() if isinstance(variants, dict) else ()):
        if isinstance(overrides, dict) and isinstance(overrides.get("convert"), dict):
            merged = {**(model.get("convert") or {}), **overrides["convert"]}
            _check_quantize({**model, "convert": merged}, at + ("variants", name), root, issues)


def _check_quantize(model: dict, at: tuple, root: Path, issues: Issues) -> None:
    """What MNN's quantizer in sequence mode cannot do, said before it runs (it would crash or ignore samples)."""
    quantize = (model.get("convert") or {}).get("quantize")
    if not isinstance(quantize, dict):
        return
    where = at + ("convert", "quantize")
    calibration = quantize.get("calibration") or {}
    if model.get("stream"):
        issues.add(where, "a streamed model cannot be quantized: calibration feeds whole inputs, not frames "
                          "with carried state")
    if quantize.get("method") == "ADMM" and (calibration.get("max_samples") or 1) > 1:
        issues.add(where + ("calibration", "max_samples"),
                   "MNN's ADMM calibrates on the last sample only when fed tensors: set max_samples: 1 "
                   "(ADMM's default), or use method KL or EMA to calibrate on many")
    files = calibration.get("files") or {}
    file_inputs = [name for name, spec in (model.get("inputs") or {}).items() if spec.get("files")]
    for name, globs in files.items():
        at_files = where + ("calibration", "files", name)
        if model.get("cases"):
            issues.add(at_files, "a model with `cases:` archives calibrates on its own cases: remove "
                                 "calibration.files, or give the model's cases as one input's `files:`")
            continue
        if name not in file_inputs:
            issues.add(at_files, f"calibration files are for the input that lists files ({file_inputs}), "
                                 f"not {name!r}{did_you_mean(name, file_inputs)}")
            continue
        patterns = ([(at_files, globs)] if isinstance(globs, str)
                    else [(at_files + (i,), g) for i, g in enumerate(globs)])
        for place, pattern in patterns:
            match = match_glob(root, pattern)
            hint = dvc_hint(root, pattern) if not match.files and not match.outside else ""
            for problem in match.problems:
                issues.add(place, problem + hint)


def _first_step(steps: list) -> Optional[str]:
    return next(iter(steps[0])) if steps and isinstance(steps[0], dict) and steps[0] else None


def _check_first_steps(model: dict, at: tuple, issues: Issues) -> None:
    for input_name, spec in (model.get("inputs") or {}).items():
        first = _first_step(spec.get("preprocess") or [])
        if spec.get("files") and first not in SOURCE_STEPS:
            issues.add(at + ("inputs", input_name, "preprocess"),
                       "an input read from files must start with a decode, audio or load step")
        if not spec.get("files") and not model.get("cases") and first not in CONSTANT_STEPS:
            issues.add(at + ("inputs", input_name),
                       "an input without files needs a constant source step first (zeros or value), or `cases:`")


def _no_such(kind: str, name: str, names: Iterable[str]) -> str:
    return f"the model has no {kind} {name!r}{did_you_mean(name, names)}; it has {sorted(names)}"


def _check_inputs(model: dict, at: tuple, signature: Signature, issues: Issues) -> None:
    model_inputs = signature[0]
    inputs = model.get("inputs") or {}
    for input_name, spec in inputs.items():
        if input_name not in model_inputs:
            issues.add(at + ("inputs", input_name), _no_such("input", input_name, model_inputs))
        elif spec.get("shape") is not None and not shapes_fit(spec["shape"], model_inputs[input_name]):
            issues.add(at + ("inputs", input_name, "shape"),
                       f"shape {spec['shape']} does not fit the model's {list(model_inputs[input_name])}")
    if not model.get("cases"):
        for missing in sorted(set(model_inputs) - set(inputs)):
            issues.add(at + ("inputs",), f"the model's input {missing!r} has no entry")


def _check_outputs(model: dict, at: tuple, signature: Signature, issues: Issues) -> None:
    model_outputs = signature[1]
    for output_name, spec in (model.get("outputs") or {}).items():
        if output_name not in model_outputs:
            issues.add(at + ("outputs", output_name), _no_such("output", output_name, model_outputs))
        elif isinstance(spec, dict) and isinstance(spec.get("topk"), dict):
            _check_topk_axis(spec["topk"], at + ("outputs", output_name, "topk"), model_outputs[output_name],
                             bool(model.get("stream")), issues)


def _check_topk_axis(topk: dict, where: tuple, shape: tuple, streamed: bool, issues: Issues) -> None:
    """An axis past the output's rank would wrap (numpy's modulo) onto another axis, say the batch, and report
    full agreement on nothing: refuse it here, where the rank is known."""
    axis = topk.get("axis")
    if not isinstance(axis, int) or isinstance(axis, bool) or not shape:
        return   # no axis (the default, the last, always fits), or a rank the model does not declare: run time
    rank = len(shape) + (1 if streamed else 0)    # a stream stacks its frames' outputs on a new axis 0
    if not -rank <= axis < rank:
        stacked = " (its frames stacked on axis 0)" if streamed else ""
        issues.add(where + ("axis",), f"axis {axis} is outside a rank-{rank} output{stacked}: "
                                      f"use 0 to {rank - 1}, or -{rank} to -1 from the end")


def _check_stream(model: dict, at: tuple, signature: Signature, issues: Issues) -> None:
    stream = model.get("stream")
    if not stream:
        return
    model_inputs, model_outputs = signature
    if stream["input"] not in model_inputs:
        issues.add(at + ("stream", "input"), f"the model has no input {stream['input']!r}")
    for carried_in, carried_out in (stream.get("carry") or {}).items():
        if carried_in not in model_inputs:
            issues.add(at + ("stream", "carry", carried_in), f"the model has no input {carried_in!r}")
        if carried_out not in model_outputs:
            issues.add(at + ("stream", "carry", carried_in), f"the model has no output {carried_out!r}")


def shapes_fit(declared: Iterable[Optional[int]], actual: Iterable[Optional[int]]) -> bool:
    declared, actual = list(declared), list(actual)
    if not actual:      # the model does not say: anything fits
        return True
    return len(declared) == len(actual) and all(d is None or a is None or d == a for d, a in zip(declared, actual))
