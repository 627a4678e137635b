"""Reports of a run: Markdown for a pull request, HTML with plots, JSON for machines, JUnit XML and GitHub
annotations for CI, and the exit status.

Everything renders from `CaseResult` records alone (no arrays). `policy` decides what results mean; `tables`
builds the rows the human-readable reports share; `markdown`, `html` (with `plots`), `json_report`, `junit` and
`terminal` render them, purely; `writer` is the only module that writes report files, and `github.github_outputs`
the only one that writes to GitHub Actions' step summary and standard output.
"""
from mnn_parity.reports.github import github_outputs
from mnn_parity.reports.html import render_html
from mnn_parity.reports.json_report import render_json, validate_report
from mnn_parity.reports.junit import render_junit
from mnn_parity.reports.markdown import render_markdown
from mnn_parity.reports.policy import DEFAULT_FAIL_ON, RunSummary, drift_fails, exit_status
from mnn_parity.reports.terminal import terminal_summary
from mnn_parity.reports.writer import write_reports

__all__ = ["RunSummary", "DEFAULT_FAIL_ON", "exit_status", "drift_fails", "render_markdown", "render_html",
           "render_json", "validate_report", "render_junit", "terminal_summary", "write_reports", "github_outputs"]
