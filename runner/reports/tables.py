"""The tables every human-readable report shows, as headers and rows of plain text.

Markdown (`markdown*`) and HTML (`html`) render the same rows, each escaping for its own format; a cell that must
stand out is a `Strong`. Deciding what a row says happens once, here.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Mapping, Optional, Sequence

from mnn_parity.records import CaseResult, Drift, DriftClass, OutputComparison, Verdict
from mnn_parity.reports.formatting import (NONE, ONE_MINUS_COS, Strong, enum_value, first_line, fmt_cos, fmt_e,
                                           fmt_ms, fmt_pct, shape, short)
from mnn_parity.reports.json_report import ENVIRONMENT_KEYS, jsonable
from mnn_parity.reports.ladder import MODEL_BYTES_KEY
from mnn_parity.reports.policy import (SEVERITY, Counts, RunSummary, by_place, expected_reason, rollup, slowdown,
                                       worst_verdict)

Row = list[str]
WORST_COS = f"{ONE_MINUS_COS} (worst)"
CASE_HEADERS = ["model", "case", "backend", "verdict", "class", "reason", "MNN ms", "ref ms", "vs golden"]
PASS_HEADERS = ["model", "case", "backend", "verdict", "drift", WORST_COS, "max abs", "MNN ms", "ref ms",
                "vs golden"]
XFAIL_HEADERS = ["model", "case", "backend", "expected because", "what happened", "drift", WORST_COS, "max abs"]
GROUP_HEADERS = ["model", "backend", "cases", WORST_COS, "max abs", "drift"]
OUTPUT_HEADERS = ["output", "shape", "dtype", "max abs", "max rel", "mean abs", ONE_MINUS_COS, "mismatch",
                  "NaN/Inf ref·mnn", "top-k", "result"]
CHANGE_HEADERS = ["model", "case", "backend", "drift", "verdict (golden → now)", "vs golden", "vs reference", "note"]
DRIFTED_HEADERS = ["model", "case", "backend", "vs golden", "vs reference"]
LATENCY_HEADERS = ["model", "case", "backend", "golden MNN ms", "MNN ms now", "× golden"]
# Regressions first: they are what a version bump must not bring.
CHANGE_CLASSES = (DriftClass.REGRESSED, DriftClass.CHANGED, DriftClass.FIXED)
REASON_CELL_MAX = 240
SHORT_REASON_CELL_MAX = 100   # once a report must shrink


def verdict_cell(v: Verdict) -> str:
    """Verdicts that are not as expected stand out; PASS and XFAIL do not compete with them for attention."""
    return Strong(v.value, v.value.lower()) if v.is_bad or v is Verdict.XPASS else v.value


def case_row(r: CaseResult, short_reason: bool = False) -> Row:
    limit = SHORT_REASON_CELL_MAX if short_reason else REASON_CELL_MAX
    return [r.model, r.case, r.backend, verdict_cell(r.verdict), enum_value(r.failure_class) or "",
            short(first_line(r.reason), limit), *latency_cells(r)]


def pass_row(r: CaseResult) -> Row:
    return [r.model, r.case, r.backend, r.verdict.value, _drift_name(r), *extremes(r.outputs), *latency_cells(r)]


def xfail_row(r: CaseResult) -> Row:
    happened, because = expected_reason(r)
    return [r.model, r.case, r.backend, short(because, REASON_CELL_MAX) or NONE,
            short(first_line(happened), REASON_CELL_MAX), _drift_name(r), *extremes(r.outputs)]


def _drift_name(r: CaseResult) -> str:
    return r.drift.drift_class.value if r.drift is not None else NONE


def group_rows(group: Sequence[CaseResult]) -> tuple[list[str], list[Row]]:
    """One row per model and backend: how many cases, their worst metrics and their drift; for XFAIL, why."""
    groups: dict[tuple[str, str], list[CaseResult]] = defaultdict(list)
    for r in group:
        groups[(r.model, r.backend)].append(r)
    expected = any(r.verdict is Verdict.XFAIL for r in group)
    rows = []
    for (model, backend), rs in groups.items():
        drift = Counter(r.drift.drift_class.value for r in rs if r.drift is not None)
        row = [model, backend, str(len(rs)), *extremes([o for r in rs for o in r.outputs]),
               ", ".join(f"{k} {n}" for k, n in drift.items()) or NONE]
        if expected:
            row.append("; ".join(dict.fromkeys(expected_reason(r)[1] for r in rs)) or NONE)
        rows.append(row)
    return GROUP_HEADERS + (["expected because"] if expected else []), rows


def extremes(outputs: Sequence[OutputComparison]) -> list[str]:
    """[worst 1−cos, highest max abs] over `outputs`."""
    cos = [o.cosine for o in outputs if o.cosine is not None]
    mx = [o.max_abs for o in outputs if o.max_abs is not None]
    return [fmt_cos(min(cos)) if cos else NONE, fmt_e(max(mx)) if mx else NONE]


def worst(outputs: Sequence[OutputComparison]) -> str:
    lowest_cos, highest_abs = extremes(outputs)
    if lowest_cos == highest_abs == NONE:
        return NONE
    return f"max abs {highest_abs}, {ONE_MINUS_COS} {lowest_cos}"


def latency_cells(r: CaseResult) -> Row:
    """MNN and reference medians, and MNN's change since the golden (flags live in one place: `latency_rows`)."""
    ratio = slowdown(r)
    change = NONE if ratio is None else f"{(ratio - 1) * 100:+.0f}%"
    return [fmt_ms(r.latency_ms.get("mnn")), fmt_ms(r.latency_ms.get("reference")), change]


