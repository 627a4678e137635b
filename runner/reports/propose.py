"""`mnn-parity new --tolerances MANIFEST`: tolerances proposed from a suite's last JSON report, as YAML to paste.

Pure functions from the report's dict to a `Proposal` and to text; files are read only at the edge (`load_report`,
`proposal_for`). The promise: pasted into the manifest, the same run passes. Every rule serves it:
- `atol` is the worst max abs × margin with `rtol: 0`: it bounds every element on its own; the measured max rel
  (at the configured atol floor) is dominated by near-zero references and as an rtol would hide real errors.
- Loosening any key only passes more, so an output's keys are the loosest over its backends and variants. A
  backend's own tolerance wins over an output's (manifest/tolerance.py): a key a backend sets is proposed from
  the other backends only, and a comment says when the backend's own value is tighter than it measured.
- Labels (integer outputs at atol < 1) get only `mismatch_max`: an atol >= 1 would switch them to numbers.
- A failure no tolerance should hide (dead output, NaN/Inf, shape, layout) or a case that never ran gets a comment,
  never a number. A key measured bit-exact is left out: what the manifest inherits there passes.
"""
from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from mnn_parity.manifest.variants import split_name
from mnn_parity.records import number_from_json
from mnn_parity.reports.formatting import finite

DEFAULT_MARGIN = 2.0
NOT_HIDDEN = ("shape-mismatch", "nan-inf", "dead-output", "output-layout")
NOT_RUN = ("ERROR", "CRASH")
KEYS = ("atol", "rtol", "cosine_min", "mismatch_max")


class YamlText(str):
    """A value already written as YAML (a number as the proposal rounds it): put in the text as it is."""


class ProposalError(Exception):
    """Nothing to propose from: the message names the report's path and why."""


@dataclass(frozen=True)
class Group:
    """One output of one model (or variant) on one backend, over every case where it was compared."""
    model: str
    output: str
    backend: str
    cases: tuple[str, ...]
    max_abs: float
    max_rel: Optional[float]
    cosine: Optional[float]
    mismatch: float
    labels: bool                 # judged by the fraction that differ
    integer: bool                # an integer output judged as numbers (atol >= 1)
    ref_nonfinite: bool          # NaN/Inf in the reference: positions no atol covers
    configured: Mapping[str, float]
    blockers: tuple[str, ...]    # "dead-output on x0": failures a tolerance must not hide
    topk_flip_cases: int
    logits_passed: bool          # labels that differ yet passed, re-judged on their logits


@dataclass(frozen=True)
class OutputProposal:
    name: str
    tolerance: Mapping[str, YamlText]   # key -> the value as YAML text, in KEYS order; empty: nothing to propose
    comments: tuple[str, ...]
    keep: Mapping[str, Any]          # the manifest's other keys of this output (topk, logits, skip), kept


@dataclass(frozen=True)
class ModelProposal:
    name: str
    comments: tuple[str, ...]
    outputs: tuple[OutputProposal, ...]


@dataclass(frozen=True)
class Proposal:
    suite: str
    header: tuple[str, ...]
    models: tuple[ModelProposal, ...]


# -- numbers

def round_up(x: float) -> float:
    """The smallest of 1, 2 or 5 × 10^k that is >= x: a readable bound that never undercuts the measurement."""
    if x <= 0:
        return 0.0
    for e in range(math.floor(math.log10(x)) - 1, 310):   # from a decade below: log10 may round either way
        for step in (1, 2, 5):
            if (value := float(f"{step}e{e}")) >= x:
                return value
    return math.inf


def yaml_number(x: float) -> str:
    """YAML that PyYAML and the manifest reader both read back as this float ("5.0e-05": a dot, a signed exponent)."""
    text = repr(float(x))
    if "e" not in text:
        return text.removesuffix(".0")
    mantissa, exponent = text.split("e")
    return f"{mantissa if '.' in mantissa else mantissa + '.0'}e{int(exponent):+03d}"


def cosine_text(slack: float) -> str:
    """cosine_min = 1 − slack, in decimal digits (1 − 5e-07 is 0.9999995, not 0.99999950000000003)."""
    return str(max(Decimal(-1), Decimal(1) - Decimal(repr(slack))).normalize())


# -- from the report's cases to groups

def check_report(doc: Any, suite: str, label: str) -> None:
    """Refuse, naming the report, what cannot give a proposal: another suite's report, or nothing compared."""
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list):
        raise ProposalError(f"{label}: not an mnn-parity JSON report (no `cases` list)")
    if doc.get("suite") != suite:
        raise ProposalError(f"{label}: a report of suite {doc.get('suite')!r}, not {suite!r}: "
                            f"run `mnn-parity run` on the manifest first, or pass --report-dir")
    if not any(_compared(o) for case in doc["cases"] for o in case.get("outputs") or ()):
        raise ProposalError(f"{label}: no case of suite {suite!r} was compared (every case ERROR, CRASH or "
                            "missing): nothing to measure a tolerance on; fix those first")


