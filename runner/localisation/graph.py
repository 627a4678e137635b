"""The ONNX graph's structure, and the structural trust test of a name MNN kept.

Ancestry is kept as one Python int per node, a bitset over node indices (graph inputs get bits after the nodes):
a detector's few hundred nodes make that both exact and cheap.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import onnx

CONSTANT_OPS = ("Constant",)
MNN_OPAQUE = ("Input", "Const")


@dataclass(frozen=True)
class Node:
    index: int
    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class OnnxGraph:
    """Nodes in the model's (topological) order, who produces each tensor, and who descends from whom."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.initializers = frozenset(i.name for i in graph.initializer)
        self.inputs = tuple(i.name for i in graph.input if i.name not in self.initializers)
        self.outputs = tuple(o.name for o in graph.output)
        self.nodes = tuple(Node(i, n.name or f"{n.op_type}_{i}", n.op_type, tuple(n.input), tuple(n.output))
                           for i, n in enumerate(graph.node))
        self.producer = {t: node.index for node in self.nodes for t in node.outputs if t}
        self.constants = frozenset(t for node in self.nodes if node.op_type in CONSTANT_OPS for t in node.outputs)
        self.consumers: dict[str, list[int]] = {}
        for node in self.nodes:
            for t in node.inputs:
                self.consumers.setdefault(t, []).append(node.index)
        self._input_bit = {name: len(self.nodes) + k for k, name in enumerate(self.inputs)}
        self.node_ancestors = self._ancestors()

    def _ancestors(self) -> list[int]:
        bits: list[int] = []
        for node in self.nodes:
            mask = 1 << node.index
            for t in node.inputs:
                if t in self.producer and self.producer[t] < node.index:
                    mask |= bits[self.producer[t]]
                elif t in self._input_bit:
                    mask |= 1 << self._input_bit[t]
            bits.append(mask)
        return bits

    def is_fixed(self, tensor: str) -> bool:
        """Initializers and Constant outputs: weights, which MNN merges and renames freely."""
        return tensor in self.initializers or tensor in self.constants or not tensor

    def ancestry(self, tensor: str) -> int:
        if tensor in self.producer:
            return self.node_ancestors[self.producer[tensor]]
        return 1 << self._input_bit[tensor] if tensor in self._input_bit else 0

    def bit(self, tensor: str) -> int:
        if tensor in self.producer:
            return 1 << self.producer[tensor]
        return 1 << self._input_bit[tensor] if tensor in self._input_bit else 0

    def is_ancestor(self, upper: str, lower: str) -> bool:
        return upper != lower and bool(self.bit(upper) & self.ancestry(lower))

    def order(self, tensor: str) -> int:
        return self.producer.get(tensor, -1)

    def observable(self) -> list[str]:
        """Graph outputs and every non-Constant node output, in topological order."""
        names = [t for node in self.nodes if node.op_type not in CONSTANT_OPS for t in node.outputs if t]
        return names + [o for o in self.outputs if o not in self.producer]

    def known(self, tensor: str) -> bool:
        return tensor in self.producer or tensor in self._input_bit or tensor in self.initializers

    def nearest(self, start: Iterable[str], stop: set[str]) -> set[str]:
        """Walk up from `start` through tensors not in `stop` to the nearest ones in `stop` or graph inputs."""
        found: set[str] = set()
        seen: set[str] = set()
        todo = [t for t in start if t]
        while todo:
            tensor = todo.pop()
            if tensor in seen or self.is_fixed(tensor):
                continue
            seen.add(tensor)
            if tensor in stop or tensor in self._input_bit:
                found.add(tensor)
            elif tensor in self.producer:
                todo.extend(self.nodes[self.producer[tensor]].inputs)
        return found

    def downstream(self, tensor: str, depth: int) -> list[str]:
        """Tensors produced within `depth` ops below `tensor`, nearest first."""
        found: list[str] = []
        frontier, seen = [tensor], {tensor}
        for _ in range(depth):
            following = []
            for t in frontier:
                for index in self.consumers.get(t, ()):
                    for out in self.nodes[index].outputs:
                        if out and out not in seen:
                            seen.add(out)
                            following.append(out)
            found.extend(following)
            frontier = following
        return found


def structurally_trusted(name: str, onnx_graph: OnnxGraph, mnn_graph: dict) -> bool:
    """From the name's producer in MNN's graph, walk up through MNN-made names (skipping MNN's constants, which it
    merges across the graph) to the nearest ONNX-named tensors: each must be an ONNX ancestor of the name."""
    if name in onnx_graph.outputs:
        return True
    seen: set[str] = set()
    todo = list(mnn_graph.get(name, {}).get("inputs", []))
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        entry = mnn_graph.get(current, {})
        if onnx_graph.known(current):
            if onnx_graph.is_fixed(current) or entry.get("op") == "Const":
                continue
            if not onnx_graph.is_ancestor(current, name):
                return False
        elif entry.get("op") != "Const":
            todo.extend(entry.get("inputs", []))
    return True
