"""The declarative preprocessing spec: one list of steps turns a case file into the tensor both engines get.

A manifest input lists `preprocess:` steps, each a one-key map (`- resize: {height: 736, width: 1472}`),
applied in order. A *source* step makes the first array: `decode`, `audio` and `load` read the case file,
`zeros` and `value` make constants. Every other step is a pure function from array to array.

Feeding both engines from this one pipeline is the point: a model that "breaks" after conversion because two
scripts preprocessed differently is the commonest false alarm. The JSON Schema in
`schemas/preprocess.schema.json` mirrors the step table in `pipeline.py`; a test keeps the two in step.

Errors name the file and the 1-based step: ``data/x.png: step 2 (resize): ...``.

Modules: `options` (checking a step's options), `image`, `audio` and `numeric` (the steps, by family),
`pipeline` (the table; checking and running a step list), `quality` (is an input worth testing with).
"""
from __future__ import annotations

from mnn_parity.inputs.preprocess.errors import PreprocessError
from mnn_parity.inputs.preprocess.options import DTYPES
from mnn_parity.inputs.preprocess.pipeline import SourceKind, check_steps, is_source_step, run_pipeline, step_names
from mnn_parity.inputs.preprocess.quality import degenerate_reason

__all__ = ["DTYPES", "PreprocessError", "SourceKind", "check_steps", "degenerate_reason", "is_source_step",
           "run_pipeline", "step_names"]
