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
from mnn_parity.engines.transfer import read_arrays, write_arrays
from mnn_parity.manifest.spec import Limits
from mnn_parity.sandbox import MEMORY_WORDS, describe_exit

WORKER_SCRIPT = Path(__file__).with_name("worker.py")
# What MNN prints on every load, whatever the model: not worth a line beside a failed case.
NOISE = ("The device supports:", "MNN use high precision", "MNN use normal precision", "MNN use low precision")
MESSAGE_LINES, MESSAGE_CHARS = 20, 2000

__all__ = ["ENGINES", "EngineCrash", "EngineError", "EngineFailure", "EngineProcess", "EngineSpec", "Limits",
           "WorkerPool", "describe_exit"]


class EngineFailure(Exception):
    """A failed call, with what the worker said during it and what it had run before (to judge a rerun by)."""

    def __init__(self, message: str, *, kind: str = "", messages: tuple[str, ...] = (),
                 history: tuple[str, ...] = ()):
        super().__init__(message)
        self.kind = kind            # the engine's exception class, for an EngineError
        self.messages = tuple(messages)
        self.history = tuple(history)


class EngineCrash(EngineFailure):
    """The worker died or stopped answering: signal, timeout or memory cap."""


class EngineError(EngineFailure):
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
        self.history: list[str] = []        # the models this process ran before the one it holds
        self.last_messages: tuple[str, ...] = ()   # what the engine printed during the last call
        self._calls_on_model = 0
        self._loaded = False
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
        if self._loaded:
            self.history.append(self.spec.label or self.spec.model.name)
        self._loaded, self._calls_on_model = False, 0
        reply = self._call({"op": "load", **spec.as_request()})
        self._loaded = True
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

    def past(self) -> tuple[str, ...]:
        """What ran in this process before the next call: earlier models, earlier calls on this one."""
        earlier = f"{self._calls_on_model} earlier call(s) of this model" if self._calls_on_model else ""
        return tuple(self.history) + ((earlier,) if earlier else ())

    def infer(self, feeds: dict[str, np.ndarray], stream: Optional[dict] = None,
              warmup: int = 0, repeat: int = 0) -> tuple[dict[str, np.ndarray], Optional[float]]:
        """Outputs by name, and the median latency in ms when `repeat` > 0."""
        # the same two files every call: calls to one worker never overlap, and the scratch goes at close()
        feeds_path, out_path = Path(self._scratch.name) / "feeds.bin", Path(self._scratch.name) / "out.bin"
        try:
            arrays = write_arrays(str(feeds_path), feeds)
            reply = self._call({"op": "infer", "feeds": str(feeds_path), "arrays": arrays, "out": str(out_path),
                                "stream": stream, "warmup": warmup, "repeat": repeat})
            outputs = read_arrays(str(out_path), reply.get("outputs", []))
        finally:
            self._calls_on_model += 1
        return outputs, reply.get("latency_ms")

    def log_tail(self, limit: int = 4000) -> str:
        self._stderr.flush()
        data = self._stderr_path.read_bytes() if self._stderr_path.exists() else b""
        return data[-limit:].decode("utf-8", "replace")

    def _call(self, request: dict) -> dict:
        self._stderr.flush()
        log_start, past = self._stderr_path.stat().st_size, self.past()
        self.last_messages = ()
        try:
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass   # it died (or was killed and closed) already; reading below reports how
        try:
            line = self._read_reply()
        except EngineCrash as crash:   # a timeout
            raise EngineCrash(str(crash), messages=self._messages_since(log_start), history=past) from None
        self.last_messages = self._messages_since(log_start)
        if not line:
            returncode = self._proc.wait()
            raise EngineCrash(describe_exit(returncode, self.log_tail(), self.limits),
                              messages=self.last_messages, history=past)
        reply = json.loads(line)
        if not reply.get("ok"):
            said = self._log_since(log_start)
            error = reply.get("error", "unknown engine error") + (f" — engine log: {said}" if said else "")
            context = {"kind": reply.get("kind", ""), "messages": self.last_messages, "history": past}
            if any(word in said for word in MEMORY_WORDS):
                self.kill()   # an engine that failed to allocate is not trusted with the next case
                raise EngineCrash(f"memory cap of {self.limits.memory_mb} MiB exceeded: {error}", **context)
            raise EngineError(error, **context)
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

    def _messages_since(self, offset: int) -> tuple[str, ...]:
        """The engine's own lines during one call ("Don't support ...", shape errors), load banners left out."""
        self._stderr.flush()
        if self._stderr_path.stat().st_size <= offset:
            return ()
        with open(self._stderr_path, "rb") as log:
            log.seek(offset)
            text = log.read(MESSAGE_CHARS).decode("utf-8", "replace")
        lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(NOISE)]
        return tuple(dict.fromkeys(lines))[:MESSAGE_LINES]


