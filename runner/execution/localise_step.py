"""When a case is localised after it is judged (`--localise never|fail|always`), and with what.

Localisation runs on the same .mnn, feeds and runtime configuration the case ran with; it is advisory, so it
never changes a verdict, and it never raises (an engine failure comes back as status "error").
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from mnn_parity.conversion.mnnconvert import Conversion, ConverterEnv
from mnn_parity.execution.plan import WorkItem
from mnn_parity.manifest.spec import BackendSpec
from mnn_parity.records import OutputComparison, Verdict

MODES = ("never", "fail", "always")
LOW_PRECISIONS = ("low", "lowBF16")


def wanted(mode: str, verdict: Verdict, expected_failure: Optional[str]) -> bool:
    """`fail` localises unexpected FAILs only: an expected failure is known, and each localisation costs seconds
    (PP-OCR's detector: ~17 s)."""
    if mode == "always":
        return verdict in (Verdict.PASS, Verdict.FAIL)
    return mode == "fail" and verdict is Verdict.FAIL and not expected_failure


def localise_case(item: WorkItem, case: str, backend: BackendSpec, conversion: Conversion,
                  feeds: dict[str, np.ndarray], comparisons: list[OutputComparison]) -> dict:
    from mnn_parity.localisation import Case, Localisation, localise

    if item.model.stream:
        return Localisation("skipped", suggestion="streamed (stateful) models are not localised yet").to_json()
    options = item.options
    failing = next((c for c in comparisons if not c.passed), comparisons[0] if comparisons else None)
    tolerance = failing.tolerance.as_dict() if failing is not None else None
    repro = (Path(options.report_dir) / item.suite.name / "repro" / f"{item.model.name}-{case}-{backend.name}"
             if options.report_dir else None)
    found = localise(item.model.onnx, conversion.mnn_model, feeds, dict(backend.runtime), item.model.convert,
                     "low" if backend.runtime.get("precision") in LOW_PRECISIONS else "high",
                     Path(options.cache_dir) / "localise", item.suite.limits, repro_dir=repro,
                     case=Case(item.model.name, case, backend.name, tolerance),
                     converter=ConverterEnv(options.mnn_python, options.mnn_version))
    return found.to_json()
