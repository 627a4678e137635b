"""GitHub Actions: each suite's Markdown report in the job's step summary, and annotations that put manifest
errors and failing cases on the manifest's lines, where a pull request's reviewer sees them.

Everything here is a pure function of a session's result except `github_outputs`, which appends the step summary
and prints the annotations (workflow commands are read from standard output). Workflow-command escaping follows
GitHub's toolkit (`@actions/core`, command.ts): `%`, CR and LF in the message; also `:` and `,` in properties.
"""
from __future__ import annotations

import os
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Optional, Protocol, Sequence, TextIO

from mnn_parity.manifest.spec import Suite
from mnn_parity.records import CaseResult, Verdict
from mnn_parity.reports.formatting import first_line, short
from mnn_parity.reports.markdown import render_markdown
from mnn_parity.reports.policy import RunSummary, drift_fails, stale_fails

CASES_PER_ANNOTATION = 5          # GitHub shows 10 error annotations per step: one per model, a few cases in each
LINE_MAX = 200                    # one case's line in an annotation
STEP_SUMMARY_MAX = 1_000_000      # GitHub refuses a step summary over 1 MiB, and then shows none of it
# A manifest problem reads `file:line: key.path: message`, or `file: key.path: message` when no line is known.
WITH_LINE = re.compile(r"(?P<file>[^:\n]+):(?P<line>\d+): (?P<message>.*)", re.S)
WITHOUT_LINE = re.compile(r"(?P<file>[^:\n]+\.ya?ml): (?P<message>.*)", re.S)


class _Outcome(Protocol):
    suite: Suite
    summary: RunSummary
    report_paths: Sequence[Path]


class _Result(Protocol):
    outcomes: Sequence[_Outcome]
    problems: Sequence[str]


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(kind: str, message: str, **properties: Optional[object]) -> str:
    """A workflow command such as `::error file=suites/ocr.yaml,line=22,title=…::message`; None properties left out."""
    given = ",".join(f"{key}={escape_property(str(value))}" for key, value in properties.items() if value is not None)
    return f"::{kind}{' ' + given if given else ''}::{escape_data(message)}"


def problem_annotation(problem: str) -> str:
    """An error on the manifest line a problem names; a setup problem, which names none, on the run."""
    found = WITH_LINE.fullmatch(problem) or WITHOUT_LINE.fullmatch(problem)
    if found is None:
        return command("error", problem, title="mnn-parity: setup")
    return command("error", found["message"], file=found["file"], line=found.groupdict().get("line"),
                   title="mnn-parity: manifest")


def case_annotations(outcome: _Outcome, workspace: Optional[str] = None) -> list[str]:
    """Per model: an error on its manifest entry naming its failing cases (failing verdicts and failing drift),
    else a warning naming its XPASS cases; an error on the manifest for stale goldens that fail the run."""
    s, suite = outcome.summary, outcome.suite
    where = repo_path(suite.path, suite.root, workspace)
    lines = {m.name: m.line for m in suite.models}
    report = next((repo_path(p, suite.root, workspace) for p in outcome.report_paths
                   if str(p).endswith(".md")), None)
    by_model: dict[str, list[CaseResult]] = defaultdict(list)
    for r in s.results:
        if r.verdict.is_bad or r.verdict is Verdict.XPASS or drift_fails(r, s.fail_on):
            by_model[r.model].append(r)
    found = []
    for model, rs in by_model.items():
        failing = [r for r in rs if r.verdict.is_bad or drift_fails(r, s.fail_on)]
        shown = failing or rs
        text = [_case_line(r, s) for r in shown[:CASES_PER_ANNOTATION]]
        if len(shown) > CASES_PER_ANNOTATION:
            text.append(f"… and {len(shown) - CASES_PER_ANNOTATION} more")
        if report:
            text.append(f"Report: {report}")
        found.append(command("error" if failing else "warning", "\n".join(text), file=where,
                             line=lines.get(model), title=f"mnn-parity {s.suite}/{model}: {_tally(shown, s)}"))
    if stale_fails(s):
        names = ", ".join(f"{m}/{c} [{b}]" for m, c, b in s.stale[:CASES_PER_ANNOTATION])
        found.append(command("error", f"{len(s.stale)} stale golden(s), no case left: {names}", file=where,
                             title=f"mnn-parity {s.suite}: stale goldens"))
    return found


