"""The records that flow out of a run: one comparison per output, one result per case and backend.

These are the boundary types between comparison, goldens and reports. They hold no arrays, so a
report can be written from them alone; the arrays travel beside them in `CaseRun`.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np

from mnn_parity.manifest.tolerance import Tolerance


class Verdict(str, enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"        # ran, but MNN disagrees with the reference (see FailureClass)
    ERROR = "ERROR"      # could not run: conversion, load, shape or input problem, with the reason
    CRASH = "CRASH"      # the engine died: signal, timeout or memory cap
    XFAIL = "XFAIL"      # failed as the manifest said it would
    XPASS = "XPASS"      # expected to fail, but passed: news, not an error

    @property
    def is_bad(self) -> bool:
        return self in (Verdict.FAIL, Verdict.ERROR, Verdict.CRASH)


class FailureClass(str, enum.Enum):
    """Why a FAIL failed, most fundamental first: the first that applies names the case."""
    SHAPE_MISMATCH = "shape-mismatch"
    NAN_INF = "nan-inf"
    DEAD_OUTPUT = "dead-output"
    OUT_OF_TOLERANCE = "out-of-tolerance"
    TOPK_FLIP = "topk-flip"


@dataclass(frozen=True)
class OutputComparison:
    """MNN's value of one named output against the reference's, and whether it is within tolerance."""
    name: str
    ref_shape: tuple[int, ...]
    mnn_shape: tuple[int, ...]
    ref_dtype: str
    mnn_dtype: str
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

    @property
    def passed(self) -> bool:
        return self.failure_class is None


@dataclass
class CaseResult:
    """The verdict for one case on one backend. Everything a report needs, and nothing else."""
    suite: str
    model: str
    case: str
    backend: str
    verdict: Verdict
    failure_class: Optional[FailureClass] = None
    reason: str = ""
    outputs: list[OutputComparison] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)   # {"reference": ..., "mnn": ...}
    drift: Optional["Drift"] = None

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.suite, self.model, self.case, self.backend)


class DriftClass(str, enum.Enum):
    """How a case's MNN outputs moved since its golden was blessed."""
    IDENTICAL = "identical"    # bit-exact
    DRIFTED = "drifted"        # changed, within tolerance
    CHANGED = "changed"        # changed beyond tolerance
    REGRESSED = "regressed"    # matched the reference when blessed, not now
    FIXED = "fixed"            # did not match the reference when blessed, does now
    NEW = "new"                # no golden
    STALE = "stale"            # a golden with no case left


@dataclass(frozen=True)
class Drift:
    drift_class: DriftClass
    golden_verdict: Optional[str] = None
    golden_mnn_version: Optional[str] = None
    outputs: tuple[OutputComparison, ...] = ()     # current MNN output against the golden MNN output
    latency_ms_golden: Mapping[str, float] = field(default_factory=dict)
    note: str = ""                                 # e.g. "golden model hash differs: reconverted"


@dataclass
class CaseRun:
    """A result together with the arrays it was judged on, for the golden store; never written to reports."""
    result: CaseResult
    ref_outputs: dict[str, np.ndarray] = field(default_factory=dict)
    mnn_outputs: dict[str, np.ndarray] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
