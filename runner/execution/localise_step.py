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
                  feeds: dict[str, np.ndarray], comparisons: list[OutputComparison],
                  ref_outputs: Optional[dict] = None, mnn_outputs: Optional[dict] = None) -> dict:
    if item.model.stream:
        return _localise_stream(item, case, backend, conversion, feeds, comparisons, ref_outputs or {},
                                mnn_outputs or {})
    return _localise(item, case, backend, conversion, feeds, comparisons).to_json()


def _localise(item: WorkItem, case: str, backend: BackendSpec, conversion: Conversion, feeds: dict[str, np.ndarray],
              comparisons: list[OutputComparison]):
    from mnn_parity.localisation import Case, localise

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
    return found


def _localise_stream(item: WorkItem, case: str, backend: BackendSpec, conversion: Conversion,
                     feeds: dict[str, np.ndarray], comparisons: list[OutputComparison], ref_outputs: dict,
                     mnn_outputs: dict) -> dict:
    """The first frame out of tolerance, rebuilt with ONNX Runtime's state, localised like any case
    (`localisation/frames.py` says why)."""
    from dataclasses import replace

    from mnn_parity.localisation import Localisation
    from mnn_parity.localisation.frames import choose_frame, frame_feeds

    tolerances = {c.name: c.tolerance for c in comparisons if not c.missing}
    frame = choose_frame(ref_outputs, mnn_outputs, tolerances)
    if frame is None:
        return Localisation("skipped", suggestion="no stacked outputs to compare frame by frame").to_json()
    found = _localise(item, case, backend, conversion, frame_feeds(feeds, item.model.stream, ref_outputs, frame.index),
                      comparisons)
    where = (f"frame {frame.index} of {frame.count} (the first where {frame.output!r} leaves tolerance)"
             if frame.diverged else f"frame {frame.index} of {frame.count} (the worst by cosine; none leaves "
                                    "tolerance)")
    fed = "localised with the state ONNX Runtime carried into it"
    if frame.diverged and found.status == "none":
        found = replace(found, status="drift", kind="accumulated-drift", frame=frame.index,
                        suggestion=f"{where}: {fed}, MNN agrees, so no op of a frame is wrong on its own; the "
                                   "small differences of earlier frames grow through the carried state. Loosen "
                                   "the tolerance of the late frames' outputs, or check the state's precision")
    else:
        found = replace(found, frame=frame.index,
                        suggestion=f"{where}, {fed}. {found.suggestion}".rstrip(". ") + ".")
    return found.to_json()
