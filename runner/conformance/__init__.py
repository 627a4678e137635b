"""`mnn-parity conformance`: ONNX's backend node tests through MNN, as an op-coverage report.

source (the pinned onnx wheel, the DVC-pinned tree) → extract (wheel → tree) → build (an in-memory Suite) →
run (the same Session as `run`, then reference_check: ONNX Runtime against the shipped outputs) → coverage
(per-test status, per-op table, changes since a previous run) → report (Markdown and JSON).
"""
