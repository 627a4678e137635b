"""Engines as child processes: load a model once, `infer(feeds) -> {name: array}` many times.

Both engines run in a worker process (`worker.py`) with a memory cap and a per-call timeout, because MNN (and
occasionally a converter or ONNX Runtime) can SIGSEGV, SIGFPE, abort, hang or eat tens of GiB. A crash surfaces as
`EngineCrash` with a human reason; the caller fails that case and starts a fresh worker for the next one.
"""
from __future__ import annotations

import json
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from mnn_parity.manifest.spec import Limits

WORKER_SCRIPT = Path(__file__).with_name("worker.py")


class EngineCrash(Exception):
    """The worker died or stopped answering: signal, timeout or memory cap."""


class EngineError(Exception):
    """The engine refused a request (load or inference) with an error of its own; the worker is still alive."""


@dataclass(frozen=True)
class EngineSpec:
    """What to load and how: everything a worker needs, and everything a report records."""
    engine: str                        # "mnn" | "onnxruntime"
    model: Path
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    config: dict = field(default_factory=dict)
    python: Path = Path(sys.executable)   # another interpreter runs the MNN side under another MNN release


def limit_child(memory_mb: int):
    def apply() -> None:
        os.setsid()   # own process group, so a timeout kills every thread and child it started
        cap = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return apply


MEMORY_WORDS = ("bad_alloc", "MemoryError", "Cannot allocate memory", "out of memory", "Alloc buffer error")


def describe_exit(returncode: int, stderr_tail: str, limits: Limits) -> str:
    """Name how a worker died, in the terms a user searches for."""
    if any(word in stderr_tail for word in MEMORY_WORDS):
        return f"memory cap of {limits.memory_mb} MiB exceeded"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with status {returncode}"


class EngineProcess:
    """One worker process holding one loaded model. Use as a context manager."""

    def __init__(self, spec: EngineSpec, limits: Limits = Limits(), env: Optional[dict] = None):
        self.spec = spec
        self.limits = limits
        self._scratch = tempfile.TemporaryDirectory(prefix="mnn-parity-")
        self._stderr_path = Path(self._scratch.name) / "stderr.log"
        self._stderr = open(self._stderr_path, "w+b")
        self.input_info: dict = {}
        self._calls = 0
        child_env = dict(os.environ if env is None else env)
        child_env.setdefault("OMP_NUM_THREADS", str(spec.config.get("threads", 1)))
        self._proc = subprocess.Popen(
            [str(spec.python), str(WORKER_SCRIPT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            preexec_fn=limit_child(limits.memory_mb), env=child_env, close_fds=True,
        )
        try:
            self.load(spec)
        except BaseException:
            self.close()
            raise

    def load(self, spec: EngineSpec) -> None:
        """Load a model, replacing the one held: a worker serves model after model of one engine configuration."""
        reply = self._call({"op": "load", "engine": spec.engine, "model": str(spec.model),
                            "inputs": list(spec.inputs), "outputs": list(spec.outputs), "config": spec.config})
        self.spec = spec
        self.input_info = reply.get("inputs", {})
        self.output_names = reply.get("outputs", [])
        self.version = reply.get("version", "")

    def __enter__(self) -> "EngineProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        # A worker holds nothing worth a graceful exit, and waiting for MNN's teardown cost ~65 ms per worker.
        if self._proc.poll() is None:
            self._kill()
        self._proc.stdin.close()
        self._proc.stdout.close()
        self._stderr.close()
        self._scratch.cleanup()

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    def infer(self, feeds: dict[str, np.ndarray], stream: Optional[dict] = None,
              warmup: int = 0, repeat: int = 0) -> tuple[dict[str, np.ndarray], Optional[float]]:
        """Outputs by name, and the median latency in ms when `repeat` > 0."""
        self._calls += 1
        feeds_path = Path(self._scratch.name) / f"feeds-{self._calls}.npz"
        out_path = Path(self._scratch.name) / f"out-{self._calls}.npz"
        np.savez(feeds_path, **feeds)
        try:
            reply = self._call({"op": "infer", "feeds": str(feeds_path), "out": str(out_path),
                                "stream": stream, "warmup": warmup, "repeat": repeat})
            with np.load(out_path, allow_pickle=False) as archive:
                outputs = {name: archive[name] for name in archive.files}
        finally:
            feeds_path.unlink(missing_ok=True)
            out_path.unlink(missing_ok=True)
        return outputs, reply.get("latency_ms")

    def log_tail(self, limit: int = 4000) -> str:
        self._stderr.flush()
        data = self._stderr_path.read_bytes() if self._stderr_path.exists() else b""
        return data[-limit:].decode("utf-8", "replace")

    def _kill(self) -> None:
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._proc.wait()

    def _call(self, request: dict) -> dict:
        self._stderr.flush()
        log_start = self._stderr_path.stat().st_size
        try:
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass   # it died already; reading below reports how
        deadline = time.monotonic() + self.limits.timeout_s
        stdout = self._proc.stdout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._kill()
                raise EngineCrash(f"timeout: no answer within {self.limits.timeout_s:g} s")
            ready, _, _ = select.select([stdout], [], [], remaining)
            if ready:
                break
        line = stdout.readline()
        if not line:
            returncode = self._proc.wait()
            raise EngineCrash(describe_exit(returncode, self.log_tail(), self.limits))
        reply = json.loads(line)
        if not reply.get("ok"):
            said = self._log_since(log_start)
            error = reply.get("error", "unknown engine error") + (f" — engine log: {said}" if said else "")
            if any(word in said for word in MEMORY_WORDS):
                self._kill()   # an engine that failed to allocate is not trusted with the next case
                raise EngineCrash(f"memory cap of {self.limits.memory_mb} MiB exceeded: {error}")
            raise EngineError(error)
        return reply

    def _log_since(self, offset: int) -> str:
        """What the engine wrote to stderr during one call, on one line: MNN's only word on a failed forward."""
        self._stderr.flush()
        with open(self._stderr_path, "rb") as log:
            log.seek(offset)
            text = log.read(4000).decode("utf-8", "replace")
        return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def reuse_key(spec: EngineSpec) -> tuple:
    return (spec.engine, str(spec.python), json.dumps(spec.config, sort_keys=True, default=str))


class WorkerPool:
    """Idle workers by engine configuration: the next model with the same engine, interpreter and runtime settings
    is loaded into a running worker instead of a new one. Safe to share between the threads of a run."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self._idle: dict[tuple, EngineProcess] = {}
        self._lock = threading.Lock()

    def take(self, spec: EngineSpec) -> EngineProcess:
        with self._lock:
            worker = self._idle.pop(reuse_key(spec), None)
        if worker is None or not worker.alive:
            if worker is not None:
                worker.close()
            return EngineProcess(spec, self.limits)
        try:
            worker.load(spec)
        except (EngineCrash, EngineError):
            worker.close()
            raise
        return worker

    def give_back(self, worker: EngineProcess) -> None:
        if not worker.alive:
            worker.close()
            return
        with self._lock:
            spare = self._idle.pop(reuse_key(worker.spec), None)
            self._idle[reuse_key(worker.spec)] = worker
        if spare is not None:
            spare.close()

    def close(self) -> None:
        with self._lock:
            workers, self._idle = list(self._idle.values()), {}
        for worker in workers:
            worker.close()
