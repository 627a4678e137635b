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
    if r.unstable:
        lines += [f"**Unstable:** first run {text(r.unstable)}", ""]
    if r.messages:
        said = "\n".join(r.messages)
        lines += ["MNN said during the case:", "", "```text", short(said, LOG_MAX).replace("```", "'''"), "```", ""]
    if r.outputs:
        lines += [outputs_table(r.outputs), ""]
    if r.drift is not None:
        lines += [text(drift_sentence(r.drift)), ""]
        if r.drift.outputs:
            lines += [outputs_table(r.drift.outputs), ""]
    if r.localisation:
        lines += localisation_lines(r.localisation)
    lines += ["</details>", ""]
    return lines


def _number(x) -> str:
    return "–" if x is None else f"{float(x):.2e}"


def localisation_lines(found) -> list[str]:
    """Where MNN first goes wrong, then the worst trusted tensors in graph order (the per-layer profile)."""
    if found.get("status") == "blamed":
        head = (f"**First divergent op:** `{text(found['node'])}` ({text(found['op_type'])}), tensor "
                f"`{text(found['tensor'])}`: max rel {_number(found.get('rel'))}, cosine "
                f"{_number(found.get('cosine'))} against {_number(found.get('inherited_error'))} (1−cos) inherited "
                f"from its inputs; segment {text(', '.join(found.get('segment') or []))}; verified alone: "
                f"{found.get('verified')}" + (f"; at frame {found['frame']}" if found.get("frame") is not None else ""))
    else:
        head = f"**Localisation:** {text(found.get('status', '?'))}"
    lines = [head, ""]
    if found.get("kind") or found.get("suggestion"):
        lines += [f"Diagnosis: **{text(found.get('kind') or '–')}** — {text(found.get('suggestion') or '')}", ""]
    if found.get("repro"):
        lines += [f"Reproducer (model, inputs, failing manifest, ISSUE.md): `{text(found['repro'])}`", ""]
    profile = found.get("profile") or []
    if profile:
        rows = [[text(str(t)), str(i), _number(e), _number(r)] for t, i, e, r in profile[:10]]
        lines += [md_table(["tensor", "op order", "1−cos", "max rel"], rows), ""]
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
