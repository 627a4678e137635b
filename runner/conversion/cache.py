"""The conversion cache: one folder per key, filled atomically and never changed or removed while usable.

Two runs may convert the same model at once. Each converts into its own staging folder (`.<key>-XXXX`, holding an
owner record) and renames it onto the entry's name; a rename onto an existing entry fails, and the loser uses the
winner's entry. An entry another process may be reading is never deleted or replaced: before this, replacing one
non-atomically gave a concurrent reader "Can't open file .../model.mnn". Only an entry that is unusable (no meta,
or a model file gone) is moved aside, under a lock, after checking again that it still is.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

from mnn_parity.conversion.result import Conversion
from mnn_parity.fsutil import atomic_write_text, make_staging_dir

META, MODEL, LOG, OWNER = "meta.json", "model.mnn", "convert.log", "owner.json"
CONVERTED, QUANTIZED = "converted", "quantized"   # under the cache root: one folder per cached conversion step
STEP_FOLDERS = (CONVERTED, QUANTIZED)
# A staging folder with no owner record is one whose process died between creating it and writing the record;
# past this age nobody is about to write it.
OWNERLESS_STALE_S = 3600.0


def read_entry(entry: Path) -> Optional[dict]:
    """The entry's meta when the entry is complete and usable, else None."""
    try:
        meta = json.loads((entry / META).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or (meta.get("ok") and not (entry / MODEL).is_file()):
        return None
    return meta


def cached_step(cache_dir: Path, key: str, lookup: Callable[[], Optional[Conversion]],
                fill: Callable[[Path], tuple[Conversion, bool]]) -> Conversion:
    """One conversion step, done once per key: `lookup()` reads the entry; `fill(staging)` runs the step into a
    fresh staging folder and says whether its child crashed. A crash may be the machine's fault (memory, timeout):
    its log is kept beside the cache for the user, and nothing is remembered."""
    entry = cache_dir / key
    found = lookup()
    if found is not None:
        return found
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(cache_dir)
    discard_unusable(cache_dir, entry)
    staging = new_staging(cache_dir, key)
    try:
        result, crashed = fill(staging)
        crash_log = cache_dir / f"{key}.crash.log"
        if crashed:
            atomic_write_text(crash_log, result.log)
            return dataclasses.replace(result, log_path=crash_log)
        if install(staging, entry):
            crash_log.unlink(missing_ok=True)
            return dataclasses.replace(result, mnn_model=entry / MODEL if result.ok else None,
                                       log_path=entry / LOG)
        theirs = lookup()   # another run made the same entry at the same time
        if theirs is None:
            return dataclasses.replace(result, ok=False, mnn_model=None,
                                       reason=f"the conversion cache entry {entry} is unusable")
        return dataclasses.replace(theirs, cached=False)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def conversion_from_entry(entry: Path, key: str, onnx_sha: str) -> Optional[Conversion]:
    """The remembered result of a step, or None when there is no usable entry."""
    meta = read_entry(entry)
    if meta is None:
        return None
    log_path = entry / LOG
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    if meta.get("ok"):
        return Conversion(True, entry / MODEL, log, cached=True, key=key,
                          mnn_sha256=meta.get("mnn_sha256", ""), onnx_sha256=onnx_sha, log_path=log_path)
    return Conversion(False, None, log, meta.get("reason", ""), tuple(meta.get("unsupported_ops", ())),
                      cached=True, key=key, onnx_sha256=onnx_sha, log_path=log_path)


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
        except FileNotFoundError:
            owner = None
        except (OSError, ValueError):
            continue   # not ours, or its owner is still writing the record
        if _stale(folder, owner):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def sweep(cache_root: Path) -> list[Path]:
    """Once per session: staging folders of killed conversions, in every step's folder. The per-step cleanup in
    `cached_step` only runs when that step misses the cache, so a model never converted again kept its junk."""
    return [folder for step in STEP_FOLDERS for folder in remove_stale_staging(Path(cache_root) / step)]


def _stale(folder: Path, owner: Optional[dict]) -> bool:
    if owner is None:
        try:
            return time.time() - folder.stat().st_mtime > OWNERLESS_STALE_S
        except OSError:
            return False
    return owner.get("host") == socket.gethostname() and not _alive(int(owner.get("pid", 0)))


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
