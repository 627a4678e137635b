"""Getting the pinned wheels: from the local cache when its copy has the pinned sha256, else from PyPI with
pip's ordinary client (no dependencies, no install). Wheels are only ever read as zip files."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

from mnn_parity.bundled.errors import DataError
from mnn_parity.bundled.sources import WheelSource
from mnn_parity.hashing import sha256_file

WHEEL_CACHE = Path(".cache") / "wheels"

Downloader = Callable[[WheelSource, Path], None]


def pip_target_args(filename: str) -> list[str]:
    """pip flags that select exactly this wheel whatever machine runs pip (its tags, from its file name)."""
    parts = filename[:-len(".whl")].split("-")
    if len(parts) not in (5, 6):
        raise DataError(f"{filename}: not a wheel file name")
    python_tag, abi_tag, platform_tag = parts[-3:]
    if platform_tag == "any":
        return []
    tag = python_tag.split(".")[0]
    implementation, digits = tag[:2], tag[2:]
    args = ["--implementation", implementation, "--python-version", f"{digits[0]}.{digits[1:]}", "--abi", abi_tag]
    for platform in platform_tag.split("."):
        args += ["--platform", platform]
    return args


def pip_download(wheel: WheelSource, cache: Path) -> None:
    """Fetch one pinned wheel from PyPI with pip's ordinary client; no dependencies, no install."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(cache), *pip_target_args(wheel.filename), wheel.requirement]
    proc = subprocess.run(cmd, text=True, capture_output=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise DataError(f"pip could not download {wheel.requirement}: {proc.stderr.strip()[-2000:]}")


def ensure_wheel(wheel: WheelSource, cache: Path, download: Downloader) -> bool:
    """Make cache/<filename> the pinned wheel; True if it had to be downloaded."""
    path = cache / wheel.filename
    if path.is_file() and sha256_file(path) == wheel.sha256:
        return False
    cache.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()     # a stale or corrupt copy: pip would keep it ("already downloaded")
    download(wheel, cache)
    if not path.is_file():
        raise DataError(f"downloading {wheel.requirement} did not produce {wheel.filename} in {cache}")
    actual = sha256_file(path)
    if actual != wheel.sha256:
        raise DataError(f"{wheel.filename}: sha256 {actual} but the table pins {wheel.sha256}")
    return True
