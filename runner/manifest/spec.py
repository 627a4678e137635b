"""The typed suite: what a manifest says, as frozen dataclasses. Loading and validation make these
(`manifest.load`); every later stage reads them and imports nothing upstream of this module but tolerances.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from mnn_parity.manifest.tolerance import Tolerance, cascade

CONSTANT_STEPS = ("zeros", "value")


@dataclass(frozen=True)
class Limits:
    """Per child process: each engine call and each conversion."""
    timeout_s: float = 300.0
    memory_mb: int = 8192


@dataclass(frozen=True)
class TopK:
    k: int = 1
    axis: int = -1


@dataclass(frozen=True)
class Logits:
    """An integer output's scores: the graph tensor (usually the input of the final ArgMax) whose argmax along
    `axis` gives the labels. A failing label output is re-judged on it (`comparison/labels.py`)."""
    tensor: str
    axis: int = 1


@dataclass(frozen=True)
class QuantizeSpec:
    """The manifest's `convert.quantize`: MNN's own int8 quantizer run on the converted model
    (`conversion.quantize`), calibrated on preprocessed samples (`inputs.calibration`)."""
    method: str = "KL"                                   # feature (activation) method: KL | ADMM | EMA
    weights: str = "MAX_ABS"                             # weight method: MAX_ABS | ADMM
    bits: int = 8
    files: tuple[tuple[str, tuple[str, ...]], ...] = ()  # calibration globs per input; () = the model's cases
    max_samples: Optional[int] = None
    skip_ops: tuple[str, ...] = ()

    @property
    def samples(self) -> int:
        # MNN's ADMM in sequence mode calibrates on its last sample only: more would be read and ignored.
        return self.max_samples or (1 if self.method == "ADMM" else 16)

    @classmethod
    def from_manifest(cls, quantize: Optional[Mapping]) -> Optional["QuantizeSpec"]:
        if quantize is None:
            return None
        calibration = dict(quantize.get("calibration") or {})
        files = tuple((name, (globs,) if isinstance(globs, str) else tuple(globs))
                      for name, globs in sorted(dict(calibration.get("files") or {}).items()))
        return cls(method=quantize.get("method", "KL"), weights=quantize.get("weights", "MAX_ABS"),
                   bits=int(quantize.get("bits", 8)), files=files, max_samples=calibration.get("max_samples"),
                   skip_ops=tuple(quantize.get("skip_ops") or ()))

    def as_dict(self) -> dict:
        """The manifest's shape, with the sample count in effect: the cache key and the provenance."""
        calibration: dict = {"max_samples": self.samples}
        if self.files:
            calibration["files"] = {name: list(globs) for name, globs in self.files}
        return {"method": self.method, "weights": self.weights, "bits": self.bits, "calibration": calibration,
                "skip_ops": list(self.skip_ops)}


@dataclass(frozen=True)
class ConvertFlags:
    """The manifest's `convert:`; `conversion.mnnconvert.converter_args` maps it to the converter's flags."""
    fp16: bool = False
    weight_quant_bits: int = 0
    weight_quant_asymmetric: bool = False
    optimize_level: int = 1
    keep_input_format: bool = True
    extra_args: tuple[str, ...] = ()
    quantize: Optional[QuantizeSpec] = None

    @classmethod
    def from_manifest(cls, convert: Optional[Mapping]) -> "ConvertFlags":
        convert = dict(convert or {})
        convert["extra_args"] = tuple(convert.get("extra_args", ()))
        convert["quantize"] = QuantizeSpec.from_manifest(convert.get("quantize"))
        return cls(**convert)

    def as_dict(self) -> dict:
        flags = {"fp16": self.fp16, "weight_quant_bits": self.weight_quant_bits,
                 "weight_quant_asymmetric": self.weight_quant_asymmetric,
                 "optimize_level": self.optimize_level, "keep_input_format": self.keep_input_format,
                 "extra_args": list(self.extra_args)}
        if self.quantize is not None:   # absent when unset: goldens blessed before quantization see no change
            flags["quantize"] = self.quantize.as_dict()
        return flags


@dataclass(frozen=True)
class InputSpec:
    name: str
    files: Optional[tuple[str, ...]] = None     # globs; one case per file they match
    preprocess: tuple[dict, ...] = ()
    shape: Optional[tuple[Optional[int], ...]] = None

    @property
    def is_constant(self) -> bool:
        return self.files is None and bool(self.preprocess) and next(iter(self.preprocess[0])) in CONSTANT_STEPS


@dataclass(frozen=True)
class OutputSpec:
    name: str
    tolerance: dict = field(default_factory=dict)
    topk: Optional[TopK] = None
    skip: bool = False
    logits: Optional[Logits] = None


@dataclass(frozen=True)
class BackendSpec:
    name: str
    runtime: dict                      # every runtime parameter, explicit: device, precision, threads, memory, power
    tolerance: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LatencySpec:
    warmup: int = 1
    repeat: int = 3
    slowdown_max: float = 1.5


@dataclass(frozen=True)
class ModelSpec:
    name: str
    onnx: Path                         # absolute
    convert: ConvertFlags
    tolerance: dict
    inputs: dict[str, InputSpec]
    outputs: dict[str, OutputSpec]
    cases: Optional[str] = None
    max_cases: Optional[int] = None
    stream: Optional[dict] = None
    backends: Optional[tuple[str, ...]] = None
    expect_fail: Optional[str] = None
    expect_backends: Optional[tuple[str, ...]] = None
    line: Optional[int] = None         # of the model's entry in the manifest: CI annotations point there
    family: Optional[str] = None       # the manifest entry a conversion variant came from (manifest/variants.py)
    variant: Optional[str] = None      # the variant's name; None for the entry's own conversion

    def expects_failure_on(self, backend: str) -> Optional[str]:
        if self.expect_fail and (self.expect_backends is None or backend in self.expect_backends):
            return self.expect_fail
        return None


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    path: Path
    root: Path
    reference: dict
    backends: dict[str, BackendSpec]
    tolerance: dict
    limits: Limits
    latency: LatencySpec
    models: tuple[ModelSpec, ...]

    def backends_for(self, model: ModelSpec) -> list[BackendSpec]:
        names = model.backends or tuple(self.backends)
        return [self.backends[name] for name in names]

    def tolerance_for(self, model: ModelSpec, output: str, backend: str) -> Tolerance:
        spec = model.outputs.get(output)
        return cascade(self.tolerance, model.tolerance, spec.tolerance if spec else None,
                       self.backends[backend].tolerance)