def latency_rows(slow: Sequence[CaseResult]) -> list[Row]:
    return [[r.model, r.case, r.backend, fmt_ms(r.drift.latency_ms_golden.get("mnn")), fmt_ms(r.latency_ms.get("mnn")),
             Strong(f"{slowdown(r):.2f}×", "slow")] for r in slow]


def latency_rule(s: RunSummary) -> str:
    return (f"A case is flagged when its MNN median latency is over {s.slowdown_max:g}× its golden's and both "
            f"medians are above {s.slowdown_floor_ms:g} ms: shorter timings move too much from run to run to "
            "compare.")


def output_cells(o: OutputComparison) -> Row:
    if o.missing:
        shapes = f"{shape(o.ref_shape)} → missing"
    elif o.ref_shape == o.mnn_shape:
        shapes = shape(o.ref_shape)
    else:
        shapes = f"{shape(o.ref_shape)} → {shape(o.mnn_shape)}"
    dtype = o.ref_dtype if o.ref_dtype == o.mnn_dtype else f"{o.ref_dtype} → {o.mnn_dtype}"
    result = "ok" if o.passed else Strong(enum_value(o.failure_class) or "", "fail")
    return [o.name, shapes, dtype, fmt_e(o.max_abs), fmt_e(o.max_rel), fmt_e(o.mean_abs), fmt_cos(o.cosine),
            fmt_pct(o.mismatch_fraction), f"{o.nan_ref + o.inf_ref}·{o.nan_mnn + o.inf_mnn}", _topk_cell(o), result]


def _topk_cell(o: OutputComparison) -> str:
    if o.topk_agreement is None:
        return NONE
    text = f"{o.topk_agreement * 100:.4g}% agree"
    notes = [_count(o.topk_flips, "flip"), _count(o.near_tie_flips, "near tie")]
    notes = [n for n in notes if n]
    return text + (f" ({', '.join(notes)})" if notes else "")


def _count(n: Optional[int], noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}" if n else ""


def outputs_rows(group: Sequence[CaseResult]) -> list[Row]:
    """Every output of every case in `group`, for the folded per-output metrics."""
    return [[r.model, r.case, r.backend, *output_cells(o)] for r in group for o in r.outputs]


def changed_cases(s: RunSummary) -> list[CaseResult]:
    found = [r for r in by_place(s.results) if r.drift is not None and r.drift.drift_class in CHANGE_CLASSES]
    return sorted(found, key=lambda r: CHANGE_CLASSES.index(r.drift.drift_class))


def drifted_cases(s: RunSummary) -> list[CaseResult]:
    return [r for r in by_place(s.results) if r.drift is not None and r.drift.drift_class is DriftClass.DRIFTED]


