"""The HTML report: one self-contained file with the Markdown report's tables in full (no size limit to fit) and
plots, for a reader who wants to see the whole run rather than a pull-request comment.

Self-contained means it opens from an artifact, an e-mail or a file share as it is: CSS inline, plots as inline
base64 PNG, no script, no font, nothing fetched.
"""
from __future__ import annotations

import base64
import importlib
import re
from html import escape
from typing import Iterable, Mapping, Optional, Sequence

from mnn_parity.records import CaseResult, Verdict
from mnn_parity.reports.formatting import ONE_MINUS_COS, Strong, fmt_e, ident
from mnn_parity.reports.policy import RunSummary, by_place, counts, exit_status, problems, slow_cases
from mnn_parity.reports.tables import (CASE_HEADERS, CHANGE_HEADERS, DRIFTED_HEADERS, LATENCY_HEADERS,
                                       OUTPUT_HEADERS, PASS_HEADERS, XFAIL_HEADERS, case_row, change_row,
                                       changed_cases, drift_counts, drift_sentence, drifted_cases, drifted_row,
                                       environment_parts, extra_environment_rows, failure_classes_line, latency_rows,
                                       latency_rule, output_cells, outputs_rows, pass_row, quiet_drift, rollup_rows,
                                       verdict_counts, version_line, xfail_row)
from mnn_parity.reports.html_style import STYLE

VERDICTS = frozenset(v.value for v in Verdict)
UNFOLDED_FAILURES = 10   # the first failures' details are open: they are what a reader came for
WRAP_AT = 40   # characters: a longer cell (a reason, a note) wraps instead of pushing the table off the page
SECTIONS = re.compile(r'<section id="([^"]+)">\n<h2>([^<]*)</h2>')


def render_html(s: RunSummary) -> str:
    sections = "\n".join([*_summary(s), *_errors(s), *_changes(s), *_failures(s), *_latency(s), *_warnings(s),
                          *_expected(s), *layer_profiles(s)])
    # Links only to the sections this run has: a link to a missing section does nothing when clicked.
    nav = " · ".join(f'<a href="#{anchor}">{title}</a>' for anchor, title in SECTIONS.findall(sections))
    body = [*_head(s), f"<nav>{nav}</nav>", sections,
            f"<footer>Started {escape(s.started or '?')}, took {s.duration_s:.1f} s. Machine-readable report: "
            f"<code>{escape(s.suite)}.json</code>; for a pull request: <code>{escape(s.suite)}.md</code>.</footer>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>mnn-parity: {escape(s.suite)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(body) + "\n</main>\n</body>\n</html>\n")


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_td(c) for c in row) + "</tr>\n" for row in rows)
    return f"<div class=\"scroll\"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody></table></div>"


def _td(value: str) -> str:
    if isinstance(value, Strong):
        tone = f" class=\"{escape(value.tone)}\"" if value.tone else ""
        return f"<td{tone}><strong>{escape(value)}</strong></td>"
    if value in VERDICTS:
        return f"<td class=\"{value.lower()}\">{escape(value)}</td>"
    if len(value) > WRAP_AT:
        return f"<td class=\"text\">{escape(value)}</td>"
    return f"<td>{escape(value)}</td>"


def _section(anchor: str, title: str, *parts: str) -> list[str]:
    return [f"<section id=\"{anchor}\">", f"<h2>{escape(title)}</h2>", *parts, "</section>"]


def _folded(summary: str, body: str, unfolded: bool = False) -> str:
    return f"<details{' open' if unfolded else ''}><summary>{escape(summary)}</summary>\n{body}\n</details>"


def _p(text: str) -> str:
    return f"<p>{escape(text)}</p>"


def _head(s: RunSummary) -> list[str]:
    failed = exit_status([s])
    version, note = version_line(s)
    env = " · ".join([f"<strong>{escape(version)}</strong>" + (f" {escape(note)}" if note else ""),
                      *(escape(p) for p in environment_parts(s))])
    lines = [f"<h1>mnn-parity: {escape(s.suite)} <span class=\"badge {'fail' if failed else 'pass'}\">"
             f"{'FAILED' if failed else 'OK'}</span></h1>"]
    if s.description:
        lines.append(f"<p class=\"description\">{escape(s.description)}</p>")
    lines.append(f"<p class=\"env\">{env}</p>")
    extra = extra_environment_rows(s)
    if extra:
        lines.append(_folded("Environment", _table(["key", "value"], extra)))
    return lines


