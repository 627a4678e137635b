"""How a run's MNN outputs moved since their golden: identical, drifted, changed, regressed, fixed or new.

Each output is compared with the one core check (`comparison.compare_output`), the golden as the reference and
the tolerance the run itself judged it with; the provenance says the likely cause (reconverted, MNN upgraded,
inputs or preprocessing changed).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from mnn_parity.comparison import compare_output
from mnn_parity.goldens.serialization import GOLDEN_LAYOUT, Golden, GoldenError
from mnn_parity.goldens.storage import GoldenStore
from mnn_parity.manifest.tolerance import Tolerance
from mnn_parity.records import CaseRun, Drift, DriftClass, FailureClass, OutputComparison, Verdict

_PASSING = (Verdict.PASS.value, Verdict.XPASS.value)


def classify_drift(run: CaseRun, golden: Optional[Golden], tolerance: Tolerance,
                   topk: Optional[Mapping[str, Any]] = None) -> Drift:
    """How the run's MNN outputs moved since the golden.

    Each output is judged with the tolerance the run itself judged it with (`run.result.outputs`), falling back
    to `tolerance` for outputs the result does not list. `topk` maps output names to `compare.TopK`.
    """
    if golden is None:
        return Drift(DriftClass.NEW, note="no golden")

    prov = golden.provenance
    where = golden.path or "golden"
    if prov.get("layout") != GOLDEN_LAYOUT:
        raise GoldenError(f"{where}: golden layout {prov.get('layout')!r}, this runner reads layout "
                          f"{GOLDEN_LAYOUT}; re-bless the suite")
    golden_verdict = prov.get("verdict")
    now_verdict = run.result.verdict.value
    notes = _provenance_notes(prov, run.provenance)
    known = golden_verdict in {v.value for v in Verdict}
    common = dict(golden_verdict=Verdict(golden_verdict) if known else None, golden_mnn_version=prov.get("mnn_version"),
                  latency_ms_golden=dict(prov.get("latency_ms") or {}))

    now, old = run.mnn_outputs, golden.mnn_outputs
    per_output_tol = {c.name: c.tolerance for c in run.result.outputs}
    topk = topk or {}
    comparisons = tuple(
        _compare(name, old[name], now[name], per_output_tol.get(name, tolerance), topk.get(name))
        for name in now if name in old)
    notes += _output_notes(old, now, run.result.verdict)

    def drift(cls: DriftClass) -> Drift:
        return Drift(cls, outputs=comparisons, note="; ".join(notes), **common)

    ran = run.result.verdict.ran
    if ran and set(now) == set(old) and all(_bit_exact(old[n], now[n]) for n in now):
        if (golden_verdict in _PASSING) != (now_verdict in _PASSING):
            notes.append(f"verdict {golden_verdict} → {now_verdict} with bit-identical MNN outputs: "
                         f"the reference or the tolerance changed")
        return drift(DriftClass.IDENTICAL)
    if golden_verdict in _PASSING and now_verdict not in _PASSING:
        return drift(DriftClass.REGRESSED)
    if golden_verdict not in _PASSING and now_verdict in _PASSING:
        return drift(DriftClass.FIXED)
    if set(now) != set(old) or not all(c.passed for c in comparisons):
        return drift(DriftClass.CHANGED)
    return drift(DriftClass.DRIFTED)


def _compare(name, golden_value, value, tolerance, topk) -> OutputComparison:
    try:
        return compare_output(name, golden_value, value, tolerance, topk)
    except TypeError as exc:   # e.g. string outputs: no numbers to measure, only equality
        same = _bit_exact(golden_value, value)
        return OutputComparison(name=name, ref_shape=tuple(np.shape(golden_value)), mnn_shape=tuple(np.shape(value)),
                                ref_dtype=str(np.asarray(golden_value).dtype), mnn_dtype=str(np.asarray(value).dtype),
                                tolerance=tolerance,
                                failure_class=None if same else FailureClass.OUT_OF_TOLERANCE,
                                reason="" if same else f"differs, and not comparable numerically ({exc})")


def _bit_exact(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _output_notes(old: Mapping[str, np.ndarray], now: Mapping[str, np.ndarray], verdict: Verdict) -> list[str]:
    notes = []
    if not verdict.ran and not now:
        notes.append(f"no MNN outputs now ({verdict.value})")
    added = [n for n in now if n not in old]
    removed = [n for n in old if n not in now]
    if removed:
        notes.append("outputs missing since the golden: " + ", ".join(removed))
    if added:
        notes.append("outputs new since the golden: " + ", ".join(added))
    shared_now = [n for n in now if n in old]
    shared_old = [n for n in old if n in now]
    if shared_now != shared_old:
        notes.append(f"output order changed: [{', '.join(shared_old)}] → [{', '.join(shared_now)}]")
    for n in shared_now:
        a, b = np.asarray(old[n]), np.asarray(now[n])
        if a.shape != b.shape:
            notes.append(f"{n}: shape {a.shape} → {b.shape}")
        elif a.dtype != b.dtype:
            notes.append(f"{n}: dtype {a.dtype} → {b.dtype}")
    return notes


def _provenance_notes(golden: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What differs between the golden's provenance and the run's: the likely cause of any drift."""
    def differs(key: str) -> bool:
        return key in golden and key in now and golden[key] != now[key]

    notes = []
    if differs("onnx_sha256"):
        notes.append("golden onnx hash differs: model changed")
    elif differs("mnn_model_sha256"):
        notes.append("golden MNN model hash differs: reconverted")
    if differs("convert_flags"):
        notes.append("converter flags changed: " + _changed_keys(golden["convert_flags"], now["convert_flags"]))
    if differs("mnn_version"):
        notes.append(f"MNN {golden['mnn_version']} → {now['mnn_version']}")
    if differs("onnxruntime_version"):
        notes.append(f"onnxruntime {golden['onnxruntime_version']} → {now['onnxruntime_version']}")
    if differs("input_sha256"):
        notes.append("inputs changed: " + _changed_keys(golden["input_sha256"], now["input_sha256"]))
    if differs("preprocess"):
        notes.append("preprocessing changed: " + _changed_keys(golden["preprocess"], now["preprocess"]))
    if differs("runtime"):
        notes.append("runtime config changed: " + _changed_keys(golden["runtime"], now["runtime"]))
    if differs("reference_runtime"):
        notes.append("reference runtime config changed: "
                     + _changed_keys(golden["reference_runtime"], now["reference_runtime"]))
    return notes


