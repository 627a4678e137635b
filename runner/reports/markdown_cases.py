"""Markdown for single cases and outputs: the folded per-case details and per-output metrics."""
from __future__ import annotations

import html
from typing import Sequence

from mnn_parity.records import CaseResult, OutputComparison
from mnn_parity.reports.formatting import ident, md_table, short, text
from mnn_parity.reports.tables import OUTPUT_HEADERS, drift_sentence, output_cells, outputs_rows

LOG_MAX = 4000   # a multi-line reason is usually a converter log: its head says what went wrong


def case_details(r: CaseResult) -> list[str]:
    head = f"{ident(r)} — {r.verdict.value}"
    if r.failure_class is not None:
        head += f" · {r.failure_class.value}"
    lines = [f"<details><summary>{html.escape(head)}</summary>", ""]
    reason = r.reason.strip()
    if "\n" in reason:
        lines += ["```text", short(reason, LOG_MAX).replace("```", "'''"), "```", ""]
    elif reason:
        lines += [f"**Reason:** {text(reason)}", ""]
    for w in r.warnings:
        lines += [f"⚠️ {text(w)}", ""]
    if r.outputs:
        lines += [outputs_table(r.outputs), ""]
    if r.drift is not None:
        lines += [text(drift_sentence(r.drift)), ""]
        if r.drift.outputs:
            lines += [outputs_table(r.drift.outputs), ""]
    lines += ["</details>", ""]
    return lines


def folded(summary: str, body: str) -> list[str]:
    """A collapsed block: detail that is there when asked for and costs a reader nothing otherwise."""
    return [f"<details><summary>{summary}</summary>", "", body, "", "</details>", ""]


def outputs_block(group: Sequence[CaseResult], title: str) -> list[str]:
    rows = outputs_rows(group)
    if not rows:
        return []
    return folded(html.escape(title), md_table(["model", "case", "backend", *OUTPUT_HEADERS], rows))


def outputs_table(outputs: Sequence[OutputComparison]) -> str:
    return md_table(OUTPUT_HEADERS, [output_cells(o) for o in outputs])
