"""One localisation end to end: profile both engines once, trust, jump test, verify, reproducer, diagnosis."""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import onnx

from mnn_parity.conversion.mnnconvert import ConverterEnv, converter_args
from mnn_parity.localisation import blame, diagnose
from mnn_parity.localisation.compare import Criterion, diverges, within
from mnn_parity.localisation.extract import value_types
from mnn_parity.localisation.graph import OnnxGraph, structurally_trusted
from mnn_parity.localisation.intermediates import (ChildFailed, MnnProfile, MnnRequest, ReferenceStore,
                                                   profile_mnn, record_and_profile)
from mnn_parity.localisation.result import Localisation, LocaliseOptions
from mnn_parity.localisation.verify import Verification, Verifier, verify
from mnn_parity.manifest.spec import ConvertFlags, Limits

DEFAULT_TOLERANCE = {"high": {"atol": 1.0e-4, "rtol": 1.0e-3, "cosine_min": 0.9999},
                     "low": {"atol": 1.0e-2, "rtol": 1.0e-2, "cosine_min": 0.999}}


@dataclass(frozen=True)
class Case:
    """Who the case is, for the reproducer's names and manifest; `tolerance` is the case's resolved one (atol,
    rtol, cosine_min, mismatch_max): a failure only under it is localised at its cosine bound, and the reproducer's
    manifest carries it."""
    model: str = "model"
    case: str = "case"
    backend: str = "cpu-fp32"
    tolerance: Optional[dict] = None


@dataclass
class Run:
    """Everything one localisation has learnt so far; private to this module."""
    onnx_path: Path
    mnn_path: Path
    model: onnx.ModelProto
    graph: OnnxGraph
    store: ReferenceStore
    profile: MnnProfile
    hint: Criterion                     # "high"/"low", or the case's cosine_min when only that fails
    runtime: dict
    flags: ConvertFlags
    converter: ConverterEnv
    workdir: Path
    limits: Limits
    options: LocaliseOptions
    feeds_path: Path

    def mnn_value(self, name: str) -> Optional[np.ndarray]:
        # the alias check asks for these next: ONNX Runtime records them while MNN runs
        finish = self.store.begin(self.graph.downstream(name, blame.ALIAS_DEPTH))
        try:
            return self._mnn_value(name)
        finally:
            finish()

    def _mnn_value(self, name: str) -> Optional[np.ndarray]:
        again = profile_mnn(self.mnn_path, self.converter.python, self.feeds_path,
                            list(self.graph.inputs), list(self.graph.outputs), [name], self.store,
                            self.workdir / f"alias-{self.graph.order(name)}", self.runtime, self.limits, dump=[name])
        return np.load(again.dumps[name]) if name in again.dumps else None

    def references(self, names: list[str]) -> Iterator[Optional[np.ndarray]]:
        # the alias check reads the tensors below a candidate, most of which MNN fused away: recorded together
        self.store.ensure(names)
        for name in names:
            yield self.store.load(name) if name in self.store else None

    def prefetch(self, indices: list[int]) -> None:
        """Files for every tensor a verification of these nodes can feed or judge, in one ONNX Runtime child."""
        nodes = self.graph.nodes
        self.store.ensure([t for i in indices for t in (*nodes[i].inputs, *nodes[i].outputs)])


def effective_hint(hint: str, runtime: dict, flags: ConvertFlags) -> str:
    low = (hint == "low" or flags.fp16 or flags.weight_quant_bits or getattr(flags, "quantize", None)
           or str(runtime.get("precision", "high")) in ("low", "lowBF16"))
    return "low" if low else "high"


