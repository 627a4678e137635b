"""The tightest tolerance each output met, per model, output and backend: choosing a tolerance is one read.

From the records alone, over every compared case of the group:
- `atol` with rtol 0: the largest max abs difference (every element within it);
- `rtol` at the configured atol: the largest max rel, whose floor is max(|ref|, atol) (comparison/metrics.py);
- `cosine_min`: the lowest cosine;
- `mismatch_max`: the largest fraction of elements outside the configured atol + rtol·|ref| (for labels, the
  fraction that differ): what a model whose errors are few but large, or an argmax map, would need.
Each is what the group needed at worst, beside what the manifest asks, so a loose tolerance shows its headroom
and a failing one what it would take. Outputs judged by top-k are shown too: their numbers still bound drift.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from mnn_parity.records import CaseResult, OutputComparison, json_number
from mnn_parity.reports.formatting import ONE_MINUS_COS, fmt_cos, fmt_e, fmt_pct, md_table
from mnn_parity.reports.policy import RunSummary


@dataclass(frozen=True)
class Needed:
    model: str
    output: str
    backend: str
    cases: int
    atol: Optional[float]           # with rtol 0
    rtol: Optional[float]           # at the configured atol
    cosine_min: Optional[float]
    mismatch_max: Optional[float]   # at the configured atol and rtol
    configured: dict                # the tolerance the run judged with (of the last case seen)


def tolerance_needed(s: RunSummary) -> list[Needed]:
    groups: dict[tuple[str, str, str], list[OutputComparison]] = defaultdict(list)
    for r in s.results:
        for o in _compared(r):
            groups[(r.model, o.name, r.backend)].append(o)
    return [_needed(key, outputs) for key, outputs in groups.items()]


def _compared(r: CaseResult) -> Iterator[OutputComparison]:
    return (o for o in r.outputs if o.max_abs is not None and not o.missing)


def _needed(key: tuple[str, str, str], outputs: list[OutputComparison]) -> Needed:
    cosines = [o.cosine for o in outputs if o.cosine is not None]
    rels = [o.max_rel for o in outputs if o.max_rel is not None]
    mismatches = [o.mismatch_fraction for o in outputs if o.mismatch_fraction is not None]
    return Needed(*key, cases=len(outputs), atol=max(o.max_abs for o in outputs),
                  rtol=max(rels) if rels else None, cosine_min=min(cosines) if cosines else None,
                  mismatch_max=max(mismatches) if mismatches else None, configured=outputs[-1].tolerance.as_dict())


ROWS_MAX = 60    # past this the table is in the JSON only: a long run's failures matter more in the Markdown


def tolerance_md(s: RunSummary, level: int = 0) -> Iterator[str]:
    """Left out of the Markdown when the report has to shrink (level 3 and up, see markdown._markdown)."""
    rows = tolerance_needed(s)
    if not rows or level >= 3:
        return
    yield ("<details><summary>Tightest tolerance each output met (atol with rtol 0, rtol at the configured atol, "
           f"the worst {ONE_MINUS_COS}), beside the configured one</summary>")
    yield ""
    headers = ["model", "output", "backend", "cases", "atol needed", "rtol needed", f"{ONE_MINUS_COS} needed",
               "mismatch needed", "configured"]
    yield md_table(headers, [[n.model, n.output, n.backend, str(n.cases), fmt_e(n.atol), fmt_e(n.rtol),
                              fmt_cos(n.cosine_min), fmt_pct(n.mismatch_max), _configured(n.configured)]
                             for n in rows[:ROWS_MAX]])
    if len(rows) > ROWS_MAX:
        yield ""
        yield f"… and {len(rows) - ROWS_MAX} more rows in `{s.suite}.json` (`tolerance_needed`)."
    yield ""
    yield "</details>"
    yield ""


def _configured(tolerance: dict) -> str:
    keys = ("atol", "rtol", "cosine_min", "mismatch_max")
    return ", ".join(f"{k} {tolerance[k]:g}" for k in keys if isinstance(tolerance.get(k), (int, float)))


def tolerance_json(s: RunSummary) -> list[dict[str, Any]]:
    return [{"model": n.model, "output": n.output, "backend": n.backend, "cases": n.cases,
             "atol": json_number(n.atol), "rtol": json_number(n.rtol), "cosine_min": json_number(n.cosine_min),
             "mismatch_max": json_number(n.mismatch_max)}
            for n in tolerance_needed(s)]
