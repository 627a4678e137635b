"""What a manifest leaves out: read by validation (which backends exist) and by the build of the `Suite`."""
from __future__ import annotations

DEFAULT_BACKENDS = {"cpu-fp32": {"engine": "mnn", "device": "CPU", "precision": "high", "threads": 1}}
RUNTIME_DEFAULTS = {"device": "CPU", "precision": "high", "threads": 1, "memory": "normal", "power": "normal"}
REFERENCE_DEFAULTS = {"engine": "onnxruntime", "providers": ["CPUExecutionProvider"],
                      "graph_optimization": "all", "threads": 1}
