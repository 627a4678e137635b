"""The top of the Markdown report, what a reviewer reads first: environment, counts, the model × backend roll-up,
what changed since the goldens, latency, warnings. `level` is how far the report has had to shrink (see
markdown.render_markdown)."""
from __future__ import annotations

from collections import defaultdict

from mnn_parity.records import CaseResult
from mnn_parity.reports.formatting import ident, md_table, short, text
from mnn_parity.reports.markdown_cases import folded
from mnn_parity.reports.policy import RunSummary, by_place, counts, slow_cases
from mnn_parity.reports.tables import (CHANGE_HEADERS, DRIFTED_HEADERS, LATENCY_HEADERS, change_row, changed_cases,
                                       drift_counts, drifted_cases, drifted_row, environment_parts,
                                       extra_environment_rows, failure_classes_line, latency_rows, latency_rule,
                                       quiet_drift, rollup_rows, verdict_counts, version_line)

CHANGES_CAP = 50   # rows of "what changed" or "latency" once a report must shrink
LISTED_MAX = 20    # stale goldens named, or warnings listed one by one, once a report must shrink


def environment_md(s: RunSummary) -> list[str]:
    version, note = version_line(s)
    head = f"**{text(version)}**" + (f" {text(note)}" if note else "")
    lines = [" · ".join([head, *(text(p) for p in environment_parts(s))]), ""]
    extra = extra_environment_rows(s)
    if extra:
        lines += folded("Environment", md_table(["key", "value"], extra))
    return lines


def counts_md(s: RunSummary) -> list[str]:
    c = counts(s)
    verdict_cells = [f"{v}: {n}" for v, n in c["verdict"].items()]
    lines = ["## Summary", "",
             f"**{c['total']} cases** — " + (", ".join(verdict_cells) if verdict_cells else "none ran"), "",
             md_table(*verdict_counts(c)), ""]
    classes = failure_classes_line(c)
    if classes:
        lines += [classes, ""]
    if s.results:
        lines += ["Worst verdict per model and backend:", "", md_table(*rollup_rows(s)), ""]
    if c["drift"]:
        lines += ["Against the goldens:", "", md_table(*drift_counts(c)), ""]
        failing = sorted(k for k in c["drift"] if k in s.fail_on)
        if failing:
            lines += [f"Drift that fails this run: {', '.join(failing)}.", ""]
    if c["slowdowns"]:
        lines += [f"{c['slowdowns']} case(s) ran slower than {s.slowdown_max:g}× their golden MNN latency: "
                  "see [Latency](#latency).", ""]
    return lines


def changes_md(s: RunSummary, level: int) -> list[str]:
    if not s.stale and all(r.drift is None for r in s.results):
        return []
    lines = ["## What changed since the goldens", ""]
    lines += _changed_table(s, level)
    quiet = quiet_drift(s)
    if quiet:
        lines += [quiet, ""]
    if level < 2:
        lines += _drifted_details(s)
    lines += _stale_line(s, level)
    return lines


def _changed_table(s: RunSummary, level: int) -> list[str]:
    changed = changed_cases(s)
    if not changed:
        return ["No case changed beyond tolerance, regressed or got fixed.", ""]
    cap = len(changed) if level < 3 else CHANGES_CAP
    note_max = 120 if level >= 3 else 400
    lines = [md_table(CHANGE_HEADERS, [change_row(r, note_max) for r in changed[:cap]])]
    if cap < len(changed):
        lines += ["", f"… and {len(changed) - cap} more changed cases: full details in `{s.suite}.json`."]
    return lines + [""]


def _drifted_details(s: RunSummary) -> list[str]:
    # Within tolerance, but "by how much" is what an upgrade review asks: folded, so it costs no attention.
    drifted = drifted_cases(s)
    if not drifted:
        return []
    return folded(f"{len(drifted)} drifted within tolerance: how far",
                  md_table(DRIFTED_HEADERS, [drifted_row(r) for r in drifted]))


def _stale_line(s: RunSummary, level: int) -> list[str]:
    if not s.stale:
        return []
    names = [f"{m}/{c} [{b}]" for m, c, b in s.stale]
    shown = names if level < 1 or len(names) <= LISTED_MAX else names[:LISTED_MAX]
    return [f"Stale goldens (no case left): {len(names)} — " + ", ".join(text(n) for n in shown)
            + (" …" if len(shown) < len(names) else ""), ""]


def latency_md(s: RunSummary, level: int) -> list[str]:
    """Every slowdown in one place, with the rule that flags one."""
    slow = slow_cases(s)
    if not slow:
        return []
    cap = len(slow) if level < 3 else CHANGES_CAP
    lines = ["## Latency", "", f"{len(slow)} case(s) slower than their golden. {latency_rule(s)}", "",
             md_table(LATENCY_HEADERS, latency_rows(slow[:cap])), ""]
    if cap < len(slow):
        lines += [f"… and {len(slow) - cap} more slower cases: `slowdown` in `{s.suite}.json`.", ""]
    return lines


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
