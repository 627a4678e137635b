"""ONNX Runtime, the reference engine. Runs inside the worker process; imports only numpy and onnxruntime."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from mnn_parity.engines.protocol import EngineSpec

_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}


class OnnxRuntimeEngine:
    def __init__(self, spec: EngineSpec):
        import onnxruntime as ort

        config = spec.config
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(config.get("threads", 1))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                                   _LEVELS[config.get("graph_optimization", "all")])
        providers = config.get("providers") or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(spec.model), options, providers=providers)
        self.version = ort.__version__
        self.output_names = list(spec.outputs) or [o.name for o in self.session.get_outputs()]
        self._dtypes = {i.name: ort_dtype(i.type) for i in self.session.get_inputs()}
        self.input_info = {
            i.name: {"shape": [d if isinstance(d, int) else None for d in i.shape], "dtype": ort_dtype(i.type)}
            for i in self.session.get_inputs()
        }

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cast = {k: np.asarray(v, dtype=self._dtypes.get(k, v.dtype)) for k, v in feeds.items()}
        values = self.session.run(self.output_names, cast)
        return dict(zip(self.output_names, values))

    def close(self) -> None:
        self.session = None


def ort_dtype(type_string: str) -> str:
    inner = type_string[len("tensor("):-1] if type_string.startswith("tensor(") else type_string
    return {"float": "float32", "double": "float64", "float16": "float16"}.get(inner, inner)
