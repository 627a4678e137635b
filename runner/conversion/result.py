"""What a conversion step hands on: the `.mnn` file it made, its log, and why it failed when it did.

Every step (`mnnconvert`, `quantize`) returns a `Conversion`, so the next step and the engines need not know which
step made the model they get.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

_TAIL_LINES = 6


@dataclass(frozen=True)
class Conversion:
    ok: bool
    mnn_model: Optional[Path]
    log: str
    reason: str = ""                  # why it failed, for the verdict
    unsupported_ops: tuple[str, ...] = ()
    cached: bool = False
    key: str = ""
    mnn_sha256: str = ""
    onnx_sha256: str = ""             # hashed once here for the cache key; provenance records it too
    log_path: Optional[Path] = None   # where the log stays on disk (a crash's log is kept beside the cache)
    crash: str = ""                   # how the step's child ended abnormally ("killed by SIGSEGV", a timeout)

    @property
    def crashed(self) -> bool:
        """Killed by a signal, the timeout or the memory cap: a CRASH verdict. A child that could not start or
        exited with an error status failed, like a tool that said so: an ERROR."""
        return self.crash.startswith(("killed by", "timeout", "memory cap"))


@dataclass(frozen=True)
class ConverterEnv:
    python: Path
    mnn_version: str


def log_tail(log: str, lines: int = _TAIL_LINES, limit: int = 600) -> str:
    """The last words of a log on one line, for a verdict's reason."""
    kept = [line.strip() for line in log.splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-limit:] or "(the log is empty)"
