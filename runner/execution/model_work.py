"""One work item end to end: convert the model, run its cases through the reference and every MNN backend, judge
each case, and hand back immutable `CaseRun`s. Nothing here writes reports or goldens.

Within a model, one reference worker and one worker per backend load the model once and run every case; a worker
that crashes is replaced for the next case. Workers come from a pool shared by the executor, so the next model
with the same engine configuration reuses a running process.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional, Union

import numpy as np

from mnn_parity.comparison import compare_output, judge_case
from mnn_parity.conversion import cache
from mnn_parity.conversion.mnnconvert import Conversion, ConverterEnv, convert
from mnn_parity.conversion.quantize import quantize
from mnn_parity.engines.case_runner import DEFAULT_POLICY, Attempt, PooledRunner, unstable_note, wants_rerun
from mnn_parity.engines.host import EngineCrash, EngineError, EngineProcess, EngineSpec, WorkerPool
from mnn_parity.execution import label_flips, localise_step
from mnn_parity.execution.plan import WorkItem, now
from mnn_parity.hashing import array_sha256
from mnn_parity.inputs.calibration import calibration_feeds
from mnn_parity.inputs.cases import Case, build_feeds, constant_feeds, list_cases, shape_problem
from mnn_parity.inputs.preprocess import PreprocessError, degenerate_reason
from mnn_parity.manifest.spec import BackendSpec, ModelSpec
from mnn_parity.modelinfo import onnx_signature
from mnn_parity.paths import external_data_problems
from mnn_parity.records import CaseResult, CaseRun, FailureClass, OutputComparison, Verdict

Progress = Callable[[CaseResult], None]
Phase = Callable[[str, str], None]          # (model, what it is doing now), for a progress display
Feeds = dict[str, np.ndarray]
# A reference result: outputs with latency, or the verdict and reason why there are none.
Reference = Union[tuple[dict, Optional[float]], tuple[Verdict, str]]


@dataclass(frozen=True)
class Judged:
    """One attempt of MNN at a case, judged; `unstable` when it replaced a first attempt that was judged otherwise."""
    attempt: Attempt
    verdict: Verdict
    reason: str
    failure_class: Optional[FailureClass] = None
    comparisons: tuple[OutputComparison, ...] = ()
    unstable: str = ""


@dataclass(frozen=True)
class ModelOutcome:
    """What one work item gives back: its judged runs, setup errors (exit status 2) and the versions it saw."""
    runs: tuple[CaseRun, ...]
    setup_errors: tuple[str, ...] = ()
    onnxruntime_version: str = ""


def execute(item: WorkItem, workers: WorkerPool, progress: Progress = lambda result: None,
            phase: Phase = lambda model, what: None) -> ModelOutcome:
    return ModelWork(item, workers, progress, phase).run_safely()


class ModelWork:
    """The work for one model; methods in the order they happen."""

    def __init__(self, item: WorkItem, workers: WorkerPool, progress: Progress, phase: Phase):
        self.item, self.suite, self.model, self.options = item, item.suite, item.model, item.options
        self.backends = item.backends
        self.workers, self.progress = workers, progress
        self.phase = lambda what: phase(item.model.name, what)
        self.runs: list[CaseRun] = []
        self.setup_errors: list[str] = []
        self.onnxruntime_version = ""

    def _outcome(self) -> ModelOutcome:
        return ModelOutcome(tuple(self.runs), tuple(self.setup_errors), self.onnxruntime_version)

    # -- results
    def _emit(self, case: str, backend: BackendSpec, verdict: Verdict, reason: str = "",
              failure_class: Optional[FailureClass] = None, **extra) -> CaseRun:
        result = CaseResult(self.suite.name, self.model.name, case, backend.name, verdict, failure_class, reason,
                            outputs=tuple(extra.pop("outputs", ())), warnings=tuple(extra.pop("warnings", ())),
                            latency_ms=extra.pop("latency_ms", {}), localisation=extra.pop("localisation", None),
                            unstable=extra.pop("unstable", ""), messages=tuple(extra.pop("messages", ())))
        result = result.expecting(self.model.expects_failure_on(backend.name))
        run = CaseRun(result, **extra)
        self.runs.append(run)
        self.progress(result)
        return run

    def _fail_all(self, cases: list[str], verdict: Verdict, reason: str) -> None:
        """Give every case not yet judged, on every backend, this verdict."""
        judged = {(run.result.case, run.result.backend) for run in self.runs}
        for backend in self.backends:
            for case in cases or ["<model>"]:
                if (case, backend.name) not in judged:
                    self._emit(case, backend, verdict, reason)

    # -- the flow
    def run_safely(self) -> ModelOutcome:
        """A fault in the runner itself fails this model's remaining cases, never the run of the other models."""
        try:
            return self.run()
        except Exception as error:   # a bug of ours, or a model file that breaks a library: keep what was judged
            reason = f"internal error while running this model: {type(error).__name__}: {error}"
            self.setup_errors.append(f"{self.model.name}: {reason}")
            self._fail_all([case.name for case in list_cases(self.model, self.suite.root)], Verdict.ERROR, reason)
            return self._outcome()

    def run(self) -> ModelOutcome:
        if not self.backends:
            return self._outcome()
        cases = [c for c in list_cases(self.model, self.suite.root)
                 if self.options.cases is None or c.name in self.options.cases]
        try:
            constants = constant_feeds(self.model)
        except PreprocessError as error:
            self.setup_errors.append(f"{self.model.name}: {error}")
            self._fail_all([c.name for c in cases], Verdict.ERROR, f"preprocessing: {error}")
            return self._outcome()
        escapes = external_data_problems(self.model.onnx, self.suite.root)
        if escapes:   # validated before, but a file can change between validate and run: refuse, never convert
            self._fail_all([c.name for c in cases], Verdict.ERROR, "; ".join(escapes))
            self.setup_errors.append(f"{self.model.name}: " + "; ".join(escapes))
            return self._outcome()
        self.phase("converting")
        env = ConverterEnv(self.options.mnn_python, self.options.mnn_version)
        conversion = convert(self.model.onnx, self.model.convert, env, self.options.cache_dir / cache.CONVERTED,
                             self.suite.limits, tool=converter_tool(self.options.converter))
        step = "conversion"
        if conversion.ok and self.model.convert.quantize is not None:
            self.phase("quantizing")
            conversion, step = self._quantize(conversion, env), "quantization"
        if not conversion.ok:   # a converter or quantizer killed by a signal, a timeout, the memory cap: CRASH
            self._fail_all([c.name for c in cases], Verdict.CRASH if conversion.crashed else Verdict.ERROR,
                           f"{step} failed: {conversion.reason}")
            return self._outcome()
        onnx_inputs, onnx_outputs = onnx_signature(self.model.onnx)
        output_names = [n for n in onnx_outputs if not (n in self.model.outputs and self.model.outputs[n].skip)]

        prepared = self._prepare(cases, constants, onnx_inputs)
        self.phase("running the reference")
        references = self._run_reference(prepared, output_names)
        provenance = self._provenance(conversion)
        for backend in self.backends:
            self.phase(f"running {backend.name}")
            self._run_backend(backend, conversion, prepared, references, output_names, onnx_inputs, provenance)
        return self._outcome()

    def _quantize(self, fp32: Conversion, env: ConverterEnv) -> Conversion:
        """MNN's int8 quantizer after the converter, calibrated on tensors made as the cases' feeds are."""
        try:
            samples = calibration_feeds(self.model, self.suite.root, onnx_signature(self.model.onnx)[0])
        except PreprocessError as error:   # bad calibration data, like a bad case: a setup error
            self.setup_errors.append(f"{self.model.name}: calibration: {error}")
            return Conversion(False, None, "", f"calibration: {error}", onnx_sha256=fp32.onnx_sha256)
        return quantize(fp32, self.model.convert.quantize, samples, env, self.options.cache_dir / cache.QUANTIZED,
                        self.suite.limits)

    def _prepare(self, cases: list[Case], constants: dict, onnx_inputs: dict) -> list[tuple[Case, object]]:
        """Each case with its feeds, or with the reason it has none (bad data: a setup error, exit status 2)."""
        prepared = []
        streamed = (self.model.stream or {}).get("input")
        for case in cases:
            try:
                feeds = build_feeds(self.model, case, constants)
                problems = [p for name, feed in feeds.items()
                            if (p := shape_problem(name, feed, onnx_inputs.get(name), name == streamed))]
                if problems:
                    raise PreprocessError("; ".join(problems), file=str(case.source.relative_to(self.suite.root)))
                prepared.append((case, feeds))
            except PreprocessError as error:
                self.setup_errors.append(f"{self.model.name}/{case.name}: {error}")
                prepared.append((case, f"preprocessing: {error}"))
        return prepared

    def _run_reference(self, prepared, output_names) -> dict[str, Reference]:
        """Reference outputs per case, or the verdict and reason there are none: a timeout or a signal is a CRASH
        of the reference as it is of MNN; a refused input an ERROR."""
        results: dict[str, Reference] = {}
        spec = EngineSpec("onnxruntime", self.model.onnx, (), tuple(output_names),
                          {k: v for k, v in self.suite.reference.items() if k != "engine"}, label=self.model.name)
        worker: Optional[EngineProcess] = None
        for case, feeds in prepared:
            if isinstance(feeds, str):
                results[case.name] = (Verdict.ERROR, feeds)
                continue
            try:
                worker = worker if worker and worker.alive else self.workers.take(spec)
                self.onnxruntime_version = worker.version or self.onnxruntime_version
                results[case.name] = worker.infer(feeds, self.model.stream, self.suite.latency.warmup,
                                                  self.suite.latency.repeat)
            except EngineCrash as crash:
                results[case.name] = (Verdict.CRASH, f"reference (ONNX Runtime) {crash}")
            except EngineError as error:
                results[case.name] = (Verdict.ERROR, f"reference (ONNX Runtime) failed: {error}")
        if worker:
            self.workers.give_back(worker)
        return results

    def _run_backend(self, backend, conversion: Conversion, prepared, references, output_names, onnx_inputs,
                     provenance) -> None:
        spec = EngineSpec("mnn", conversion.mnn_model, tuple(onnx_inputs), tuple(output_names), backend.runtime,
                          python=self.options.mnn_python, label=self.model.name)
        runner = PooledRunner(self.workers, spec, lambda info: input_shape_problem(onnx_inputs, info))
        rerun = getattr(self.options, "rerun", DEFAULT_POLICY)   # a RunOptions field once the CLI offers it
        try:
            for case, feeds in prepared:
                reference = references[case.name]
                if isinstance(reference[0], Verdict):
                    self._emit(case.name, backend, *reference)
                    continue
                judged = self._judge(runner.run(feeds, self.model.stream, self.suite.latency.warmup,
                                                self.suite.latency.repeat), reference, output_names, backend)
                if wants_rerun(judged.verdict, judged.attempt, rerun):   # MNN keeps state across models
                    again = self._judge(runner.run(feeds, self.model.stream, self.suite.latency.warmup,
                                                   self.suite.latency.repeat, fresh=True),
                                        reference, output_names, backend)
                    if again.verdict is not judged.verdict:
                        judged = replace(again, unstable=unstable_note(judged.verdict.value, judged.reason,
                                                                       judged.attempt, again.verdict.value))
                if label_flips.wanted(self.model, judged.comparisons):   # labels that differ, logits named
                    self.phase(f"fetching logits of {case.name} on {backend.name}")
                    judged = label_flips.relabel(self.item, backend, conversion, feeds, judged, reference[0])
                self._emit_judged(case.name, backend, judged, reference, feeds, conversion, provenance)
        finally:
            runner.close()

    def _judge(self, attempt: Attempt, reference, output_names, backend) -> "Judged":
        """One attempt's verdict; localisation and records come after a rerun may have replaced it."""
        if attempt.problem:
            return Judged(attempt, Verdict.ERROR, attempt.problem, FailureClass.SHAPE_MISMATCH)
        if attempt.crash:
            return Judged(attempt, Verdict.CRASH, f"MNN {attempt.crash}")
        if attempt.error:
            return Judged(attempt, Verdict.ERROR, f"MNN: {attempt.error}")
        ref_outputs, _ = reference
        comparisons = tuple(self._compare(name, ref_outputs[name], attempt.outputs.get(name), backend.name)
                            for name in output_names)
        failure_class, reason = judge_case(comparisons)
        return Judged(attempt, Verdict.PASS if failure_class is None else Verdict.FAIL, reason, failure_class,
                      comparisons)

    def _emit_judged(self, case: str, backend, judged: "Judged", reference, feeds, conversion: Conversion,
                     provenance) -> None:
        attempt = judged.attempt
        said = attempt.messages if judged.verdict.is_bad else ()
        if attempt.outputs is None:
            self._emit(case, backend, judged.verdict, judged.reason, judged.failure_class,
                       unstable=judged.unstable, messages=said)
            return
        ref_outputs, ref_latency = reference
        latency = {k: v for k, v in (("reference", ref_latency), ("mnn", attempt.latency_ms)) if v is not None}
        located = None
        if localise_step.wanted(self.options.localise, judged.verdict, self.model.expects_failure_on(backend.name)):
            self.phase(f"localising {case} on {backend.name}")
            located = localise_step.localise_case(self.item, case, backend, conversion, feeds,
                                                  list(judged.comparisons), ref_outputs, attempt.outputs)
        case_provenance = {**provenance, "runtime": backend.runtime,
                           "input_sha256": {k: array_sha256(v) for k, v in feeds.items()}}
        self._emit(case, backend, judged.verdict, judged.reason, judged.failure_class, outputs=judged.comparisons,
                   warnings=input_warnings(feeds, self.model), latency_ms=latency, ref_outputs=ref_outputs,
                   mnn_outputs=attempt.outputs, provenance=case_provenance, localisation=located,
                   unstable=judged.unstable, messages=said)

    def _compare(self, name: str, ref: np.ndarray, mnn: Optional[np.ndarray], backend: str) -> OutputComparison:
        tolerance = self.suite.tolerance_for(self.model, name, backend)
        spec = self.model.outputs.get(name)
        topk = spec.topk if spec else None
        if mnn is None:   # MNN's optimizer removed or renamed it: bound by name, so it is missing, not swapped
            return OutputComparison(name, tuple(ref.shape), (), str(ref.dtype), "", tolerance,
                                    failure_class=FailureClass.SHAPE_MISMATCH,
                                    reason="MNN returned no output of this name", missing=True)
        return compare_output(name, ref, mnn, tolerance, topk)

    def _provenance(self, conversion: Conversion) -> dict:
        return {
            "mnn_version": self.options.mnn_version,
            "onnxruntime_version": self.onnxruntime_version or self.item.environment.get("onnxruntime_version", ""),
            "convert_flags": self.model.convert.as_dict(),
            "onnx_sha256": conversion.onnx_sha256,
            "mnn_model_sha256": conversion.mnn_sha256,
            # the size a team ships: the precision ladder (reports/ladder.py) sets it beside accuracy and speed
            "mnn_model_bytes": conversion.mnn_model.stat().st_size if conversion.mnn_model else None,
            "preprocess": {name: list(spec.preprocess) for name, spec in self.model.inputs.items()},
            "reference_runtime": {k: v for k, v in self.suite.reference.items()},
            "created": now(),
        }


