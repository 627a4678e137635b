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


def conv_root(root: Path) -> Path:
    """models/conv.onnx (a 1x1 Conv + Relu) and inputs/a.npy, an all-ones (1, 3, 8, 8) tensor: what manifest
    tests need to load a model entry without running it."""
    from tests import onnx_models

    onnx_models.conv_relu(root / "models/conv.onnx")
    (root / "inputs").mkdir()
    np.save(root / "inputs/a.npy", np.ones((1, 3, 8, 8), np.float32))
    return root


def guard_probe(path: Path, module: str, port: int) -> Path:
    """A script standing in for a tool's child: it prints whether `module` can be found and whether a connection
    to a local listener on `port` goes through, so a test sees each guard of the sandbox at work."""
    path.write_text(
        "import importlib.util, socket\n"
        "try:\n"
        f"    tools = 'importable' if importlib.util.find_spec({module!r}) else 'blocked'\n"
        "except (ImportError, ValueError):\n"
        "    tools = 'blocked'\n"
        "print('MNN.tools:', tools)\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
        "    print('network: connected')\n"
        "except OSError as error:\n"
        "    print('network: refused', error)\n")
    return path
