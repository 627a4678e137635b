"""One protocol for every engine: load a model from a spec, `infer(feeds) -> {name: array}`, `close()`.

The process host runs whatever this registry names; a new engine is one module in this package plus one line in
`ENGINES`. Standard library only: the worker imports this inside an `--mnn VERSION` interpreter that has nothing
but MNN and numpy, and only the chosen engine's module imports its engine.
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol

if TYPE_CHECKING:
    import numpy as np

# engine name -> "module:class"; the class is constructed with an EngineSpec and satisfies `Engine`.
ENGINES: dict[str, str] = {
    "onnxruntime": "mnn_parity.engines.onnxruntime:OnnxRuntimeEngine",
    "mnn": "mnn_parity.engines.mnn:MnnEngine",
}


@dataclass(frozen=True)
class EngineSpec:
    """What to load and how: everything a worker needs, and everything a report records."""
    engine: str                        # a key of ENGINES
    model: Path
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    config: dict = field(default_factory=dict)
    python: Path = Path(sys.executable)   # another interpreter runs the MNN side under another MNN release
    label: str = ""                      # how a report names this model (a worker's history lists it); not sent

    def as_request(self) -> dict:
        """The spec as the worker's `load` request carries it (JSON)."""
        return {"engine": self.engine, "model": str(self.model), "inputs": list(self.inputs),
                "outputs": list(self.outputs), "config": self.config}

    @classmethod
    def from_request(cls, request: Mapping[str, Any]) -> "EngineSpec":
        return cls(request["engine"], Path(request["model"]), tuple(request.get("inputs") or ()),
                   tuple(request.get("outputs") or ()), dict(request.get("config") or {}))


class Engine(Protocol):
    """A loaded model. Constructed as `EngineClass(spec)`; raises on a model it cannot load."""
    version: str                       # the engine's release, for provenance
    input_info: dict                   # name -> {"shape": [int|None, ...], "dtype": str, ...}
    output_names: list[str]            # the order `infer` binds outputs by name in

    def infer(self, feeds: Mapping[str, "np.ndarray"]) -> dict[str, "np.ndarray"]: ...

    def close(self) -> None: ...


class UnknownEngine(ValueError):
    pass


def check_engine(name: str) -> None:
    if name not in ENGINES:
        raise UnknownEngine(f"unknown engine {name!r}; known engines: {', '.join(sorted(ENGINES))}")


def load_engine(spec: EngineSpec) -> Engine:
    check_engine(spec.engine)
    module_name, _, class_name = ENGINES[spec.engine].partition(":")
    return getattr(importlib.import_module(module_name), class_name)(spec)