def _case_line(r: CaseResult, s: RunSummary) -> str:
    head = f"{r.case} [{r.backend}] {r.verdict.value}"
    if r.failure_class is not None:
        head += f" {r.failure_class.value}"
    if r.verdict.is_bad or r.verdict is Verdict.XPASS:
        return short(f"{head}: {first_line(r.reason)}", LINE_MAX)
    note = f": {first_line(r.drift.note)}" if r.drift.note else ""
    return short(f"{head}, {r.drift.drift_class.value} since the golden{note}", LINE_MAX)


def _tally(rs: Sequence[CaseResult], s: RunSummary) -> str:
    """`2 FAIL, 1 CRASH, 1 regressed`: verdicts that fail, then drift that fails on cases whose verdict did not."""
    kinds: dict[str, int] = defaultdict(int)
    for r in rs:
        kinds[r.verdict.value if r.verdict.is_bad or r.verdict is Verdict.XPASS else r.drift.drift_class.value] += 1
    return ", ".join(f"{n} {kind}" for kind, n in kinds.items())


def repo_path(path: Path, root: Path, workspace: Optional[str] = None) -> str:
    """`path` as GitHub wants it in an annotation: relative to the checkout (the workspace), else to the root."""
    absolute = os.path.abspath(os.path.join(root, path))
    for base in (workspace, str(root)):
        if base:
            relative = os.path.relpath(absolute, os.path.abspath(base))
            if not relative.startswith(".."):
                return Path(relative).as_posix()
    return Path(absolute).as_posix()


def annotations(result: _Result, workspace: Optional[str] = None) -> list[str]:
    return ([problem_annotation(p) for p in result.problems]
            + [line for outcome in result.outcomes for line in case_annotations(outcome, workspace)])


# The report's link to its HTML page beside it: on the job's summary page there is no "beside", only a 404.
_HTML_LINK = re.compile(r"^Plots and every table: \[[^\]\n]*\]\((?P<name>[^)\s]+\.html)\)[^\n]*$", re.M)


def summary_markdown(summary: RunSummary) -> str:
    """A suite's Markdown report as the step summary shows it: the HTML report named, not linked."""
    return _HTML_LINK.sub(lambda m: f"Plots and every table: `{m['name']}`, in the run's reports artifact.",
                          render_markdown(summary), count=1)


def step_summary(result: _Result) -> str:
    """Every suite's Markdown report, then the run's problems, within what a step summary may hold."""
    parts: list[str] = []
    size = 0
    for i, outcome in enumerate(result.outcomes):
        report = summary_markdown(outcome.summary)
        if size + len(report.encode()) > STEP_SUMMARY_MAX - 10_000:
            left = [o.summary.suite for o in result.outcomes[i:]]
            parts.append(f"{len(left)} more suite report(s) left out to fit the step summary: "
                         f"{', '.join(left)} (see the reports artifact).\n")
            break
        parts.append(report)
        size += len(report.encode())
    if result.problems:
        listed = "\n".join(short(p, 1000) for p in result.problems[:100]).replace("```", "'''")
        parts.append(f"## mnn-parity: {len(result.problems)} problem(s) in manifests or setup\n\n"
                     f"```text\n{listed}\n```\n")
    return "\n".join(parts)


def github_outputs(result: _Result, environ: Mapping[str, str], out: Optional[TextIO] = None) -> None:
    """Inside GitHub Actions: append the reports to the step summary (when `GITHUB_STEP_SUMMARY` names a file) and
    print annotations (when `GITHUB_ACTIONS` is "true"). Anywhere else, nothing."""
    summary_file = environ.get("GITHUB_STEP_SUMMARY")
    if summary_file:
        text = step_summary(result)
        if text:
            # Appended: earlier steps (and other suites' runs in this step) wrote theirs before.
            with open(summary_file, "a", encoding="utf-8") as handle:
                handle.write(text if text.endswith("\n") else text + "\n")
    if environ.get("GITHUB_ACTIONS") == "true":
        out = out or sys.stdout   # looked up now: a test harness or a caller may have replaced it since import
        for line in annotations(result, environ.get("GITHUB_WORKSPACE")):
            print(line, file=out)
        out.flush()
