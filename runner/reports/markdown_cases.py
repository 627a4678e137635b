"""Markdown for single cases and outputs: table rows, the folded per-case details and per-output metrics."""
from __future__ import annotations

import html
from collections import Counter, defaultdict
from typing import Sequence

from mnn_parity.records import CaseResult, OutputComparison
from mnn_parity.reports.formatting import (NONE, cell, enum_value, first_line, fmt_cos, fmt_e, fmt_ms, fmt_pct, ident,
                                           shape, short, table, text)
from mnn_parity.reports.policy import RunSummary, is_slow, slowdown

CASE_HEADERS = ["model", "case", "backend", "verdict", "class", "reason", "MNN ms", "ref ms", "vs golden"]
PASS_HEADERS = ["model", "case", "backend", "verdict", "drift", "lowest cosine", "max abs", "MNN ms", "ref ms",
                "vs golden"]
GROUP_HEADERS = ["model", "backend", "cases", "lowest cosine", "max abs", "drift"]
OUTPUT_HEADERS = ["output", "shape", "dtype", "max abs", "max rel", "mean abs", "cosine", "mismatch",
                  "NaN/Inf ref·mnn", "top-k", "result"]
REASON_CELL_MAX = 240
SHORT_REASON_CELL_MAX = 100   # once a report must shrink
LOG_MAX = 4000   # a multi-line reason is usually a converter log: its head says what went wrong


def case_row(r: CaseResult, s: RunSummary, short_reason: bool) -> list[str]:
    limit = SHORT_REASON_CELL_MAX if short_reason else REASON_CELL_MAX
    return [cell(r.model), cell(r.case), cell(r.backend), f"**{r.verdict.value}**",
            cell(enum_value(r.failure_class) or ""), cell(short(first_line(r.reason), limit)), *_latency_cells(r, s)]


def pass_row(r: CaseResult, s: RunSummary) -> list[str]:
    return [cell(r.model), cell(r.case), cell(r.backend), r.verdict.value,
            r.drift.drift_class.value if r.drift is not None else NONE, *_extremes(r.outputs), *_latency_cells(r, s)]


def group_rows(group: Sequence[CaseResult]) -> list[list[str]]:
    """One row per model and backend: how many cases, their worst metrics and their drift."""
    groups: dict[tuple[str, str], list[CaseResult]] = defaultdict(list)
    for r in group:
        groups[(r.model, r.backend)].append(r)
    rows = []
    for (model, backend), rs in groups.items():
        drift = Counter(r.drift.drift_class.value for r in rs if r.drift is not None)
        rows.append([cell(model), cell(backend), str(len(rs)), *_extremes([o for r in rs for o in r.outputs]),
                     ", ".join(f"{k} {n}" for k, n in drift.items()) or NONE])
    return rows


def _extremes(outputs: Sequence[OutputComparison]) -> list[str]:
    """[lowest cosine, highest max abs] over `outputs`."""
    cos = [o.cosine for o in outputs if o.cosine is not None]
    mx = [o.max_abs for o in outputs if o.max_abs is not None]
    return [fmt_cos(min(cos)) if cos else NONE, fmt_e(max(mx)) if mx else NONE]


def worst(outputs: Sequence[OutputComparison]) -> str:
    lowest_cos, highest_abs = _extremes(outputs)
    if lowest_cos == highest_abs == NONE:
        return NONE
    return f"max abs {highest_abs}, cos {lowest_cos}"


def _latency_cells(r: CaseResult, s: RunSummary) -> list[str]:
    ratio = slowdown(r)
    change = NONE
    if ratio is not None:
        change = f"{(ratio - 1) * 100:+.0f}%"
        if is_slow(r, s):
            change += " ⚠️ slower"
    return [fmt_ms(r.latency_ms.get("mnn")), fmt_ms(r.latency_ms.get("reference")), change]


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
        d = r.drift
        lines.append(f"Against the golden (MNN {text(d.golden_mnn_version or '?')}, verdict "
                     f"{text(enum_value(d.golden_verdict) or '?')}): **{d.drift_class.value}**"
                     + (f" — {text(d.note)}" if d.note else ""))
        lines.append("")
        if d.outputs:
            lines += [outputs_table(d.outputs), ""]
    lines += ["</details>", ""]
    return lines


def folded(summary: str, body: str) -> list[str]:
    """A collapsed block: detail that is there when asked for and costs a reader nothing otherwise."""
    return [f"<details><summary>{summary}</summary>", "", body, "", "</details>", ""]


def outputs_block(group: Sequence[CaseResult], title: str) -> list[str]:
    rows = [[cell(r.model), cell(r.case), cell(r.backend), *_output_cells(o)] for r in group for o in r.outputs]
    if not rows:
        return []
    return folded(html.escape(title), table(["model", "case", "backend", *OUTPUT_HEADERS], rows))


def outputs_table(outputs: Sequence[OutputComparison]) -> str:
    return table(OUTPUT_HEADERS, [_output_cells(o) for o in outputs])


def _output_cells(o: OutputComparison) -> list[str]:
    if o.missing:
        shapes = f"{shape(o.ref_shape)} → missing"
    elif o.ref_shape == o.mnn_shape:
        shapes = shape(o.ref_shape)
    else:
        shapes = f"{shape(o.ref_shape)} → {shape(o.mnn_shape)}"
    dtype = o.ref_dtype if o.ref_dtype == o.mnn_dtype else f"{o.ref_dtype} → {o.mnn_dtype}"
    result = "ok" if o.passed else f"**{enum_value(o.failure_class)}**"
    return [cell(o.name), shapes, dtype, fmt_e(o.max_abs), fmt_e(o.max_rel), fmt_e(o.mean_abs),
            fmt_cos(o.cosine), fmt_pct(o.mismatch_fraction),
            f"{o.nan_ref + o.inf_ref}·{o.nan_mnn + o.inf_mnn}", _topk_cell(o), result]


def _topk_cell(o: OutputComparison) -> str:
    if o.topk_agreement is None:
        return NONE
    cell_text = f"{o.topk_agreement * 100:.4g}% agree"
    if o.topk_flips:
        cell_text += f", {o.topk_flips} flips"
    if o.near_tie_flips:
        cell_text += f", {o.near_tie_flips} near ties"
    return cell_text
