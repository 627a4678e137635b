"""Repository containment: every file opened for a manifest lies inside the repository root.

The check is made on what is actually opened, after glob expansion and with symlinks resolved, ONNX external data
included. A check on the text of a path is not enough: the text before a glob's first `*` says nothing about
`*/../../outside`, and a wildcard walks through a symlink that a named path would have been refused for.

A leaf module: validation (`manifest.semantic`) and the run (`inputs.cases`) both use it, so a run refuses what
`validate` refuses even if a file changed in between.
"""
from __future__ import annotations

import fnmatch
import functools
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Union

PathLike = Union[str, Path]

# A glob over a huge tree: refused rather than read whole.
MAX_GLOB_MATCHES = 100_000
# Each part of a glob is a level of recursion in `_expand`: thousands of `a/` must not reach Python's limit.
MAX_GLOB_PARTS = 64
# Problems name at most this many paths: a glob through a link to a big folder would otherwise list all of it.
SHOWN = 3


def resolved(root: PathLike, path: PathLike) -> Optional[Path]:
    """Where `path` (relative to `root` unless absolute) really is, or None for a symlink loop."""
    try:
        return (Path(root) / path).resolve()
    except (OSError, RuntimeError):     # RuntimeError: Python 3.11's "Symlink loop"
        return None


@functools.lru_cache(maxsize=64)
def real_root(root: str) -> Path:
    """The repository root with its symlinks resolved, once per process: resolving it again for every file a run
    opens was a tenth of the runner's own time on the conformance suite. The files themselves are always
    resolved afresh (`resolved`), since one can change between validation and the run."""
    return Path(root).resolve()


def inside(root: PathLike, path: PathLike) -> bool:
    """True when `path`, with every symlink followed, is `root` or lies under it."""
    root_path = real_root(str(root))
    target = resolved(root_path, path)
    return target is not None and (target == root_path or root_path in target.parents)


def shown(root: PathLike, path: PathLike) -> str:
    """The path as the user would write it: relative to the root when it is lexically under it."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _escapes_lexically(pattern: str) -> bool:
    # `*` stands for one folder, so normpath's collapsing of `*/..` is what the file system does too
    return os.path.isabs(pattern) or os.path.normpath(pattern).split(os.sep)[0] == ".."


@dataclass
class GlobMatch:
    """What a glob matched under a root: readable files, paths leading outside, and folders (never cases)."""
    root: Path
    pattern: str
    files: list[Path] = field(default_factory=list)
    outside: list[Path] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    escapes: bool = False       # the pattern itself leaves the root, whatever it would match

    def outside_problem(self) -> str:
        listed = ", ".join(f"{shown(self.root, p)} -> {resolved(self.root, p) or 'a symlink loop'}"
                           for p in self.outside[:SHOWN])
        more = f" and {len(self.outside) - SHOWN} more" if len(self.outside) > SHOWN else ""
        return (f"glob {self.pattern!r} reaches {len(self.outside)} path(s) outside the repository root "
                f"{self.root}: {listed}{more}")


def _names(folder: Path, pattern: str) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            names = [entry.name for entry in entries]
    except (OSError, ValueError):   # not a folder, unreadable, or a NUL byte in the path
        return []
    if not pattern.startswith("."):
        names = [name for name in names if not name.startswith(".")]    # as glob: `*` skips hidden names
    return sorted(fnmatch.filter(names, pattern))


def _tree(folder: Path) -> Iterator[Path]:
    """The folder and every entry below it, never entering a symlinked folder (a link to `.` would loop)."""
    stack = [folder]
    while stack:
        current = stack.pop()
        yield current
        for name in _names(current, "*"):
            child = current / name
            if child.is_dir() and not child.is_symlink():
                stack.append(child)
            else:
                yield child


def _expand(base: Path, parts: list[str]) -> Iterator[Path]:
    """glob.glob(recursive=True)'s matches, except that `**` does not walk through symlinked folders.

    glob's `**` follows them: two links to `.` make its walk exponential, and one to `/` walks the machine.
    """
    if not parts:
        yield base
        return
    head, rest = parts[0], parts[1:]
    if head == "**":
        for path in _tree(base):
            if not rest:
                yield path
            elif path == base or (path.is_dir() and not path.is_symlink()):
                yield from _expand(path, rest)
    elif glob.has_magic(head):
        for name in _names(base, head):
            yield from _expand(base / name, rest)
    elif rest:
        yield from _expand(base / head, rest)
    elif os.path.lexists(base / head):
        yield base / head


def _parts(pattern: str) -> list[str]:
    return [part for part in pattern.split("/") if part not in ("", ".")]


def _iter_glob(root: Path, pattern: str) -> Iterator[Path]:
    seen: set[Path] = set()
    for path in _expand(root, _parts(pattern)):
        if path not in seen:
            seen.add(path)
            yield path


def match_glob(root: PathLike, pattern: str) -> GlobMatch:
    """Expand `pattern` relative to `root`, sorting each match by where it really leads."""
    root = real_root(str(root))
    match = GlobMatch(root, pattern)
    if _escapes_lexically(pattern):     # refused unexpanded: not even a folder outside is listed
        match.escapes = True
        match.problems.append(f"glob {pattern!r} leaves the repository root {root}")
        return match
    if len(_parts(pattern)) > MAX_GLOB_PARTS:
        match.problems.append(f"glob {pattern[:80]!r}… has more than {MAX_GLOB_PARTS} parts: refused")
        return match
    for count, path in enumerate(_iter_glob(root, pattern)):
        if count >= MAX_GLOB_MATCHES:
            match.problems.append(f"glob {pattern!r} matches more than {MAX_GLOB_MATCHES} paths: refused")
            break
        if not inside(root, path):
            match.outside.append(path)
        elif path.is_file():
            match.files.append(path)
        else:
            match.folders.append(path)
    match.files.sort()
    match.outside.sort()
    if match.outside:
        match.problems.append(match.outside_problem())
    if not match.files and not match.outside and not match.problems:
        if match.folders:
            match.problems.append(f"glob {pattern!r} matches only folders, no file, under the repository root "
                                  f"{root}: {', '.join(shown(root, p) for p in sorted(match.folders)[:SHOWN])}")
        else:
            match.problems.append(f"glob {pattern!r} matches no file under the repository root {root}")
    return match


def expand_glob(root: PathLike, pattern: str) -> tuple[list[Path], list[str]]:
    """The files `pattern` matches, all inside `root`, and the problems: escapes, only folders, no match."""
    match = match_glob(root, pattern)
    return match.files, match.problems


# ---------------------------------------------------------------------------------------------------- ONNX external data
def _graph_tensors(graph) -> Iterator:
    """Every tensor a graph holds, subgraphs (If, Loop, Scan bodies) and node attributes included."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        yield from _attribute_tensors(node.attribute)


