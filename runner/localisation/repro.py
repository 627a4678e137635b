"""The reproducer folder: the cut model, its inputs, a manifest that fails on it, and an issue ready to paste.

The folder is its own repository root (it holds the `.mnn-parity` marker), so `mnn-parity run <folder>/manifest.yaml`
finds the model and inputs by paths relative to the folder, wherever the folder is copied.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnn_parity.fsutil import atomic_write_text

MANIFEST = "manifest.yaml"


@dataclass(frozen=True)
class ReproFacts:
    model_name: str
    case_name: str
    backend_name: str
    runtime: dict
    flags: dict
    tolerance: dict
    mnn_version: str
    ort_version: str
    op_summary: str                  # "Round (node round_0)"
    nodes: tuple[str, ...]
    metric: dict
    verified: str
    kind: str


def _yaml_map(mapping: dict) -> str:
    # JSON is YAML 1.2 flow syntax: no hand-made quoting of names with odd characters
    return json.dumps(mapping, sort_keys=True)


def manifest_text(facts: ReproFacts) -> str:
    backend = {"engine": "mnn", **{k: v for k, v in facts.runtime.items()
                                   if k in ("device", "precision", "threads", "memory", "power")}}
    suite = "repro-" + "".join(c if c.isalnum() or c in "_.-" else "-" for c in facts.model_name)[:60]
    return "\n".join([
        f"# Reproduces the first divergent op of {facts.model_name} ({facts.case_name}, {facts.backend_name}).",
        "# Expected: FAIL. Run: mnn-parity run manifest.yaml (from this folder)",
        f"suite: {json.dumps(suite)}",
        f"description: {json.dumps('localised: ' + facts.op_summary)}",
        "reference: {engine: onnxruntime, graph_optimization: disable, threads: 1}",
        "backends:",
        f"  {json.dumps(facts.backend_name)}: {_yaml_map(backend)}",
        f"tolerance: {_yaml_map(facts.tolerance)}",
        "latency: {warmup: 0, repeat: 0}",
        "models:",
        f"  - name: {json.dumps(suite[len('repro-'):] or 'segment')}",
        "    onnx: model.onnx",
        f"    convert: {_yaml_map(facts.flags)}",
        "    cases: case.npz",
        "",
    ])


def issue_text(facts: ReproFacts, command: str) -> str:
    metric = facts.metric
    flags = " ".join(f"{k}={v}" for k, v in sorted(facts.flags.items())) or "(defaults)"
    return "\n".join([
        f"# {facts.op_summary}: MNN differs from ONNX Runtime",
        "",
        f"- MNN version: {facts.mnn_version}; ONNX Runtime {facts.ort_version} (reference, optimisations off)",
        f"- Converter flags: {flags}",
        f"- Precision: {facts.runtime.get('precision', 'high')} on {facts.runtime.get('device', 'CPU')}, "
        f"{facts.runtime.get('threads', 1)} thread(s); runtime {json.dumps(facts.runtime, sort_keys=True)}",
        f"- Ops in the reproducer: {', '.join(facts.nodes)}",
        f"- Kind: {facts.kind}; reproduced standalone with {facts.verified} input dims",
        f"- Metrics on its output: max rel {metric.get('rel')}, cosine {metric.get('cos')}, "
        f"status {metric.get('status')} {metric.get('detail', '')}".rstrip(),
        "",
        "## Reproduce",
        "",
        "`model.onnx` holds only the op(s) above; `case.npz` holds the inputs ONNX Runtime computed for them in "
        f"the full model `{facts.model_name}`.",
        "",
        "```sh",
        "# convert with the flags above, e.g.",
        f"MNNConvert -f ONNX --modelFile model.onnx --MNNModel model.mnn --bizCode repro {command}".rstrip(),
        "# then compare MNN's output with onnxruntime on case.npz, or with mnn-parity:",
        "mnn-parity run manifest.yaml",
        "```",
        "",
    ])


def write(folder: Path, model_path: Path, feeds: dict[str, np.ndarray], facts: ReproFacts, converter_argv: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_path, folder / "model.onnx")
    np.savez(folder / "case.npz", **feeds)
    atomic_write_text(folder / ".mnn-parity", "# this folder is a repository root for mnn-parity\n")
    atomic_write_text(folder / MANIFEST, manifest_text(facts))
    atomic_write_text(folder / "ISSUE.md", issue_text(facts, converter_argv))
    return folder
