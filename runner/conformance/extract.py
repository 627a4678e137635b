"""The ONNX backend node tests of a wheel, as a tree the runner reads: byte for byte the same on every machine.

For each `onnx/backend/test/data/node/<test>/`: `model.onnx` copied verbatim, and each `test_data_set_<k>` turned
from TensorProto `.pb` files into two `.npz` archives, `inputs/<k>.npz` (keyed by the graph's input names, which
is what a manifest's `cases:` reads) and `expected/<k>.npz` (keyed by output names). The archives are written
uncompressed with fixed zip metadata, so their bytes depend only on the arrays. A test whose inputs or outputs are
not plain numeric tensors (strings, sequences, optionals, float8, int4, bfloat16) is listed in `index.json` with
the reason and not written: no engine input takes them and the comparison cannot judge them.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

NODE_PREFIX = "onnx/backend/test/data/node/"
INDEX = "index.json"
# TensorProto element types numpy holds natively and both engines take: everything else is skipped with a reason.
STANDARD_TYPES = frozenset({"FLOAT", "DOUBLE", "FLOAT16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16",
                            "UINT32", "UINT64", "BOOL"})
_EXPANDED = re.compile(r"_expanded(_ver\d+)?$")
_DATA_FILE = re.compile(r"test_data_set_(\d+)/(input|output)_(\d+)\.pb$")


@dataclass(frozen=True)
class NodeTest:
    """One test as the index records it."""
    name: str
    op: str                  # the op under test (for an `_expanded` test, the op its function body stands for)
    ops: tuple[str, ...]     # every node's op type, in graph order
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    data_sets: int
    skipped: str = ""        # why it is not part of the suite; "" when it is

    def to_json(self) -> dict:
        return {"op": self.op, "ops": list(self.ops), "inputs": list(self.inputs), "outputs": list(self.outputs),
                "data_sets": self.data_sets, **({"skipped": self.skipped} if self.skipped else {})}

    @classmethod
    def from_json(cls, name: str, doc: Mapping) -> "NodeTest":
        return cls(name, doc["op"], tuple(doc["ops"]), tuple(doc["inputs"]), tuple(doc["outputs"]),
                   int(doc["data_sets"]), doc.get("skipped", ""))


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An uncompressed `.npz` whose bytes depend only on the arrays (numpy's savez stamps the current time)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            # ascontiguousarray would make a 0-d array 1-d: a scalar output must stay a scalar
            np.lib.format.write_array(member, np.array(array, order="C"), version=(1, 0), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.create_system, info.external_attr = 3, 0o644 << 16
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def op_label(node) -> str:
    """`Relu`; an op outside the default domain keeps its domain (`ai.onnx.ml:LabelEncoder`)."""
    return f"{node.domain}:{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type


def _type_problem(value_info) -> str:
    import onnx

    kind = value_info.type.WhichOneof("value")
    if kind != "tensor_type":
        return f"{value_info.name!r} is a {kind.replace('_type', '')}, not a tensor"
    elem = onnx.TensorProto.DataType.Name(value_info.type.tensor_type.elem_type)
    return "" if elem in STANDARD_TYPES else f"{value_info.name!r} is {elem}"


def _arrays(archive: zipfile.ZipFile, members: list[str], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The data set's tensors by position (input_i is the graph's i-th input), keyed by the graph's names."""
    import onnx
    from onnx import numpy_helper

    if len(members) != len(names):
        raise ValueError(f"{len(members)} tensor files for {len(names)} graph values")
    arrays = {}
    for member, name in zip(members, names):
        tensor = onnx.TensorProto()
        tensor.ParseFromString(archive.read(member))
        arrays[name] = numpy_helper.to_array(tensor)
    return arrays