def converter_tool(kind: str):
    """The converter child a run asked for (`RunOptions.converter`): None is a fresh child per conversion."""
    if kind == "fresh":
        return None
    from mnn_parity.conversion import batch

    return batch.shared().run_tool


def input_shape_problem(onnx_inputs: dict[str, tuple], mnn_inputs: dict[str, dict]) -> Optional[str]:
    """MNN's view of an input against ONNX's: a quantized model's (1,3,416,416) once came out (3,1,416,416)."""
    for name, onnx_shape in onnx_inputs.items():
        info = mnn_inputs.get(name)
        if info is None:
            return f"the converted model has no input {name!r} (it has {sorted(mnn_inputs)})"
        mnn_shape = info.get("shape") or []
        if not onnx_shape or not mnn_shape or any(d is None for d in onnx_shape) or any(d <= 0 for d in mnn_shape):
            continue   # dynamic on either side: nothing to hold MNN to
        if len(mnn_shape) == len(onnx_shape) and list(mnn_shape) != list(onnx_shape):
            return f"input {name!r}: MNN's shape {list(mnn_shape)} differs from ONNX's {list(onnx_shape)}"
    return None


def input_warnings(feeds: dict[str, np.ndarray], model: ModelSpec) -> list[str]:
    warnings = []
    for name, feed in feeds.items():
        spec = model.inputs.get(name)
        if spec is not None and spec.is_constant:
            continue   # a zero state is the point of a state input, not a bad test input
        reason = degenerate_reason(feed)
        if reason:
            warnings.append(f"input {name!r}: {reason} — not a meaningful test input")
    return warnings

