"""Checks of an output's `logits: {tensor, axis}` against the ONNX graph, said where the manifest says it.

The tensor is re-fetched from both engines only when a label output fails, maybe hours into a run: a typo in its
name, a float output (labels are integers), or an axis past the tensor's rank is refused here, at validation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from mnn_parity.manifest.issues import Issues, did_you_mean

# name -> (ONNX element type, 0 when unknown; rank, None when unknown)
Tensors = dict[str, tuple[int, Optional[int]]]


def logits_issues(model: dict, at: tuple, root: Path, issues: Issues) -> None:
    """Every output's `logits`, against the model the manifest names (already checked to exist and load)."""
    declared = {name: spec["logits"] for name, spec in (model.get("outputs") or {}).items()
                if isinstance(spec, dict) and isinstance(spec.get("logits"), dict)}
    if not declared:
        return
    tensors = graph_tensors(root / model["onnx"])
    for output, logits in declared.items():
        where = at + ("outputs", output, "logits")
        if model.get("stream"):
            issues.add(where, "logits are re-fetched one case at a time, not frame by frame: a streamed model "
                              "cannot name them")
            continue
        element, _ = tensors.get(output, (0, None))
        if element and not is_integer(element):
            issues.add(where, f"output {output!r} is {type_name(element)}, not integer labels: `logits` re-judges "
                              "the labels of an ArgMax; for scores, use `topk`")
        tensor = logits.get("tensor")
        if tensor not in tensors:
            issues.add(where + ("tensor",), f"the ONNX graph has no tensor {tensor!r}{did_you_mean(tensor, tensors)}: "
                                            "name a node's output, usually the input of the final ArgMax")
            continue
        _check_axis(logits.get("axis", 1), tensors[tensor][1], where, issues)


def _check_axis(axis, rank: Optional[int], where: tuple, issues: Issues) -> None:
    if not isinstance(axis, int) or isinstance(axis, bool) or rank is None:
        return   # the schema refuses a non-integer; an unknown rank is checked when the tensor is fetched
    if not -rank <= axis < rank:
        issues.add(where + ("axis",), f"axis {axis} is outside the rank-{rank} logits tensor: use 0 to {rank - 1}, "
                                      f"or -{rank} to -1 from the end")


def graph_tensors(path: Path) -> Tensors:
    """Node outputs and graph outputs with their element types and ranks, as far as shape inference knows them."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:   # a model shape inference cannot read: the declared types, and names still checked
        inferred = model.graph
    known = {}
    for value in [*inferred.value_info, *inferred.output, *model.graph.output]:
        tensor = value.type.tensor_type
        known[value.name] = (tensor.elem_type, len(tensor.shape.dim) if tensor.HasField("shape") else None)
    names = [out for node in model.graph.node for out in node.output if out] + [o.name for o in model.graph.output]
    return {name: known.get(name, (0, None)) for name in names}


def is_integer(element: int) -> bool:
    import numpy as np
    from onnx import helper

    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(element)).kind in "iub"
    except (KeyError, TypeError, ValueError):
        return True   # a type numpy cannot name (a string, say): not ours to refuse


def type_name(element: int) -> str:
    from onnx import TensorProto

    return TensorProto.DataType.Name(element).lower()
