"""The reference recorded a segment at a time: the model cut into consecutive runs of nodes, each run fed the
tensors earlier runs produced, so ONNX Runtime computes the model once instead of once per chunk of names.

Marking a chunk's tensors as outputs of the whole model recomputed everything before them: PP-OCR's detector at
736x1472 took five full forwards (2.8 s) for five chunks. Each segment here is a standalone model holding its
nodes, the initializers they read and the Constant nodes they use; the tensors crossing into it are its inputs,
with the dtype and shape of the values actually fed. Node order is the model's, which ONNX requires to be
topological, and the kernels see the same inputs as in the whole model (ORT_DISABLE_ALL both ways).

onnx and numpy only: the ONNX Runtime child loads this file by path, as it does `compare.py`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper


@dataclass(frozen=True)
class Segment:
    nodes: tuple[int, ...]              # indices into graph.node, in order, Constant nodes it reads included
    inputs: tuple[str, ...]             # tensors fed from earlier segments or the graph's inputs
    outputs: tuple[str, ...]            # tensors to record, then those a later segment reads


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def plan(model: onnx.ModelProto, record: set, types: dict, sizes: dict, most: int, budget_mb: float):
    """Segments computing every tensor of `record` and nothing after the last of them, each recording at most
    `most` names and about `budget_mb` MiB (a tensor of unknown size counts as 1 MiB); or None where cutting is
    not safe: a node with a subgraph (its body reads outer names), a node reading a tensor produced after it, a
    recorded tensor no node produces, a tensor crossing a cut whose type shape inference did not give."""
    graph = model.graph
    if any(_has_subgraph(n) for n in graph.node):
        return None
    producer = {t: i for i, n in enumerate(graph.node) for t in n.output if t}
    if any(t not in producer for t in record):
        return None
    if any(producer.get(t, -1) >= i for i, n in enumerate(graph.node) for t in n.input if t):
        return None
    # nothing after the last recorded tensor is computed: a store refilled with early tensors costs a prefix
    end = 1 + max((producer[t] for t in record), default=-1)
    if end == 0:
        return []
    ranges, start, count, used = [], 0, 0, 0.0
    for i, node in enumerate(graph.node[:end]):
        mine = [t for t in node.output if t in record]
        size = sum(sizes.get(t, 1.0) for t in mine)
        if count and (count + len(mine) > most or used + size > budget_mb):
            ranges.append((start, i))
            start, count, used = i, 0, 0.0
        count, used = count + len(mine), used + size
    ranges.append((start, end))
    segments = _segments(graph, ranges, record, producer)
    return None if any(not types.get(t) for s in segments for t in s.outputs) else segments


def _segments(graph, ranges: list, record: set, producer: dict) -> list[Segment]:
    constants = {i for i, n in enumerate(graph.node) if n.op_type == "Constant"}
    initializers = {i.name for i in graph.initializer}
    # the last range reading each tensor: a segment outputs what it records and what a later one reads
    last_reader: dict[str, int] = {}
    for k, (start, stop) in enumerate(ranges):
        for node in graph.node[start:stop]:
            for t in node.input:
                last_reader[t] = k
    segments = []
    for k, (start, stop) in enumerate(ranges):
        own = list(range(start, stop))
        made = {t for i in own for t in graph.node[i].output if t}
        borrowed_constants, inputs = [], []
        for i in own:
            for t in graph.node[i].input:
                if not t or t in made or t in initializers or t in inputs:
                    continue
                if producer.get(t) in constants:
                    borrowed_constants.append(producer[t])
                    made |= set(graph.node[producer[t]].output)
                else:
                    inputs.append(t)
        # a later segment copies the Constant nodes it reads rather than being fed their values
        outputs = [t for i in own for t in graph.node[i].output
                   if t and (t in record or (last_reader.get(t, -1) > k and i not in constants))]
        segments.append(Segment(tuple(sorted(set(borrowed_constants)) + own), tuple(inputs),
                                tuple(dict.fromkeys(outputs))))
    return segments


def extract(model: onnx.ModelProto, segment: Segment, feeds: dict, types: dict) -> onnx.ModelProto:
    """The standalone model of one segment: inputs typed and shaped as the values fed, outputs typed from shape
    inference (`types`: name -> elem_type) with no shape, as the whole-model recording marks them."""
    graph = model.graph
    nodes = [graph.node[i] for i in segment.nodes]
    read = {t for n in nodes for t in n.input}
    initializers = [i for i in graph.initializer if i.name in read]
    inputs = [helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(np.asarray(feeds[t]).dtype),
                                            list(np.shape(feeds[t]))) for t in segment.inputs]
    outputs = [helper.make_tensor_value_info(t, types[t], None) for t in segment.outputs]
    sub = helper.make_graph(nodes, f"{graph.name}-segment", inputs, outputs, initializers)
    cut = helper.make_model(sub, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    cut.functions.extend(model.functions)
    return cut
