"""The precision ladder: per model family (a model and its conversion variants, `manifest/variants.py`), one row
per variant and backend with accuracy against ONNX Runtime, MNN's latency and the `.mnn` size, each beside the
base conversion's on the same backend. It is the table a team picks a conversion from, so it states what was
measured and nothing more: worst case, worst output, latency as timed on this machine.

Rendered from records only: the results' metrics and latencies, and the `.mnn` sizes the session copies from the
runs' provenance into the environment under `MODEL_BYTES_KEY` (see `model_bytes`).
"""
from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

from mnn_parity.manifest.variants import split_name
from mnn_parity.records import CaseResult, CaseRun, Verdict, json_number
from mnn_parity.reports.formatting import NONE, Strong, fmt_cos, fmt_e, fmt_ms, fmt_pct, md_table, text
from mnn_parity.reports.policy import SEVERITY, RunSummary

MODEL_BYTES_KEY = "mnn_model_bytes"   # environment: {model name: bytes of its .mnn}
BASE = "base"                         # how the family's own conversion is named in the table
HEADERS = ["variant", "backend", "verdict", "cases", "1−cos (worst)", "max abs (worst)", "top-k agree (worst)",
           "MNN ms (median)", ".mnn size"]


@dataclass(frozen=True)
class Rung:
    """One variant of a family on one backend, summed up over its cases."""
    family: str
    variant: Optional[str]            # None: the base conversion
    model: str
    backend: str
    verdicts: Mapping[str, int]
    cosine: Optional[float]           # worst over cases and outputs (NaN if any was NaN)
    max_abs: Optional[float]
    topk_agreement: Optional[float]   # None: no output declares `topk`
    mnn_ms: Optional[float]           # median over cases of each case's median
    reference_ms: Optional[float]
    model_bytes: Optional[int]

    @property
    def label(self) -> str:
        return self.variant or BASE

    @property
    def worst_verdict(self) -> str:
        return next(v.value for v in SEVERITY if v.value in self.verdicts)


def model_bytes(runs: Iterable[CaseRun]) -> dict[str, int]:
    """{model: .mnn bytes} from the runs' provenance, for the summary's environment under MODEL_BYTES_KEY."""
    sizes: dict[str, int] = {}
    for run in runs:
        size = (run.provenance or {}).get(MODEL_BYTES_KEY)
        if isinstance(size, int):
            sizes[run.result.model] = size
    return sizes


def ladder(summary: RunSummary) -> list[list[Rung]]:
    """The rungs of each family that has more than one variant in this run, base first, in run order."""
    sizes = summary.environment.get(MODEL_BYTES_KEY) or {}
    groups: dict[tuple[str, Optional[str], str], list[CaseResult]] = {}
    for r in summary.results:
        family, variant = split_name(r.model)
        groups.setdefault((family, variant, r.backend), []).append(r)
    families: dict[str, list[Rung]] = {}
    for (family, variant, backend), results in groups.items():
        families.setdefault(family, []).append(_rung(family, variant, backend, results, sizes.get(results[0].model)))
    ladders = []
    for rungs in families.values():
        if len({rung.variant for rung in rungs}) > 1:
            backends = list(dict.fromkeys(rung.backend for rung in rungs))
            variants = list(dict.fromkeys([None] + [rung.variant for rung in rungs]))
            ladders.append(sorted(rungs, key=lambda g: (backends.index(g.backend), variants.index(g.variant))))
    return ladders


def _rung(family: str, variant: Optional[str], backend: str, results: Sequence[CaseResult],
          size: Optional[int]) -> Rung:
    outputs = [o for r in results for o in r.outputs]
    topk = [o.topk_agreement for o in outputs if o.topk_agreement is not None]
    return Rung(family, variant, results[0].model, backend, dict(Counter(r.verdict.value for r in results)),
                _worst([o.cosine for o in outputs], min), _worst([o.max_abs for o in outputs], max),
                _worst(topk, min), _median(r.latency_ms.get("mnn") for r in results),
                _median(r.latency_ms.get("reference") for r in results), size)


def _worst(values: Sequence[Optional[float]], pick) -> Optional[float]:
    known = [float(v) for v in values if v is not None]
    if not known:
        return None
    if any(math.isnan(v) for v in known):
        return math.nan          # NaN compares false with everything: min/max would hide it
    return pick(known)