def _changed_keys(a: Any, b: Any) -> str:
    if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
        return f"{a!r} → {b!r}"
    parts = []
    for k in sorted(set(a) | set(b), key=str):
        if a.get(k) != b.get(k):
            parts.append(f"{k} {a.get(k, '(unset)')!r} → {b.get(k, '(unset)')!r}")
    return ", ".join(parts)


def attach_drift(suite, runs: list[CaseRun], store: GoldenStore
                 ) -> tuple[list[CaseRun], Optional[str], list[str]]:
    """Every run of `suite` (a manifest Suite) classified against its golden, as new records.

    Returns the runs with drift attached, the MNN version the goldens were blessed under, and the goldens that
    could not be compared: such a case says so in its warnings, and the caller ends the run with exit status 2,
    so that nobody mistakes "no comparison" for "no change".
    """
    baseline, errors, judged = None, [], []
    models = {model.name: model for model in suite.models}
    for run in runs:
        result = run.result
        try:
            golden = store.load(suite.name, result.model, result.case, result.backend)
            if golden is not None:
                baseline = baseline or golden.provenance.get("mnn_version")
            if run.mnn_outputs or golden is not None:
                model = models[result.model]
                topk = {name: spec.topk for name, spec in model.outputs.items() if spec.topk}
                result = result.with_drift(
                    classify_drift(run, golden, suite.tolerance_for(model, "", result.backend), topk))
        except GoldenError as error:
            result = result.with_warning(f"golden not compared: {error}")
            errors.append(f"{result.model}/{result.case} [{result.backend}]: {error}")
        judged.append(run.with_result(result))
    return judged, baseline, errors
