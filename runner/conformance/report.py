"""`reports/conformance.md` and `.json`: the per-op table, totals, what broke or got fixed since a previous run.

The JSON is what `--compare` reads back: per test its op, status and detail, plus the environment.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Optional

from mnn_parity.conformance.build import ONNX_TOLERANCE
from mnn_parity.conformance.coverage import STATUSES, OpRow, changes, op_rows, totals
from mnn_parity.conformance.run import ConformanceRun
from mnn_parity.fsutil import atomic_write_text

MAX_CHARS = 58_000     # under the 60,000 characters of a pull-request comment, as the suites' reports
_COLUMNS = ("pass", "fail", "error", "crash", "not-converted", "reference-wrong", "reference-error", "skipped")


def to_json(run: ConformanceRun) -> dict:
    return {"schema": "mnn-parity-conformance/1", "source": run.source, "environment": run.environment,
            "tolerance": ONNX_TOLERANCE, "duration_s": round(run.duration_s, 2), "interrupted": run.interrupted,
            "totals": totals(run.outcomes),
            "ops": {row.op: {"counts": dict(row.counts), "details": {k: dict(v) for k, v in row.details.items()}}
                    for row in op_rows(run.outcomes)},
            "tests": {o.name: o.to_json() for o in run.outcomes}}


def _cell(row: OpRow, status: str) -> str:
    count = row.counts.get(status, 0)
    if not count:
        return ""
    details = row.details.get(status)
    if not details:
        return str(count)
    return f"{count} (" + ", ".join(f"{d} {n}" if n > 1 else d for d, n in sorted(details.items())) + ")"


def render_markdown(run: ConformanceRun, previous: Optional[Mapping] = None, previous_label: str = "") -> str:
    env = run.environment
    total = totals(run.outcomes)
    ran = sum(total.values()) - total["skipped"]
    lines = ["# ONNX node-test conformance of MNN", "",
             f"MNN {env.get('mnn_version', '?')}, ONNX Runtime {env.get('onnxruntime_version', '?')} (the "
             f"reference, itself checked against the shipped outputs); tests from {run.source}.",
             f"Tolerance as ONNX's backend tests: rtol {ONNX_TOLERANCE['rtol']:g}, atol {ONNX_TOLERANCE['atol']:g}, "
             f"element-wise. {ran} tests run in {run.duration_s:.0f} s"
             + (" — **interrupted: partial**" if run.interrupted else "") + ".", "",
             "## Totals", "", "| " + " | ".join(STATUSES) + " |", "|" + "---|" * len(STATUSES),
             "| " + " | ".join(str(total[s]) for s in STATUSES) + " |", ""]
    if previous is not None:
        lines += _changes_section(previous, run, previous_label)
    lines += ["## Per op", "",
              "`converted`: the converter produced a model. A failure's class, a crash's signal and a refused "
              "conversion are in brackets. `reference-wrong`: ONNX Runtime disagrees with the shipped output "
              "(MNN's result against the shipped output in brackets); not counted against MNN.", "",
              "| op | tests | converted | " + " | ".join(_COLUMNS) + " |", "|" + "---|" * (len(_COLUMNS) + 3)]
    for row in op_rows(run.outcomes):
        lines.append(f"| {row.op} | {row.tests} | {row.converted} | "
                     + " | ".join(_cell(row, s) for s in _COLUMNS) + " |")
    lines += ["", "## Tests not passing", "", "| test | op | status | detail | reason |", "|---|---|---|---|---|"]
    size = sum(len(line) + 1 for line in lines)
    failing = [o for o in run.outcomes if o.status not in ("pass", "skipped")]
    for shown, o in enumerate(failing):
        row = f"| {o.name} | {o.op} | {o.status} | {o.detail} | {_short(o.reason)} |"
        if size + len(row) > MAX_CHARS:   # a pull-request comment's limit: the rest is in the JSON
            lines += ["", f"… and {len(failing) - shown} more: every test is in conformance.json."]
            break
        lines.append(row)
        size += len(row) + 1
    return "\n".join(lines) + "\n"


def _changes_section(previous: Mapping, run: ConformanceRun, label: str) -> list[str]:
    moved = changes(previous.get("tests", {}), run.outcomes)
    before = (previous.get("environment") or {}).get("mnn_version", "?")
    lines = [f"## Since {label or 'the previous run'} (MNN {before} → {run.environment.get('mnn_version', '?')})",
             ""]
    for kind in ("broken", "fixed"):
        ops = sorted({op for op, _, _ in moved[kind]}, key=str.lower)
        lines.append(f"**{kind}**: {len(moved[kind])} test(s) in {len(ops)} op(s)" + (": " + ", ".join(ops) if ops
                                                                                     else ""))
        lines += [f"- {op}: `{test}` {what}" for op, test, what in moved[kind]]
        lines.append("")
    return lines


def _short(text: str, limit: int = 160) -> str:
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def write(run: ConformanceRun, report_dir: Path, previous_path: Optional[Path] = None,
          complete: bool = True) -> tuple[list[Path], dict]:
    """reports/conformance.{md,json}, and for a complete run (every test, not interrupted)
    conformance-mnn-<version>.json to compare releases later: a partial run must not replace that."""
    previous = json.loads(previous_path.read_text(encoding="utf-8")) if previous_path else None
    doc = to_json(run)
    text = json.dumps(doc, indent=1, sort_keys=True) + "\n"
    version = run.environment.get("mnn_version", "unknown")
    paths = [report_dir / "conformance.md", report_dir / "conformance.json"]
    if complete and not run.interrupted:
        paths.append(report_dir / f"conformance-mnn-{version}.json")
    atomic_write_text(paths[0], render_markdown(run, previous, str(previous_path or "")))
    for path in paths[1:]:
        atomic_write_text(path, text)
    moved = changes(previous.get("tests", {}), run.outcomes) if previous else {"fixed": [], "broken": []}
    return paths, moved
