"""Suite manifests: YAML in, typed `Suite` out, or every problem at once with its file, key path and line.

Three passes, each collecting instead of stopping at the first problem: reading (`yaml_reader`: hostile YAML,
duplicate keys), the JSON Schemas in `schemas/` (`schema`: the single source of truth for keys), then semantic
checks the schema cannot express (`semantic`: files exist and stay inside the repository, input and output names
and shapes agree with the ONNX model, backends named exist).
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Iterable, Iterator, Optional

from mnn_parity.manifest.defaults import DEFAULT_BACKENDS, REFERENCE_DEFAULTS, RUNTIME_DEFAULTS
from mnn_parity.manifest.issues import Issues, ManifestError, ManifestIssue
from mnn_parity.manifest.schema import schema_issues
from mnn_parity.manifest.semantic import semantic_issues
from mnn_parity.manifest.spec import (BackendSpec, ConvertFlags, InputSpec, LatencySpec, Limits, Logits, ModelSpec,
                                      OutputSpec, Suite, TopK)
from mnn_parity.manifest.variants import expand as expand_variants
from mnn_parity.manifest.yaml_reader import read_yaml
# cli.py and bench/overhead.py import these from here
from mnn_parity.modelinfo import onnx_signature  # noqa: F401

__all__ = ["load_suite", "load_suites", "find_manifests", "ManifestError", "ManifestIssue", "LatencySpec",
           "onnx_signature"]


def _label(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def load_suite(path: Path, root: Path) -> Suite:
    """Read, validate and type one manifest; raises ManifestError with every problem found."""
    root = root.resolve()
    path = Path(path)
    label = _label(path, root)
    document = read_yaml(path, label)
    if not isinstance(document.data, dict):
        raise ManifestError(document.issues or
                            [ManifestIssue(label, "", 1, "a manifest is a YAML mapping with `suite:` and `models:`")])
    issues = Issues(label, document.lines)
    issues.found += document.issues
    schema_issues(document.data, issues)
    malformed = frozenset(int(m.group(1)) for issue in issues.found if (m := re.match(r"models\[(\d+)\]", issue.path)))
    # every problem at once: a typo in one model does not hide a wrong input name in another
    semantic_issues(document.data, issues, root, malformed)
    if issues.found:
        raise ManifestError(issues.found)
    return _build(document.data, path, root, document.lines)


def _build_model(model: dict, root: Path, line: Optional[int] = None) -> ModelSpec:
    inputs = {name: InputSpec(name, _globs(spec.get("files")), tuple(spec.get("preprocess") or ()),
                              tuple(spec["shape"]) if spec.get("shape") is not None else None)
              for name, spec in (model.get("inputs") or {}).items()}
    outputs = {name: OutputSpec(name, dict(spec.get("tolerance") or {}),
                                TopK(**spec["topk"]) if spec.get("topk") else None, bool(spec.get("skip")),
                                Logits(**spec["logits"]) if spec.get("logits") else None)
               for name, spec in (model.get("outputs") or {}).items()}
    expect = model.get("expect") or {}
    return ModelSpec(
        name=model["name"], onnx=(root / model["onnx"]).resolve(),
        convert=ConvertFlags.from_manifest(model.get("convert")), tolerance=dict(model.get("tolerance") or {}),
        inputs=inputs, outputs=outputs, cases=model.get("cases"), max_cases=model.get("max_cases"),
        stream=model.get("stream"), backends=tuple(model["backends"]) if model.get("backends") else None,
        expect_fail=expect.get("fail"),
        expect_backends=tuple(expect["backends"]) if expect.get("backends") else None, line=line,
    )


def _build(data: dict, path: Path, root: Path, lines: Optional[dict[tuple, int]] = None) -> Suite:
    backends = {}
    for name, spec in (data.get("backends") or DEFAULT_BACKENDS).items():
        runtime = {key: spec.get(key, default) for key, default in RUNTIME_DEFAULTS.items()}
        backends[name] = BackendSpec(name, runtime, dict(spec.get("tolerance") or {}))
    return Suite(
        name=data["suite"], description=data.get("description", ""), path=path, root=root,
        reference={**REFERENCE_DEFAULTS, **(data.get("reference") or {})}, backends=backends,
        tolerance=dict(data.get("tolerance") or {}), limits=Limits(**(data.get("limits") or {})),
        latency=LatencySpec(**(data.get("latency") or {})),
        models=tuple(_build_models(data["models"], root, lines or {})),
    )


def _build_models(models: list[dict], root: Path, lines: dict[tuple, int]) -> Iterator[ModelSpec]:
    """Each entry, then its conversion variants as models of their own (manifest/variants.py)."""
    for index, model in enumerate(models):
        for entry, variant in expand_variants(model):
            where = ("models", index) + (("variants", variant) if variant else ())
            spec = _build_model(entry, root, lines.get(where, lines.get(("models", index))))
            yield replace(spec, family=model["name"], variant=variant)


def _globs(files) -> Optional[tuple[str, ...]]:
    if not files:
        return None
    return (files,) if isinstance(files, str) else tuple(files)


def find_manifests(paths: Iterable[Path]) -> list[Path]:
    """Manifests named on the command line, or every *.yaml / *.yml under the folders named."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
        else:
            found.append(path)
    return found


def missing_manifest(path: Path, root: Path) -> ManifestIssue:
    """A manifest named on the command line that is not there: where it was looked for, and from where."""
    return ManifestIssue(str(path), "", None, f"no such file or folder (a relative path on the command line is read "
                                              f"from the working folder, {Path.cwd()}; the repository root is {root})")


def load_suites(paths: Iterable[Path], root: Path) -> list[Suite]:
    """Every manifest, every problem: raises one ManifestError holding all issues of all files."""
    suites, issues = [], []
    names: dict[str, Path] = {}
    for path in find_manifests(paths):
        if not path.exists():
            issues.append(missing_manifest(path, root))
            continue
        try:
            suite = load_suite(path, root)
        except ManifestError as error:
            issues += error.issues
            continue
        if suite.name in names:
            issues.append(ManifestIssue(str(path), "suite", 1,
                                        f"suite name {suite.name!r} is also used by {names[suite.name]}"))
        names[suite.name] = path
        suites.append(suite)
    if issues:
        raise ManifestError(issues)
    return suites
