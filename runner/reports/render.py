"""Reports of a run: Markdown for a pull request, JSON for machines, JUnit XML for CI, and the exit status.

Everything here renders from `CaseResult` records alone (no arrays). Rendering is pure; `write_reports` is the
only side effect, and it renders everything before it writes anything, each file through a temp file and
`os.replace`, so a failed render or a killed run never leaves a half-written report.
"""
from __future__ import annotations

import html
import json
import math
import os
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional, Sequence

from tabulate import tabulate

from mnn_parity.resources import schema
from mnn_parity.records import CaseResult, DriftClass, FailureClass, OutputComparison, Verdict

MARKDOWN_LIMIT = 60_000          # a GitHub comment holds 65,536 characters; keep room for a bot's header
DEFAULT_FAIL_ON = frozenset({DriftClass.REGRESSED.value, DriftClass.CHANGED.value})

# Failures first, the most actionable first; XFAIL and PASS are "as expected".
_PROBLEM_ORDER = (Verdict.FAIL, Verdict.ERROR, Verdict.CRASH, Verdict.XPASS)
_EXPECTED_ORDER = (Verdict.XFAIL, Verdict.PASS)
_CHANGE_CLASSES = (DriftClass.REGRESSED, DriftClass.CHANGED, DriftClass.FIXED)
_REASON_CELL_MAX = 240
_LOG_MAX = 4000
_CHANGES_CAP = 50   # rows of "what changed" once a report must shrink; regressions come first


@dataclass
class RunSummary:
    suite: str
    description: str
    environment: dict                 # mnn_version, onnxruntime_version, python, platform, baseline_mnn_version, ...
    results: list[CaseResult]
    stale: list[tuple[str, str, str]] = field(default_factory=list)   # (model, case, backend) goldens with no case
    started: str = ""
    duration_s: float = 0.0
    fail_on: set[str] = field(default_factory=lambda: set(DEFAULT_FAIL_ON))   # drift classes that fail the run
    slowdown_max: Optional[float] = 1.5   # flag MNN latency above this multiple of the golden's; None: never
    slowdown_floor_ms: float = 1.0        # ...and only when it also grew by more than this: sub-ms timings are noise


# --- verdict arithmetic -----------------------------------------------------------------------------------------

def drift_fails(result: CaseResult, fail_on: Iterable[str]) -> bool:
    return result.drift is not None and _value(result.drift.drift_class) in set(fail_on)


def exit_status(summaries: Sequence[RunSummary]) -> int:
    """0 when everything is as expected; 1 on any FAIL/ERROR/CRASH or a drift class listed in `fail_on`."""
    for s in summaries:
        if s.stale and DriftClass.STALE.value in s.fail_on:
            return 1
        for r in s.results:
            if Verdict(r.verdict).is_bad or drift_fails(r, s.fail_on):
                return 1
    return 0


def slowdown(result: CaseResult) -> Optional[float]:
    """MNN latency now over MNN latency when the golden was blessed; None when either is unknown."""
    now = result.latency_ms.get("mnn")
    then = result.drift.latency_ms_golden.get("mnn") if result.drift is not None else None
    if not now or not then or not _finite(now) or not _finite(then):
        return None
    return float(now) / float(then)


def _counts(summary: RunSummary) -> dict:
    verdicts = Counter(Verdict(r.verdict).value for r in summary.results)
    drifts = Counter(_value(r.drift.drift_class) for r in summary.results if r.drift is not None)
    if summary.stale:
        drifts[DriftClass.STALE.value] += len(summary.stale)
    classes = Counter(_value(r.failure_class) for r in summary.results if r.failure_class is not None)
    return {
        "total": len(summary.results),
        "verdict": {v.value: verdicts[v.value] for v in Verdict if verdicts[v.value]},
        "drift": {d.value: drifts[d.value] for d in DriftClass if drifts[d.value]},
        "failure_class": {c.value: classes[c.value] for c in FailureClass if classes[c.value]},
        "slowdowns": sum(1 for r in summary.results if _is_slow(r, summary)),
    }