def _compared(o: Mapping) -> bool:
    return o.get("max_abs") is not None and not o.get("missing")


def groups(cases: Iterable[Mapping]) -> list[Group]:
    collected: dict[tuple[str, str, str], list[tuple[str, Mapping]]] = defaultdict(list)
    for case in cases:
        for o in case.get("outputs") or ():
            collected[(case["model"], o["name"], case["backend"])].append((case["case"], o))
    return [_group(key, members) for key, members in collected.items()]


def _group(key: tuple[str, str, str], members: list[tuple[str, Mapping]]) -> Group:
    compared = [(c, o) for c, o in members if _compared(o)]
    outputs = [o for _, o in compared]

    def numbers(name: str) -> list[float]:
        return [float(v) for v in (number_from_json(o.get(name)) for o in outputs) if v is not None]

    configured = {k: max((float(o["tolerance"][k]) for o in outputs if k in o.get("tolerance", {})), default=0.0)
                  for k in KEYS}
    integer = any(not str(o.get("ref_dtype", "float")).startswith(("float", "bfloat")) for o in outputs)
    blockers = tuple(f"{o['failure_class']} on {c}" for c, o in members if o.get("failure_class") in NOT_HIDDEN)
    missing = tuple(f"missing from MNN on {c}" for c, o in members if o.get("missing"))
    mismatches = numbers("mismatch_fraction")
    labels = integer and configured["atol"] < 1
    return Group(*key, cases=tuple(c for c, _ in compared), max_abs=max(numbers("max_abs"), default=0.0),
                 max_rel=max(numbers("max_rel"), default=None), cosine=min(numbers("cosine"), default=None),
                 mismatch=max(mismatches, default=0.0), labels=labels, integer=integer and not labels,
                 ref_nonfinite=any(o.get("nan_ref") or o.get("inf_ref") for o in outputs), configured=configured,
                 blockers=blockers + missing,
                 topk_flip_cases=sum(o.get("failure_class") == "topk-flip" for o in outputs),
                 logits_passed=labels and all(o.get("passed") for o in outputs) and any(
                     float(o.get("mismatch_fraction") or 0) > o["tolerance"].get("mismatch_max", 0) for o in outputs))


# -- what one group needs: larger is looser for every key (cosine as its slack, 1 − cosine_min)

def need(g: Group, margin: float) -> dict[str, float]:
    if g.labels:
        if g.logits_passed or not g.mismatch:
            return {}
        return {"mismatch_max": min(1.0, round_up(margin * g.mismatch))}
    found: dict[str, float] = {}
    if g.max_abs > 0:
        found["atol"] = max(1.0, round_up(margin * g.max_abs)) if g.integer else round_up(margin * g.max_abs)
        found["rtol"] = 0.0
    if finite(g.cosine) and g.cosine < 1:
        found["cosine_min"] = min(2.0, round_up(margin * (1 - g.cosine)))
    if g.ref_nonfinite and g.mismatch > 0:   # NaN-vs-number positions: no atol covers them
        found["mismatch_max"] = min(1.0, round_up(margin * g.mismatch))
    return found


def _as_text(key: str, value: float) -> YamlText:
    return YamlText(cosine_text(value) if key == "cosine_min" else yaml_number(value))


def combine(members: list[Group], margin: float, backend_tolerances: Mapping[str, Mapping[str, float]]
            ) -> tuple[dict[str, YamlText], list[str]]:
    """The loosest need per key over the groups whose backend leaves that key to the output; notes for the rest."""
    loosest: dict[str, float] = {}
    notes: list[str] = []
    for g in members:
        own = backend_tolerances.get(g.backend) or {}
        for key, value in need(g, margin).items():
            if key not in own:
                loosest[key] = max(loosest.get(key, value), value)
            elif value > (1 - float(own[key]) if key == "cosine_min" else float(own[key])):   # cosine: a slack
                notes.append(f"backend {g.backend} sets {key}: {scalar(float(own[key]))} itself, and a backend's tolerance wins "
                             f"over an output's: {g.model} [{g.backend}] may need {key} {_as_text(key, value)}; loosen "
                             f"backends.{g.backend}.tolerance.{key}")
    if "atol" not in loosest:
        loosest.pop("rtol", None)
    return {k: _as_text(k, loosest[k]) for k in KEYS if k in loosest}, notes


# -- per model: the entry's outputs, over the entry and its variants