def read_test(archive: zipfile.ZipFile, name: str, members: list[str]) -> tuple[NodeTest, dict[str, bytes]]:
    """One test's index entry and the files to write for it (none when it is skipped)."""
    import onnx

    model_member = f"{NODE_PREFIX}{name}/model.onnx"
    model_bytes = archive.read(model_member)
    model = onnx.load_from_string(model_bytes)
    initialisers = {i.name for i in model.graph.initializer}
    graph_inputs = [v for v in model.graph.input if v.name not in initialisers]
    inputs = tuple(v.name for v in graph_inputs)
    outputs = tuple(v.name for v in model.graph.output)
    ops = tuple(op_label(node) for node in model.graph.node)
    sets: dict[int, dict[str, dict[int, str]]] = {}
    for member in members:
        found = _DATA_FILE.search(member)
        if found:
            sets.setdefault(int(found[1]), {"input": {}, "output": {}})[found[2]][int(found[3])] = member
    test = NodeTest(name, ops[0] if len(ops) == 1 else "", ops, inputs, outputs, len(sets))
    problems = [p for p in map(_type_problem, [*graph_inputs, *model.graph.output]) if p]
    if problems:
        return _skip(test, "; ".join(problems)), {}
    if not sets:
        return _skip(test, "no test data set"), {}
    files = {f"{name}/model.onnx": model_bytes}
    for k in sorted(sets):
        try:
            feeds = _arrays(archive, [m for _, m in sorted(sets[k]["input"].items())], inputs)
            expected = _arrays(archive, [m for _, m in sorted(sets[k]["output"].items())], outputs)
        except (ValueError, TypeError) as error:
            return _skip(test, f"test_data_set_{k}: {error}"), {}
        files[f"{name}/inputs/test_data_set_{k}.npz"] = npz_bytes(feeds)
        files[f"{name}/expected/test_data_set_{k}.npz"] = npz_bytes(expected)
    return test, files


def _skip(test: NodeTest, reason: str) -> NodeTest:
    return NodeTest(test.name, test.op, test.ops, test.inputs, test.outputs, test.data_sets, reason)


def with_primary_ops(tests: list[NodeTest]) -> list[NodeTest]:
    """An `_expanded` test is the function body of its twin's op: count it under that op, not under its parts."""
    single = {t.name: t.op for t in tests if t.op}
    out = []
    for t in tests:
        op = t.op or single.get(_EXPANDED.sub("", t.name), "") or (t.ops[-1] if t.ops else "?")
        out.append(NodeTest(t.name, op, t.ops, t.inputs, t.outputs, t.data_sets, t.skipped))
    return out


def node_test_members(archive: zipfile.ZipFile) -> dict[str, list[str]]:
    tests: dict[str, list[str]] = {}
    for member in archive.namelist():
        if member.startswith(NODE_PREFIX) and member.count("/") >= 6:
            tests.setdefault(member[len(NODE_PREFIX):].split("/")[0], []).append(member)
    return {name: sorted(members) for name, members in sorted(tests.items())}


def extract_tree(wheel: Path, target: Path, source: str, only: Optional[frozenset[str]] = None) -> int:
    """Write the tree into `target` (absent or empty); returns the number of files written.

    `only` keeps a subset of the tests (the tests build a small tree without extracting 1,700 of them).
    """
    from mnn_parity.fsutil import atomic_write_bytes, atomic_write_text

    target.mkdir(parents=True, exist_ok=True)
    if any(target.iterdir()):
        raise FileExistsError(f"{target}: not empty")
    tests: list[NodeTest] = []
    count = 0
    with zipfile.ZipFile(wheel) as archive:
        for name, members in node_test_members(archive).items():
            if only is not None and name not in only and _EXPANDED.sub("", name) not in only:
                continue
            test, files = read_test(archive, name, members)
            tests.append(test)
            for relative, payload in files.items():
                atomic_write_bytes(target / relative, payload)
                count += 1
    index = {"source": source, "tests": {t.name: t.to_json() for t in with_primary_ops(tests)}}
    atomic_write_text(target / INDEX, json.dumps(index, indent=1, sort_keys=True) + "\n")
    return count + 1


def read_index(tree: Path) -> tuple[str, list[NodeTest]]:
    doc = json.loads((tree / INDEX).read_text(encoding="utf-8"))
    return doc["source"], [NodeTest.from_json(name, entry) for name, entry in sorted(doc["tests"].items())]