def _is_slow(result: CaseResult, s: RunSummary) -> bool:
    ratio = slowdown(result)
    if s.slowdown_max is None or ratio is None or ratio <= s.slowdown_max:
        return False
    then = float(result.drift.latency_ms_golden["mnn"])
    return float(result.latency_ms["mnn"]) - then > s.slowdown_floor_ms


# --- JSON ---------------------------------------------------------------------------------------------------------

def render_json(summary: RunSummary) -> dict:
    env = dict(summary.environment)
    for key in ("mnn_version", "onnxruntime_version", "python", "platform", "baseline_mnn_version"):
        env.setdefault(key, None)
    return {
        "schema_version": 1,
        "suite": summary.suite,
        "description": summary.description,
        "environment": _jsonable(env),
        "started": summary.started,
        "duration_s": float(summary.duration_s),
        "fail_on": sorted(summary.fail_on),
        "exit_status": exit_status([summary]),
        "counts": _counts(summary),
        "cases": [_case_json(r) for r in summary.results],
        "stale": [{"model": m, "case": c, "backend": b} for m, c, b in summary.stale],
    }


def validate_report(doc: dict) -> None:
    """Raise jsonschema.ValidationError when `doc` does not match schemas/report.schema.json."""
    import jsonschema   # lazily: only writing a report needs it

    jsonschema.Draft202012Validator(schema("report.schema.json")).validate(doc)


def _case_json(r: CaseResult) -> dict:
    drift = None
    if r.drift is not None:
        drift = {
            "drift_class": _value(r.drift.drift_class),
            "golden_verdict": _value(r.drift.golden_verdict),
            "golden_mnn_version": r.drift.golden_mnn_version,
            "latency_ms_golden": {k: _metric(v) for k, v in r.drift.latency_ms_golden.items()},
            "note": r.drift.note,
            "outputs": [_output_json(o) for o in r.drift.outputs],
        }
    ratio = slowdown(r)
    return {
        "model": r.model, "case": r.case, "backend": r.backend,
        "verdict": Verdict(r.verdict).value,
        "failure_class": _value(r.failure_class),
        "reason": r.reason,
        "warnings": list(r.warnings),
        "latency_ms": {k: _metric(v) for k, v in r.latency_ms.items()},
        "slowdown": ratio,
        "drift": drift,
        "outputs": [_output_json(o) for o in r.outputs],
    }


def _output_json(o: OutputComparison) -> dict:
    return {
        "name": o.name,
        "ref_shape": [int(d) for d in o.ref_shape], "mnn_shape": [int(d) for d in o.mnn_shape],
        "ref_dtype": o.ref_dtype, "mnn_dtype": o.mnn_dtype,
        "tolerance": {k: float(v) for k, v in o.tolerance.as_dict().items()},
        "max_abs": _metric(o.max_abs), "max_rel": _metric(o.max_rel), "mean_abs": _metric(o.mean_abs),
        "cosine": _metric(o.cosine), "mismatch_fraction": _metric(o.mismatch_fraction),
        "nan_ref": o.nan_ref, "inf_ref": o.inf_ref, "nan_mnn": o.nan_mnn, "inf_mnn": o.inf_mnn,
        "topk_agreement": _metric(o.topk_agreement), "topk_flips": o.topk_flips, "near_tie_flips": o.near_tie_flips,
        "failure_class": _value(o.failure_class), "reason": o.reason, "passed": o.passed,
    }


