"""The records a run produces: one comparison per output, one result per case and backend, the drift since
the golden. They are the boundary between execution, goldens and reports.

Every record is frozen. A later stage never edits an earlier stage's record: applying an expectation or
attaching drift makes a new one (`CaseResult.expecting`, `with_drift`). Records hold no arrays and round-trip
through JSON (`to_json` / `from_json`), so a result can cross a process or machine boundary and a report can be
rendered from records alone; the arrays travel beside them in `CaseRun`.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional

import numpy as np

from mnn_parity.manifest.tolerance import Tolerance


class Verdict(str, enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"        # ran, but MNN disagrees with the reference (see FailureClass)
    ERROR = "ERROR"      # could not run: conversion, load, shape or input problem, with the reason
    CRASH = "CRASH"      # a child process died: signal, timeout or memory cap
    XFAIL = "XFAIL"      # failed as the manifest said it would
    XPASS = "XPASS"      # expected to fail, but passed: news, not an error

    @property
    def is_bad(self) -> bool:
        return self in (Verdict.FAIL, Verdict.ERROR, Verdict.CRASH)

    @property
    def ran(self) -> bool:
        """Both engines produced outputs that were judged (ERROR and CRASH have nothing to bless or compare)."""
        return self not in (Verdict.ERROR, Verdict.CRASH)


class FailureClass(str, enum.Enum):
    """Why a FAIL failed, most fundamental first: the first that applies names the case."""
    SHAPE_MISMATCH = "shape-mismatch"
    NAN_INF = "nan-inf"
    DEAD_OUTPUT = "dead-output"
    OUT_OF_TOLERANCE = "out-of-tolerance"
    TOPK_FLIP = "topk-flip"
    OUTPUT_LAYOUT = "output-layout"    # the same values with extra unit axes: a consumer indexing it would break


class DriftClass(str, enum.Enum):
    """How a case's MNN outputs moved since its golden was blessed."""
    IDENTICAL = "identical"    # bit-exact
    DRIFTED = "drifted"        # changed, within tolerance
    CHANGED = "changed"        # changed beyond tolerance
    REGRESSED = "regressed"    # matched the reference when blessed, not now
    FIXED = "fixed"            # did not match the reference when blessed, does now
    NEW = "new"                # no golden
    STALE = "stale"            # a golden with no case left


def json_number(x: Optional[float]) -> object:
    """JSON has no NaN or Infinity: strings keep the information and the document strict."""
    if x is None:
        return None
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def number_from_json(x: object) -> Optional[float]:
    return None if x is None else float(x)   # float() reads "NaN", "Infinity" and "-Infinity"


def _enum(kind, value):
    return None if value is None else kind(value)


@dataclass(frozen=True)
class OutputComparison:
    """MNN's value of one named output against the reference's, and whether it is within tolerance."""
    name: str
    ref_shape: tuple[int, ...]
    mnn_shape: tuple[int, ...]
    ref_dtype: str
    mnn_dtype: str                           # "" when `missing`
    tolerance: Tolerance
    max_abs: Optional[float] = None          # None where shapes differ and nothing could be compared
    max_rel: Optional[float] = None
    mean_abs: Optional[float] = None
    cosine: Optional[float] = None
    mismatch_fraction: Optional[float] = None   # elements outside atol + rtol*|ref|
    nan_ref: int = 0
    inf_ref: int = 0
    nan_mnn: int = 0
    inf_mnn: int = 0
    topk_agreement: Optional[float] = None   # fraction of positions whose top-k sets agree
    topk_flips: int = 0                      # disagreements where the reference's scores were clearly apart
    near_tie_flips: int = 0                  # disagreements between scores closer than the error: reported, not failed
    failure_class: Optional[FailureClass] = None   # None: within tolerance
    reason: str = ""
    missing: bool = False                    # MNN returned no output of this name at all

    @property
    def passed(self) -> bool:
        return self.failure_class is None

    _NUMBERS = ("max_abs", "max_rel", "mean_abs", "cosine", "mismatch_fraction", "topk_agreement")
    _COUNTS = ("nan_ref", "inf_ref", "nan_mnn", "inf_mnn")

    def to_json(self) -> dict:
        doc: dict[str, Any] = {
            "name": self.name,
            "ref_shape": [int(d) for d in self.ref_shape], "mnn_shape": [int(d) for d in self.mnn_shape],
            "ref_dtype": self.ref_dtype, "mnn_dtype": self.mnn_dtype,
            "tolerance": {k: float(v) for k, v in self.tolerance.as_dict().items()},
        }
        doc.update({k: json_number(getattr(self, k)) for k in self._NUMBERS[:5]})
        doc.update({k: getattr(self, k) for k in self._COUNTS})
        doc.update({"topk_agreement": json_number(self.topk_agreement), "topk_flips": self.topk_flips,
                    "near_tie_flips": self.near_tie_flips,
                    "failure_class": self.failure_class.value if self.failure_class else None,
                    "reason": self.reason, "passed": self.passed})
        if self.missing:
            doc["missing"] = True
        return doc

    @classmethod
    def from_json(cls, doc: Mapping) -> "OutputComparison":
        return cls(name=doc["name"], ref_shape=tuple(doc["ref_shape"]), mnn_shape=tuple(doc["mnn_shape"]),
                   ref_dtype=doc["ref_dtype"], mnn_dtype=doc["mnn_dtype"], tolerance=Tolerance(**doc["tolerance"]),
                   **{k: number_from_json(doc.get(k)) for k in cls._NUMBERS},
                   **{k: int(doc.get(k, 0)) for k in cls._COUNTS},
                   topk_flips=int(doc.get("topk_flips", 0)), near_tie_flips=int(doc.get("near_tie_flips", 0)),
                   failure_class=_enum(FailureClass, doc.get("failure_class")), reason=doc.get("reason", ""),
                   missing=bool(doc.get("missing", False)))


