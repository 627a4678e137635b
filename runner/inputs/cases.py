"""From a model's manifest entry to its cases, and from a case to the feeds both engines receive.

One case per file of the input that lists `files:`, or one per `.npz` of `cases:`. Constant inputs (state, flags)
are built once per model. The same feeds go to ONNX Runtime and to MNN: preprocessing happens here, once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from mnn_parity.inputs.arrays import load_npz
from mnn_parity.inputs.preprocess import PreprocessError, run_pipeline
from mnn_parity.manifest.spec import ModelSpec
from mnn_parity.paths import inside, match_glob, real_root, resolved, shown


@dataclass(frozen=True)
class Case:
    name: str                 # the file's stem, made unique with its folder where stems repeat
    source: Path              # the file the case comes from, as the glob matched it
    label: str = ""           # the file as the user wrote it: relative to the repository root
    root: Optional[Path] = None     # the repository root it must stay inside when it is read
    refused: str = ""         # why it must not be read (it leads outside the root): reading it fails the case


def list_cases(model: ModelSpec, root: Path) -> list[Case]:
    """One case per file matched, sorted; a match leading outside the repository becomes a refused case.

    Refused rather than dropped: `validate` reports it, and a file that changed since is a failed case in the
    report, not a case silently missing from it.
    """
    root = real_root(str(root))
    patterns = (model.cases,) if model.cases else next(spec.files for spec in model.inputs.values() if spec.files)
    files: dict[Path, str] = {}
    for pattern in patterns:
        match = match_glob(root, pattern)
        if match.escapes:
            files[root / pattern] = f"{match.problems[0]}: refused"
        files.update((path, "") for path in match.files)
        files.update((path, f"glob {pattern!r} leads it to {resolved(root, path)}, outside the repository root "
                            f"{root}: refused") for path in match.outside)
    ordered = sorted(files)[: model.max_cases] if model.max_cases else sorted(files)
    stems = [f.stem for f in ordered]
    return [Case(path.stem if stems.count(path.stem) == 1 else str(Path(shown(root, path)).with_suffix("")),
                 path, shown(root, path), root, files[path]) for path in ordered]


def readable_path(case: Case) -> Path:
    """The file to open for this case, checked again now: a file can change between listing and reading."""
    where = case.label or str(case.source)
    if case.refused:
        raise PreprocessError(case.refused, file=where)
    if case.root is not None and not inside(case.root, case.source):
        raise PreprocessError(f"now leads to {resolved(case.root, case.source)}, outside the repository root "
                              f"{case.root}: refused", file=where)
    # open the file the check saw, not a link that could be swapped after it
    return resolved(case.source.parent, case.source) or case.source


def constant_feeds(model: ModelSpec) -> dict[str, np.ndarray]:
    return {name: run_pipeline(list(spec.preprocess), label=f"input {name}")
            for name, spec in model.inputs.items() if spec.is_constant}


def build_feeds(model: ModelSpec, case: Case, constants: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every input of the model for this case; raises PreprocessError naming the file and the step."""
    feeds = dict(constants)
    source = readable_path(case)
    if model.cases:
        try:
            arrays = load_npz(source)
        except Exception as error:  # ArrayFileError for what load_npz refuses; zipfile and zlib errors if corrupt
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
            feeds[name] = run_pipeline(list(spec.preprocess), source, label=case.label or None)
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