def change_row(r: CaseResult, note_max: int) -> Row:
    return [r.model, r.case, r.backend, Strong(r.drift.drift_class.value, r.drift.drift_class.value),
            f"{enum_value(r.drift.golden_verdict) or '?'} → {r.verdict.value}", worst(r.drift.outputs),
            worst(r.outputs), short(r.drift.note, note_max)]


def drifted_row(r: CaseResult) -> Row:
    return [r.model, r.case, r.backend, worst(r.drift.outputs), worst(r.outputs)]


def quiet_drift(s: RunSummary) -> str:
    """The drift classes that need no attention, as one sentence; "" when there are none."""
    found = Counter(r.drift.drift_class for r in s.results if r.drift is not None)
    quiet = [f"{found[d]} {d.value}" for d in (DriftClass.IDENTICAL, DriftClass.DRIFTED, DriftClass.NEW) if found[d]]
    if not quiet:
        return ""
    return "Also: " + ", ".join(quiet) + " (drifted = changed within tolerance; new = no golden yet)."


def drift_sentence(d: Drift) -> str:
    if d.golden_mnn_version is None and d.golden_verdict is None:
        return f"Against the golden: no golden yet ({d.drift_class.value})" + (f" — {d.note}" if d.note else "")
    return (f"Against the golden (MNN {d.golden_mnn_version or 'unknown'}, verdict "
            f"{enum_value(d.golden_verdict) or 'unknown'}): {d.drift_class.value}" + (f" — {d.note}" if d.note else ""))


def rollup_rows(s: RunSummary) -> tuple[list[str], list[Row]]:
    """Model × backend, each cell the worst verdict of its cases, with counts where the cell mixes verdicts."""
    table = rollup(s)
    rows = []
    for model in table.models:
        row = [model]
        for backend in table.backends:
            found = table.cells.get((model, backend))
            row.append(_rollup_cell(found) if found else NONE)
        rows.append(row)
    return ["model", *table.backends], rows


def _rollup_cell(found: Mapping[Verdict, int]) -> str:
    worst_seen = worst_verdict(found)
    text = worst_seen.value
    if len(found) > 1:
        text += " (" + ", ".join(f"{v.value} {found[v]}" for v in SEVERITY if v in found) + ")"
    return Strong(text, worst_seen.value.lower()) if worst_seen.is_bad or worst_seen is Verdict.XPASS else text


def verdict_counts(c: Counts) -> tuple[list[str], list[Row]]:
    return [v.value for v in Verdict] + ["total"], [[str(c["verdict"].get(v.value, 0)) for v in Verdict]
                                                    + [str(c["total"])]]


def drift_counts(c: Counts) -> tuple[list[str], list[Row]]:
    return [d.value for d in DriftClass], [[str(c["drift"].get(d.value, 0)) for d in DriftClass]]


def version_line(s: RunSummary) -> tuple[str, str]:
    """MNN's version (both when it changed since the goldens were blessed: a reader must see it), and a note."""
    now = s.environment.get("mnn_version") or "?"
    then = s.environment.get("baseline_mnn_version")
    if then and then != now:
        return f"MNN {then} → {now}", f"(goldens blessed with {then})"
    return f"MNN {now}", ""


def environment_parts(s: RunSummary) -> list[str]:
    """The versions after MNN's, and the platform."""
    env = s.environment
    named = (("onnxruntime_version", "ONNX Runtime "), ("python", "Python "), ("platform", ""))
    return [f"{prefix}{env[key]}" for key, prefix in named if env.get(key)]


def extra_environment_rows(s: RunSummary) -> list[Row]:
    # the .mnn sizes are the precision ladder's column, not a fact about the machine
    extra = {k: v for k, v in s.environment.items() if k not in ENVIRONMENT_KEYS and k != MODEL_BYTES_KEY}
    return [[str(k), v if isinstance(v, str) else json.dumps(jsonable(v))] for k, v in extra.items()]


def failure_classes_line(c: Counts) -> Optional[str]:
    if not c["failure_class"]:
        return None
    return "Failure classes (unexpected failures): " + ", ".join(f"{k} {n}" for k, n in c["failure_class"].items())