def propose(doc: Mapping, margin: float = DEFAULT_MARGIN,
            backend_tolerances: Optional[Mapping[str, Mapping]] = None,
            manifest_outputs: Optional[Mapping[str, Mapping[str, Mapping]]] = None, source: str = "") -> Proposal:
    """`manifest_outputs`: per model entry, its outputs' keys other than tolerance, so the block pasted replaces
    the manifest's whole `outputs:` without losing a `topk:` or a `skip:`."""
    if not 1 <= margin < math.inf:
        raise ProposalError(f"--margin {margin:g}: give a finite number >= 1 (below 1 it undercuts the measurement)")
    cases = doc["cases"]
    by_family: dict[str, list[Group]] = defaultdict(list)
    for g in groups(cases):
        by_family[split_name(g.model)[0]].append(g)
    families = list(dict.fromkeys(split_name(c["model"])[0] for c in cases))
    models = tuple(_model(name, by_family.get(name, []), [c for c in cases if split_name(c["model"])[0] == name],
                          margin, backend_tolerances or {}, (manifest_outputs or {}).get(name, {}))
                   for name in families)
    return Proposal(doc["suite"], _header(doc, margin, source), models)


def _header(doc: Mapping, margin: float, source: str) -> tuple[str, ...]:
    env = doc.get("environment") or {}
    return (f"Tolerances proposed from {source or 'the report'} (suite {doc['suite']}, run {doc.get('started')})",
            f"measured with MNN {env.get('mnn_version')} against ONNX Runtime {env.get('onnxruntime_version')}",
            f"each number: the worst measured x {margin:g}, rounded up to 1, 2 or 5 x 10^k; cosine_min: "
            f"1 - {margin:g} x (1 - worst cosine), rounded down",
            "paste each model's `outputs:` block over the one in its entry (other keys of an output are kept)")


def _model(name: str, members: list[Group], cases: list[Mapping], margin: float,
           backend_tolerances: Mapping[str, Mapping], existing: Mapping[str, Mapping]) -> ModelProposal:
    comments = list(_not_run(cases)) + list(_expected(cases))
    variants = sorted({g.model for g in members} - {name})
    if variants:
        comments.append(f"one `outputs:` block serves the entry and its variants {', '.join(variants)}: "
                        "each number is the loosest of them")
    by_output: dict[str, list[Group]] = defaultdict(list)
    for g in members:
        by_output[g.output].append(g)
    outputs = [_output(out, gs, margin, backend_tolerances, existing.get(out, {})) for out, gs in by_output.items()]
    outputs += [OutputProposal(out, {}, ("not in the report: kept as it is",), keep)
                for out, keep in existing.items() if out not in by_output]
    return ModelProposal(name, tuple(comments), tuple(outputs))


def _not_run(cases: list[Mapping]) -> Iterable[str]:
    counted: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
    for c in cases:
        if c["verdict"] in NOT_RUN or (c["verdict"] == "XFAIL" and not c.get("outputs")):
            counted[(c["verdict"], c["backend"])].append(c)
    for (verdict, backend), found in counted.items():
        yield (f"{len(found)} case(s) {verdict} on {backend}, not measured: {found[0].get('reason') or '?'}; "
               "no tolerance covers that: fix it first")


def _expected(cases: list[Mapping]) -> Iterable[str]:
    if xfail := [c for c in cases if c["verdict"] == "XFAIL" and c.get("failure_class") == "out-of-tolerance"]:
        yield (f"{len(xfail)} case(s) expected to fail (`expect:`) out of tolerance: with this proposal they "
               "pass, and an XPASS is news: drop `expect` when you paste it")


def _output(name: str, members: list[Group], margin: float, backend_tolerances: Mapping[str, Mapping],
            keep: Mapping) -> OutputProposal:
    comments = [_measured(name, members)]
    blocked = [f"{b} [{g.backend}]" for g in members for b in g.blockers]
    blocked += [f"an error beyond float64's range [{g.backend}]" for g in members if not finite(g.max_abs)]
    if blocked:
        comments.append(f"no tolerance proposed: {', '.join(blocked)}; a tolerance must not hide that")
        return OutputProposal(name, {}, tuple(comments), keep)
    tolerance, notes = combine(members, margin, backend_tolerances)
    comments += _alone(members, margin) + notes + _remarks(members, tolerance)
    return OutputProposal(name, tolerance, tuple(comments), keep)