def mnn_feeds(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The 32-bit arrays MNN takes: its const() reads float64 and int64 buffers as garbage."""
    cast = {}
    for name, array in feeds.items():
        array = np.asarray(array)
        if array.dtype.kind == "f":
            array = array.astype(np.float32)
        elif array.dtype.kind in "iu" and array.dtype != np.uint8:
            array = array.astype(np.int32)
        cast[name] = array
    return cast


def observed_and_trusted(run: Run) -> tuple[set[str], set[str]]:
    observed = {n for n, m in run.profile.metrics.items() if m.get("status") != "unavailable"}
    trusted = {n for n in observed if structurally_trusted(n, run.graph, run.profile.graph)}
    return observed, trusted


def profile_rows(run: Run, trusted: set[str]) -> tuple:
    metrics = run.profile.metrics
    rows = [n for n in blame.ordered(run.graph, trusted)]
    divergent = [n for n in rows if diverges(metrics[n], run.hint)]
    worst = sorted(rows, key=lambda n: -blame.error_of(metrics[n]))
    keep = set(divergent[: run.options.profile_rows // 2])
    keep |= set(worst[: run.options.profile_rows - len(keep)])
    return tuple((n, run.graph.order(n), blame.error_of(metrics[n]), float(metrics[n]["rel"]))
                 for n in rows if n in keep)


def layout_finding(run: Run) -> Optional[Localisation]:
    for name in run.graph.outputs:
        metric = run.profile.metrics.get(name)
        if not metric or name not in run.profile.dumps or name not in run.store:
            continue
        detail = diagnose.layout_of(np.load(run.profile.dumps[name]), run.store.load(name), run.hint)
        if detail:
            node = run.graph.nodes[run.graph.producer[name]] if name in run.graph.producer else None
            return Localisation("blamed", node.name if node else "", node.op_type if node else "", name,
                                metric.get("rel"), metric.get("cos"), 0.0, kind="output-layout",
                                suggestion=diagnose.suggest("output-layout", tensor=name, detail=detail))
    return None


def failing_outputs(run: Run, tolerance: Optional[dict]) -> list[str]:
    """Graph outputs the case's own tolerance fails, judged as the run judges them (final outputs only: small)."""
    if not tolerance:
        return []
    return [o for o in run.graph.outputs if o in run.profile.dumps and o in run.store
            and not within(np.load(run.profile.dumps[o]), run.store.load(o), tolerance)]


def below_criterion(run: Run, failing: list[str]) -> Localisation:
    """The case fails, yet no observed tensor crosses even the case's cosine bound: small error everywhere."""
    tensor = failing[0] if failing else (run.graph.outputs[0] if run.graph.outputs else "")
    metric = run.profile.metrics.get(tensor, {})
    return Localisation("drift", "", "", tensor, metric.get("rel"), metric.get("cos"), None,
                        kind="accumulated-drift",
                        suggestion=f"{tensor} fails the case's tolerance but no op's error stands out: the "
                                   "tolerance is tighter than this precision delivers; loosen it or convert "
                                   "without fp16/quantized weights.")


def drift_finding(run: Run, finding: blame.Finding) -> Localisation:
    first = finding.divergent[0]
    metric = run.profile.metrics[first]
    node = run.graph.nodes[run.graph.producer[first]] if first in run.graph.producer else None
    peak = diagnose.overflow_peak([run.store.maxabs(n) for n in finding.divergent[:3]])
    fp16 = diagnose.fp16_path(run.runtime, run.flags.as_dict())
    kind = "fp16-overflow" if fp16 and peak else "accumulated-drift"
    return Localisation("drift", node.name if node else "", node.op_type if node else "", first,
                        metric.get("rel"), metric.get("cos"), None, kind=kind,
                        suggestion=diagnose.suggest(kind, first=first, tensor=first, peak=peak or 0.0))


def verifier_for(run: Run) -> Verifier:
    return Verifier(run.model, run.graph, value_types(run.model), run.store, run.flags, run.converter,
                    run.runtime, run.hint, run.workdir / "verify", run.limits, budget=run.options.trials)


def verified_blame(run: Run, finding: blame.Finding,
                   observed: set[str]) -> tuple[blame.Candidate, Verification]:
    """The first candidate whose segment reproduces on its own (extended forward if it does not); else the
    first candidate, unverified."""
    verifier = verifier_for(run)
    first: Optional[tuple[blame.Candidate, Verification]] = None
    for candidate in finding.candidates[: run.options.candidates]:
        indices = blame.segment(run.graph, candidate)
        longer, later = blame.extended(run.graph, candidate, observed)
        run.prefetch(indices + longer)
        result = verify(verifier, indices, candidate.tensor)
        if result.verified == "no" and later:
            result = verify(verifier, longer, later)
        first = first or (candidate, result)
        if result.verified != "no":
            return candidate, result
    assert first is not None
    return first


def blame_finding(run: Run, finding: blame.Finding, observed: set[str], case: Case,
                  repro_dir: Optional[Path]) -> Localisation:
    candidate, result = verified_blame(run, finding, observed)
    names = run.graph.nodes
    node = names[run.graph.producer[candidate.tensor]] if candidate.tensor in run.graph.producer else None
    shortest = [names[i] for i in result.shortest]
    segment_tensors = [t for i in result.segment for t in names[i].outputs]
    peak = diagnose.overflow_peak([run.store.maxabs(t) for t in segment_tensors if t in run.store])
    kind = diagnose.kind_of_blame(result.verified, result.shape_dependent, len(shortest), candidate.inherited,
                                  peak, diagnose.fp16_path(run.runtime, run.flags.as_dict()))
    focus = shortest[-1] if shortest else node
    op = f"{focus.op_type} (node {focus.name})" if focus else candidate.tensor
    wording = "amplified-drift" if kind == "accumulated-drift" else kind
    suggestion = diagnose.suggest(wording, op=op, ops=" → ".join(n.op_type for n in shortest), first=candidate.tensor,
                                  tensor=candidate.tensor, peak=peak or 0.0)
    repro = ""
    if repro_dir is not None and result.trial is not None:
        repro = str(write_repro(run, result, case, repro_dir, op, kind))
    metric = run.profile.metrics[candidate.tensor]
    # An op whose error jumps but which is right on exact inputs is where drift became visible, not a fault
    status = "drift" if kind == "accumulated-drift" else "blamed"
    return Localisation(status, node.name if node else "", node.op_type if node else "", candidate.tensor,
                        metric.get("rel"), metric.get("cos"), candidate.inherited,
                        tuple(names[i].name for i in result.segment), result.verified,
                        tuple(n.name for n in shortest), kind, suggestion, repro)


def write_repro(run: Run, result: Verification, case: Case, folder: Path, op: str, kind: str) -> Path:
    from mnn_parity.localisation import repro

    trial = result.trial
    tolerance = case.tolerance or DEFAULT_TOLERANCE["high" if run.hint == "high" else "low"]
    facts = repro.ReproFacts(case.model, case.case, case.backend, dict(run.runtime), run.flags.as_dict(),
                             dict(tolerance), run.converter.mnn_version, version("onnxruntime"), op,
                             trial.cut.nodes, trial.metric, result.verified, kind)
    feeds = {n: run.store.load(n) for n in trial.cut.inputs}
    return repro.write(folder, trial.cut.path, feeds, facts, " ".join(converter_args(run.flags)))


def localise(onnx_path: Path, mnn_path: Path, feeds: dict[str, np.ndarray], runtime: dict,
             convert_flags: Union[dict, ConvertFlags, None], tolerance_hint: str, workdir: Path,
             limits: Limits = Limits(), *, repro_dir: Optional[Path] = None, case: Case = Case(),
             converter: Optional[ConverterEnv] = None, options: LocaliseOptions = LocaliseOptions()) -> Localisation:
    """Where MNN first goes wrong on this case: never raises for an engine's failure (status "error")."""
    start = time.monotonic()
    Path(workdir).mkdir(parents=True, exist_ok=True)
    # Its own folder inside `workdir`, removed at the end: the reference store alone reached 1.8 GB on a detector
    scratch = Path(tempfile.mkdtemp(prefix="localise-", dir=workdir))
    try:
        found = _localise(Path(onnx_path), Path(mnn_path), feeds, dict(runtime), convert_flags, tolerance_hint,
                          scratch, limits, repro_dir, case, converter, options)
    except ChildFailed as error:
        found = Localisation("error", suggestion=f"localisation could not run an engine: {error}")
    except Exception as error:  # advisory: a model localisation cannot read must not fail the run that asked
        found = Localisation("error", suggestion=f"localisation failed: {type(error).__name__}: {error}")
    finally:
        if not options.keep_workdir:
            shutil.rmtree(scratch, ignore_errors=True)
    return _with_seconds(found, time.monotonic() - start)


def _with_seconds(found: Localisation, seconds: float) -> Localisation:
    from dataclasses import replace

    return replace(found, seconds=seconds)


def _localise(onnx_path: Path, mnn_path: Path, feeds: dict, runtime: dict, convert_flags, tolerance_hint: str,
              workdir: Path, limits: Limits, repro_dir: Optional[Path], case: Case,
              converter: Optional[ConverterEnv], options: LocaliseOptions) -> Localisation:
    from dataclasses import replace

    flags = convert_flags if isinstance(convert_flags, ConvertFlags) else ConvertFlags.from_manifest(convert_flags)
    converter = converter or ConverterEnv(Path(sys.executable), version("MNN"))
    model = onnx.load(str(onnx_path))
    graph = OnnxGraph(model)
    if any(name not in feeds for name in graph.inputs):
        return Localisation("skipped", suggestion="the feeds do not cover every graph input")
    workdir.mkdir(parents=True, exist_ok=True)
    ort_feeds, mnn_path_feeds = workdir / "feeds-ort.npz", workdir / "feeds-mnn.npz"
    np.savez(ort_feeds, **{n: np.asarray(feeds[n]) for n in graph.inputs})
    np.savez(mnn_path_feeds, **mnn_feeds({n: feeds[n] for n in graph.inputs}))
    names = graph.observable()
    hint = effective_hint(tolerance_hint, runtime, flags)
    request = MnnRequest(mnn_path, converter.python, mnn_path_feeds, list(graph.inputs), list(graph.outputs),
                         runtime, options.chunk, options.chunk_mb)
    store, profile = record_and_profile(onnx_path, ort_feeds, names, workdir, request, limits,
                                        dump=list(graph.outputs), reference_chunk=options.reference_chunk,
                                        budget_mb=options.chunk_mb)
    missing = [o for o in graph.outputs if profile.metrics.get(o, {"status": "unavailable"})["status"] == "unavailable"]
    if missing:
        detail = profile.metrics.get(missing[0], {}).get("detail", "")
        raise ChildFailed(profile.problem or f"MNN gave no final outputs ({detail}); MNN said: {profile.log}")
    run = Run(onnx_path, mnn_path, model, graph, store, profile, hint, runtime, flags, converter, workdir, limits,
              options, mnn_path_feeds)
    observed, trusted = observed_and_trusted(run)
    rows = profile_rows(run, trusted)
    layout = layout_finding(run)
    if layout is not None:
        return replace(layout, profile=rows)
    if not any(diverges(profile.metrics[o], hint) for o in graph.outputs):
        failing = failing_outputs(run, case.tolerance)
        if not failing:
            return Localisation("none", suggestion="no output diverges beyond the localisation criterion "
                                f"(max rel > 1e-2 and cosine below the {hint}-precision bound)", profile=rows)
        # Only the case's own, tighter tolerance fails: look for a jump at that cosine bound instead
        run.hint = float(case.tolerance.get("cosine_min", 0.0)) or hint
    finding = blame.find(graph, profile.metrics, trusted, run.hint, run.mnn_value, run.references)
    rows = profile_rows(run, trusted - set(finding.aliases))
    if not finding.candidates:
        found = drift_finding(run, finding) if finding.divergent else below_criterion(run, failing_outputs(
            run, case.tolerance or DEFAULT_TOLERANCE[hint]))
        return replace(found, profile=rows)
    return replace(blame_finding(run, finding, observed, case, repro_dir), profile=rows)