@dataclass(frozen=True)
class Drift:
    drift_class: DriftClass
    golden_verdict: Optional[Verdict] = None
    golden_mnn_version: Optional[str] = None
    outputs: tuple[OutputComparison, ...] = ()     # current MNN output against the golden MNN output
    latency_ms_golden: Mapping[str, float] = field(default_factory=dict)
    note: str = ""                                 # e.g. "golden model hash differs: reconverted"

    def to_json(self) -> dict:
        return {"drift_class": self.drift_class.value,
                "golden_verdict": self.golden_verdict.value if self.golden_verdict else None,
                "golden_mnn_version": self.golden_mnn_version,
                "latency_ms_golden": {k: json_number(v) for k, v in self.latency_ms_golden.items()},
                "note": self.note, "outputs": [o.to_json() for o in self.outputs]}

    @classmethod
    def from_json(cls, doc: Mapping) -> "Drift":
        return cls(DriftClass(doc["drift_class"]), _enum(Verdict, doc.get("golden_verdict")),
                   doc.get("golden_mnn_version"), tuple(OutputComparison.from_json(o) for o in doc.get("outputs", ())),
                   {k: number_from_json(v) for k, v in (doc.get("latency_ms_golden") or {}).items()},
                   doc.get("note", ""))


@dataclass(frozen=True)
class CaseResult:
    """The verdict for one case on one backend. Everything a report needs, and nothing else."""
    suite: str
    model: str
    case: str
    backend: str
    verdict: Verdict
    failure_class: Optional[FailureClass] = None
    reason: str = ""
    outputs: tuple[OutputComparison, ...] = ()
    warnings: tuple[str, ...] = ()
    latency_ms: Mapping[str, float] = field(default_factory=dict)   # {"reference": ..., "mnn": ...}
    drift: Optional[Drift] = None
    localisation: Optional[Mapping[str, Any]] = None   # the first divergent op, as localisation's JSON contract
    unstable: str = ""   # "": one run decided; else the first run's outcome, which a rerun in a fresh worker changed
    messages: tuple[str, ...] = ()   # what MNN printed during this case's calls (bad verdicts only)

    def expecting(self, expect_fail: Optional[str]) -> "CaseResult":
        """The manifest's `expect: {fail: ...}` applied: a failure becomes XFAIL, a pass XPASS (news)."""
        if not expect_fail:
            return self
        if self.verdict is Verdict.PASS:
            return replace(self, verdict=Verdict.XPASS, reason=f"expected to fail ({expect_fail}), but passed")
        if self.verdict.is_bad:
            return replace(self, verdict=Verdict.XFAIL,
                           reason=f"{self.verdict.value}: {self.reason} (expected: {expect_fail})")
        return self

    def with_drift(self, drift: Optional[Drift]) -> "CaseResult":
        return replace(self, drift=drift)

    def with_warning(self, warning: str) -> "CaseResult":
        return replace(self, warnings=(*self.warnings, warning))

    def to_json(self) -> dict:
        return {"model": self.model, "case": self.case, "backend": self.backend, "verdict": self.verdict.value,
                "failure_class": self.failure_class.value if self.failure_class else None, "reason": self.reason,
                "warnings": list(self.warnings),
                "latency_ms": {k: json_number(v) for k, v in self.latency_ms.items()},
                "drift": self.drift.to_json() if self.drift else None,
                "outputs": [o.to_json() for o in self.outputs],
                **({"localisation": dict(self.localisation)} if self.localisation is not None else {}),
                **({"unstable": self.unstable} if self.unstable else {}),
                **({"messages": list(self.messages)} if self.messages else {})}

    @classmethod
    def from_json(cls, doc: Mapping, suite: str = "") -> "CaseResult":
        """`suite` is not in a case's JSON (a report holds one suite): the caller says which."""
        return cls(doc.get("suite", suite), doc["model"], doc["case"], doc["backend"], Verdict(doc["verdict"]),
                   _enum(FailureClass, doc.get("failure_class")), doc.get("reason", ""),
                   tuple(OutputComparison.from_json(o) for o in doc.get("outputs", ())),
                   tuple(doc.get("warnings", ())),
                   {k: number_from_json(v) for k, v in (doc.get("latency_ms") or {}).items()},
                   Drift.from_json(doc["drift"]) if doc.get("drift") else None, doc.get("localisation"),
                   doc.get("unstable", ""), tuple(doc.get("messages", ())))


@dataclass(frozen=True)
class CaseRun:
    """A result together with the arrays it was judged on, for the golden store; never written to reports."""
    result: CaseResult
    ref_outputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    mnn_outputs: Mapping[str, np.ndarray] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def with_result(self, result: CaseResult) -> "CaseRun":
        return replace(self, result=result)
