"""`validate`'s look at the data: preprocess the first case of every model, so that a bad image or a wrong shape
is found before any engine runs. Every case is still checked again when it runs."""
from __future__ import annotations

from typing import Iterable

from mnn_parity.inputs.cases import build_feeds, constant_feeds, list_cases, shape_problem
from mnn_parity.inputs.preprocess import PreprocessError
from mnn_parity.manifest.spec import Suite
from mnn_parity.modelinfo import onnx_signature


def dry_run_inputs(suites: Iterable[Suite]) -> list[str]:
    problems = []
    for suite in suites:
        for model in suite.models:
            cases = list_cases(model, suite.root)
            if not cases:
                continue
            try:
                feeds = build_feeds(model, cases[0], constant_feeds(model))
            except PreprocessError as error:
                problems.append(f"{suite.path}: model {model.name!r}: {error}")
                continue
            inputs, _ = onnx_signature(model.onnx)
            streamed = (model.stream or {}).get("input")
            for name, feed in feeds.items():
                problem = shape_problem(name, feed, inputs.get(name), name == streamed)
                if problem:
                    problems.append(f"{suite.path}: model {model.name!r}, case {cases[0].name!r}: {problem}")
    return problems