def _median(values: Iterable[Optional[float]]) -> Optional[float]:
    known = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return statistics.median(known) if known else None


def _base_of(rung: Rung, rungs: Sequence[Rung]) -> Optional[Rung]:
    return next((g for g in rungs if g.variant is None and g.backend == rung.backend), None)


def _ratio(value: Optional[float], base: Optional[float]) -> Optional[float]:
    if value is None or base is None or not base:
        return None
    return float(value) / float(base)


def _difference(value: Optional[float], base: Optional[float]) -> Optional[float]:
    return None if value is None or base is None else float(value) - float(base)


# -- JSON

def ladder_json(summary: RunSummary) -> list[dict[str, Any]]:
    return [{"family": rungs[0].family, "rows": [_rung_json(g, _base_of(g, rungs)) for g in rungs]}
            for rungs in ladder(summary)]


def _rung_json(g: Rung, base: Optional[Rung]) -> dict[str, Any]:
    one_minus = None if g.cosine is None else 1.0 - g.cosine
    base_one_minus = None if base is None or base.cosine is None else 1.0 - base.cosine
    return {
        "variant": g.variant, "model": g.model, "backend": g.backend, "verdict": g.worst_verdict,
        "verdicts": dict(g.verdicts), "cases": sum(g.verdicts.values()),
        "cosine": json_number(g.cosine), "max_abs": json_number(g.max_abs),
        "topk_agreement": json_number(g.topk_agreement), "mnn_ms": json_number(g.mnn_ms),
        "reference_ms": json_number(g.reference_ms), "mnn_model_bytes": g.model_bytes,
        "vs_base": None if base is None or base is g else {
            "one_minus_cos": json_number(_difference(one_minus, base_one_minus)),
            "max_abs": json_number(_difference(g.max_abs, base.max_abs)),
            "mnn_ms_ratio": json_number(_ratio(g.mnn_ms, base.mnn_ms)),
            "size_ratio": json_number(_ratio(g.model_bytes, base.model_bytes)),
        },
    }


# -- Markdown

def ladder_md(summary: RunSummary) -> Iterator[str]:
    ladders = ladder(summary)
    if not ladders:
        return
    yield "## Precision ladder"
    yield ""
    yield ("Each conversion variant beside the model's own conversion (`base`) on the same backend. Accuracy is "
           "against ONNX Runtime's fp32 outputs on the same cases: the worst case and output. Latency is the median "
           "over cases of MNN's per-case median, as timed on this machine; the change in brackets is against "
           "`base` on the same backend. Lower precision is not faster everywhere: on an x86 CPU without fp16 "
           "arithmetic or int8 dot-product instructions it can be slower. Models run in parallel share the CPU: "
           "to decide on latency, run with `--jobs 1` on an idle machine and a `latency.repeat` of 10 or more.")
    yield ""
    for rungs in ladders:
        yield f"### {text(rungs[0].family)}"
        yield ""
        yield md_table(HEADERS, [_rung_row(g, _base_of(g, rungs)) for g in rungs])
        yield ""


def _rung_row(g: Rung, base: Optional[Rung]) -> list[str]:
    verdict = g.worst_verdict
    if len(g.verdicts) > 1:
        verdict += " (" + ", ".join(f"{v} {n}" for v, n in g.verdicts.items()) + ")"
    shown = Strong(verdict, verdict.split()[0].lower()) if Verdict(verdict.split()[0]).is_bad else verdict
    compared = None if base is None or base is g else base
    return [g.label, g.backend, shown, str(sum(g.verdicts.values())), fmt_cos(g.cosine), fmt_e(g.max_abs),
            fmt_pct(g.topk_agreement) if g.topk_agreement is not None else NONE,
            _with_change(fmt_ms(g.mnn_ms), _ratio(g.mnn_ms, compared.mnn_ms) if compared else None),
            _with_change(fmt_bytes(g.model_bytes), _ratio(g.model_bytes, compared.model_bytes) if compared else None)]


def _with_change(value: str, ratio: Optional[float]) -> str:
    if ratio is None or value == NONE:
        return value
    change = round(100 * (ratio - 1))
    return f"{value} ({'+' if change > 0 else '−' if change < 0 else '±'}{abs(change)}%)"


def fmt_bytes(size: Optional[int]) -> str:
    if size is None:
        return NONE
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} B"
