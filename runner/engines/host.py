"""Engines as child processes: load a model once, `infer(feeds) -> {name: array}` many times.

Every engine registered in `protocol.ENGINES` runs in a worker process (`worker.py`) started through the sandbox
(memory cap, no network, dies with the runner) with a per-call timeout, because MNN (and occasionally ONNX Runtime)
can SIGSEGV, SIGFPE, abort, hang or eat tens of GiB. A crash surfaces as `EngineCrash` with a human reason; the
caller fails that case and starts a fresh worker for the next one.
"""
from __future__ import annotations

import json
import select
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np

from mnn_parity import sandbox
from mnn_parity.engines.protocol import ENGINES, EngineSpec, UnknownEngine, check_engine
from mnn_parity.manifest.spec import Limits
from mnn_parity.sandbox import MEMORY_WORDS, describe_exit

WORKER_SCRIPT = Path(__file__).with_name("worker.py")

__all__ = ["ENGINES", "EngineCrash", "EngineError", "EngineProcess", "EngineSpec", "Limits", "WorkerPool",
           "describe_exit"]


class EngineCrash(Exception):
    """The worker died or stopped answering: signal, timeout or memory cap."""


class EngineError(Exception):
    """The engine refused a request (load or inference) with an error of its own; the worker is still alive."""


class EngineProcess:
    """One worker process holding one loaded model. Use as a context manager."""

    def __init__(self, spec: EngineSpec, limits: Limits = Limits(), env: Optional[dict] = None):
        try:
            check_engine(spec.engine)
        except UnknownEngine as error:
            raise EngineError(str(error)) from None
        self.spec = spec
        self.limits = limits
        self.input_info: dict = {}
        self.sandbox = ""
        self._calls = 0
        self._scratch = tempfile.TemporaryDirectory(prefix="mnn-parity-")
        self._stderr_path = Path(self._scratch.name) / "stderr.log"
        self._stderr = open(self._stderr_path, "w+b")
        child_env = sandbox.child_env(Path(self._scratch.name) / "child", env)
        child_env.setdefault("OMP_NUM_THREADS", str(spec.config.get("threads", 1)))
        try:
            self._proc = sandbox.spawn(sandbox.command(spec.python, WORKER_SCRIPT, memory_mb=limits.memory_mb),
                                       "engine", stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                       env=child_env)
        except OSError as error:   # the interpreter is missing or not executable: the setup's fault, no crash
            self._stderr.close()
            self._scratch.cleanup()
            raise EngineError(f"cannot start an engine worker with {spec.python}: {error}") from None
        try:
            self.load(spec)
        except BaseException:
            self.close()
            raise

    def load(self, spec: EngineSpec) -> None:
        """Load a model, replacing the one held: a worker serves model after model of one engine configuration."""
        reply = self._call({"op": "load", **spec.as_request()})
        self.spec = spec
        self.input_info = reply.get("inputs", {})
        self.output_names = reply.get("outputs", [])
        self.version = reply.get("version", "")
        self.sandbox = reply.get("sandbox", "")

    def __enter__(self) -> "EngineProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        # A worker holds nothing worth a graceful exit, and waiting for MNN's teardown cost ~65 ms per worker.
        self.kill()
        sandbox.forget(self._proc)
        self._proc.stdin.close()
        self._proc.stdout.close()
        self._stderr.close()
        self._scratch.cleanup()

    def kill(self) -> None:
        """SIGKILL the worker (from any thread): a call in progress ends in EngineCrash."""
        sandbox.kill_group(self._proc)
        self._proc.wait()

    @property
    def pid(self) -> int:
        return self._proc.pid

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

    def _call(self, request: dict) -> dict:
        self._stderr.flush()
        log_start = self._stderr_path.stat().st_size
        try:
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass   # it died (or was killed and closed) already; reading below reports how
        line = self._read_reply()
        if not line:
            returncode = self._proc.wait()
            raise EngineCrash(describe_exit(returncode, self.log_tail(), self.limits))
        reply = json.loads(line)
        if not reply.get("ok"):
            said = self._log_since(log_start)
            error = reply.get("error", "unknown engine error") + (f" — engine log: {said}" if said else "")
            if any(word in said for word in MEMORY_WORDS):
                self.kill()   # an engine that failed to allocate is not trusted with the next case
                raise EngineCrash(f"memory cap of {self.limits.memory_mb} MiB exceeded: {error}")
            raise EngineError(error)
        return reply

    def _read_reply(self) -> bytes:
        deadline = time.monotonic() + self.limits.timeout_s
        stdout = self._proc.stdout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise EngineCrash(f"timeout: no answer within {self.limits.timeout_s:g} s")
            try:
                ready, _, _ = select.select([stdout], [], [], remaining)
            except ValueError:   # its pipe was closed by a concurrent close()
                return b""
            if ready:
                return stdout.readline()

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
        self._busy: set[EngineProcess] = set()
        self._stopped = False
        self._lock = threading.Lock()

    def take(self, spec: EngineSpec) -> EngineProcess:
        with self._lock:
            self._refuse_if_stopped()
            worker = self._idle.pop(reuse_key(spec), None)
        if worker is not None and worker.alive:
            try:
                worker.load(spec)
            except (EngineCrash, EngineError):
                worker.close()
                raise
        else:
            if worker is not None:
                worker.close()
            worker = EngineProcess(spec, self.limits)
        with self._lock:
            if self._stopped:   # kill_all ran while this worker was starting
                worker.close()
                self._refuse_if_stopped()
            self._busy.add(worker)
        return worker

    def give_back(self, worker: EngineProcess) -> None:
        with self._lock:
            self._busy.discard(worker)
            keep = worker.alive and not self._stopped
            spare = self._idle.pop(reuse_key(worker.spec), None) if keep else None
            if keep:
                self._idle[reuse_key(worker.spec)] = worker
        if not keep:
            worker.close()
        if spare is not None:
            spare.close()

    def kill_all(self) -> None:
        """Kill every worker, idle or in use, at once (Ctrl-C): a call in progress ends in EngineCrash, and the
        pool starts no new worker afterwards."""
        with self._lock:
            self._stopped = True
            idle, busy, self._idle = list(self._idle.values()), list(self._busy), {}
        for worker in busy:
            worker.kill()   # its owner sees the crash; close() or give_back() frees the rest
        for worker in idle:
            worker.close()

    def close(self) -> None:
        """Close every worker, including those taken and never given back (a caller drops a crashed one)."""
        with self._lock:
            workers, self._idle = list(self._idle.values()) + list(self._busy), {}
            self._busy = set()
        for worker in workers:
            worker.close()

    def _refuse_if_stopped(self) -> None:
        if self._stopped:
            raise EngineCrash("cancelled: the run is stopping and starts no new engine worker")