def _measured(name: str, members: list[Group]) -> str:
    cases = sorted({c for g in members for c in g.cases})
    backends = list(dict.fromkeys(g.backend for g in members))
    if not cases:
        return f"{name}: not compared on any case"
    worst_cos = min((g.cosine for g in members if finite(g.cosine)), default=None)
    rels = [g.max_rel for g in members if finite(g.max_rel)]
    parts = [f"max abs {max(g.max_abs for g in members):.2e}"]
    if rels:
        parts.append(f"max rel {max(rels):.2e} (at atol {max(g.configured['atol'] for g in members):g})")
    if worst_cos is not None and not any(g.labels for g in members):
        parts.append(f"1 - cos {1 - worst_cos:.2e}")
    parts.append(f"mismatch {100 * max(g.mismatch for g in members):.3g}% (at the configured tolerance)")
    return (f"{name}: measured on {len(cases)} case(s) ({', '.join(cases[:5])}{', …' if len(cases) > 5 else ''}) x "
            f"{', '.join(backends)}: " + ", ".join(parts))


def _alone(members: list[Group], margin: float) -> list[str]:
    """Where one backend (or variant) needed more than another, say which: the combined value is its doing."""
    alone = {f"{g.model} [{g.backend}]": {k: _as_text(k, v) for k, v in need(g, margin).items()} for g in members}
    if len({tuple(sorted(v.items())) for v in alone.values()}) <= 1:
        return []
    return [f"{who} alone: {flow(tolerance) if tolerance else 'bit-exact'}" for who, tolerance in alone.items()]


def _remarks(members: list[Group], tolerance: Mapping[str, str]) -> list[str]:
    notes = []
    if not tolerance:
        notes.append("nothing to loosen (bit-exact, or labels equal): the inherited tolerance stands")
    if any(g.logits_passed for g in members):
        notes.append("labels differ only at near ties of their logits, which passed: no mismatch_max needed")
    if tolerance.get("mismatch_max") == "1":
        notes.append("mismatch_max 1 accepts any labels: name the scores with `logits:` instead")
    flips = sum(g.topk_flip_cases for g in members)
    if flips:
        notes.append(f"top-k flipped on {flips} case(s): a tolerance does not change a top-k verdict")
    return notes


# -- text

PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/]*$")
YAML_WORDS = {"true", "false", "null", "yes", "no", "on", "off"}


def scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value) if isinstance(value, int) else yaml_number(value)
    text = str(value)
    return text if PLAIN.match(text) and text.lower() not in YAML_WORDS else json.dumps(text)


def flow(mapping: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{scalar(k)}: {_value(v)}" for k, v in mapping.items()) + "}"


def _value(v: Any) -> str:
    return flow(v) if isinstance(v, Mapping) else str(v) if isinstance(v, YamlText) else scalar(v)


def to_yaml(proposal: Proposal) -> str:
    lines = [f"# {line}" for line in proposal.header] + ["models:"]
    for model in proposal.models:
        lines.append(f"  - name: {scalar(model.name)}")
        lines += [f"    # {c}" for c in model.comments]
        if model.outputs:
            lines.append("    outputs:")
        for out in model.outputs:
            lines += [f"      # {c}" for c in out.comments]
            body = ({"tolerance": dict(out.tolerance)} if out.tolerance else {}) | dict(out.keep)
            if not body:
                lines.append(f"      {scalar(out.name)}: {{}}")
                continue
            lines.append(f"      {scalar(out.name)}:")
            lines += [f"        {key}: {_value(v)}" for key, v in body.items()]
    return "\n".join(lines) + "\n"


def load_report(path: Path, suite: str) -> dict:
    """The thin edge: read and check the report, every refusal naming the path."""
    if not path.is_file():
        raise ProposalError(f"{path}: no report: run `mnn-parity run` on the manifest first (or pass --report-dir)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ProposalError(f"{path}: not readable JSON ({error})") from None
    check_report(doc, suite, str(path))
    return doc


def manifest_outputs(suite) -> dict[str, dict[str, dict]]:
    """Per model entry (variants share it), each output's keys besides tolerance, as the manifest spells them."""
    found: dict[str, dict[str, dict]] = {}
    for model in suite.models:
        if model.variant is None:
            found[model.name] = {name: _output_keys(spec) for name, spec in model.outputs.items()}
    return found


def _output_keys(spec) -> dict:
    keys: dict[str, Any] = {key: asdict(value) for key, value in (("topk", spec.topk), ("logits", spec.logits))
                            if value}
    return {**keys, "skip": True} if spec.skip else keys


def proposal_for(manifest: Path, root: Path, report_dir: Optional[Path], margin: float) -> str:
    """The edge `mnn-parity new --tolerances` calls: the manifest through the normal loader, then its report."""
    from mnn_parity.manifest import load_suite   # raises ManifestError, which the command prints

    suite = load_suite(manifest, root)
    path = (report_dir or root / "reports") / f"{suite.name}.json"
    doc = load_report(path, suite.name)
    backends = {name: spec.tolerance for name, spec in suite.backends.items()}
    shown = path.relative_to(root) if path.is_relative_to(root) else path
    return to_yaml(propose(doc, margin, backends, manifest_outputs(suite), source=str(shown)))
