"""Suite manifests: YAML in, a frozen `Suite` (`spec`) out, or every problem at once with file, line and key path.

One idea per module: `issues` (what a problem is), `yaml_reader` (YAML with lines, hostile input refused),
`schema` (the JSON-Schema pass), `semantic` (files and the ONNX model), `dvc` (missing files DVC tracks),
`load` (the passes in order, and the build of the `Suite`).
"""
from mnn_parity.manifest.issues import ManifestError, ManifestIssue
from mnn_parity.manifest.load import find_manifests, load_suite, load_suites

__all__ = ["load_suite", "load_suites", "find_manifests", "ManifestError", "ManifestIssue"]
