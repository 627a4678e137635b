"""Intermediate tensors from both engines, each in a child process behind the project's sandbox.

ONNX Runtime writes every wanted tensor to disk once; the MNN child reads MNN's graph, then asks for the observed
names a chunk at a time and compares them with those files itself, each part as soon as ONNX Runtime has written
it (`record_and_profile`). The parent only ever holds the metrics, and single tensors it asks for by name (the
alias check, verification feeds).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from mnn_parity import sandbox
from mnn_parity.manifest.spec import Limits

CHILD_SCRIPT = Path(__file__).with_name("child.py")


class ChildFailed(Exception):
    """A child crashed, timed out or refused: the reason is what a user searches for."""


Refill = Callable[[list, Path], Callable[[], dict]]


class ReferenceStore:
    """ONNX Runtime's recorded tensors on disk: name -> {shape, dtype, maxabs, and `file` unless MNN's graph lacks
    the tensor}. A tensor without a file is recorded when first asked for (`ensure`, `load`), through `refill`
    (names, folder), which starts the recording and returns what waits for that folder's index: the alias check
    and verification read a few of them, and a localisation with no candidate reads none."""

    def __init__(self, folder: Path, index: dict, refill: Optional[Refill] = None):
        self.folder, self.index, self._refill = folder, index, refill

    @classmethod
    def open(cls, folder: Path, refill: Optional[Refill] = None) -> "ReferenceStore":
        return cls(folder, json.loads((folder / "index.json").read_text()), refill)

    def __contains__(self, name: str) -> bool:
        return name in self.index

    def saved(self, name: str) -> bool:
        return "file" in self.index.get(name, {})

    def load(self, name: str) -> np.ndarray:
        self.ensure([name])
        return np.load(self.folder / self.index[name]["file"], allow_pickle=False)

    def ensure(self, names) -> None:
        """Files for those of `names` recorded without one, in one ONNX Runtime child."""
        self.begin(names)()

    def begin(self, names) -> Callable[[], None]:
        """`ensure`, started: returns what waits for it, so the caller can run the other engine meanwhile."""
        missing = [n for n in dict.fromkeys(names) if n in self.index and not self.saved(n)]
        if not missing or self._refill is None:
            return lambda: None
        folder = f"refill-{sum(1 for _ in self.folder.glob('refill-*'))}"
        finish = self._refill(missing, self.folder / folder)

        def merge() -> None:
            filled = finish()
            for name in missing:
                if "file" in filled.get(name, {}):
                    self.index[name] = {**filled[name], "file": f"{folder}/{filled[name]['file']}"}
        return merge

    def maxabs(self, name: str) -> float:
        return float(self.index.get(name, {}).get("maxabs", 0.0))


@dataclass(frozen=True)
class MnnProfile:
    graph: dict                         # MNN's tensors: name -> {op, inputs}
    metrics: dict                       # observed name -> compare.measure(...) plus its MNN shape
    dumps: dict                         # name -> .npy file of MNN's value, for names asked to be kept
    problem: str = ""                   # set when the child died part-way: the metrics cover what it reached
    log: str = ""                       # MNN's last words on stderr: its only account of a failed forward


MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**36), "MALLOC_TOP_PAD_": str(2**28)}
"""Heap settings of the localiser's children: every chunk allocates hundreds of MiB that glibc would map and unmap
afresh, page-faulting them in each time. Kept on the heap, the next chunk reuses the pages: on PP-OCR's detector
with fp16 weights the MNN child took 2.9-3.1 s instead of 3.9-4.1 s (bench/localise.py)."""


@dataclass
class Child:
    mode: str
    proc: Any
    log_path: Path
    home: str


def start_child(python: Path, mode: str, request: dict, scratch: Path, limits: Limits) -> Child:
    request_path = scratch / f"{mode}-request.json"
    request_path.write_text(json.dumps(request))
    log_path = scratch / f"{mode}-stderr.log"
    home = tempfile.mkdtemp(prefix="mnn-parity-localise-", dir=scratch)
    env = {**sandbox.child_env(home), **MALLOC}
    env.setdefault("OMP_NUM_THREADS", str(request.get("threads", 1)))
    with open(log_path, "wb") as log:
        proc = sandbox.spawn(sandbox.command(python, CHILD_SCRIPT, [mode, request_path], limits.memory_mb),
                             "engine", stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    return Child(mode, proc, log_path, home)


def wait_child(child: Child, limits: Limits, timeout: Optional[float] = None) -> None:
    """Wait for the child (its own timeout unless one is given), kill it on timeout; ChildFailed unless exit 0."""
    try:
        returncode = child.proc.wait(timeout=limits.timeout_s if timeout is None else max(0.0, timeout))
    except subprocess.TimeoutExpired:
        stop_child(child)
        raise ChildFailed(f"{child.mode} child: timeout after {limits.timeout_s:g} s") from None
    finally:
        sandbox.forget(child.proc)
        shutil.rmtree(child.home, ignore_errors=True)
    if returncode != 0:
        tail = child.log_path.read_bytes()[-2000:].decode("utf-8", "replace")
        last = " | ".join(line.strip() for line in tail.splitlines()[-3:] if line.strip())
        raise ChildFailed(f"{child.mode} child {sandbox.describe_exit(returncode, tail, limits)}: {last}")


def stop_child(child: Child) -> None:
    sandbox.kill_group(child.proc)
    child.proc.wait()
    sandbox.forget(child.proc)
    shutil.rmtree(child.home, ignore_errors=True)


def run_child(python: Path, mode: str, request: dict, scratch: Path, limits: Limits) -> None:
    wait_child(start_child(python, mode, request, scratch, limits), limits)


def reference_request(onnx_path: Path, feeds_path: Path, names: list[str], store: Path, threads: int, chunk: int,
                      budget_mb: float) -> dict:
    return {"model": str(onnx_path), "feeds": str(feeds_path), "names": names, "store": str(store),
            "threads": threads, "chunk": chunk, "budget_mb": budget_mb}


def record_reference(onnx_path: Path, feeds_path: Path, names: list[str], scratch: Path, limits: Limits,
                     threads: int = 1, chunk: int = 120, budget_mb: float = 256.0) -> ReferenceStore:
    store = scratch / "reference"
    store.mkdir(parents=True, exist_ok=True)
    run_child(Path(sys.executable), "ort", reference_request(onnx_path, feeds_path, names, store, threads, chunk,
                                                             budget_mb), scratch, limits)
    return ReferenceStore.open(store)


@dataclass(frozen=True)
class MnnRequest:
    """What the MNN child is asked: the model as the case ran it, its inputs, and which names to compare."""
    mnn_path: Path
    python: Path
    feeds_path: Path
    inputs: list
    outputs: list
    config: dict
    chunk: int = 40
    budget_mb: float = 256.0

    def as_json(self, names: list[str], store: Path, out: Path, dump: Optional[list[str]], stream: bool) -> dict:
        return {"model": str(self.mnn_path), "feeds": str(self.feeds_path), "inputs": list(self.inputs),
                "outputs": list(self.outputs), "names": list(names), "store": str(store), "out": str(out),
                "config": self.config, "dump": dump or [], "threads": int(self.config.get("threads", 1)),
                "chunk": self.chunk, "budget_mb": self.budget_mb, "stream": stream}


def profile_mnn(mnn_path: Path, python: Path, feeds_path: Path, inputs: list[str], outputs: list[str],
                names: list[str], store: ReferenceStore, out: Path, config: dict, limits: Limits,
                chunk: int = 40, dump: Optional[list[str]] = None, budget_mb: float = 256.0) -> MnnProfile:
    """MNN's errors on `names` against a store ONNX Runtime has finished."""
    request = MnnRequest(mnn_path, python, feeds_path, inputs, outputs, config, chunk, budget_mb)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    problem = ""
    try:
        run_child(python, "mnn", request.as_json(names, store.folder, out, dump, stream=False), out, limits)
    except ChildFailed as error:
        problem = str(error)
    return read_profile(out, problem)


