"""YAML in, with the line of every key path, and without trusting the file.

A manifest is small. A hostile one is not: 500 bytes of nested aliases ("billion laughs") expand to 10^9 nodes,
500 nested brackets exhaust Python's recursion, a key written twice silently loses its first value. Each is
refused here with a message and a line, in time and memory bounded by the caps below, before any later pass walks
the data.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mnn_parity.manifest.issues import ManifestError, ManifestIssue, format_path

MAX_BYTES = 2 << 20         # a large suite is a few hundred lines
MAX_DEPTH = 32              # the deepest real manifest nests ~12 levels (a constant's nested list included)
MAX_ALIASES = 1_000
MAX_NODES = 100_000         # after expanding aliases: bounds every later pass, which walks the expanded data
MERGE_TAG = "tag:yaml.org,2002:merge"


class LimitError(ComposerError):
    """The document is refused for its size or shape, not its syntax."""


class ManifestLoader(yaml.SafeLoader):
    """SafeLoader with caps while composing; numbers as YAML 1.2 reads them; mapping keys as written.

    Keys stay the text the user wrote (`1:` is the key "1", `null:` the key "null"): keys are names of inputs,
    outputs and backends, and the line map must agree with the data on what a key is.
    """

    def __init__(self, stream):
        super().__init__(stream)
        self.depth = 0
        self.aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise LimitError(None, None, f"more than {MAX_ALIASES} aliases (*name): refused",
                                 self.peek_event().start_mark)
            return super().compose_node(parent, index)
        if self.depth >= MAX_DEPTH:
            raise LimitError(None, None, f"nested deeper than {MAX_DEPTH} levels: refused",
                             self.peek_event().start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        if not isinstance(node, MappingNode):
            raise ConstructorError(None, None, f"expected a mapping node, but found {node.id}", node.start_mark)
        self.flatten_mapping(node)
        mapping = {}
        for key_node, value_node in node.value:
            key = key_text(key_node)
            if key is None:
                raise ConstructorError("while constructing a mapping", node.start_mark,
                                       "found a list or mapping as a key", key_node.start_mark)
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


# YAML 1.1 (PyYAML's default) wants `1.0e-4` and reads `1e-4` as a string; manifests read it as YAML 1.2 does.
ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ManifestLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def key_text(node: Node) -> Optional[str]:
    return node.value if isinstance(node, ScalarNode) else None


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [child for pair in node.value for child in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def check_expansion(top: Node) -> None:
    """Refuse a node graph whose aliases make it cyclic, or too big or too deep once expanded.

    Composing shares an aliased node instead of copying it, so the graph is as small as the text; every later
    pass walks the expansion. Sizes are counted over the graph once per node, without expanding it.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(top, False)]
    while stack:
        node, finished = stack.pop()
        if finished:
            on_path.discard(id(node))
            children = _children(node)
            size[id(node)] = 1 + sum(size[id(child)] for child in children)
            depth[id(node)] = 1 + max((depth[id(child)] for child in children), default=0)
            if size[id(node)] > MAX_NODES:
                raise LimitError(None, None, f"aliases expand this to {size[id(node)]} values, over the "
                                 f"{MAX_NODES} a manifest may have: refused", node.start_mark)
            if depth[id(node)] > MAX_DEPTH:
                raise LimitError(None, None, f"aliases nest this {depth[id(node)]} levels deep, over the "
                                 f"{MAX_DEPTH} a manifest may have: refused", node.start_mark)
            continue
        if id(node) in size:
            continue
        if id(node) in on_path:
            raise LimitError(None, None, "an alias refers to a value that contains it: refused", node.start_mark)
        on_path.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in size)


@dataclass
class _Walk:
    """The line map and the duplicate keys, from one walk over the (bounded) expansion."""
    lines: dict[tuple, int] = field(default_factory=dict)
    duplicates: list[tuple[tuple, int, int]] = field(default_factory=list)  # key path, first line, second line
    checked: set[int] = field(default_factory=set)

    def visit(self, node: Node, path: tuple = ()) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                self.visit(item, path + (index,))
        elif isinstance(node, MappingNode):
            self.visit_mapping(node, path)

    def visit_mapping(self, node: MappingNode, path: tuple) -> None:
        first_seen: dict[str, int] = {}
        report = id(node) not in self.checked   # an aliased mapping is reached once per alias: report it once
        self.checked.add(id(node))
        for key_node, value_node in node.value:
            key = key_text(key_node)
            if key is None or key_node.tag == MERGE_TAG:
                continue    # merged keys may be overridden: that is what a merge is for
            line = key_node.start_mark.line + 1
            if key in first_seen and report:
                self.duplicates.append((path + (key,), first_seen[key], line))
            first_seen.setdefault(key, line)
            self.lines[path + (key,)] = line
            self.visit(value_node, path + (key,))


@dataclass(frozen=True)
class Document:
    data: Any
    lines: dict[tuple, int]
    issues: list[ManifestIssue]      # found while reading, data still usable: later passes add theirs


def _read_text(path: Path, label: str) -> str:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise ManifestError([ManifestIssue(label, "", None, f"over {MAX_BYTES >> 20} MiB, more than a "
                                                                "manifest is: refused")])
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError([ManifestIssue(label, "", None, f"cannot read: {error}")])


def _compose(text: str) -> Optional[tuple[_Walk, Any]]:
    loader = ManifestLoader(text)     # one parse gives both the nodes (for line numbers) and the data
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_expansion(node)
        walk = _Walk()
        walk.visit(node)
        # constructing flattens merges in place: the walk above saw the keys as written
        return walk, loader.construct_document(node)
    finally:
        loader.dispose()


def read_yaml(path: Path, label: str) -> Document:
    text = _read_text(path, label)
    try:
        composed = _compose(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or error
        message = str(problem) if isinstance(error, LimitError) else f"not valid YAML: {problem}"
        raise ManifestError([ManifestIssue(label, "", mark.line + 1 if mark else None, message)])
    except RecursionError:      # the caps above should make this unreachable: a clear message all the same
        raise ManifestError([ManifestIssue(label, "", None, "nested too deeply: refused")])
    if composed is None:
        return Document(None, {}, [])
    walk, data = composed
    issues = [ManifestIssue(label, format_path(key_path), second,
                            f"key {key_path[-1]!r} is written twice, "
                            f"{f'on lines {first} and {second}' if first != second else f'on line {first}'}; "
                            "YAML would silently keep only the last")
              for key_path, first, second in walk.duplicates]
    return Document(data, walk.lines, issues)
