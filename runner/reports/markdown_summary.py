"""The top of the Markdown report, what a reviewer reads first: environment, counts, what changed since the
goldens, warnings. `level` is how far the report has had to shrink (see markdown.render_markdown)."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Sequence

from mnn_parity.records import CaseResult, DriftClass, Verdict
from mnn_parity.reports.formatting import cell, enum_value, ident, short, table, text
from mnn_parity.reports.json_report import ENVIRONMENT_KEYS, jsonable
from mnn_parity.reports.markdown_cases import folded, worst
from mnn_parity.reports.policy import RunSummary, by_place, counts

# Regressions first: they are what a version bump must not bring.
CHANGE_CLASSES = (DriftClass.REGRESSED, DriftClass.CHANGED, DriftClass.FIXED)
CHANGES_CAP = 50   # rows of "what changed" once a report must shrink
LISTED_MAX = 20    # stale goldens named, or warnings listed one by one, once a report must shrink


def environment_md(s: RunSummary) -> list[str]:
    env = s.environment
    parts = [_version_line(s)]
    if env.get("onnxruntime_version"):
        parts.append(f"ONNX Runtime {env['onnxruntime_version']}")
    if env.get("python"):
        parts.append(f"Python {env['python']}")
    if env.get("platform"):
        parts.append(str(env["platform"]))
    lines = [" · ".join(text(p) for p in parts), ""]
    extra = {k: v for k, v in env.items() if k not in ENVIRONMENT_KEYS}
    if extra:
        rows = [[cell(k), cell(v if isinstance(v, str) else json.dumps(jsonable(v)))] for k, v in extra.items()]
        lines += folded("Environment", table(["key", "value"], rows))
    return lines


def _version_line(s: RunSummary) -> str:
    now = s.environment.get("mnn_version") or "?"
    then = s.environment.get("baseline_mnn_version")
    if then and then != now:
        return f"**MNN {then} → {now}** (goldens blessed with {then})"
    return f"**MNN {now}**"


def counts_md(s: RunSummary) -> list[str]:
    c = counts(s)
    verdict_cells = [f"{v}: {n}" for v, n in c["verdict"].items()]
    lines = ["## Summary", "",
             f"**{c['total']} cases** — " + (", ".join(verdict_cells) if verdict_cells else "none ran"), "",
             table([v.value for v in Verdict] + ["total"],
                   [[c["verdict"].get(v.value, 0) for v in Verdict] + [c["total"]]]), ""]
    if c["failure_class"]:
        lines += ["Failure classes: " + ", ".join(f"{k} {n}" for k, n in c["failure_class"].items()), ""]
    if c["drift"]:
        lines += ["Against the goldens:", "",
                  table([d.value for d in DriftClass], [[c["drift"].get(d.value, 0) for d in DriftClass]]), ""]
        failing = sorted(k for k in c["drift"] if k in s.fail_on)
        if failing:
            lines += [f"Drift that fails this run: {', '.join(failing)}.", ""]
    if c["slowdowns"]:
        lines += [f"⚠️ {c['slowdowns']} case(s) ran slower than {s.slowdown_max:g}× their golden MNN latency.", ""]
    return lines


def changes_md(s: RunSummary, level: int) -> list[str]:
    if not s.stale and all(r.drift is None for r in s.results):
        return []
    lines = ["## What changed since the goldens", ""]
    lines += _changed_table(s, level)
    lines += _quiet_drift(s)
    if level < 2:
        lines += _drifted_details(s)
    lines += _stale_line(s, level)
    return lines


def _drifting(s: RunSummary, classes: Sequence[DriftClass]) -> list[CaseResult]:
    return [r for r in by_place(s.results) if r.drift is not None and r.drift.drift_class in classes]


def _changed_table(s: RunSummary, level: int) -> list[str]:
    changed = sorted(_drifting(s, CHANGE_CLASSES), key=lambda r: CHANGE_CLASSES.index(r.drift.drift_class))
    if not changed:
        return ["No case changed beyond tolerance, regressed or got fixed.", ""]
    cap = len(changed) if level < 3 else CHANGES_CAP
    note_max = 120 if level >= 3 else 400
    rows = [[cell(r.model), cell(r.case), cell(r.backend), f"**{r.drift.drift_class.value}**",
             f"{cell(enum_value(r.drift.golden_verdict) or '?')} → {r.verdict.value}",
             worst(r.drift.outputs), worst(r.outputs), cell(short(r.drift.note, note_max))]
            for r in changed[:cap]]
    lines = [table(["model", "case", "backend", "drift", "verdict (golden → now)", "vs golden", "vs reference",
                    "note"], rows)]
    if cap < len(changed):
        lines += ["", f"… and {len(changed) - cap} more changed cases: full details in `{s.suite}.json`."]
    return lines + [""]


def _quiet_drift(s: RunSummary) -> list[str]:
    found = Counter(r.drift.drift_class for r in s.results if r.drift is not None)
    quiet = [f"{found[d]} {d.value}" for d in (DriftClass.IDENTICAL, DriftClass.DRIFTED, DriftClass.NEW) if found[d]]
    if not quiet:
        return []
    return ["Also: " + ", ".join(quiet) + " (drifted = changed within tolerance; new = no golden yet).", ""]


def _drifted_details(s: RunSummary) -> list[str]:
    # Within tolerance, but "by how much" is what an upgrade review asks: folded, so it costs no attention.
    drifted = _drifting(s, (DriftClass.DRIFTED,))
    if not drifted:
        return []
    rows = [[cell(r.model), cell(r.case), cell(r.backend), worst(r.drift.outputs), worst(r.outputs)]
            for r in drifted]
    return folded(f"{len(drifted)} drifted within tolerance: how far",
                  table(["model", "case", "backend", "vs golden", "vs reference"], rows))


def _stale_line(s: RunSummary, level: int) -> list[str]:
    if not s.stale:
        return []
    names = [f"{m}/{c} [{b}]" for m, c, b in s.stale]
    shown = names if level < 1 or len(names) <= LISTED_MAX else names[:LISTED_MAX]
    return [f"Stale goldens (no case left): {len(names)} — " + ", ".join(text(n) for n in shown)
            + (" …" if len(shown) < len(names) else ""), ""]


def warnings_md(s: RunSummary, level: int) -> list[str]:
    warned = [(r, w) for r in by_place(s.results) for w in r.warnings]
    if not warned:
        return []
    lines = [f"## Warnings ({len(warned)})", ""]
    if level == 0 or len(warned) <= LISTED_MAX:
        lines += [f"- {text(ident(r))}: {text(w)}" for r, w in warned]
    else:
        # Shrunk: the same warning on many cases is one line with a count and a few examples.
        by_text: dict[str, list[CaseResult]] = defaultdict(list)
        for r, w in warned:
            by_text[w].append(r)
        for w, rs in sorted(by_text.items(), key=lambda kv: -len(kv[1])):
            example = ", ".join(ident(r) for r in rs[:3]) + (" …" if len(rs) > 3 else "")
            lines.append(f"- {len(rs)}× {text(short(w, 200))} (e.g. {text(example)})")
    return lines + [""]
