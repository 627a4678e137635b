"""What localisation answers, as the run and the CLI record it."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

STATUSES = ("blamed", "drift", "none", "skipped", "error")


def _finite(value: Optional[float]) -> Optional[float]:
    # JSON has no infinity: a shape or NaN divergence has no finite error, and says so through `kind`
    if value is None or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True)
class LocaliseOptions:
    """Budgets. Names per forward, by count and by MiB, for both engines: every marked output stays allocated for
    the whole forward (PP-OCR's detector at 736x1472: MNN 40 names 1.6 GB, 256 MiB chunks 0.8 GB; ONNX Runtime
    all at once 1.9 GB). Each chunk is one more forward of the whole model: on that detector with fp16 weights,
    256 MiB chunks took 15.7 s with a 649 MB child at its peak, 512 MiB 12.8 s and 839 MB, 1 GiB (400 names) 11.6 s
    and 1331 MB; 512 MiB keeps a busy machine's two localisations at once well under 2 GB each. At 512 MiB,
    MNN asked for 100 names a forward instead of 40 took 3.9-4.2 s instead of 5.1-5.3 s, peak 913 MB instead of
    839 MB (the byte budget still bounds it). Since both engines run at once and MNN's chunks span ONNX Runtime's
    parts, 160 names took 4.10-4.14 s where 100 took 4.26-5.51 s, with 1.94 GB at the peak over all processes
    together (the page cache of the reference included). Verification trials and candidates bound the time;
    profile rows the report."""
    chunk: int = 160
    chunk_mb: float = 512.0
    reference_chunk: int = 120
    trials: int = 12
    candidates: int = 3
    profile_rows: int = 20
    keep_workdir: bool = False          # keep the recorded tensors and trial models, for debugging the localiser


@dataclass(frozen=True)
class Localisation:
    status: str
    node: str = ""
    op_type: str = ""
    tensor: str = ""
    rel: Optional[float] = None
    cosine: Optional[float] = None
    inherited_error: Optional[float] = None
    segment: tuple[str, ...] = ()
    verified: str = "no"
    shortest: tuple[str, ...] = ()
    kind: str = ""
    suggestion: str = ""
    repro: str = ""
    seconds: float = 0.0
    profile: tuple[tuple[str, int, Optional[float], Optional[float]], ...] = field(default_factory=tuple)
    frame: Optional[int] = None         # a streamed case: the frame localised (`localisation/frames.py`)

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "node": self.node, "op_type": self.op_type, "tensor": self.tensor,
                "rel": _finite(self.rel), "cosine": _finite(self.cosine),
                "inherited_error": _finite(self.inherited_error), "segment": list(self.segment),
                "verified": self.verified, "shortest": list(self.shortest), "kind": self.kind,
                "suggestion": self.suggestion, "repro": self.repro, "seconds": round(self.seconds, 3),
                "profile": [[t, i, _finite(e), _finite(r)] for t, i, e, r in self.profile],
                **({"frame": self.frame} if self.frame is not None else {})}
