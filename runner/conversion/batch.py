"""Many conversions through one long-lived converter child, instead of one child per model.

Measured on the ONNX node tests (tiny models): a fresh sandboxed converter child costs 100–160 ms per model, of
which the conversion itself is ~2 ms; starting the interpreter, the sandbox and loading MNN's extension is the
rest. A child that stays up converts the next model in ~3 ms.

`PersistentConverter.run_tool` has exactly the contract of `conversion.child.run_tool` (log and how it died), so
`mnnconvert._convert_into` can call it in place of a one-shot child; the cache, the log judgement and the entry
format stay where they are. A crash in a reused child is retried once in a fresh one, so a model is never blamed
for what an earlier model left behind in the converter's process; a timeout kills the child.
"""
from __future__ import annotations

import atexit
import json
import select
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

from mnn_parity import sandbox
from mnn_parity.conversion.child import KIND
from mnn_parity.manifest.spec import Limits

CHILD_SCRIPT = Path(__file__).with_name("batch_child.py")


class _Child:
    """One converter process, answering one request at a time."""

    def __init__(self, python: Path, memory_mb: int):
        self.scratch = tempfile.TemporaryDirectory(prefix="mnn-parity-convert-")
        env = sandbox.child_env(self.scratch.name)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = sandbox.spawn(sandbox.command(python, CHILD_SCRIPT, (), memory_mb), KIND,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  env=env)
        self.used = 0

    def convert(self, argv: list[str], log_file: Path, timeout_s: float) -> str:
        """"" when it answered; else how it died ("timeout" or the exit) — the child is then gone."""
        request = {"argv": argv, "log": str(log_file), "cwd": str(log_file.parent)}
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._died()
        self.used += 1
        deadline = time.monotonic() + timeout_s
        while True:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                self.close()
                return "timeout"
            line = self.proc.stdout.readline()
            if not line:
                return self._died()
            if json.loads(line).get("done") == self.used:
                return ""

    def _died(self) -> str:
        returncode = self.proc.wait()
        sandbox.forget(self.proc)
        self.scratch.cleanup()
        return f"exit {returncode}"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        sandbox.kill_group(self.proc)
        self.proc.wait()
        sandbox.forget(self.proc)
        self.scratch.cleanup()


class PersistentConverter:
    """Idle converter children by (interpreter, memory cap); safe to share between the threads of a run."""

    def __init__(self) -> None:
        self._idle: dict[tuple, list[_Child]] = {}
        self._lock = threading.Lock()
        self.started = 0

    def run_tool(self, python: Path, script: Path, argv: list[str], limits: Limits,
                 log_file: Path) -> tuple[str, str]:
        """As `conversion.child.run_tool`; `script` is ignored (the converter is the only tool served)."""
        key = (str(python), int(limits.memory_mb))
        for attempt in (0, 1):
            child = self._take(key, fresh=attempt == 1)
            if child is None:
                return "", f"could not start {python}"
            reused = child.used > 0
            log_file.write_bytes(b"")
            died = child.convert(argv, log_file, limits.timeout_s)
            log = log_file.read_text(errors="replace")
            if not died:
                self._give_back(key, child)
                return log, ""
            if died == "timeout":
                return log, f"timeout after {limits.timeout_s:g} s"
            if not reused:
                return log, sandbox.describe_exit(int(died.split()[1]), log[-4000:], limits)
        return log, "unreachable"

    def _take(self, key: tuple, fresh: bool) -> Optional[_Child]:
        with self._lock:
            idle = self._idle.get(key, [])
            while idle and not fresh:
                child = idle.pop()
                if child.alive:
                    return child
        try:
            child = _Child(Path(key[0]), key[1])
        except OSError:
            return None
        self.started += 1
        return child

    def _give_back(self, key: tuple, child: _Child) -> None:
        with self._lock:
            self._idle.setdefault(key, []).append(child)

    def close(self) -> None:
        with self._lock:
            children = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for child in children:
            child.close()


_shared: Optional[PersistentConverter] = None
_shared_lock = threading.Lock()


def shared() -> PersistentConverter:
    """This process's converter children, for every run in it (a Dask worker process has its own); closed at
    exit, and killed with the other converter children on Ctrl-C (`mnnconvert.kill_all_children`)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = PersistentConverter()
            atexit.register(_shared.close)
        return _shared