def _metric(x) -> object:
    # JSON has no NaN/Infinity; strings keep the information and the document strict.
    if x is None:
        return None
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return _metric(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


# --- Markdown -------------------------------------------------------------------------------------------------------

def render_markdown(summary: RunSummary, limit: int = MARKDOWN_LIMIT) -> str:
    """GitHub-flavoured Markdown, summary first, failures before passes, under `limit` characters.

    Detail is shed in steps until it fits: passes become counts; then per-output details are kept only for as
    many failures as fit (in order); then long reasons are cut and the "what changed" table is capped. Every
    failure keeps its table row until the last resort, which lists as many as fit and says how many more are in
    the JSON report.
    """
    for level in range(4):
        try:
            return _fill_details(summary, _markdown(summary, level, limit), limit)
        except _TooLong:
            pass
    cap = len(_problems(summary))
    while cap > 0:
        cap //= 2
        try:
            return _fill_details(summary, _markdown(summary, 4, limit, failure_cap=cap), limit, cap)
        except _TooLong:
            pass
    # Only reachable with a pathological header (e.g. a giant description).
    return _fill_details(summary, _markdown(summary, 4, None, failure_cap=0), limit, 0)[:limit]


_DETAILS_SLOT = "\x00failure-details\x00"


def _fill_details(s: RunSummary, text: str, limit: int, cap: Optional[int] = None) -> str:
    """Where a shrunk report left out failure details, put back as many as the remaining room allows, in order."""
    if _DETAILS_SLOT not in text:
        return text
    problems = _problems(s)[:cap]
    room = limit - (len(text) - len(_DETAILS_SLOT))

    def note(omitted: int, any_shown: bool) -> str:
        return (f"Per-output metrics of {'the other' if any_shown else 'all'} {omitted} failures omitted to fit "
                f"a comment: full details in `{s.suite}.json`.")

    room -= len(note(len(problems), True)) + 1
    blocks: list[str] = []
    for r in problems:
        block = "\n".join(_case_details_md(r, s))
        if len(block) + 1 > room:
            break
        blocks.append(block)
        room -= len(block) + 1
    if len(blocks) < len(problems):
        blocks.append(note(len(problems) - len(blocks), bool(blocks)))
    return text.replace(_DETAILS_SLOT, "\n".join(blocks))


class _TooLong(Exception):
    pass


class _Lines(list):
    """Lines of a report that give up as soon as they pass the limit: a doomed level is not rendered in full."""

    def __init__(self, limit: Optional[int]):
        super().__init__()
        self.limit, self.size = limit, 0

    def append(self, line: str) -> None:
        super().append(line)
        self.size += len(line) + 1
        if self.limit is not None and self.size > self.limit:
            raise _TooLong

    def __iadd__(self, lines):
        for line in lines:
            self.append(line)
        return self


def _markdown(s: RunSummary, level: int, limit: Optional[int], failure_cap: Optional[int] = None) -> str:
    """level 0: everything; 1: passes as counts; 2: failure details only as many as fit (see _fill_details);
    3: short reasons, capped changes; 4: capped failure rows. Raises _TooLong once the text passes `limit`."""
    json_name = f"{s.suite}.json"
    out = _Lines(limit)
    status = exit_status([s])
    out.append(f"# mnn-parity: {s.suite} {'❌' if status else '✅'}")
    out.append("")
    if s.description:
        out.append(_text(s.description))
        out.append("")
    out += _environment_md(s)
    out += _counts_md(s)
    out += _changes_md(s, level)

    problems = _problems(s)
    if problems:
        shown = problems if failure_cap is None else problems[:failure_cap]
        out.append(f"## Failures ({len(problems)})")
        out.append("")
        out.append(_table(["model", "case", "backend", "verdict", "class", "reason", "MNN ms", "ref ms", "vs golden"],
                          [_case_row(r, s, short=level >= 3) for r in shown]))
        out.append("")
        if len(shown) < len(problems):
            out.append(f"… and {len(problems) - len(shown)} more failures: full details in `{json_name}`.")
            out.append("")
        if level < 2:
            for r in problems:
                out += _case_details_md(r, s)   # raises _TooLong early when the details cannot fit
        else:
            out.append(_DETAILS_SLOT)   # filled by _fill_details with as many as fit
            out.append("")

    out += _warnings_md(s, level)

    for verdict, title in ((Verdict.XFAIL, "Expected failures (XFAIL)"), (Verdict.PASS, "Passes")):
        group = [r for r in _sorted(s.results) if Verdict(r.verdict) is verdict]
        if not group:
            continue
        out.append(f"## {title} ({len(group)})")
        out.append("")
        if level == 0:
            out.append(_table(["model", "case", "backend", "verdict", "drift", "lowest cosine", "max abs",
                               "MNN ms", "ref ms", "vs golden"], [_pass_row(r, s) for r in group]))
            out.append("")
            out += _outputs_block_md(group, f"Per-output metrics for {len(group)} {verdict.value} cases")
        else:
            out.append(_table(["model", "backend", "cases", "lowest cosine", "max abs", "drift"],
                              _group_rows(group)))
            out.append("")
            out.append(f"Individual {verdict.value} cases summarised as counts: full details in `{json_name}`.")
            out.append("")
    out.append(f"<sub>Started {_text(s.started or '?')}, took {s.duration_s:.1f} s. "
               f"Machine-readable report: `{json_name}`.</sub>")
    return "\n".join(out) + "\n"


def _environment_md(s: RunSummary) -> list[str]:
    env = s.environment
    parts = [_version_line(s)]
    if env.get("onnxruntime_version"):
        parts.append(f"ONNX Runtime {env['onnxruntime_version']}")
    if env.get("python"):
        parts.append(f"Python {env['python']}")
    if env.get("platform"):
        parts.append(str(env["platform"]))
    lines = [" · ".join(_text(p) for p in parts), ""]
    extra = {k: v for k, v in env.items()
             if k not in ("mnn_version", "onnxruntime_version", "python", "platform", "baseline_mnn_version")}
    if extra:
        lines.append("<details><summary>Environment</summary>")
        lines.append("")
        lines.append(_table(["key", "value"], [[_cell(k), _cell(json.dumps(_jsonable(v)) if not isinstance(v, str)
                                                                   else v)] for k, v in extra.items()]))
        lines.append("")
        lines.append("</details>")
        lines.append("")
    return lines


def _version_line(s: RunSummary) -> str:
    now = s.environment.get("mnn_version") or "?"
    then = s.environment.get("baseline_mnn_version")
    if then and then != now:
        return f"**MNN {then} → {now}** (goldens blessed with {then})"
    return f"**MNN {now}**"


def _counts_md(s: RunSummary) -> list[str]:
    c = _counts(s)
    lines = ["## Summary", ""]
    verdict_cells = [f"{v}: {n}" for v, n in c["verdict"].items()]
    lines.append(f"**{c['total']} cases** — " + (", ".join(verdict_cells) if verdict_cells else "none ran"))
    lines.append("")
    lines.append(_table([v.value for v in Verdict] + ["total"],
                        [[c["verdict"].get(v.value, 0) for v in Verdict] + [c["total"]]]))
    lines.append("")
    if c["failure_class"]:
        lines.append("Failure classes: " + ", ".join(f"{k} {n}" for k, n in c["failure_class"].items()))
        lines.append("")
    if c["drift"]:
        lines.append("Against the goldens:")
        lines.append("")
        lines.append(_table([d.value for d in DriftClass], [[c["drift"].get(d.value, 0) for d in DriftClass]]))
        lines.append("")
        failing = sorted(k for k in c["drift"] if k in s.fail_on)
        if failing:
            lines.append(f"Drift that fails this run: {', '.join(failing)}.")
            lines.append("")
    if c["slowdowns"]:
        lines.append(f"⚠️ {c['slowdowns']} case(s) ran slower than {s.slowdown_max:g}× their golden MNN latency.")
        lines.append("")
    return lines


def _changes_md(s: RunSummary, level: int) -> list[str]:
    changed = [r for r in _sorted(s.results)
               if r.drift is not None and DriftClass(r.drift.drift_class) in _CHANGE_CLASSES]
    changed.sort(key=lambda r: _CHANGE_CLASSES.index(DriftClass(r.drift.drift_class)))
    has_goldens = any(r.drift is not None for r in s.results) or s.stale
    if not has_goldens:
        return []
    lines = ["## What changed since the goldens", ""]
    if changed:
        rows = []
        cap = len(changed) if level < 3 else _CHANGES_CAP
        for r in changed[:cap]:
            d = r.drift
            rows.append([_cell(r.model), _cell(r.case), _cell(r.backend), f"**{_value(d.drift_class)}**",
                         f"{_cell(_value(d.golden_verdict) or '?')} → {Verdict(r.verdict).value}",
                         _worst(d.outputs), _worst(r.outputs), _cell(_short(d.note, 120 if level >= 3 else 400))])
        lines.append(_table(["model", "case", "backend", "drift", "verdict (golden → now)", "vs golden",
                             "vs reference", "note"], rows))
        if cap < len(changed):
            lines.append("")
            lines.append(f"… and {len(changed) - cap} more changed cases: full details in `{s.suite}.json`.")
    else:
        lines.append("No case changed beyond tolerance, regressed or got fixed.")
    lines.append("")
    counts = Counter(_value(r.drift.drift_class) for r in s.results if r.drift is not None)
    quiet = [f"{counts[d.value]} {d.value}" for d in (DriftClass.IDENTICAL, DriftClass.DRIFTED, DriftClass.NEW)
             if counts[d.value]]
    if quiet:
        lines.append("Also: " + ", ".join(quiet) + " (drifted = changed within tolerance; new = no golden yet).")
        lines.append("")
    drifted = [r for r in _sorted(s.results)
               if r.drift is not None and DriftClass(r.drift.drift_class) is DriftClass.DRIFTED]
    if drifted and level < 2:
        # within tolerance, but "by how much" is what an upgrade review asks: folded, so it costs no attention
        rows = [[_cell(r.model), _cell(r.case), _cell(r.backend), _worst(r.drift.outputs), _worst(r.outputs)]
                for r in drifted]
        lines += [f"<details><summary>{len(drifted)} drifted within tolerance: how far</summary>", "",
                  _table(["model", "case", "backend", "vs golden", "vs reference"], rows), "", "</details>", ""]
    if s.stale:
        names = [f"{m}/{c} [{b}]" for m, c, b in s.stale]
        shown = names if level < 1 or len(names) <= 20 else names[:20]
        lines.append(f"Stale goldens (no case left): {len(names)} — " + ", ".join(_text(n) for n in shown)
                     + (" …" if len(shown) < len(names) else ""))
        lines.append("")
    return lines


def _warnings_md(s: RunSummary, level: int) -> list[str]:
    warned = [(r, w) for r in _sorted(s.results) for w in r.warnings]
    if not warned:
        return []
    lines = [f"## Warnings ({len(warned)})", ""]
    if level == 0 or len(warned) <= 20:
        lines += [f"- {_text(_ident(r))}: {_text(w)}" for r, w in warned]
    else:
        by_text: dict[str, list[CaseResult]] = defaultdict(list)
        for r, w in warned:
            by_text[w].append(r)
        for w, rs in sorted(by_text.items(), key=lambda kv: -len(kv[1])):
            example = ", ".join(_ident(r) for r in rs[:3]) + (" …" if len(rs) > 3 else "")
            lines.append(f"- {len(rs)}× {_text(_short(w, 200))} (e.g. {_text(example)})")
    lines.append("")
    return lines


def _case_row(r: CaseResult, s: RunSummary, short: bool) -> list[str]:
    reason = r.reason.strip().splitlines()[0] if r.reason.strip() else ""
    return [_cell(r.model), _cell(r.case), _cell(r.backend), f"**{Verdict(r.verdict).value}**",
            _cell(_value(r.failure_class) or ""), _cell(_short(reason, 100 if short else _REASON_CELL_MAX)),
            *_latency_cells(r, s)]


def _pass_row(r: CaseResult, s: RunSummary) -> list[str]:
    cos = [o.cosine for o in r.outputs if o.cosine is not None]
    mx = [o.max_abs for o in r.outputs if o.max_abs is not None]
    return [_cell(r.model), _cell(r.case), _cell(r.backend), Verdict(r.verdict).value,
            _value(r.drift.drift_class) if r.drift is not None else "–",
            _fmt_cos(min(cos)) if cos else "–", _fmt_e(max(mx)) if mx else "–", *_latency_cells(r, s)]


def _group_rows(group: list[CaseResult]) -> list[list[str]]:
    groups: dict[tuple[str, str], list[CaseResult]] = defaultdict(list)
    for r in group:
        groups[(r.model, r.backend)].append(r)
    rows = []
    for (model, backend), rs in groups.items():
        cos = [o.cosine for r in rs for o in r.outputs if o.cosine is not None]
        mx = [o.max_abs for r in rs for o in r.outputs if o.max_abs is not None]
        drift = Counter(_value(r.drift.drift_class) for r in rs if r.drift is not None)
        rows.append([_cell(model), _cell(backend), str(len(rs)), _fmt_cos(min(cos)) if cos else "–",
                     _fmt_e(max(mx)) if mx else "–", ", ".join(f"{k} {n}" for k, n in drift.items()) or "–"])
    return rows


def _latency_cells(r: CaseResult, s: RunSummary) -> list[str]:
    mnn = r.latency_ms.get("mnn")
    ref = r.latency_ms.get("reference")
    ratio = slowdown(r)
    change = "–"
    if ratio is not None:
        change = f"{(ratio - 1) * 100:+.0f}%"
        if _is_slow(r, s):
            change += " ⚠️ slower"
    return [_fmt_ms(mnn), _fmt_ms(ref), change]


def _case_details_md(r: CaseResult, s: RunSummary) -> list[str]:
    head = f"{_ident(r)} — {Verdict(r.verdict).value}"
    if r.failure_class is not None:
        head += f" · {_value(r.failure_class)}"
    lines = [f"<details><summary>{html.escape(head)}</summary>", ""]
    reason = r.reason.strip()
    if "\n" in reason:
        lines += ["```text", _short(reason, _LOG_MAX).replace("```", "'''"), "```", ""]
    elif reason:
        lines += [f"**Reason:** {_text(reason)}", ""]
    for w in r.warnings:
        lines += [f"⚠️ {_text(w)}", ""]
    if r.outputs:
        lines += [_outputs_table(r.outputs), ""]
    if r.drift is not None:
        d = r.drift
        lines.append(f"Against the golden (MNN {_text(d.golden_mnn_version or '?')}, verdict "
                     f"{_text(_value(d.golden_verdict) or '?')}): **{_value(d.drift_class)}**"
                     + (f" — {_text(d.note)}" if d.note else ""))
        lines.append("")
        if d.outputs:
            lines += [_outputs_table(d.outputs), ""]
    lines += ["</details>", ""]
    return lines


def _outputs_block_md(group: list[CaseResult], title: str) -> list[str]:
    rows = []
    for r in group:
        for o in r.outputs:
            rows.append([_cell(r.model), _cell(r.case), _cell(r.backend), *_output_cells(o)])
    if not rows:
        return []
    return [f"<details><summary>{html.escape(title)}</summary>", "",
            _table(["model", "case", "backend", *_OUTPUT_HEADERS], rows), "", "</details>", ""]


_OUTPUT_HEADERS = ["output", "shape", "dtype", "max abs", "max rel", "mean abs", "cosine", "mismatch",
                   "NaN/Inf ref·mnn", "top-k", "result"]


def _outputs_table(outputs: Sequence[OutputComparison]) -> str:
    return _table(_OUTPUT_HEADERS, [_output_cells(o) for o in outputs])


def _output_cells(o: OutputComparison) -> list[str]:
    if o.missing:
        shape = f"{_shape(o.ref_shape)} → missing"
    elif o.ref_shape == o.mnn_shape:
        shape = _shape(o.ref_shape)
    else:
        shape = f"{_shape(o.ref_shape)} → {_shape(o.mnn_shape)}"
    dtype = o.ref_dtype if o.ref_dtype == o.mnn_dtype else f"{o.ref_dtype} → {o.mnn_dtype}"
    topk = "–"
    if o.topk_agreement is not None:
        topk = f"{o.topk_agreement * 100:.4g}% agree"
        if o.topk_flips:
            topk += f", {o.topk_flips} flips"
        if o.near_tie_flips:
            topk += f", {o.near_tie_flips} near ties"
    result = "ok" if o.passed else f"**{_value(o.failure_class)}**"
    return [_cell(o.name), shape, dtype, _fmt_e(o.max_abs), _fmt_e(o.max_rel), _fmt_e(o.mean_abs),
            _fmt_cos(o.cosine), _fmt_pct(o.mismatch_fraction),
            f"{o.nan_ref + o.inf_ref}·{o.nan_mnn + o.inf_mnn}", topk, result]


def _worst(outputs: Sequence[OutputComparison]) -> str:
    cos = [o.cosine for o in outputs if o.cosine is not None]
    mx = [o.max_abs for o in outputs if o.max_abs is not None]
    if not cos and not mx:
        return "–"
    return f"max abs {_fmt_e(max(mx)) if mx else '–'}, cos {_fmt_cos(min(cos)) if cos else '–'}"


# --- JUnit ----------------------------------------------------------------------------------------------------------

def render_junit(summaries: Sequence[RunSummary]) -> str:
    """FAIL → <failure>, ERROR/CRASH → <error>, XFAIL → <skipped>; a failing drift on a passing case → <failure>."""
    root = ET.Element("testsuites", name="mnn-parity")
    totals = Counter()
    for s in summaries:
        suite = ET.SubElement(root, "testsuite", name=s.suite, timestamp=s.started or "",
                              time=f"{float(s.duration_s):.3f}")
        props = ET.SubElement(suite, "properties")
        for key, value in s.environment.items():
            if value is not None:
                ET.SubElement(props, "property", name=str(key), value=str(value))
        counts = Counter()
        for r in _sorted(s.results):
            counts["tests"] += 1
            case = ET.SubElement(suite, "testcase", classname=f"{s.suite}.{r.model}",
                                 name=f"{r.case}[{r.backend}]")
            verdict = Verdict(r.verdict)
            body = _junit_body(r)
            if verdict is Verdict.FAIL:
                counts["failures"] += 1
                el = ET.SubElement(case, "failure", message=_short(_first_line(r.reason), 500),
                                   type=_value(r.failure_class) or "FAIL")
                el.text = body
            elif verdict in (Verdict.ERROR, Verdict.CRASH):
                counts["errors"] += 1
                el = ET.SubElement(case, "error", message=_short(_first_line(r.reason), 500), type=verdict.value)
                el.text = body
            elif drift_fails(r, s.fail_on):
                counts["failures"] += 1
                el = ET.SubElement(case, "failure", type=f"drift:{_value(r.drift.drift_class)}",
                                   message=_short(f"{_value(r.drift.drift_class)} since the golden: {r.drift.note}"
                                                  .rstrip(": "), 500))
                el.text = body
            elif verdict is Verdict.XFAIL:
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=_short(f"expected failure: {_first_line(r.reason)}", 500))
            elif verdict is Verdict.XPASS:
                ET.SubElement(case, "system-out").text = "XPASS: expected to fail, but passed\n" + body
            if r.warnings:
                ET.SubElement(case, "system-err").text = "\n".join(r.warnings)
        if s.stale and DriftClass.STALE.value in s.fail_on:
            for m, c, b in s.stale:
                counts["tests"] += 1
                counts["failures"] += 1
                case = ET.SubElement(suite, "testcase", classname=f"{s.suite}.{m}", name=f"{c}[{b}]")
                ET.SubElement(case, "failure", type="drift:stale", message="stale golden: no case left")
        for key in ("tests", "failures", "errors", "skipped"):
            suite.set(key, str(counts[key]))
        totals.update(counts)
    for key in ("tests", "failures", "errors", "skipped"):
        root.set(key, str(totals[key]))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _junit_body(r: CaseResult) -> str:
    lines = [r.reason] if r.reason else []
    for o in r.outputs:
        lines.append(f"{o.name}: max_abs={_fmt_e(o.max_abs)} cosine={_fmt_cos(o.cosine)} "
                     f"mismatch={_fmt_pct(o.mismatch_fraction)}" + (f" [{_value(o.failure_class)}]" if not o.passed
                                                                     else ""))
    return "\n".join(lines)


