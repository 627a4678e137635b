"""Which op's error jumps: the jump test over the one-pass profile, the alias check, the segment to verify.

The first tensor over the tolerance is often only inherited error (fp16 weights, quantisation): an op is blamed
only when its error exceeds JUMP times the worst error of the nearest trusted tensors it reads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np

from mnn_parity.localisation.compare import Criterion, diverges, same_values
from mnn_parity.localisation.graph import OnnxGraph

JUMP = 10.0
ALIAS_DEPTH = 8
MAX_ALIAS_ROUNDS = 8


@dataclass(frozen=True)
class Candidate:
    tensor: str
    error: float                   # 1 − cosine (inf for a shape or NaN divergence)
    inherited: float               # the worst error among its frontier
    frontier: tuple[str, ...]      # nearest observed, trusted tensors above it


@dataclass(frozen=True)
class Finding:
    divergent: tuple[str, ...]     # trusted observed tensors over the tolerance, in ONNX order
    candidates: tuple[Candidate, ...]
    untrusted: frozenset[str]      # by structure or by the alias check
    aliases: tuple[str, ...]       # names found holding a fused group's later value


def error_of(metric: dict) -> float:
    return math.inf if metric["status"] in ("shape", "nan") else float(metric["err"])


def ordered(graph: OnnxGraph, names) -> list[str]:
    return sorted(names, key=lambda n: (graph.order(n) if graph.order(n) >= 0 else len(graph.nodes), n))


def jump_candidates(graph: OnnxGraph, metrics: dict, trusted: set[str],
                    hint: Criterion) -> tuple[list[str], list[Candidate]]:
    usable = {n for n in trusted if metrics.get(n, {}).get("status") not in (None, "unavailable")}
    divergent = [n for n in ordered(graph, usable) if diverges(metrics[n], hint)]
    candidates = []
    for name in divergent:
        start = graph.nodes[graph.producer[name]].inputs if name in graph.producer else ()
        frontier = graph.nearest(start, usable - {name})
        inherited = max((error_of(metrics[f]) if f in metrics else 0.0 for f in frontier), default=0.0)
        error = error_of(metrics[name])
        if math.isinf(inherited):
            continue
        if error > JUMP * inherited or (inherited == 0.0 and error > 0.0) or math.isinf(error):
            candidates.append(Candidate(name, error, inherited, tuple(sorted(frontier))))
    return divergent, candidates


References = Callable[[list[str]], Iterable[Optional[np.ndarray]]]
"""ONNX Runtime's values of the names given, one at a time (None for a name it did not record)."""


def is_alias(graph: OnnxGraph, name: str, mnn_value: np.ndarray, references: References, hint: Criterion) -> bool:
    """MNN's value under `name` equals ONNX's value of a tensor a few ops below: MNN gave a fused group's result
    the name of one of its members."""
    for ref in references(graph.downstream(name, ALIAS_DEPTH)):
        if ref is not None and ref.size == mnn_value.size and same_values(mnn_value, ref, hint):
            return True
    return False


def find(graph: OnnxGraph, metrics: dict, trusted: set[str], hint: Criterion,
         mnn_value: Callable[[str], Optional[np.ndarray]], references: References) -> Finding:
    trusted = set(trusted)
    aliases: list[str] = []
    divergent, candidates = jump_candidates(graph, metrics, trusted, hint)
    for _ in range(MAX_ALIAS_ROUNDS):
        if not candidates or candidates[0].tensor in graph.outputs:
            break
        first = candidates[0].tensor
        value = mnn_value(first)
        if value is None or not is_alias(graph, first, value, references, hint):
            break
        aliases.append(first)
        trusted.discard(first)
        divergent, candidates = jump_candidates(graph, metrics, trusted, hint)
    untrusted = frozenset(n for n in metrics if n not in trusted)
    return Finding(tuple(divergent), tuple(candidates), untrusted, tuple(aliases))


def segment(graph: OnnxGraph, candidate: Candidate) -> list[int]:
    """Node indices (Constants left out) between the frontier and the candidate's producer, in ONNX order."""
    mask = graph.ancestry(candidate.tensor)
    for tensor in candidate.frontier:
        mask &= ~graph.ancestry(tensor)
    return [i for i in range(len(graph.nodes)) if mask >> i & 1 and graph.nodes[i].op_type != "Constant"]


def extended(graph: OnnxGraph, candidate: Candidate, observed: set[str]) -> tuple[list[int], str]:
    """The segment carried forward to the next observed tensor below the candidate, for a fault that only shows
    together with what follows it."""
    for later in graph.downstream(candidate.tensor, ALIAS_DEPTH):
        if later in observed:
            longer = Candidate(later, candidate.error, candidate.inherited, candidate.frontier)
            return segment(graph, longer), later
    return [], ""