def reuse_key(spec: EngineSpec) -> tuple:
    """Workers are interchangeable when engine, interpreter (so MNN release) and runtime settings match: threads
    are fixed at the worker's start (OMP_NUM_THREADS), so they are part of the key."""
    return (spec.engine, str(spec.python), json.dumps(spec.config, sort_keys=True, default=str))


class WorkerPool:
    """Idle workers by engine configuration: the next model with the same engine, interpreter and runtime settings
    is loaded into a running worker instead of a new one. Safe to share between the threads of a run.

    Idle workers of one engine kind are capped at the most of that kind ever in use at once (the run's `--jobs`,
    in effect), or at `idle_per_kind`: enough for every thread to find one, without hoarding processes."""

    def __init__(self, limits: Limits, idle_per_kind: Optional[int] = None):
        self.limits = limits
        self.idle_per_kind = idle_per_kind
        self.started = 0                                   # worker processes started, for a bench or a report
        self._idle: list[tuple[tuple, EngineProcess]] = []   # oldest first
        self._busy: set[EngineProcess] = set()
        self._peak: dict[str, int] = {}
        self._stopped = False
        self._lock = threading.Lock()

    def take(self, spec: EngineSpec, fresh: bool = False) -> EngineProcess:
        """A worker holding `spec`'s model: an idle one of the same configuration, loaded anew, or (`fresh`, or
        none idle) a new process."""
        with self._lock:
            self._refuse_if_stopped()
            worker = None if fresh else self._pop_idle(reuse_key(spec))
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
                self.started += 1
        with self._lock:
            if self._stopped:   # kill_all ran while this worker was starting
                worker.close()
                self._refuse_if_stopped()
            self._busy.add(worker)
            in_use = sum(1 for w in self._busy if w.spec.engine == spec.engine)
            self._peak[spec.engine] = max(self._peak.get(spec.engine, 0), in_use)
        return worker

    def give_back(self, worker: EngineProcess) -> None:
        with self._lock:
            self._busy.discard(worker)
            keep = worker.alive and not self._stopped
            if keep:
                self._idle.append((reuse_key(worker.spec), worker))
            surplus = self._surplus(worker.spec.engine) if keep else []
        for spare in ([] if keep else [worker]) + surplus:
            spare.close()

    def kill_all(self) -> None:
        """Kill every worker, idle or in use, at once (Ctrl-C): a call in progress ends in EngineCrash, and the
        pool starts no new worker afterwards."""
        with self._lock:
            self._stopped = True
            idle, busy, self._idle = [w for _, w in self._idle], list(self._busy), []
        for worker in busy:
            worker.kill()   # its owner sees the crash; close() or give_back() frees the rest
        for worker in idle:
            worker.close()

    def close(self) -> None:
        """Close every worker, including those taken and never given back (a caller drops a crashed one)."""
        with self._lock:
            workers, self._idle = [w for _, w in self._idle] + list(self._busy), []
            self._busy = set()
        for worker in workers:
            worker.close()

    def _pop_idle(self, key: tuple) -> Optional[EngineProcess]:
        for index in range(len(self._idle) - 1, -1, -1):   # the most recently used: its pages are warm
            if self._idle[index][0] == key:
                return self._idle.pop(index)[1]
        return None

    def _surplus(self, engine: str) -> list[EngineProcess]:
        """Remove and return the oldest idle workers of this engine kind beyond the cap."""
        cap = self.idle_per_kind or max(1, self._peak.get(engine, 1))
        of_kind = [entry for entry in self._idle if entry[1].spec.engine == engine]
        extra = of_kind[:max(0, len(of_kind) - cap)]
        self._idle = [entry for entry in self._idle if entry not in extra]
        return [worker for _, worker in extra]

    def _refuse_if_stopped(self) -> None:
        if self._stopped:
            raise EngineCrash("cancelled: the run is stopping and starts no new engine worker")
