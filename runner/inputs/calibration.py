"""Calibration samples for MNN's quantizer, made by the very code that makes the inference feeds.

A quantizer calibrated on tensors other than the ones inference sees measures the wrong ranges: MNN's own image
mode resizes differently from `inputs/preprocess`. So a calibration sample is a case of the model, built by
`inputs.cases.build_feeds` from the calibration files (or the model's own case files) with the model's own
preprocessing, and handed to MNN as a "sequence" folder of tensors:

    <folder>/<sample>/input.json     {"inputs": [{"name": "x", "shape": [1, 3, 48, 192]}, ...]}
    <folder>/<sample>/<input>.txt    the values in the input's layout, whitespace-separated

(MNN 3.6.1 `tools/quantization/calibration.cpp`, `getModuleInputs`: each value is read as a double and cast to the
input's type; an input missing from input.json is never created and the quantizer crashes.)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence

import numpy as np

from mnn_parity.hashing import array_sha256
from mnn_parity.inputs.cases import build_feeds, constant_feeds, list_cases, shape_problem
from mnn_parity.inputs.preprocess import PreprocessError
from mnn_parity.manifest.spec import ModelSpec

Feeds = dict[str, np.ndarray]
INPUT_JSON = "input.json"
_VALUES_PER_LINE = 4096
# "%.9g" gives every float32 back exactly once read as a double and cast to float, as MNN reads it.
_FLOAT_FORMAT, _INT_FORMAT = "%.9g", "%d"


def calibration_model(model: ModelSpec) -> ModelSpec:
    """The model as its calibration sees it: the same inputs and preprocessing, the calibration files (if the
    manifest gives any) in place of the case files, and at most the calibration's sample count."""
    spec = model.convert.quantize
    if spec is None:
        raise ValueError(f"model {model.name!r} has no convert.quantize")
    inputs = dict(model.inputs)
    for name, globs in spec.files:
        inputs[name] = dataclasses.replace(inputs[name], files=globs)
    limit = spec.samples if spec.files or not model.max_cases else min(spec.samples, model.max_cases)
    return dataclasses.replace(model, inputs=inputs, max_cases=limit)


def calibration_feeds(model: ModelSpec, root: Path, onnx_inputs: Optional[dict] = None) -> list[Feeds]:
    """Every calibration sample's feeds; raises PreprocessError naming the file, as a case's preprocessing does."""
    calibrated = calibration_model(model)
    constants = constant_feeds(calibrated)
    samples = []
    for case in list_cases(calibrated, root):
        feeds = build_feeds(calibrated, case, constants)
        problems = [p for name, feed in feeds.items()
                    if (p := shape_problem(name, feed, (onnx_inputs or {}).get(name), False))]
        if problems:
            raise PreprocessError("calibration sample: " + "; ".join(problems), file=case.label or str(case.source))
        samples.append(feeds)
    if not samples:
        raise PreprocessError(f"model {model.name!r}: no calibration samples (no file matches "
                              f"{[g for _, globs in model.convert.quantize.files for g in globs] or 'its cases'})")
    return samples


def samples_sha256(samples: Sequence[Feeds]) -> str:
    """One hash of every sample in order: names, dtypes, shapes and values. A cache key: new data, new model."""
    digest = hashlib.sha256(f"{len(samples)} samples".encode())
    for feeds in samples:
        for name in sorted(feeds):
            digest.update(f"\0{name}\0{array_sha256(feeds[name])}".encode())
    return digest.hexdigest()


def write_sequence(samples: Sequence[Feeds], folder: Path) -> int:
    """Write the samples as MNN sequence folders under `folder` (which holds nothing else: MNN takes every entry
    as a sample); returns how many."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, feeds in enumerate(samples):
        sample = folder / f"{index:05d}"
        sample.mkdir()
        for name, array in feeds.items():
            _write_values(_values_file(sample, name), array)
        shapes = {"inputs": [{"name": name, "shape": [int(d) for d in array.shape]} for name, array in feeds.items()]}
        (sample / INPUT_JSON).write_text(json.dumps(shapes))
    return len(samples)


def read_sequence(folder: Path) -> list[Feeds]:
    """The samples as MNN reads them back (values as doubles, shaped by input.json): to check what it was fed."""
    samples = []
    for sample in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        shapes = json.loads((sample / INPUT_JSON).read_text())["inputs"]
        samples.append({entry["name"]: np.array(_values_file(sample, entry["name"]).read_text().split(),
                                                np.float64).reshape(entry["shape"]) for entry in shapes})
    return samples


def _values_file(sample: Path, name: str) -> Path:
    # MNN opens "<sample>/<name>.txt" as written; a name that climbs out of the sample folder is refused.
    parts = PurePosixPath(name).parts
    if not name or name.startswith("/") or ".." in parts or "\\" in name:
        raise PreprocessError(f"input name {name!r} cannot be a calibration file name")
    path = sample / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write_values(path: Path, array: np.ndarray) -> None:
    flat = np.ascontiguousarray(array).reshape(-1)
    if flat.dtype == np.bool_:
        flat = flat.astype(np.int32)
    fmt = _FLOAT_FORMAT if np.issubdtype(flat.dtype, np.floating) else _INT_FORMAT
    whole = flat.size - flat.size % _VALUES_PER_LINE
    with open(path, "w") as handle:
        if whole:
            np.savetxt(handle, flat[:whole].reshape(-1, _VALUES_PER_LINE), fmt=fmt, delimiter=" ")
        if flat.size > whole:
            np.savetxt(handle, flat[whole:].reshape(1, -1), fmt=fmt, delimiter=" ")
