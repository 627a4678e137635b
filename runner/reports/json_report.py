"""The JSON report: every case as its record serialises itself, plus what only a run knows (counts, slowdown,
exit status), checked against schemas/report.schema.json."""
from __future__ import annotations

from typing import Any

from mnn_parity.records import CaseResult, json_number
from mnn_parity.reports.ladder import ladder_json
from mnn_parity.reports.tolerance_needed import tolerance_json
from mnn_parity.reports.policy import RunSummary, counts, exit_status, slowdown
from mnn_parity.resources import schema

# Always present, null when unknown, so a consumer can read them without guarding each one.
ENVIRONMENT_KEYS = ("mnn_version", "onnxruntime_version", "python", "platform", "baseline_mnn_version")


def render_json(summary: RunSummary) -> dict[str, Any]:
    env = dict(summary.environment)
    for key in ENVIRONMENT_KEYS:
        env.setdefault(key, None)
    return {
        "schema_version": 1,
        "suite": summary.suite,
        "description": summary.description,
        "environment": jsonable(env),
        "started": summary.started,
        "duration_s": float(summary.duration_s),
        "fail_on": sorted(summary.fail_on),
        "exit_status": exit_status([summary]),
        "counts": counts(summary),
        "cases": [_case_json(r) for r in summary.results],
        "stale": [{"model": m, "case": c, "backend": b} for m, c, b in summary.stale],
        "ladder": ladder_json(summary),
        "tolerance_needed": tolerance_json(summary),
    }


def validate_report(doc: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when `doc` does not match schemas/report.schema.json."""
    import jsonschema   # lazily: only writing a report needs it

    jsonschema.Draft202012Validator(schema("report.schema.json")).validate(doc)


def _case_json(r: CaseResult) -> dict[str, Any]:
    doc = r.to_json()
    # `slowdown` goes before drift and outputs, where reports have always had it, so old and new reports diff cleanly.
    tail = {key: doc.pop(key) for key in ("drift", "outputs")}
    return {**doc, "slowdown": slowdown(r), **tail}


def jsonable(value: object) -> object:
    """Environment values as strict JSON: containers kept, non-finite floats as strings, anything else as text."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return json_number(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)
