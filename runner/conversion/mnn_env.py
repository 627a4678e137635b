"""Which MNN release the MNN side runs under: the runner's own, or another one in a cached venv.

`--mnn VERSION` lets two releases be compared on one machine. The converter and worker scripts are stand-alone
files that import only MNN and numpy, so they run unchanged under any interpreter that has those two; this
module only has to produce such an interpreter. Environments live in `<envs>/<version>/` and are built once per
machine, shared by every repository: `<envs>` is `$MNN_PARITY_MNN_ENVS`, else the user's cache directory.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mnn_parity.conversion.cache import locked
from mnn_parity.fsutil import atomic_write_text

ENVS_VARIABLE = "MNN_PARITY_MNN_ENVS"

STAMP_NAME = ".mnn-parity-complete"
# Installing downloads ~20 MB and builds nothing; a limit only guards against a stuck index.
INSTALL_TIMEOUT_S = 900
PROBE_TIMEOUT_S = 120
_TAIL_LINES = 25
# A version becomes a directory name: refuse anything that could walk out of the cache.
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+!-]{0,63}$")
# MNN prints CPU feature lines when it loads; the marker picks our answer out from among them.
_PROBE_MARKER = "MNN-PARITY-VERSION="
_PROBE_CODE = (
    "import importlib.metadata as m, _mnncengine\n"
    f"print({_PROBE_MARKER!r} + m.version('MNN'), flush=True)\n"
)
# Variables that would make a child interpreter see or install into another environment.
_LEAKY_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PIP_TARGET", "PIP_PREFIX", "PIP_USER")


@dataclass(frozen=True)
class MnnEnv:
    version: str
    python: Path


class MnnEnvError(Exception):
    """The environment could not be made or used; `output` is the tail of what the installer said."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(f"{message}\n{output}".rstrip() if output else message)
        self.output = output


def current_env() -> MnnEnv:
    try:
        version = importlib.metadata.version("MNN")
    except importlib.metadata.PackageNotFoundError as exc:
        raise MnnEnvError(f"MNN is not installed for {sys.executable}") from exc
    return MnnEnv(version=version, python=Path(sys.executable))


def envs_dir(cache_dir: Optional[Path] = None) -> Path:
    """Where environments live: $MNN_PARITY_MNN_ENVS wins over everything (a test session, a CI cache), then the
    caller's folder, then the user's cache directory. One build of a release serves every repository."""
    if os.environ.get(ENVS_VARIABLE):
        return Path(os.environ[ENVS_VARIABLE]).expanduser()
    if cache_dir is not None:
        return Path(cache_dir)
    import platformdirs

    return Path(platformdirs.user_cache_dir("mnn-parity")) / "mnn-envs"


def ensure_env(version: Optional[str], cache_dir: Optional[Path] = None) -> MnnEnv:
    """The environment for `version`: the current one when None or already installed, else a cached venv
    in `envs_dir(cache_dir)`."""
    current = current_env()
    if version is None or same_version(version, current.version):
        return current
    if not _VERSION_RE.match(version):
        raise MnnEnvError(f"not a usable MNN version: {version!r}")
    cache_dir = envs_dir(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    env_dir = cache_dir / version
    # Parallel runs asking for the same release must not build into one directory at once.
    with locked(cache_dir / f".{version}.lock"):
        ready = _ready_env(env_dir, version)
        if ready is not None:
            return ready
        return _build_env(env_dir, version)


def probe_version(python: Path) -> str:
    """The MNN version `python` has, after checking that its extension really imports there."""
    proc = _run([str(python), "-I", "-c", _PROBE_CODE], timeout=PROBE_TIMEOUT_S)
    for line in proc.stdout.splitlines():
        if line.startswith(_PROBE_MARKER):
            return line[len(_PROBE_MARKER):].strip()
    raise MnnEnvError(f"{python} cannot import MNN (exit status {proc.returncode})", _tail(proc.stdout))


def same_version(a: str, b: str) -> bool:
    """PEP 440 equality ("3.5" == "3.5.0"), as pip itself would judge `MNN==a`."""
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:   # packaging ships with pip's toolchain nearly everywhere; plain text is the fallback
        return a.strip() == b.strip()
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a.strip() == b.strip()


def env_python(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _ready_env(env_dir: Path, version: str) -> Optional[MnnEnv]:
    """A finished environment, or None. Only the stamp, written last, says an install finished."""
    stamp = env_dir / STAMP_NAME
    python = env_python(env_dir)
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    # A venv points at its base interpreter: if that went away (pyenv upgrade), the venv is dead too.
    if not (isinstance(recorded, dict) and python.exists() and os.access(python, os.X_OK)):
        return None
    installed = recorded.get("installed")
    return MnnEnv(version=installed, python=python) if isinstance(installed, str) else None


def _build_env(env_dir: Path, version: str) -> MnnEnv:
    if env_dir.exists():   # a half-built env from a killed install: start again from nothing
        shutil.rmtree(env_dir)
    started = time.monotonic()
    proc = _run([sys.executable, "-m", "venv", str(env_dir)], timeout=INSTALL_TIMEOUT_S)
    if proc.returncode != 0:
        raise MnnEnvError(f"could not create a venv in {env_dir}", _tail(proc.stdout))
    python = env_python(env_dir)
    print(f"mnn-parity: installing MNN {version} into {env_dir} (once per machine)", file=sys.stderr, flush=True)
    proc = _run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                 "--progress-bar", "off", f"MNN=={version}", "numpy"], timeout=INSTALL_TIMEOUT_S,
                progress=f"  [pip MNN=={version}] ")
    if proc.returncode != 0:
        shutil.rmtree(env_dir, ignore_errors=True)
        raise MnnEnvError(f"pip could not install MNN=={version} into {env_dir}", _tail(proc.stdout))
    installed = probe_version(python)
    if not same_version(installed, version):
        raise MnnEnvError(f"asked for MNN {version}, {python} has {installed}")
    stamp = {"requested": version, "installed": installed, "base_python": sys.executable,
             "base_python_version": sys.version.split()[0], "seconds": round(time.monotonic() - started, 1)}
    atomic_write_text(env_dir / STAMP_NAME, json.dumps(stamp, indent=2) + "\n")
    return MnnEnv(version=installed, python=python)


def _run(argv: list[str], timeout: float, progress: Optional[str] = None) -> subprocess.CompletedProcess:
    """Run to the end, collecting stdout and stderr; with `progress`, echo each line to stderr behind that prefix
    as it comes, since an install takes a minute and a silent one looks hung."""
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY_ENV}
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, errors="replace", env=env)
    except OSError as exc:
        raise MnnEnvError(f"cannot run {argv[0]}: {exc}") from exc
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        proc.kill()

    timer = threading.Timer(timeout, expire)
    timer.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if progress is not None:
                print(progress + line.rstrip(), file=sys.stderr, flush=True)
        returncode = proc.wait()
    finally:
        timer.cancel()
        proc.stdout.close()
    output = "".join(lines)
    if expired.is_set():
        raise MnnEnvError(f"timed out after {timeout:.0f} s: {' '.join(argv)}", _tail(output))
    return subprocess.CompletedProcess(argv, returncode, output)


def _tail(text: str, lines: int = _TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])
