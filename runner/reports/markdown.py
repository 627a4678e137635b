"""The Markdown report, sized for a pull-request comment: summary first, failures before passes, and detail shed
in steps until it fits (see render_markdown)."""
from __future__ import annotations

from typing import Iterable, Iterator, Optional

from mnn_parity.records import Verdict
from mnn_parity.reports.formatting import md_table, text
from mnn_parity.reports.ladder import ladder_md
from mnn_parity.reports.tolerance_needed import tolerance_md
from mnn_parity.reports.markdown_cases import case_details, outputs_block
from mnn_parity.reports.markdown_summary import changes_md, counts_md, environment_md, latency_md, warnings_md
from mnn_parity.reports.policy import RunSummary, by_place, exit_status, problems
from mnn_parity.reports.tables import (CASE_HEADERS, PASS_HEADERS, XFAIL_HEADERS, case_row, group_rows, pass_row,
                                       xfail_row)

MARKDOWN_LIMIT = 60_000   # a GitHub comment holds 65,536 characters; keep room for a bot's header
SHRINK_LEVELS = 4         # levels 0-3 keep every failure's row; level 4 caps them
EXPECTED_GROUPS = ((Verdict.XFAIL, "Expected failures (XFAIL)", XFAIL_HEADERS, xfail_row),
                   (Verdict.PASS, "Passes", PASS_HEADERS, pass_row))
# Where a shrunk report puts failure details back afterwards, as many as the room left allows.
_DETAILS_SLOT = "\x00failure-details\x00"


def render_markdown(summary: RunSummary, limit: int = MARKDOWN_LIMIT) -> str:
    """GitHub-flavoured Markdown, summary first, failures before passes, under `limit` characters.

    Detail is shed in steps until it fits: passes become counts; then per-output details are kept only for as
    many failures as fit (in order); then long reasons are cut and the "what changed" table is capped. Every
    failure keeps its table row until the last resort, which lists as many as fit and says how many more are in
    the JSON report.
    """
    for level in range(SHRINK_LEVELS):
        try:
            return _fill_details(summary, _markdown(summary, level, limit), limit)
        except _TooLong:
            pass
    cap = len(problems(summary))
    while cap > 0:
        cap //= 2
        try:
            return _fill_details(summary, _markdown(summary, SHRINK_LEVELS, limit, failure_cap=cap), limit, cap)
        except _TooLong:
            pass
    # Only reachable with a pathological header (e.g. a giant description).
    return _fill_details(summary, _markdown(summary, SHRINK_LEVELS, None, failure_cap=0), limit, 0)[:limit]


def _fill_details(s: RunSummary, report: str, limit: int, cap: Optional[int] = None) -> str:
    """Where a shrunk report left out failure details, put back as many as the remaining room allows, in order."""
    if _DETAILS_SLOT not in report:
        return report
    listed = problems(s)[:cap]
    room = limit - (len(report) - len(_DETAILS_SLOT))

    def note(omitted: int, any_shown: bool) -> str:
        return (f"Per-output metrics of {'the other' if any_shown else 'all'} {omitted} failures omitted to fit "
                f"a comment: full details in `{s.suite}.json`.")

    room -= len(note(len(listed), True)) + 1
    blocks: list[str] = []
    for r in listed:
        block = "\n".join(case_details(r))
        if len(block) + 1 > room:
            break
        blocks.append(block)
        room -= len(block) + 1
    if len(blocks) < len(listed):
        blocks.append(note(len(listed) - len(blocks), bool(blocks)))
    return report.replace(_DETAILS_SLOT, "\n".join(blocks))


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

    def __iadd__(self, lines: Iterable[str]) -> "_Lines":
        for line in lines:
            self.append(line)
        return self


def _markdown(s: RunSummary, level: int, limit: Optional[int], failure_cap: Optional[int] = None) -> str:
    """level 0: everything; 1: passes as counts; 2: failure details only as many as fit (see _fill_details);
    3: short reasons, capped changes; 4: capped failure rows. Raises _TooLong once the text passes `limit`.

    The sections are generators so that a level that cannot fit stops rendering at the line that overflows."""
    out = _Lines(limit)
    out += _title_md(s)
    out += environment_md(s)
    out += counts_md(s)
    out += ladder_md(s)
    out += changes_md(s, level)
    out += _failures_md(s, level, failure_cap)
    out += latency_md(s, level)
    out += tolerance_md(s, level)
    out += warnings_md(s, level)
    out += _expected_md(s, level)
    out.append(f"<sub>Started {text(s.started or '?')}, took {s.duration_s:.1f} s. "
               f"Machine-readable report: `{s.suite}.json`.</sub>")
    return "\n".join(out) + "\n"


def _title_md(s: RunSummary) -> Iterator[str]:
    yield f"# mnn-parity: {s.suite} {'❌' if exit_status([s]) else '✅'}"
    yield ""
    if s.description:
        yield text(" ".join(s.description.split()))   # one paragraph: 1000 newlines must not push the summary down
        yield ""
    # Relative: it resolves beside this file, in a checkout or in the CI artifact that holds both.
    yield (f"Plots and every table: [{text(s.suite)}.html]({s.suite}.html), beside this report "
           "(in CI, in the reports artifact).")
    yield ""


def _failures_md(s: RunSummary, level: int, failure_cap: Optional[int]) -> Iterator[str]:
    found = problems(s)
    if not found:
        return
    shown = found if failure_cap is None else found[:failure_cap]
    yield f"## Failures ({len(found)})"
    yield ""
    yield md_table(CASE_HEADERS, [case_row(r, short_reason=level >= 3) for r in shown])
    yield ""
    if len(shown) < len(found):
        yield f"… and {len(found) - len(shown)} more failures: full details in `{s.suite}.json`."
        yield ""
    if level < 2:
        for r in found:
            yield from case_details(r)
    else:
        yield _DETAILS_SLOT
        yield ""


def _expected_md(s: RunSummary, level: int) -> Iterator[str]:
    for verdict, title, headers, row in EXPECTED_GROUPS:
        group = [r for r in by_place(s.results) if r.verdict is verdict]
        if not group:
            continue
        yield f"## {title} ({len(group)})"
        yield ""
        if level == 0:
            yield md_table(headers, [row(r) for r in group])
            yield ""
            yield from outputs_block(group, f"Per-output metrics for {len(group)} {verdict.value} cases")
        else:
            yield md_table(*group_rows(group))
            yield ""
            yield f"Individual {verdict.value} cases summarised as counts: full details in `{s.suite}.json`."
            yield ""