# --- terminal ----------------------------------------------------------------------------------------------------------

def terminal_summary(summary: RunSummary, paths: Sequence[Path | str] = (), max_listed: int = 5) -> str:
    c = _counts(summary)
    verdicts = ", ".join(f"{n} {v}" for v, n in c["verdict"].items()) or "nothing ran"
    mark = "FAILED" if exit_status([summary]) else "ok"
    lines = [f"{summary.suite}: {c['total']} cases — {verdicts} ({summary.duration_s:.1f} s) [{mark}]"]
    problems = _problems(summary)
    for r in problems[:max_listed]:
        cls = f" {_value(r.failure_class)}" if r.failure_class is not None else ""
        lines.append(f"  {Verdict(r.verdict).value}{cls} {_ident(r)}: {_short(_first_line(r.reason), 120)}")
    if len(problems) > max_listed:
        lines.append(f"  … and {len(problems) - max_listed} more")
    if c["drift"]:
        lines.append("  goldens: " + ", ".join(f"{n} {d}" for d, n in c["drift"].items()))
    then, now = summary.environment.get("baseline_mnn_version"), summary.environment.get("mnn_version")
    if then and then != now:
        lines.append(f"  MNN {then} → {now}")
    if c["slowdowns"]:
        lines.append(f"  {c['slowdowns']} slower than {summary.slowdown_max:g}x golden latency")
    if paths:
        lines.append("  reports: " + ", ".join(str(p) for p in paths))
    return "\n".join(lines)


