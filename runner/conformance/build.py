"""The conformance suite, built in memory: one model per runnable node test, one case per data set.

It is an ordinary frozen `Suite`, so `Session.run_suites` runs it exactly as `mnn-parity run` runs a manifest.
Tolerance is ONNX's own backend-test default (`onnx.backend.test.runner`: rtol 1e-3, atol 1e-7, element-wise
only), so a test passes here when it would pass ONNX's runner; the cosine criterion is off (`cosine_min: -1`)
because ONNX's check has none and element-wise rtol 1e-3 already implies it away from zero.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

from mnn_parity.conformance.extract import NodeTest, read_index
from mnn_parity.conformance.source import TREE
from mnn_parity.manifest.defaults import REFERENCE_DEFAULTS, RUNTIME_DEFAULTS
from mnn_parity.manifest.spec import BackendSpec, ConvertFlags, InputSpec, LatencySpec, Limits, ModelSpec, Suite

SUITE = "onnx-node-conformance"
BACKEND = "cpu-fp32"
ONNX_TOLERANCE = {"rtol": 1e-3, "atol": 1e-7, "cosine_min": -1.0, "mismatch_max": 0.0}
# Node tests are tiny: a minute per call is generous, and 4 GiB per child keeps two jobs well inside the machine.
LIMITS = Limits(timeout_s=60.0, memory_mb=4096)


def select(tests: Iterable[NodeTest], ops: Optional[Iterable[str]] = None,
           names: Optional[Iterable[str]] = None) -> list[NodeTest]:
    """Tests of these ops (case-insensitive) and/or these names; every test when neither is given."""
    wanted_ops = {o.lower() for o in ops} if ops else None
    wanted_names = set(names) if names else None
    return [t for t in tests
            if (wanted_ops is None or t.op.lower() in wanted_ops)
            and (wanted_names is None or t.name in wanted_names)]


def model_spec(root: Path, tree: str, test: NodeTest) -> ModelSpec:
    return ModelSpec(name=test.name, onnx=(root / tree / test.name / "model.onnx").resolve(),
                     convert=ConvertFlags(), tolerance={}, inputs={n: InputSpec(n) for n in test.inputs},
                     outputs={}, cases=f"{tree}/{test.name}/inputs/*.npz")


def build_suite(root: Path, tests: list[NodeTest], tree: str = TREE, source: str = "") -> Suite:
    """Only tests that are not skipped become models; the caller reports the skipped ones."""
    root = Path(root).resolve()
    runtime = dict(RUNTIME_DEFAULTS)
    return Suite(name=SUITE, description=f"ONNX backend node tests, {source}".rstrip(", "),
                 path=root / tree / "index.json", root=root, reference=dict(REFERENCE_DEFAULTS),
                 backends={BACKEND: BackendSpec(BACKEND, runtime, {})}, tolerance=dict(ONNX_TOLERANCE),
                 limits=LIMITS, latency=LatencySpec(warmup=0, repeat=0),
                 models=tuple(model_spec(root, tree, t) for t in tests if not t.skipped))


def load_tests(root: Path, tree: str = TREE) -> tuple[str, list[NodeTest]]:
    return read_index(Path(root) / tree)
