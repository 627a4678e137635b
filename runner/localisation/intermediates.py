"""Intermediate tensors from both engines, each in a child process behind the project's sandbox.

ONNX Runtime writes every wanted tensor to disk once; the MNN child reads MNN's graph, then asks for the observed
names a chunk at a time and compares them with those files itself. The parent only ever holds the metrics, and
single tensors it asks for by name (the alias check, verification feeds).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from mnn_parity import sandbox
from mnn_parity.manifest.spec import Limits

CHILD_SCRIPT = Path(__file__).with_name("child.py")


class ChildFailed(Exception):
    """A child crashed, timed out or refused: the reason is what a user searches for."""


@dataclass(frozen=True)
class ReferenceStore:
    """ONNX Runtime's recorded tensors on disk: name -> {file, shape, dtype, maxabs}."""
    folder: Path
    index: dict

    @classmethod
    def open(cls, folder: Path) -> "ReferenceStore":
        return cls(folder, json.loads((folder / "index.json").read_text()))

    def __contains__(self, name: str) -> bool:
        return name in self.index

    def load(self, name: str) -> np.ndarray:
        return np.load(self.folder / self.index[name]["file"], allow_pickle=False)

    def maxabs(self, name: str) -> float:
        return float(self.index.get(name, {}).get("maxabs", 0.0))


@dataclass(frozen=True)
class MnnProfile:
    graph: dict                         # MNN's tensors: name -> {op, inputs}
    metrics: dict                       # observed name -> compare.measure(...) plus its MNN shape
    dumps: dict                         # name -> .npy file of MNN's value, for names asked to be kept
    problem: str = ""                   # set when the child died part-way: the metrics cover what it reached
    log: str = ""                       # MNN's last words on stderr: its only account of a failed forward


def run_child(python: Path, mode: str, request: dict, scratch: Path, limits: Limits) -> None:
    request_path = scratch / f"{mode}-request.json"
    request_path.write_text(json.dumps(request))
    log_path = scratch / f"{mode}-stderr.log"
    with tempfile.TemporaryDirectory(prefix="mnn-parity-localise-") as home, open(log_path, "wb") as log:
        env = sandbox.child_env(home)
        env.setdefault("OMP_NUM_THREADS", str(request.get("threads", 1)))
        proc = sandbox.spawn(sandbox.command(python, CHILD_SCRIPT, [mode, request_path], limits.memory_mb),
                             "engine", stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            returncode = proc.wait(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            sandbox.kill_group(proc)
            proc.wait()
            raise ChildFailed(f"{mode} child: timeout after {limits.timeout_s:g} s") from None
        finally:
            sandbox.forget(proc)
    if returncode != 0:
        tail = log_path.read_bytes()[-2000:].decode("utf-8", "replace")
        last = " | ".join(line.strip() for line in tail.splitlines()[-3:] if line.strip())
        raise ChildFailed(f"{mode} child {sandbox.describe_exit(returncode, tail, limits)}: {last}")


def record_reference(onnx_path: Path, feeds_path: Path, names: list[str], scratch: Path, limits: Limits,
                     threads: int = 1, chunk: int = 120, budget_mb: float = 256.0) -> ReferenceStore:
    store = scratch / "reference"
    store.mkdir(parents=True, exist_ok=True)
    run_child(Path(sys.executable), "ort", {"model": str(onnx_path), "feeds": str(feeds_path), "names": names,
                                            "store": str(store), "threads": threads, "chunk": chunk,
                                            "budget_mb": budget_mb},
              scratch, limits)
    return ReferenceStore.open(store)


def chunked(names: list[str], store: ReferenceStore, most: int, budget_mb: float) -> list[list[str]]:
    """Names per MNN forward, by count and by bytes: every marked output stays allocated for the whole forward,
    so 40 names of PP-OCR's detector at 736x1472 held 1.6 GB where 10 held 0.86 GB."""
    chunks: list[list[str]] = [[]]
    used = 0.0
    for name in (n for n in names if n in store):
        entry = store.index[name]
        size = float(np.prod(entry["shape"], dtype=np.float64)) * np.dtype(entry["dtype"]).itemsize / 2**20
        if chunks[-1] and (len(chunks[-1]) >= most or used + size > budget_mb):
            chunks.append([])
            used = 0.0
        chunks[-1].append(name)
        used += size
    return [c for c in chunks if c]


def profile_mnn(mnn_path: Path, python: Path, feeds_path: Path, inputs: list[str], outputs: list[str],
                names: list[str], store: ReferenceStore, out: Path, config: dict, limits: Limits,
                chunk: int = 40, dump: Optional[list[str]] = None, budget_mb: float = 256.0) -> MnnProfile:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    request: dict[str, Any] = {"model": str(mnn_path), "feeds": str(feeds_path), "inputs": inputs,
                               "outputs": outputs, "chunks": chunked(names, store, chunk, budget_mb),
                               "store": str(store.folder), "out": str(out), "config": config, "dump": dump or [],
                               "threads": int(config.get("threads", 1))}
    problem = ""
    try:
        run_child(python, "mnn", request, out, limits)
    except ChildFailed as error:
        problem = str(error)
    graph_file, dumps_file, metrics_file = out / "graph.json", out / "dumps.json", out / "metrics.jsonl"
    if not graph_file.exists():
        raise ChildFailed(problem or "the MNN child wrote no graph")
    metrics = {}
    if metrics_file.exists():
        for line in metrics_file.read_text().splitlines():
            entry = json.loads(line)
            metrics[entry.pop("name")] = entry
    dumps = json.loads(dumps_file.read_text()) if dumps_file.exists() else {}
    log_file = out / "mnn-stderr.log"
    said = log_file.read_bytes()[-1500:].decode("utf-8", "replace").splitlines() if log_file.exists() else []
    log = " | ".join(line.strip() for line in said[-4:] if line.strip())
    return MnnProfile(json.loads(graph_file.read_text()), metrics, {k: out / v for k, v in dumps.items()}, problem,
                      log)
