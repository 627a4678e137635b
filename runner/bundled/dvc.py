"""DVC, through its own API and the venv's own command line: what data.dvc pins, what the workspace hashes to,
storing a verified tree in DVC's cache, and `dvc add` for another folder (goldens/ after a bless)."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from mnn_parity.bundled.errors import DataError
from mnn_parity.bundled.sources import DATA_DIR

DVC_FILE = "data.dvc"

T = TypeVar("T")


def dvc_env() -> dict[str, str]:
    env = dict(os.environ)
    env["DVC_NO_ANALYTICS"] = "1"    # belt and braces beside `core.analytics = false` in .dvc/config
    return env


# Run a module as `python -m` would, but dying with the runner (Linux's parent-death signal): a `bless` killed
# during `dvc add` must not leave DVC writing into goldens/ on its own. Set in the child, so no preexec_fn.
TIED_TO_PARENT = ("import ctypes, os, runpy, signal, sys\n"
                  "try:\n    ctypes.CDLL(None).prctl(1, signal.SIGKILL)\nexcept (AttributeError, OSError):\n    pass\n"
                  "if os.getppid() != int(sys.argv[1]):\n    sys.exit(1)\n"
                  "sys.argv = [sys.argv[2], *sys.argv[3:]]\n"
                  "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n")


def module_argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-c", TIED_TO_PARENT, str(os.getpid()), module, *args]


def dvc_cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    # The venv's own DVC (sys.executable), never whatever `dvc` is first on PATH.
    return subprocess.run(module_argv("dvc", *args), cwd=root, env=dvc_env(), text=True,
                          stdin=subprocess.DEVNULL, capture_output=True)


def dvc_track(root: Path, folder: str) -> str:
    """`dvc add FOLDER` (e.g. goldens/ after a bless), so FOLDER.dvc pins it; returns why not, or "" when done.

    Only in a DVC repository: elsewhere (a scratch folder, a test) there is nothing to track it in.
    """
    if not (root / ".dvc").is_dir():
        return "not a DVC repository"
    done = dvc_cli(root, "add", folder)
    return "" if done.returncode == 0 else (done.stderr or done.stdout).strip().splitlines()[-1:][0]


@dataclass(frozen=True)
class DvcState:
    pinned: str            # the hash data.dvc records for data/
    actual: str            # DVC's hash of the data/ workspace ("" when DVC found nothing to hash)
    in_cache: bool         # whether DVC's cache holds the pinned object (else `dvc status` says "not in cache")

    @property
    def matches(self) -> bool:
        return bool(self.actual) and self.actual == self.pinned


def _with_repo(root: Path, action: Callable[[Any], T]) -> T:
    """Run `action(repo)` on the DVC repository at root through DVC's own API (its hashing, its state db)."""
    from dvc.exceptions import DvcException   # DVC is heavy: import it only when data is checked
    from dvc.repo import Repo

    try:
        with Repo(str(root.resolve())) as repo:
            return action(repo)
    except DvcException as exc:
        raise DataError(f"DVC could not check {DVC_FILE}: {exc}") from exc


def _with_data_output(root: Path, action: Callable[[Any, Any], T], dvc_file: str = DVC_FILE,
                      output: str = DATA_DIR) -> T:
    """Run `action(repo, output)` on data.dvc's `data` output (or another .dvc file's single output)."""
    def on_output(repo: Any) -> T:
        outputs = [out for stage in repo.stage.collect(str(root.resolve() / dvc_file))
                   for out in stage.outs]
        # def_path is relative to the .dvc file's folder
        name = Path(output).relative_to(Path(dvc_file).parent).as_posix()
        data_outs = [out for out in outputs if out.def_path == name]
        if len(data_outs) != 1:
            raise DataError(f"{dvc_file} must track exactly one output '{name}', found {outputs}")
        return action(repo, data_outs[0])

    return _with_repo(root, on_output)


def dvc_state(root: Path, dvc_file: str = DVC_FILE, output: str = DATA_DIR) -> DvcState:
    def inspect(repo: Any, out: Any) -> DvcState:
        status = out.status()                  # {} when clean; else {"data": "modified" | "not in cache" | ...}
        pinned = out.hash_info.value or ""
        if not status:
            return DvcState(pinned, pinned, True)
        # "not in cache" hides whether the content matches: ask DVC for the workspace hash itself.
        built = out.get_hash() if out.exists else None
        actual = (built.value or "") if built else ""
        return DvcState(pinned, actual, "not in cache" not in status.values())

    return _with_data_output(Path(root), inspect, dvc_file, output)


def dvc_remotes(root: Path) -> tuple[str, ...]:
    """Names of the configured DVC remotes (project and local config), like `dvc remote list`."""
    return _with_repo(Path(root), lambda repo: tuple(sorted(repo.config.get("remote", {}))))


def commit_to_cache(root: Path, dvc_file: str = DVC_FILE, output: str = DATA_DIR) -> None:
    """Store the (already verified) data/ tree in DVC's cache so `dvc status` is clean; data.dvc is untouched."""
    _with_data_output(Path(root), lambda repo, out: out.commit(relink=False), dvc_file, output)


def dvc_differences(root: Path) -> list[str]:
    """Empty when DVC's own hash of data/ equals the one data.dvc pins."""
    state = dvc_state(root)
    if state.matches:
        return []
    if not state.actual:
        return [f"{DATA_DIR}/: missing or empty (DVC found nothing to hash)"]
    return [f"{DATA_DIR}/: DVC hashes it as {state.actual}, {DVC_FILE} pins {state.pinned} "
            f"(the source table and {DVC_FILE} disagree?)"]
