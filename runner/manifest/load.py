"""Suite manifests: YAML in, typed `Suite` out, or every problem at once with its file, key path and line.

Two passes, both collecting instead of stopping at the first problem: the JSON Schemas in `schemas/` (the single
source of truth for keys), then semantic checks the schema cannot express (files exist and stay inside the
repository, input and output names and shapes agree with the ONNX model, backends named exist).
"""
from __future__ import annotations

import difflib
import glob
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from mnn_parity.manifest.spec import (CONSTANT_STEPS, BackendSpec, ConvertFlags, InputSpec, LatencySpec, Limits,
                                      ModelSpec, OutputSpec, Suite, TopK)
from mnn_parity.modelinfo import onnx_signature
from mnn_parity.resources import schema, schema_names

DEFAULT_BACKENDS = {"cpu-fp32": {"engine": "mnn", "device": "CPU", "precision": "high", "threads": 1}}
RUNTIME_DEFAULTS = {"device": "CPU", "precision": "high", "threads": 1, "memory": "normal", "power": "normal"}
REFERENCE_DEFAULTS = {"engine": "onnxruntime", "providers": ["CPUExecutionProvider"],
                      "graph_optimization": "all", "threads": 1}


# ---------------------------------------------------------------------------------------------------- issues
@dataclass(frozen=True)
class ManifestIssue:
    file: str
    path: str           # dotted key path, e.g. models[0].inputs.x.files
    line: Optional[int]
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path or '<top>'}: {self.message}"


class ManifestError(Exception):
    def __init__(self, issues: list[ManifestIssue]):
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


def format_path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# ---------------------------------------------------------------------------------------------------- YAML with lines
def _line_map(node: yaml.Node, path: tuple = (), lines: Optional[dict] = None) -> dict[tuple, int]:
    """Map every key path to the 1-based line where it is written (keys) or starts (list items)."""
    lines = {} if lines is None else lines
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = path + (key_node.value,)
            lines[child] = key_node.start_mark.line + 1
            _line_map(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, path + (index,), lines)
    return lines


def line_of(lines: dict[tuple, int], path: Iterable[Any]) -> Optional[int]:
    """The line of the path, or of its nearest written ancestor (a missing key is reported where its parent is)."""
    parts = tuple(path)
    while parts not in lines and parts:
        parts = parts[:-1]
    return lines.get(parts)