# --- writing -------------------------------------------------------------------------------------------------------

def write_reports(summary: RunSummary, report_dir: Path, junit: Optional[Path] = None) -> list[Path]:
    """Write <suite>.md, <suite>.json (schema-checked) and optionally JUnit XML; returns the paths written."""
    if not summary.suite or "/" in summary.suite or "\\" in summary.suite or summary.suite.startswith("."):
        raise ValueError(f"suite name {summary.suite!r} cannot name a report file")
    report_dir = Path(report_dir)
    # Render everything first: an exception here leaves every existing report untouched.
    markdown = render_markdown(summary)
    doc = render_json(summary)
    validate_report(doc)
    planned = [(report_dir / f"{summary.suite}.md", markdown),
               (report_dir / f"{summary.suite}.json", json.dumps(doc, indent=2, allow_nan=False) + "\n")]
    if junit is not None:
        planned.append((Path(junit), render_junit([summary])))
    for path, text in planned:
        atomic_write_text(path, text)
    return [path for path, _ in planned]


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same directory and os.replace: readers see the old file or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# --- small helpers -------------------------------------------------------------------------------------------------

def _problems(s: RunSummary) -> list[CaseResult]:
    problems = [r for r in s.results if Verdict(r.verdict) in _PROBLEM_ORDER]
    return sorted(problems, key=lambda r: (_PROBLEM_ORDER.index(Verdict(r.verdict)), r.model, r.backend, r.case))


