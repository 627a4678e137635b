"""Writing a suite's reports: the one side effect of this package.

Everything is rendered (and the JSON checked against its schema) before anything is written, so a failed render
leaves every existing report untouched; each file goes through `atomic_write_text`, so a killed run never leaves a
half-written one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from mnn_parity.fsutil import atomic_write_text
from mnn_parity.reports.html import render_html
from mnn_parity.reports.json_report import render_json, validate_report
from mnn_parity.reports.junit import render_junit
from mnn_parity.reports.markdown import render_markdown
from mnn_parity.reports.policy import RunSummary


def write_reports(summary: RunSummary, report_dir: Path, junit: Optional[Path] = None) -> list[Path]:
    """Write <suite>.md, <suite>.json (schema-checked), <suite>.html (with plots) and optionally JUnit XML;
    returns the paths written."""
    if not summary.suite or "/" in summary.suite or "\\" in summary.suite or summary.suite.startswith("."):
        raise ValueError(f"suite name {summary.suite!r} cannot name a report file")
    report_dir = Path(report_dir)
    markdown = render_markdown(summary)
    doc = render_json(summary)
    validate_report(doc)
    planned = [(report_dir / f"{summary.suite}.md", markdown),
               (report_dir / f"{summary.suite}.json", json.dumps(doc, indent=2, allow_nan=False) + "\n"),
               (report_dir / f"{summary.suite}.html", render_html(summary))]
    if junit is not None:
        planned.append((Path(junit), render_junit([summary])))
    for path, text in planned:
        atomic_write_text(path, text)
    return [path for path, _ in planned]