class ManifestLoader(yaml.SafeLoader):
    """SafeLoader that reads `1e-4` as a number, as YAML 1.2 does; YAML 1.1 wants `1.0e-4` and makes it a string."""


ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ManifestLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def read_yaml(path: Path, label: str) -> tuple[Any, dict[tuple, int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError([ManifestIssue(label, "", None, f"cannot read: {error}")])
    try:
        loader = ManifestLoader(text)   # one parse gives both the nodes (for line numbers) and the data
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark else None
        raise ManifestError([ManifestIssue(label, "", line, f"not valid YAML: {getattr(error, 'problem', error)}")])
    return data, (_line_map(node) if node is not None else {})


# ---------------------------------------------------------------------------------------------------- schema pass
@lru_cache(maxsize=None)
def schema_validator(name: str = "manifest.schema.json"):
    import jsonschema
    from referencing import Registry, Resource

    resources = []
    for schema_name in schema_names():
        contents = schema(schema_name)
        resource = Resource.from_contents(contents)
        resources.append((contents["$id"], resource))
        resources.append((schema_name, resource))
    registry = Registry().with_resources(resources)
    return jsonschema.Draft202012Validator(schema(name), registry=registry)


def _leaf_errors(error) -> list:
    """For oneOf/anyOf failures, the most specific sub-errors say more than "is not valid under any schema"."""
    if error.context and error.validator in ("oneOf", "anyOf"):
        by_branch: dict[int, list] = {}
        for sub in error.context:
            by_branch.setdefault(sub.relative_schema_path[0], []).append(sub)
        # a branch that fails at its own top level (its step name missing, another key present) is not the one
        # the user meant; the meant one fails deeper, on an option
        meant = [errs for errs in by_branch.values()
                 if not any(e.validator in ("required", "additionalProperties") and not e.relative_path
                            for e in errs)]
        if len(meant) == 1:
            return [leaf for sub in meant[0] for leaf in _leaf_errors(sub)]
    return [error]


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def schema_issues(data: Any, lines: dict, label: str) -> list[ManifestIssue]:
    issues = []
    for error in schema_validator().iter_errors(data):
        for leaf in _leaf_errors(error):
            issues.extend(_issue_from_error(leaf, lines, label))
    issues.sort(key=lambda i: (i.line or 0, i.path))
    return issues


def _issue_from_error(error, lines: dict, label: str) -> list[ManifestIssue]:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = list(error.schema.get("properties", {}))
        extras = [k for k in error.instance if k not in allowed]
        return [ManifestIssue(label, format_path(path + [key]), line_of(lines, path + [key]),
                              f"unknown key {key!r}{_did_you_mean(str(key), allowed)}") for key in extras]
    if error.validator == "oneOf" and isinstance(error.instance, dict) and len(error.instance) == 1:
        key = next(iter(error.instance))
        # each branch requires its own step name: the "required" complaints list every name there is
        names = [n for sub in error.context if sub.validator == "required" for n in sub.validator_value]
        if key not in names:
            return [ManifestIssue(label, format_path(path), line_of(lines, path),
                                  f"unknown step {key!r}{_did_you_mean(str(key), names)}")]
    message = error.message
    if error.validator == "enum":
        message = f"{error.instance!r} is not one of {error.validator_value}"
    return [ManifestIssue(label, format_path(path), line_of(lines, path), message)]


# ---------------------------------------------------------------------------------------------------- semantic pass
def _inside(root: Path, relative: str) -> Optional[Path]:
    candidate = (root / relative).resolve()
    return candidate if candidate == root or root in candidate.parents else None


def semantic_issues(data: dict, lines: dict, label: str, root: Path,
                    malformed: frozenset[int] = frozenset()) -> list[ManifestIssue]:
    """Checks against the files and the models; entries in `malformed` (schema errors of their own) are skipped."""
    issues: list[ManifestIssue] = []

    def add(path: list, message: str) -> None:
        issues.append(ManifestIssue(label, format_path(path), line_of(lines, path), message))

    declared = data.get("backends") or DEFAULT_BACKENDS
    backends = set(declared.keys()) if isinstance(declared, dict) else set()
    models = data.get("models") if isinstance(data.get("models"), list) else []
    seen_models: set[str] = set()
    for index, model in enumerate(models):
        if index in malformed:
            continue
        at = ["models", index]
        name = model.get("name")
        if name in seen_models:
            add(at + ["name"], f"model name {name!r} is used twice")
        seen_models.add(name)
        for key in ("backends",):
            for position, backend in enumerate(model.get(key) or []):
                if backend not in backends:
                    add(at + [key, position], f"no backend {backend!r} in this suite{_did_you_mean(backend, backends)}")
        for position, backend in enumerate((model.get("expect") or {}).get("backends") or []):
            if backend not in backends:
                add(at + ["expect", "backends", position], f"no backend {backend!r} in this suite")

        onnx_path = _inside(root, model["onnx"])
        signature = None
        if onnx_path is None:
            add(at + ["onnx"], f"path {model['onnx']!r} leaves the repository")
        elif not onnx_path.is_file():
            add(at + ["onnx"], f"file {model['onnx']!r} does not exist")
        else:
            try:
                signature = onnx_signature(onnx_path)
            except Exception as error:  # onnx raises DecodeError, ValueError, ... for a file that is not ONNX
                add(at + ["onnx"], f"{model['onnx']!r} is not an ONNX model: {type(error).__name__}: {error}"[:300])
        inputs = model.get("inputs") or {}
        file_inputs = [n for n, spec in inputs.items() if spec.get("files")]
        if model.get("cases") and file_inputs:
            add(at + ["cases"], "give cases either as `cases:` archives or as one input's `files:`, not both")
        if len(file_inputs) > 1:
            add(at + ["inputs", file_inputs[1], "files"],
                f"only one input may list files (one case per file); {file_inputs[0]!r} already does")
        if not model.get("cases") and not file_inputs:
            add(at + ["inputs"], "no cases: give one input `files:` or the model `cases:` (a glob of .npz files)")
        globs = [(at + ["cases"], model["cases"])] if model.get("cases") else []
        for name in file_inputs:
            files = inputs[name]["files"]
            where = at + ["inputs", name, "files"]
            globs += [(where, files)] if isinstance(files, str) else [(where + [i], p) for i, p in enumerate(files)]
        for where, pattern in globs:
            if _inside(root, pattern.split("*")[0] or ".") is None:
                add(where, f"glob {pattern!r} leaves the repository")
            elif not glob.glob(str(root / pattern)):
                add(where, f"glob {pattern!r} matches no file")
        for input_name, spec in inputs.items():
            steps = spec.get("preprocess") or []
            first = next(iter(steps[0])) if steps and isinstance(steps[0], dict) and steps[0] else None
            if spec.get("files") and first not in ("decode", "audio", "load"):
                add(at + ["inputs", input_name, "preprocess"],
                    "an input read from files must start with a decode, audio or load step")
            if not spec.get("files") and not model.get("cases") and first not in CONSTANT_STEPS:
                add(at + ["inputs", input_name],
                    "an input without files needs a constant source step first (zeros or value), or `cases:`")
        stream = model.get("stream")
        if signature is not None:
            model_inputs, model_outputs = signature
            for input_name, spec in inputs.items():
                if input_name not in model_inputs:
                    add(at + ["inputs", input_name],
                        f"the model has no input {input_name!r}{_did_you_mean(input_name, model_inputs)}; "
                        f"it has {sorted(model_inputs)}")
                elif spec.get("shape") is not None and not shapes_fit(spec["shape"], model_inputs[input_name]):
                    add(at + ["inputs", input_name, "shape"],
                        f"shape {spec['shape']} does not fit the model's {list(model_inputs[input_name])}")
            if not model.get("cases"):
                for missing in sorted(set(model_inputs) - set(inputs)):
                    add(at + ["inputs"], f"the model's input {missing!r} has no entry")
            for output_name in model.get("outputs") or {}:
                if output_name not in model_outputs:
                    add(at + ["outputs", output_name],
                        f"the model has no output {output_name!r}{_did_you_mean(output_name, model_outputs)}; "
                        f"it has {sorted(model_outputs)}")
            if stream:
                if stream["input"] not in model_inputs:
                    add(at + ["stream", "input"], f"the model has no input {stream['input']!r}")
                for carried_in, carried_out in (stream.get("carry") or {}).items():
                    if carried_in not in model_inputs:
                        add(at + ["stream", "carry", carried_in], f"the model has no input {carried_in!r}")
                    if carried_out not in model_outputs:
                        add(at + ["stream", "carry", carried_in], f"the model has no output {carried_out!r}")
    return issues


def shapes_fit(declared: Iterable[Optional[int]], actual: Iterable[Optional[int]]) -> bool:
    declared, actual = list(declared), list(actual)
    if not actual:      # the model does not say: anything fits
        return True
    return len(declared) == len(actual) and all(d is None or a is None or d == a for d, a in zip(declared, actual))


# ---------------------------------------------------------------------------------------------------- public API
def load_suite(path: Path, root: Path) -> Suite:
    """Read, validate and type one manifest; raises ManifestError with every problem found."""
    root = root.resolve()
    path = Path(path)
    try:
        label = str(path.resolve().relative_to(root))
    except ValueError:
        label = str(path)
    data, lines = read_yaml(path, label)
    if not isinstance(data, dict):
        raise ManifestError([ManifestIssue(label, "", 1, "a manifest is a YAML mapping with `suite:` and `models:`")])
    issues = schema_issues(data, lines, label)
    malformed = frozenset(int(m.group(1)) for issue in issues if (m := re.match(r"models\[(\d+)\]", issue.path)))
    # every problem at once: a typo in one model does not hide a wrong input name in another
    issues += semantic_issues(data, lines, label, root, malformed)
    if issues:
        raise ManifestError(issues)
    return _build(data, path, root)


def _build(data: dict, path: Path, root: Path) -> Suite:
    backends = {}
    for name, spec in (data.get("backends") or DEFAULT_BACKENDS).items():
        runtime = {key: spec.get(key, default) for key, default in RUNTIME_DEFAULTS.items()}
        backends[name] = BackendSpec(name, runtime, dict(spec.get("tolerance") or {}))
    models = []
    for model in data["models"]:
        inputs = {name: InputSpec(name, _globs(spec.get("files")), tuple(spec.get("preprocess") or ()),
                                  tuple(spec["shape"]) if spec.get("shape") is not None else None)
                  for name, spec in (model.get("inputs") or {}).items()}
        outputs = {name: OutputSpec(name, dict(spec.get("tolerance") or {}),
                                    TopK(**spec["topk"]) if spec.get("topk") else None, bool(spec.get("skip")))
                   for name, spec in (model.get("outputs") or {}).items()}
        expect = model.get("expect") or {}
        models.append(ModelSpec(
            name=model["name"], onnx=(root / model["onnx"]).resolve(),
            convert=ConvertFlags.from_manifest(model.get("convert")), tolerance=dict(model.get("tolerance") or {}),
            inputs=inputs, outputs=outputs, cases=model.get("cases"), max_cases=model.get("max_cases"),
            stream=model.get("stream"), backends=tuple(model["backends"]) if model.get("backends") else None,
            expect_fail=expect.get("fail"),
            expect_backends=tuple(expect["backends"]) if expect.get("backends") else None,
        ))
    limits = Limits(**(data.get("limits") or {}))
    return Suite(
        name=data["suite"], description=data.get("description", ""), path=path, root=root,
        reference={**REFERENCE_DEFAULTS, **(data.get("reference") or {})}, backends=backends,
        tolerance=dict(data.get("tolerance") or {}), limits=limits,
        latency=LatencySpec(**(data.get("latency") or {})), models=tuple(models),
    )


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


def load_suites(paths: Iterable[Path], root: Path) -> list[Suite]:
    """Every manifest, every problem: raises one ManifestError holding all issues of all files."""
    suites, issues = [], []
    names: dict[str, Path] = {}
    for path in find_manifests(paths):
        if not path.exists():
            issues.append(ManifestIssue(str(path), "", None, "no such file or folder"))
            continue
        try:
            suite = load_suite(path, root)
        except ManifestError as error:
            issues += error.issues
            continue
        if suite.name in names:
            issues.append(ManifestIssue(str(path), "suite", 1, f"suite name {suite.name!r} is also used by {names[suite.name]}"))
        names[suite.name] = path
        suites.append(suite)
    if issues:
        raise ManifestError(issues)
    return suites
