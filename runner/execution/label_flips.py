"""A label output that fails on flipped labels, re-judged on the logits its manifest entry names.

Only then, and only for that case: the logits tensor comes from ONNX Runtime and from MNN through the localiser's
sandboxed children (`localisation/intermediates.py`), on the same .mnn, feeds and runtime configuration the case
ran with. A tensor the engines cannot give (MNN's converter fused it away, a child failed) leaves the verdict as it
was, with a note: refining a verdict must never cost one.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import numpy as np

from mnn_parity.comparison import judge_case
from mnn_parity.comparison.labels import label_flips, rejudged, without_logits
from mnn_parity.comparison.metrics import labels_exact
from mnn_parity.conversion.mnnconvert import Conversion
from mnn_parity.execution.plan import WorkItem
from mnn_parity.manifest.spec import BackendSpec, Logits, ModelSpec
from mnn_parity.records import FailureClass, OutputComparison, Verdict

if TYPE_CHECKING:
    from mnn_parity.execution.model_work import Judged

# tensor -> (reference, MNN), or (the engine that could not give it, why)
Fetched = dict[str, Union[tuple[np.ndarray, np.ndarray], tuple[str, str]]]


def wanted(model: ModelSpec, comparisons: tuple[OutputComparison, ...]) -> dict[str, Logits]:
    """Failing label outputs (out of tolerance because labels differ) whose entry names logits."""
    found = {}
    for c in comparisons:
        spec = model.outputs.get(c.name)
        if (spec is not None and spec.logits is not None and c.failure_class is FailureClass.OUT_OF_TOLERANCE
                and not c.missing and c.ref_shape == c.mnn_shape and labels_exact(np.dtype(c.ref_dtype), c.tolerance)):
            found[c.name] = spec.logits
    return found


def relabel(item: WorkItem, backend: BackendSpec, conversion: Conversion, feeds: dict, judged: "Judged",
            ref_outputs: dict) -> "Judged":
    """`judged` with its failing label outputs re-judged on their logits, and the case's verdict recomputed."""
    todo = wanted(item.model, judged.comparisons)
    if judged.verdict is not Verdict.FAIL or not todo or judged.attempt.outputs is None or item.model.stream:
        return judged
    mnn_outputs = judged.attempt.outputs
    fetched = fetch_logits(item, backend, conversion, feeds, sorted({s.tensor for s in todo.values()}),
                           ref_outputs, mnn_outputs)
    comparisons = tuple(_rejudge(c, todo.get(c.name), fetched, ref_outputs.get(c.name), mnn_outputs.get(c.name))
                        for c in judged.comparisons)
    failure_class, reason = case_judgement(comparisons, set(todo))
    return replace(judged, verdict=Verdict.PASS if failure_class is None else Verdict.FAIL, reason=reason,
                   failure_class=failure_class, comparisons=comparisons)


def _rejudge(comparison: OutputComparison, logits: Optional[Logits], fetched: Fetched, ref_labels, mnn_labels
             ) -> OutputComparison:
    if logits is None:
        return comparison
    got = fetched.get(logits.tensor, ("MNN", "not fetched"))
    if isinstance(got[0], str):
        return without_logits(comparison, logits.tensor, *got)
    try:
        flips = label_flips(ref_labels, mnn_labels, got[0], got[1], logits.axis, comparison.tolerance)
    except ValueError as error:
        return without_logits(comparison, logits.tensor, "both engines in a usable shape", str(error))
    return rejudged(comparison, flips, logits.tensor)


def case_judgement(comparisons: tuple[OutputComparison, ...], relabelled: set[str]) -> tuple:
    """judge_case's verdict; a case that passes only because its flips were near ties says so in its reason."""
    failure_class, reason = judge_case(comparisons)
    rescued = [c for c in comparisons if c.name in relabelled and c.passed]
    if failure_class is not None or not rescued:
        return failure_class, reason
    others = len(comparisons) - len(rescued)
    more = f" (+{others} more output{'s' if others > 1 else ''} within tolerance)" if others else ""
    return None, "; ".join(f"{c.name}: {c.reason}" for c in rescued) + more


def fetch_logits(item: WorkItem, backend: BackendSpec, conversion: Conversion, feeds: dict, tensors: list[str],
                 ref_outputs: dict, mnn_outputs: dict) -> Fetched:
    """Graph outputs the case already holds; the rest from both engines' children, in a scratch folder under
    `<cache>/labels` removed after (a reference store can be large, as the localiser's is)."""
    fetched: Fetched = {t: (ref_outputs[t], mnn_outputs[t]) for t in tensors if t in ref_outputs and t in mnn_outputs}
    rest = [t for t in tensors if t not in fetched]
    if not rest:
        return fetched
    workdir = Path(item.options.cache_dir) / "labels"
    workdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="logits-", dir=workdir))
    try:
        fetched.update(_from_children(item, backend, conversion, feeds, rest, scratch))
    except Exception as error:   # advisory: whatever goes wrong, the verdict stands with a note
        fetched.update({t: ("the engines", f"{type(error).__name__}: {error}") for t in rest})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return fetched


def _from_children(item: WorkItem, backend: BackendSpec, conversion: Conversion, feeds: dict, names: list[str],
                   scratch: Path) -> Fetched:
    from mnn_parity.localisation.intermediates import ChildFailed, profile_mnn, record_reference
    from mnn_parity.localisation.locate import mnn_feeds
    from mnn_parity.modelinfo import onnx_signature

    inputs, outputs = (list(names) for names in onnx_signature(item.model.onnx))
    if any(name not in feeds for name in inputs):
        return {t: ("the engines", "the case's feeds do not cover every graph input") for t in names}
    ort_path, mnn_path = scratch / "feeds-ort.npz", scratch / "feeds-mnn.npz"
    np.savez(ort_path, **{n: np.asarray(feeds[n]) for n in inputs})
    np.savez(mnn_path, **mnn_feeds({n: feeds[n] for n in inputs}))
    limits = item.suite.limits
    try:
        store = record_reference(item.model.onnx, ort_path, names, scratch, limits)
    except ChildFailed as error:
        return {t: ("ONNX Runtime", str(error)) for t in names}
    try:
        profile = profile_mnn(conversion.mnn_model, item.options.mnn_python, mnn_path, inputs, [], names, store,
                              scratch / "mnn", dict(backend.runtime), limits, dump=names)
    except ChildFailed as error:
        return {t: ("MNN", str(error)) for t in names}
    found: Fetched = {}
    for name in names:
        if name in outputs:   # the ORT child records intermediates only; the run's own outputs are in hand
            found[name] = ("ONNX Runtime", "a graph output the run skips (`skip: true`) is not recorded")
        elif name not in store:
            found[name] = ("ONNX Runtime", "its type is unknown to shape inference, so it could not be marked")
        elif name in profile.dumps:
            found[name] = (store.load(name), np.load(profile.dumps[name], allow_pickle=False))
        elif name not in profile.graph:
            found[name] = ("MNN", "the converted model has no tensor of this name (the converter fused it away?)")
        else:
            detail = profile.metrics.get(name, {}).get("detail") or profile.problem or profile.log or "no value"
            found[name] = ("MNN", detail)
    return found