def _sorted(results: Iterable[CaseResult]) -> list[CaseResult]:
    return sorted(results, key=lambda r: (r.model, r.backend, r.case))


def _ident(r: CaseResult) -> str:
    return f"{r.model}/{r.case} [{r.backend}]"


def _value(x) -> Optional[str]:
    return None if x is None else getattr(x, "value", x)


def _finite(x) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _table(headers: list[str], rows: list[list]) -> str:
    # disable_numparse: cells are pre-formatted text; tabulate must not reformat "1e-04" or "007".
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _text(s: str) -> str:
    """Plain text safe in Markdown prose: no raw HTML tags from case names or reasons ('>' stays readable)."""
    return str(s).replace("&", "&amp;").replace("<", "&lt;")


def _cell(s) -> str:
    return _text(str(s)).replace("\r", " ").replace("\n", " ").replace("|", "\\|")


def _short(s: str, n: int) -> str:
    s = str(s)
    return s if len(s) <= n else s[: n - 1] + "…"


def _first_line(s: str) -> str:
    s = (s or "").strip()
    return s.splitlines()[0] if s else ""


def _shape(shape) -> str:
    return "×".join(str(int(d)) for d in shape) if shape else "scalar"


def _fmt_e(x) -> str:
    if x is None:
        return "–"
    return f"{float(x):.2e}" if _finite(x) else str(float(x))


def _fmt_cos(x) -> str:
    if x is None:
        return "–"
    return f"{float(x):.6f}" if _finite(x) else str(float(x))


def _fmt_pct(x) -> str:
    if x is None:
        return "–"
    return f"{100 * float(x):.3g}%"


def _fmt_ms(x) -> str:
    if x is None or not _finite(x):
        return "–"
    return f"{float(x):.1f}" if float(x) >= 1 else f"{float(x):.3f}"