def _summary(s: RunSummary) -> list[str]:
    c = counts(s)
    parts = [_table(*verdict_counts(c))]
    classes = failure_classes_line(c)
    if classes:
        parts.append(_p(classes))
    if s.results:
        parts += ["<h3>Worst verdict per model and backend</h3>", _table(*rollup_rows(s))]
    if c["drift"]:
        parts += ["<h3>Against the goldens</h3>", _table(*drift_counts(c))]
        failing = sorted(k for k in c["drift"] if k in s.fail_on)
        if failing:
            parts.append(_p(f"Drift that fails this run: {', '.join(failing)}."))
    return _section("summary", f"Summary: {c['total']} cases", *parts)


def _plotted(kind: str, *args: object) -> tuple[object, str]:
    """What `plots.<kind>(*args)` draws, or None and a note saying why nothing could be drawn.

    The report files are written together or not at all: a plot that fails must cost its picture, not the
    Markdown and JSON reports of the whole run."""
    try:
        plots = importlib.import_module("mnn_parity.reports.plots")   # lazily: matplotlib takes a second to load
        return getattr(plots, kind)(*args), ""
    except ImportError as error:
        return None, f"Plots need matplotlib ({error})."
    except Exception as error:   # noqa: BLE001 (see above); the note names the error for a bug report
        return None, f"Plots could not be drawn: {type(error).__name__}: {error}"


def _errors(s: RunSummary) -> list[str]:
    made, note = _plotted("error_plots", s)
    if note:
        return _section("errors", "Error distribution", _p(note))
    plots, left_out = made
    parts = [_p(f"How far MNN is from the reference, per output: max abs and {ONE_MINUS_COS} of each case on "
                "each backend, on log scales.")]
    parts += [_figure(p) for p in plots]
    if left_out:
        parts.append(_p(f"{left_out} more outputs not plotted: see the tables below."))
    if not plots:
        parts.append(_p("No outputs were compared (every case errored or crashed)."))
    return _section("errors", "Error distribution", *parts)


def _figure(plot) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    return (f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{escape(plot.title)}\">"
            f"<figcaption>{escape(plot.caption)}</figcaption></figure>")


def _changes(s: RunSummary) -> list[str]:
    if not s.stale and all(r.drift is None for r in s.results):
        return []
    changed = changed_cases(s)
    parts = [_table(CHANGE_HEADERS, [change_row(r, 400) for r in changed]) if changed
             else _p("No case changed beyond tolerance, regressed or got fixed.")]
    quiet = quiet_drift(s)
    if quiet:
        parts.append(_p(quiet))
    drifted = drifted_cases(s)
    if drifted:
        parts.append(_folded(f"{len(drifted)} drifted within tolerance: how far",
                             _table(DRIFTED_HEADERS, [drifted_row(r) for r in drifted])))
    if s.stale:
        parts.append(_p(f"Stale goldens (no case left): {len(s.stale)} — "
                        + ", ".join(f"{m}/{c} [{b}]" for m, c, b in s.stale)))
    return _section("changes", "What changed since the goldens", *parts)


def _failures(s: RunSummary) -> list[str]:
    found = problems(s)
    if not found:
        return []
    return _section("failures", f"Failures ({len(found)})", _table(CASE_HEADERS, [case_row(r) for r in found]),
                    *(_case_details(r, unfolded=i < UNFOLDED_FAILURES) for i, r in enumerate(found)))


def _case_details(r: CaseResult, unfolded: bool) -> str:
    head = f"{ident(r)} — {r.verdict.value}" + (f" · {r.failure_class.value}" if r.failure_class else "")
    parts = []
    reason = r.reason.strip()
    if "\n" in reason:
        parts.append(f"<pre>{escape(reason)}</pre>")
    elif reason:
        parts.append(f"<p><strong>Reason:</strong> {escape(reason)}</p>")
    parts += [f"<p class=\"warning\">{escape(w)}</p>" for w in r.warnings]
    if r.outputs:
        parts.append(_table(OUTPUT_HEADERS, [output_cells(o) for o in r.outputs]))
    if r.drift is not None:
        parts.append(_p(drift_sentence(r.drift)))
        if r.drift.outputs:
            parts.append(_table(OUTPUT_HEADERS, [output_cells(o) for o in r.drift.outputs]))
    return _folded(head, "\n".join(parts), unfolded)