def record_and_profile(onnx_path: Path, ort_feeds: Path, names: list[str], scratch: Path, request: MnnRequest,
                       limits: Limits, dump: list[str], reference_chunk: int = 120,
                       budget_mb: float = 256.0) -> tuple[ReferenceStore, MnnProfile]:
    """Both engines at once: the MNN child compares each part of the reference as ONNX Runtime finishes it
    (`part-<k>.json`, then `index.json` last), so the slower child sets the time, not the sum of both; and ONNX
    Runtime writes files only for the tensors MNN's graph holds (`graph.json`, which the MNN child writes first)."""
    store, out = scratch / "reference", scratch / "mnn"
    store.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    threads = int(request.config.get("threads", 1))
    ask = {**reference_request(onnx_path, ort_feeds, names, store, threads, reference_chunk, budget_mb),
           "mnn_graph": str(out / "graph.json")}
    started = time.monotonic()
    mnn = start_child(request.python, "mnn", request.as_json(names, store, out, dump, stream=True), out, limits)
    try:
        ort = start_child(Path(sys.executable), "ort", ask, scratch, limits)
    except BaseException:
        stop_child(mnn)
        raise
    try:
        wait_reference(ort, mnn, out / "graph.json", limits)
    except BaseException:
        stop_child(mnn)
        raise
    problem = ""
    try:
        wait_child(mnn, limits, limits.timeout_s - (time.monotonic() - started))
    except ChildFailed as error:
        problem = str(error)

    def refill(missing: list, folder: Path) -> Callable[[], dict]:
        folder.mkdir(parents=True, exist_ok=True)
        ask = {**reference_request(onnx_path, ort_feeds, missing, folder, threads, reference_chunk, budget_mb),
               "only": True}
        child = start_child(Path(sys.executable), "ort", ask, folder, limits)

        def finish() -> dict:
            wait_child(child, limits)
            return json.loads((folder / "index.json").read_text())
        return finish

    return ReferenceStore.open(store, refill), read_profile(out, problem)


def wait_reference(ort: Child, mnn: Child, graph: Path, limits: Limits) -> None:
    """ONNX Runtime's child to its end; but if the MNN child dies before writing MNN's graph, nothing the reference
    could give is of use, and waiting would only stall the case: stop ONNX Runtime and say why MNN failed."""
    deadline = time.monotonic() + limits.timeout_s
    while ort.proc.poll() is None and time.monotonic() < deadline:
        if mnn.proc.poll() is not None and not graph.exists():
            stop_child(ort)
            wait_child(mnn, limits)
            raise ChildFailed("the MNN child exited before reading its model")
        time.sleep(0.01)
    wait_child(ort, limits, deadline - time.monotonic())


def read_profile(out: Path, problem: str) -> MnnProfile:
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
