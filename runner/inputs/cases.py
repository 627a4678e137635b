"""From a model's manifest entry to its cases, and from a case to the feeds both engines receive.

One case per file of the input that lists `files:`, or one per `.npz` of `cases:`. Constant inputs (state, flags)
are built once per model. The same feeds go to ONNX Runtime and to MNN: preprocessing happens here, once.
"""
from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from mnn_parity.manifest.load import ModelSpec
from mnn_parity.inputs.preprocess import PreprocessError, run_pipeline


@dataclass(frozen=True)
class Case:
    name: str                 # the file's stem, made unique with its folder where stems repeat
    source: Path              # the file the case comes from
    label: str = ""           # the file as the user wrote it: relative to the repository root


def list_cases(model: ModelSpec, root: Path) -> list[Case]:
    patterns = (model.cases,) if model.cases else next(spec.files for spec in model.inputs.values() if spec.files)
    matched = {Path(p) for pattern in patterns for p in glob.glob(str(root / pattern), recursive=True)}
    files = sorted(p for p in matched if p.is_file())
    if model.max_cases:
        files = files[: model.max_cases]
    stems = [f.stem for f in files]
    cases = []
    for path in files:
        name = path.stem if stems.count(path.stem) == 1 else str(path.relative_to(root).with_suffix(""))
        cases.append(Case(name, path, str(path.relative_to(root))))
    return cases


def constant_feeds(model: ModelSpec) -> dict[str, np.ndarray]:
    return {name: run_pipeline(list(spec.preprocess), label=f"input {name}")
            for name, spec in model.inputs.items() if spec.is_constant}


def build_feeds(model: ModelSpec, case: Case, constants: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every input of the model for this case; raises PreprocessError naming the file and the step."""
    feeds = dict(constants)
    if model.cases:
        try:
            with np.load(case.source, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except Exception as error:
            raise PreprocessError(f"cannot read as .npz: {error}", file=case.label or str(case.source))
        for name, array in arrays.items():
            spec = model.inputs.get(name)
            if spec is not None and spec.is_constant:
                continue   # the manifest says what this input is: its constant wins over the archive's copy
            feeds[name] = (run_pipeline(list(spec.preprocess), array, label=f"{case.label or case.source}[{name}]")
                           if spec and spec.preprocess else array)
        for name in model.inputs:
            if name not in feeds:
                raise PreprocessError(f"has no array {name!r} and the manifest gives no constant",
                                      file=case.label or str(case.source))
        return feeds
    for name, spec in model.inputs.items():
        if spec.files:
            feeds[name] = run_pipeline(list(spec.preprocess), case.source, label=case.label or None)
    return feeds


def shape_problem(name: str, feed: np.ndarray, declared: Optional[tuple], streamed: bool) -> Optional[str]:
    """A preprocessed feed whose shape cannot fit the model's input, said before any engine sees it."""
    shape = feed.shape[1:] if streamed else feed.shape
    if not declared:
        return None
    if len(shape) != len(declared) or any(d is not None and d != s for d, s in zip(declared, shape)):
        frames = " per frame" if streamed else ""
        return f"input {name!r}: preprocessing gives shape {list(shape)}{frames}, the model expects {list(declared)}"
    return None