def _latency(s: RunSummary) -> list[str]:
    slow = slow_cases(s)
    parts = [_p(f"{len(slow)} case(s) slower than their golden. {latency_rule(s)}" if slow
                else f"No case is slower than its golden. {latency_rule(s)}")]
    if slow:
        parts.append(_table(LATENCY_HEADERS, latency_rows(slow)))
    plots, note = _plotted("latency_plots", s)
    if note and not note.startswith("Plots need"):   # a missing matplotlib is said once, with the error plots
        parts.append(_p(note))
    if not any(r.drift is not None and r.drift.latency_ms_golden for r in s.results):
        parts.append("<p>No golden latencies to compare with yet: <code>mnn-parity bless</code> records them.</p>")
    parts += [_figure(p) for p in plots or ()]
    return _section("latency", "Latency", *parts)


def _warnings(s: RunSummary) -> list[str]:
    warned = [(r, w) for r in by_place(s.results) for w in r.warnings]
    if not warned:
        return []
    items = "".join(f"<li>{escape(ident(r))}: {escape(w)}</li>" for r, w in warned)
    return _section("warnings", f"Warnings ({len(warned)})", f"<ul>{items}</ul>")


def _expected(s: RunSummary) -> list[str]:
    lines = []
    for verdict, anchor, title, headers, row in ((Verdict.XFAIL, "expected", "Expected failures (XFAIL)",
                                                  XFAIL_HEADERS, xfail_row),
                                                 (Verdict.PASS, "passes", "Passes", PASS_HEADERS, pass_row)):
        group = [r for r in by_place(s.results) if r.verdict is verdict]
        if group:
            lines += _section(anchor, f"{title} ({len(group)})", _table(headers, [row(r) for r in group]),
                              _folded(f"Per-output metrics for {len(group)} {verdict.value} cases",
                                      _table(["model", "case", "backend", *OUTPUT_HEADERS], outputs_rows(group))))
    return lines


def localisation(r: CaseResult) -> Optional[object]:
    """What localisation found for a case (its `localisation` JSON), or None when it was not localised.

    The "Per-layer error" section renders its `profile` (rows of tensor, graph position, 1−cos, relative error)
    and marks the tensor it blamed on the plot."""
    return getattr(r, "localisation", None) or None


def _profile(found: object) -> tuple[dict, list[tuple[str, int, Optional[float], Optional[float]]]]:
    """(what was blamed, profile rows) from a Localisation or its JSON."""
    doc = found if isinstance(found, Mapping) else getattr(found, "to_json", lambda: {})()
    rows = [(str(t), int(i), e, rel) for t, i, e, rel in doc.get("profile") or ()]
    return doc, rows


def layer_profiles(s: RunSummary) -> list[str]:
    profiled = [(r, found) for r in s.results if (found := localisation(r)) is not None]
    if not profiled:
        return []
    parts = []
    for r, found in profiled:
        doc, rows = _profile(found)
        blamed = (f"First divergent op: {doc['node']} ({doc.get('op_type') or '?'}), tensor {doc.get('tensor')}, "
                  f"verified: {doc.get('verified', 'no')}." if doc.get("node") else
                  f"Localisation: {doc.get('status', '?')}.")
        plot, note = _plotted("layer_plot", ident(r), rows, doc.get("tensor")) if rows else (None, "No layer profile recorded.")
        table = _table(["tensor", "position", ONE_MINUS_COS, "max rel"],
                       [[t, str(i), fmt_e(e), fmt_e(rel)] for t, i, e, rel in rows])
        parts += [f"<h3>{escape(ident(r))}</h3>", _p(blamed), _figure(plot) if plot else _p(note),
                  _folded(f"{len(rows)} layers", table)]
    return _section("layers", "Per-layer error", *parts)
