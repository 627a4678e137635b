"""Where goldens live and how a bless replaces them all at once.

Layout (version `GOLDEN_LAYOUT`) under the goldens root, every name path-encoded by `encode_name`:

    <suite>/LAYOUT                                  the layout version, one line
    <suite>/<model>/<backend>/<case>.json           provenance, verdict, tolerance, latency, output names
    <suite>/<model>/<backend>/<case>.mnn.npz        MNN's outputs when blessed
    <suite>/<model>/<backend>/<case>.ref.npz        the reference's outputs the verdict was judged on

The reference outputs sit beside each backend's golden rather than once per case: a filtered bless (one backend,
a newer ONNX Runtime) must not rewrite the reference another backend's verdict was judged on.

A bless builds the new tree in a staging folder *beside* the goldens root (`.<root>.staging/`), never inside it:
the root is tracked by DVC, and a killed bless must not leave junk that `dvc status` reports or `dvc add` pins.
The tree is then swapped in (renameat2 exchange where the kernel has it). Blesses of one store are serialised by a
lock, held by `mnn-parity bless` from before it runs anything until its `dvc add goldens` is done; a second one is
refused at once rather than queued. A run reading goldens meanwhile never waits for it.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator, Optional

from mnn_parity.fsutil import atomic_write_bytes, make_staging_dir
from mnn_parity.goldens.serialization import (GOLDEN_LAYOUT, Golden, GoldenError, decode_name, encode_name,
                                              read_json, read_npz, write_golden)
from mnn_parity.records import CaseRun

LAYOUT_FILE = "LAYOUT"
Key = tuple[str, str, str]     # (model, case, backend)


class BlessBusy(GoldenError):
    """Another process holds the bless lock of this store."""


class GoldenStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.staging = self.root.parent / f".{self.root.name}.staging"
        self._held = 0      # the bless lock is re-entrant within this store: `exclusive()` around `bless()`

    # reading

    def load(self, suite: str, model: str, case: str, backend: str) -> Optional[Golden]:
        suite_dir = self._readable_suite_dir(suite)
        base = suite_dir / encode_name(model) / encode_name(backend) / encode_name(case)
        meta_path = base.with_name(base.name + ".json")
        if not meta_path.exists():
            return None
        _check_layout_file(suite_dir)
        provenance = read_json(meta_path)
        layout = provenance.get("layout")
        if layout != GOLDEN_LAYOUT:
            raise GoldenError(f"{meta_path}: golden layout {layout!r}, this runner reads layout {GOLDEN_LAYOUT}; "
                              f"re-bless the suite")
        return Golden(mnn_outputs=read_npz(base.with_name(base.name + ".mnn.npz")),
                      ref_outputs=read_npz(base.with_name(base.name + ".ref.npz")),
                      provenance=provenance, path=meta_path)

    def keys(self, suite: str) -> set[Key]:
        """(model, case, backend) of every golden of the suite."""
        suite_dir = self._readable_suite_dir(suite)
        if not suite_dir.is_dir():
            return set()
        _check_layout_file(suite_dir)
        return set(_scan(suite_dir))

    def stale_keys(self, suite: str, current: Iterable[Key]) -> list[Key]:
        """Goldens whose (model, case, backend) the current run no longer has."""
        return sorted(self.keys(suite) - set(current))

    # writing

    def bless(self, suite: str, runs: list[CaseRun], replace_all: bool) -> list[Key]:
        """Record `runs` as the suite's goldens, atomically; returns the (model, case, backend) keys written.

        The new tree starts from a hard-linked copy of the old one unless `replace_all`. A bless that dies
        part-way leaves the previous goldens in place, and the next bless (or `recover`) cleans up after it.
        """
        planned = _plan(suite, runs)
        encoded = encode_name(suite)
        final = self.root / encoded
        with self._lock():
            self._recover(encoded)
            tmp = make_staging_dir(self.staging, f"{encoded}~tmp-")
            try:
                if final.is_dir() and not replace_all:
                    _check_layout_file(final)
                    _link_tree(final, tmp)
                for key, run in planned:
                    write_golden(tmp, key, run)
                atomic_write_bytes(tmp / LAYOUT_FILE, f"{GOLDEN_LAYOUT}\n".encode())
                self.root.mkdir(parents=True, exist_ok=True)
                self._swap_in(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return sorted(key for key, _ in planned)

    def recover(self) -> None:
        """Undo what killed blesses left, for every suite (the CLI calls this before it reads goldens)."""
        if not self.staging.is_dir():
            return
        try:
            with self._lock():
                for encoded in {p.name.split("~")[0] for p in self.staging.iterdir() if "~" in p.name}:
                    self._recover(encoded)
        except BlessBusy:
            return   # a bless is running: it recovers at its own start, and readers find a set-aside tree

    # A bless killed after its swap and before its `dvc add goldens` ended leaves goldens/ newer than goldens.dvc:
    # the marker says so, and the next run or bless finishes the add (session.py) so `dvc status` is clean again.
    UNTRACKED = "dvc-add-pending"

    def mark_untracked(self) -> None:
        self.staging.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.staging / self.UNTRACKED, b"goldens/ changed; `dvc add goldens` not yet done\n")

    def clear_untracked(self) -> None:
        (self.staging / self.UNTRACKED).unlink(missing_ok=True)

    def untracked_pending(self) -> bool:
        return (self.staging / self.UNTRACKED).is_file()

    def exclusive(self) -> contextlib.AbstractContextManager:
        """Hold the bless lock for a whole bless: its run, its writes and its `dvc add goldens`. A second bless
        is refused at once (GoldenError) instead of running its suites and racing the first one's `dvc add`."""
        return self._lock()

    # internals

    # Staged and set-aside trees are "<suite>~tmp-*" / "<suite>~old-*": encoded names never contain "~", so these
    # globs cannot match another suite's trees.

    def _readable_suite_dir(self, suite: str) -> Path:
        """The suite's directory; if a bless died between its two renames, the previous tree it set aside."""
        encoded = encode_name(suite)
        final = self.root / encoded
        if final.exists():
            return final
        aside = sorted(self.staging.glob(f"{encoded}~old-*")) if self.staging.is_dir() else []
        return aside[-1] if aside else final

    def _recover(self, encoded: str) -> None:
        """Restore a set-aside tree, drop unfinished staged trees."""
        if not self.staging.is_dir():
            return
        final = self.root / encoded
        aside = sorted(self.staging.glob(f"{encoded}~old-*"))
        if aside and not final.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            os.rename(aside.pop(), final)
        for leftover in aside + list(self.staging.glob(f"{encoded}~tmp-*")):
            shutil.rmtree(leftover, ignore_errors=True)

    def _swap_in(self, new: Path, final: Path) -> None:
        """Make `new` the suite's tree. Atomic where the kernel can exchange two paths (Linux renameat2)."""
        if not final.exists():
            os.rename(new, final)
            return
        if _exchange(new, final):
            shutil.rmtree(new, ignore_errors=True)   # `new` now holds the previous tree
            return
        # Two renames; a death between them leaves the old tree set aside, which readers and the next bless find.
        aside = make_staging_dir(self.staging, f"{final.name}~old-")
        os.rmdir(aside)
        os.rename(final, aside)
        os.rename(new, final)
        shutil.rmtree(aside, ignore_errors=True)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        import fcntl

        if self._held:
            self._held += 1
            try:
                yield
            finally:
                self._held -= 1
            return
        self.staging.mkdir(parents=True, exist_ok=True)
        with open(self.staging / "bless.lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BlessBusy(f"another bless of {self.root} is running; nothing was written") from None
            self._held = 1
            try:
                yield
            finally:
                self._held = 0
                fcntl.flock(handle, fcntl.LOCK_UN)


def _check_layout_file(suite_dir: Path) -> None:
    path = suite_dir / LAYOUT_FILE
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise GoldenError(f"{path}: cannot read the goldens' layout version ({exc.strerror or exc})") from exc
    if text != str(GOLDEN_LAYOUT):
        raise GoldenError(f"{path}: golden layout {text!r}, this runner reads layout {GOLDEN_LAYOUT}; "
                          f"re-bless the suite")


def _plan(suite: str, runs: list[CaseRun]) -> list[tuple[Key, CaseRun]]:
    """Check every run before anything is written: a bless is all or nothing."""
    refused, foreign, seen, dupes = [], [], set(), []
    planned = []
    for run in runs:
        r = run.result
        key = (r.model, r.case, r.backend)
        label = "/".join(key)
        if not r.verdict.ran:
            refused.append(f"{label}: {r.verdict.value}" + (f" ({r.reason})" if r.reason else ""))
        if r.suite != suite:
            foreign.append(f"{label}: suite {r.suite!r}")
        if key in seen:
            dupes.append(label)
        seen.add(key)
        for part in (suite, *key):
            encode_name(part)   # raises on names that cannot become files
        planned.append((key, run))
    problems = []
    if refused:
        problems.append("cannot bless runs that did not produce a verdict: " + "; ".join(refused))
    if foreign:
        problems.append(f"runs from another suite than {suite!r}: " + "; ".join(foreign))
    if dupes:
        problems.append("runs blessed twice: " + "; ".join(dupes))
    if problems:
        raise GoldenError("\n".join(problems))
    return planned


def _link_tree(src: Path, dst: Path) -> None:
    def link_or_copy(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)
    shutil.copytree(src, dst, copy_function=link_or_copy, dirs_exist_ok=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


def _scan(suite_dir: Path) -> Iterable[Key]:
    for model_dir in suite_dir.iterdir():
        if not model_dir.is_dir() or model_dir.name.startswith("."):
            continue
        for backend_dir in model_dir.iterdir():
            if not backend_dir.is_dir() or backend_dir.name.startswith("."):
                continue
            for meta in backend_dir.glob("*.json"):
                yield (decode_name(model_dir.name), decode_name(meta.name[:-len(".json")]),
                       decode_name(backend_dir.name))
