"""What a run will do, as plain data: one work item per model, picklable, so that a thread, a process or a remote
Dask worker can execute it and hand back immutable records."""
from __future__ import annotations

import datetime
import platform
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Optional

from mnn_parity.manifest.spec import BackendSpec, ModelSpec, Suite
from mnn_parity.manifest.variants import selected


@dataclass(frozen=True)
class RunOptions:
    mnn_python: Path = Path(sys.executable)
    mnn_version: str = ""
    cache_dir: Path = Path(".cache")
    backends: Optional[frozenset[str]] = None     # None: every backend of the suite
    models: Optional[frozenset[str]] = None
    with_variants: bool = True                    # a name in `models` selects its `<name>@<variant>` models too
    jobs: int = 1
    cases: Optional[frozenset[str]] = None        # None: every case of each model
    localise: str = "never"                       # never | fail | always (execution/localise_step.py)
    report_dir: Optional[Path] = None             # where reproducers of localised cases go
    # "persistent": one long-lived converter child per thread (~10 ms a model, not 100-190 ms for a fresh child;
    # a crash is retried in a fresh one); "fresh": a new child per conversion
    converter: str = "persistent"


@dataclass(frozen=True)
class WorkItem:
    """One model's work: convert it, run its cases on the reference and on each backend, judge each case."""
    suite: Suite
    model: ModelSpec
    backends: tuple[BackendSpec, ...]
    options: RunOptions
    environment: Mapping[str, str]

    @property
    def label(self) -> str:
        return f"{self.suite.name}/{self.model.name}"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def environment(options: RunOptions) -> dict:
    from importlib.metadata import version

    return {"mnn_version": options.mnn_version, "onnxruntime_version": version("onnxruntime"),
            "python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine()}


def plan(suite: Suite, options: RunOptions, env: Mapping[str, str]) -> list[WorkItem]:
    items = []
    # Each item carries the suite without its other models: a Dask task pickles its item, and 1500 items each
    # holding 1500 models made the conformance suite's tasks cost O(models²) to send.
    alone = {model.name: replace(suite, models=(model,)) for model in suite.models}
    for model in suite.models:
        if not selected(model.name, options.models, options.with_variants):
            continue
        backends = tuple(b for b in suite.backends_for(model)
                         if options.backends is None or b.name in options.backends)
        items.append(WorkItem(alone[model.name], model, backends, options, dict(env)))
    return items
