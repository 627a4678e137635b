"""Small repositories for tests: one manifest of one model reading .npy files, in tmp_path, pointed to by the
environment so nothing is written into the working tree."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

import numpy as np


def one_model_manifest(suite: str, model: str, header: str = "latency: {warmup: 0, repeat: 0}") -> str:
    return (f"suite: {suite}\n{header}\nmodels:\n  - name: {model}\n    onnx: models/{model}.onnx\n"
            "    inputs:\n      x: {files: inputs/*.npy, preprocess: [{load: {}}]}\n")


def make_repo(root: Path, monkeypatch, manifests: Mapping[str, str], build: Callable[[Path], object], model: str,
              inputs: Mapping[str, np.ndarray]) -> Path:
    """`build(path)` writes the ONNX model to models/<model>.onnx; `inputs` become inputs/<name>.npy."""
    build(root / f"models/{model}.onnx")
    (root / "inputs").mkdir(exist_ok=True)
    for name, array in inputs.items():
        np.save(root / f"inputs/{name}.npy", array)
    (root / "suites").mkdir(exist_ok=True)
    for name, text in manifests.items():
        (root / f"suites/{name}.yaml").write_text(text)
    monkeypatch.setenv("MNN_PARITY_ROOT", str(root))
    monkeypatch.setenv("MNN_PARITY_CACHE_DIR", str(root / ".cache"))
    monkeypatch.chdir(root)
    return root
