"""The conversion cache: one folder per key, filled atomically and never changed or removed while usable.

Two runs may convert the same model at once. Each converts into its own staging folder (`.<key>-XXXX`, holding an
owner record) and renames it onto the entry's name; a rename onto an existing entry fails, and the loser uses the
winner's entry. An entry another process may be reading is never deleted or replaced: before this, replacing one
non-atomically gave a concurrent reader "Can't open file .../model.mnn". Only an entry that is unusable (no meta,
or a model file gone) is moved aside, under a lock, after checking again that it still is.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Iterator, Optional

from mnn_parity.fsutil import atomic_write_text, make_staging_dir

META, MODEL, LOG, OWNER = "meta.json", "model.mnn", "convert.log", "owner.json"


def read_entry(entry: Path) -> Optional[dict]:
    """The entry's meta when the entry is complete and usable, else None."""
    try:
        meta = json.loads((entry / META).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or (meta.get("ok") and not (entry / MODEL).is_file()):
        return None
    return meta


def new_staging(cache_dir: Path, key: str) -> Path:
    staging = make_staging_dir(cache_dir, f".{key}-")
    atomic_write_text(staging / OWNER, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    return staging


def install(staging: Path, entry: Path) -> bool:
    """Move a filled staging folder onto the entry's name. False when another process got there first."""
    try:
        os.rename(staging, entry)
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY) or isinstance(error, FileExistsError):
            return False
        raise
    return True


def discard_unusable(cache_dir: Path, entry: Path) -> None:
    """Move an unusable entry out of the way so that a fresh conversion can take its name."""
    if not entry.exists() or read_entry(entry) is not None:
        return
    with locked(cache_dir / ".lock"):
        if not entry.exists() or read_entry(entry) is not None:   # another process repaired it meanwhile
            return
        aside = make_staging_dir(cache_dir, f".{entry.name}-unusable-")
        os.rename(entry, aside / entry.name)
    shutil.rmtree(aside, ignore_errors=True)


def remove_stale_staging(cache_dir: Path) -> list[Path]:
    """Remove staging folders whose converter died (killed runs leave them); returns what was removed."""
    removed = []
    try:
        candidates = [p for p in cache_dir.iterdir() if p.name.startswith(".") and p.is_dir()]
    except OSError:
        return removed
    for folder in candidates:
        try:
            owner = json.loads((folder / OWNER).read_text())
        except (OSError, ValueError):
            continue   # not ours, or its owner is still writing the record
        if owner.get("host") == socket.gethostname() and not _alive(int(owner.get("pid", 0))):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's process: alive
        pass
    return True


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` across processes (also used by mnn_env for one install at a time)."""
    try:
        import fcntl
    except ImportError:   # no advisory locks (Windows): the caller's re-checks narrow the window, cannot close it
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
