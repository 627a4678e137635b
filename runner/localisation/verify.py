"""Verification: does the blamed segment, cut out and converted with the case's flags, go wrong on its own?

Each trial converts the cut with the case's converter flags (into a scratch cache), runs it in an MNN worker with
the case's runtime settings on the values ONNX Runtime recorded for its inputs, and judges the result against the
recorded value with the same criterion as the one-pass profile. Symbolic dims first: a fault can depend on shapes
left unknown at conversion time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import onnx

from mnn_parity.conversion.mnnconvert import ConverterEnv, convert
from mnn_parity.engines.host import EngineCrash, EngineError, EngineProcess
from mnn_parity.engines.protocol import EngineSpec
from mnn_parity.localisation.compare import Criterion, diverges, measure
from mnn_parity.localisation.extract import Cut, cut, free_inputs, has_symbolic
from mnn_parity.localisation.graph import OnnxGraph
from mnn_parity.localisation.intermediates import ReferenceStore
from mnn_parity.manifest.spec import ConvertFlags, Limits


@dataclass(frozen=True)
class Trial:
    cut: Cut
    reproduces: bool
    metric: dict
    note: str = ""


@dataclass(frozen=True)
class Verification:
    verified: str                         # symbolic | concrete | no
    segment: tuple[int, ...]              # node indices verified (possibly extended forward)
    tensor: str                           # the tensor judged at the segment's end
    shortest: tuple[int, ...] = ()
    trial: Optional[Trial] = None         # the shortest reproducing trial: the reproducer
    shape_dependent: bool = False
    trials: int = 0


@dataclass
class Verifier:
    """What every trial shares: the model, its recorded values, the case's flags and runtime, a budget."""
    model: onnx.ModelProto
    graph: OnnxGraph
    types: dict
    store: ReferenceStore
    flags: ConvertFlags
    converter: ConverterEnv
    runtime: dict
    hint: Criterion
    workdir: Path
    limits: Limits
    budget: int = 12
    used: int = field(default=0)

    def trial(self, indices: list[int], output: str, symbolic: bool) -> Optional[Trial]:
        if self.used >= self.budget:
            return None
        self.used += 1
        folder = self.workdir / f"trial-{self.used}"
        shapes = {n: tuple(self.store.index[n]["shape"]) for n in free_inputs(self.graph, indices) if n in self.store}
        if len(shapes) < len(free_inputs(self.graph, indices)) or output not in self.store:
            return None
        dtypes = {n: onnx.helper.np_dtype_to_tensor_dtype(np.dtype(self.store.index[n]["dtype"]))
                  for n in [*shapes, output]}
        made = cut(self.model, self.graph, self.types, indices, [output], shapes, dtypes, folder / "segment.onnx",
                   symbolic)
        conversion = convert(made.path, self.flags, self.converter, self.workdir / "convert-cache", self.limits)
        if not conversion.ok:
            return Trial(made, False, {}, f"conversion failed: {conversion.reason}")
        feeds = {n: self.store.load(n) for n in made.inputs}
        spec = EngineSpec("mnn", conversion.mnn_model, made.inputs, made.outputs, dict(self.runtime),
                          self.converter.python)
        try:
            with EngineProcess(spec, self.limits) as engine:
                outputs, _ = engine.infer(feeds)
        except (EngineCrash, EngineError) as error:
            # a crash of the cut alone reproduces a failure as surely as a wrong value
            return Trial(made, True, {"status": "crash", "err": float("inf"), "rel": float("inf"), "cos": 0.0,
                                      "detail": str(error)}, str(error))
        metric = measure(outputs[output], self.store.load(output))
        return Trial(made, diverges(metric, self.hint), metric)

    def modes(self, indices: list[int]) -> list[bool]:
        return [True, False] if has_symbolic(self.graph, indices, self.types) else [False]

    def attempt(self, indices: list[int], output: str) -> tuple[str, Optional[Trial], bool]:
        """(verified, reproducing trial, shape_dependent) for one segment, symbolic dims first."""
        results = {}
        for symbolic in self.modes(indices):
            found = self.trial(indices, output, symbolic)
            results[symbolic] = found
            if found is None:
                break
        symbolic_hit = bool(results.get(True) and results[True].reproduces)
        concrete_hit = bool(results.get(False) and results[False].reproduces)
        if symbolic_hit:
            return "symbolic", results[True], not concrete_hit and False in results
        if concrete_hit:
            return "concrete", results[False], False
        return "no", None, False

    def shrink(self, indices: list[int], output: str, symbolic: bool) -> tuple[list[int], Optional[Trial]]:
        """The shortest run of the segment ending at the judged tensor that still reproduces, then the shortest
        prefix (the fault may sit in a vanished tensor before the judged one)."""
        for start in range(len(indices) - 1, 0, -1):
            tail = indices[start:]
            found = self.trial(tail, output, symbolic)
            if found is not None and found.reproduces:
                return tail, found
        for end in range(1, len(indices)):
            head = indices[:end]
            last = next((t for t in self.graph.nodes[head[-1]].outputs if t in self.store), "")
            found = self.trial(head, last, symbolic) if last else None
            if found is not None and found.reproduces:
                return head, found
        return indices, None


def verify(verifier: Verifier, indices: list[int], tensor: str) -> Verification:
    verified, found, shape_dependent = verifier.attempt(indices, tensor)
    if found is None:
        return Verification("no", tuple(indices), tensor, trials=verifier.used)
    shortest, smaller = (verifier.shrink(indices, tensor, found.cut.symbolic) if len(indices) > 1
                         else (indices, None))
    return Verification(verified, tuple(indices), tensor, tuple(shortest), smaller or found, shape_dependent,
                        verifier.used)
