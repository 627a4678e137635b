"""The few lines a run prints per suite: the counts, the first problems, what changed, where the reports are."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from mnn_parity.reports.formatting import first_line, ident, short
from mnn_parity.reports.policy import RunSummary, counts, exit_status, problems


def terminal_summary(summary: RunSummary, paths: Sequence[Path | str] = (), max_listed: int = 5) -> str:
    c = counts(summary)
    verdicts = ", ".join(f"{n} {v}" for v, n in c["verdict"].items()) or "nothing ran"
    mark = "FAILED" if exit_status([summary]) else "ok"
    lines = [f"{summary.suite}: {c['total']} cases — {verdicts} ({summary.duration_s:.1f} s) [{mark}]"]
    found = problems(summary)
    for r in found[:max_listed]:
        cls = f" {r.failure_class.value}" if r.failure_class is not None else ""
        lines.append(f"  {r.verdict.value}{cls} {ident(r)}: {short(first_line(r.reason), 120)}")
    if len(found) > max_listed:
        lines.append(f"  … and {len(found) - max_listed} more")
    unstable = [r for r in summary.results if r.unstable]
    if unstable:
        lines.append(f"  {len(unstable)} unstable (a rerun in a fresh worker changed the verdict), e.g. "
                     f"{ident(unstable[0])}: first {short(unstable[0].unstable, 160)}")
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


def localisation_text(found) -> list[str]:
    """Where MNN first goes wrong, as plain lines for a terminal: a pytest failure and `mnn-parity localise`."""
    def number(x) -> str:
        return "–" if x is None else f"{float(x):.2e}"

    if found.get("status") == "blamed":
        lines = [f"first divergent op: {found.get('node')} ({found.get('op_type')}), tensor {found.get('tensor')}: "
                 f"max rel {number(found.get('rel'))}, cosine {number(found.get('cosine'))}; verified alone: "
                 f"{found.get('verified')}"]
    else:
        lines = [f"localisation: {found.get('status', '?')}"
                 + (f", at tensor {found['tensor']}" if found.get("tensor") else "")]
    if found.get("kind") or found.get("suggestion"):
        lines.append(f"diagnosis: {found.get('kind') or '–'} — {found.get('suggestion') or ''}".rstrip(" —"))
    if found.get("repro"):
        lines.append(f"reproducer: {found['repro']}")
    return lines
