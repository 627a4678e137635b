"""Cut a segment of the ONNX graph into a standalone model: the segment's nodes, the Constants and initializers
they read, every other tensor they read as a graph input, and the wanted tensors as outputs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import onnx
from onnx import helper

from mnn_parity.localisation.graph import OnnxGraph


@dataclass(frozen=True)
class Cut:
    path: Path
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    nodes: tuple[str, ...]
    symbolic: bool


def value_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Each tensor's type as shape inference sees it: symbolic dims stay symbolic, which is the point."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:   # a model shape inference chokes on still has its declared inputs and outputs
        inferred = model.graph
    return {v.name: v.type for v in [*inferred.input, *inferred.value_info, *inferred.output]}


def _typed(name: str, types: dict, concrete: Optional[tuple], fallback_elem: int) -> onnx.ValueInfoProto:
    known = types.get(name)
    elem = known.tensor_type.elem_type if known is not None and known.tensor_type.elem_type else fallback_elem
    if concrete is not None:
        return helper.make_tensor_value_info(name, elem, list(concrete))
    if known is not None and known.tensor_type.HasField("shape"):
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or f"{name}_d{k}")
                for k, d in enumerate(known.tensor_type.shape.dim)]
        return helper.make_tensor_value_info(name, elem, dims)
    return helper.make_tensor_value_info(name, elem, None)


def free_inputs(graph: OnnxGraph, indices: list[int]) -> list[str]:
    made = {t for i in indices for t in graph.nodes[i].outputs}
    found: list[str] = []
    for i in indices:
        for t in graph.nodes[i].inputs:
            if t and t not in made and not graph.is_fixed(t) and t not in found:
                found.append(t)
    return found


def has_symbolic(graph: OnnxGraph, indices: list[int], types: dict) -> bool:
    for name in free_inputs(graph, indices):
        known = types.get(name)
        if known is None or not known.tensor_type.HasField("shape"):
            return True
        if any(not d.HasField("dim_value") for d in known.tensor_type.shape.dim):
            return True
    return False


def cut(model: onnx.ModelProto, graph: OnnxGraph, types: dict, indices: list[int], outputs: list[str],
        shapes: dict[str, tuple], dtypes: dict[str, int], path: Path, symbolic: bool) -> Cut:
    """`shapes`/`dtypes`: the recorded values' shapes and ONNX element types, for concrete inputs and fallbacks."""
    chosen = sorted(set(indices))
    inputs = free_inputs(graph, chosen)
    read = {t for i in chosen for t in graph.nodes[i].inputs}
    constant_nodes = [n.index for n in graph.nodes
                      if n.op_type == "Constant" and any(t in read for t in n.outputs)]
    original = model.graph.node
    nodes = [original[i] for i in sorted(set(chosen) | set(constant_nodes))]
    initializers = [init for init in model.graph.initializer if init.name in read]
    new_graph = helper.make_graph(
        nodes, f"segment_{path.parent.name}",
        [_typed(n, types, None if symbolic else shapes[n], dtypes.get(n, onnx.TensorProto.FLOAT)) for n in inputs],
        [helper.make_tensor_value_info(n, _elem(types, n, dtypes), None) for n in outputs],
        initializers)
    extracted = helper.make_model(new_graph, opset_imports=list(model.opset_import),
                                  producer_name="mnn-parity localise")
    extracted.ir_version = model.ir_version
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(extracted, str(path))
    return Cut(path, tuple(inputs), tuple(outputs), tuple(graph.nodes[i].name for i in chosen), symbolic)


def _elem(types: dict, name: str, dtypes: dict) -> int:
    known = types.get(name)
    if known is not None and known.tensor_type.elem_type:
        return known.tensor_type.elem_type
    return dtypes.get(name, onnx.TensorProto.FLOAT)