def _attribute_tensors(attributes) -> Iterator:
    for attribute in attributes:
        if attribute.HasField("t"):
            yield attribute.t
        if attribute.HasField("sparse_tensor"):
            yield attribute.sparse_tensor.values
            yield attribute.sparse_tensor.indices
        yield from attribute.tensors
        for sparse in attribute.sparse_tensors:
            yield sparse.values
            yield sparse.indices
        if attribute.HasField("g"):
            yield from _graph_tensors(attribute.g)
        for graph in attribute.graphs:
            yield from _graph_tensors(graph)


def _model_tensors(model) -> Iterator:
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _attribute_tensors(node.attribute)


def _external_locations(model) -> list[str]:
    from onnx import TensorProto

    locations = []
    for tensor in _model_tensors(model):
        if tensor.data_location == TensorProto.EXTERNAL:
            entries = {entry.key: entry.value for entry in tensor.external_data}
            locations.append(entries.get("location", ""))
    return sorted(set(locations))


# TensorProto.data_location (field 14, a varint) set to EXTERNAL (1), as serialized: an external tensor's bytes
# hold this, or the key "location", or both
EXTERNAL_TAG = bytes([14 << 3, 1])


def external_data_problems(onnx_path: PathLike, root: PathLike) -> list[str]:
    """Why opening this model with its external data would read outside `root` or fail; [] when it would not.

    A model that cannot be parsed gives [] here: reading its signature reports that.
    """
    import onnx

    root, onnx_path = real_root(str(root)), Path(root) / onnx_path
    if not inside(root, onnx_path):
        return [f"the model {shown(root, onnx_path)} resolves to {resolved(root, onnx_path)}, outside the "
                f"repository root {root}"]
    try:
        raw = onnx_path.read_bytes()
        if b"location" not in raw and EXTERNAL_TAG not in raw:
            return []   # no tensor can be external: skip the parse (most models; each parse holds the GIL)
        model = onnx.load_model_from_string(raw)
    except Exception:   # onnx raises DecodeError, ValueError, ... for a file that is not ONNX
        return []
    # ONNX Runtime resolves a location against the folder of the path it is given, MNN's converter against the
    # model's real folder: both must stay inside
    folders = sorted({onnx_path.parent, onnx_path.resolve().parent})
    problems = []
    for location in _external_locations(model):
        if not location:
            problems.append("a tensor has external data without a location")
        elif escaped := [folder for folder in folders if not inside(root, folder / location)]:
            problems.append(f"external data {location!r} resolves to {resolved(escaped[0], location)}, "
                            f"outside the repository root {root}")
        elif not (onnx_path.parent / location).is_file():
            problems.append(f"external data {location!r} does not exist beside the model "
                            f"(repository root {root})")
    return problems
