"""Files DVC tracks that this clone lacks: such a file is one `dvc pull` away, and the message says which."""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Optional

import yaml

from mnn_parity.paths import shown

WILDCARDS = set("*?[")
MAX_DVC_FILE = 1 << 16      # a .dvc file is a few lines of hashes


def fixed_parts(relative: str) -> list[str]:
    """The path's leading components up to its first wildcard: what a glob is sure to lie under."""
    parts = []
    for part in PurePosixPath(relative).parts:
        if WILDCARDS & set(part):
            break
        parts.append(part)
    return parts


def dvc_outs(dvc_file: Path) -> Optional[list]:
    """The `outs:` list of a .dvc file as written, or None when it cannot be read as one (missing, not YAML, no
    list)."""
    try:
        with open(dvc_file, "rb") as handle:
            document = yaml.safe_load(handle.read(MAX_DVC_FILE)) or {}
    except Exception:   # OSError, yaml.YAMLError, a NUL byte...: DVC itself will say what is wrong with it
        return None
    outs = document.get("outs") if isinstance(document, dict) else None
    return outs if isinstance(outs, list) else None


def pinned_files(dvc_file: Path) -> int:
    """How many files a .dvc file says its outputs hold (`nfiles:`, 1 when an entry does not say); 0 when
    unreadable."""
    counts = [out.get("nfiles", 1) for out in dvc_outs(dvc_file) or [] if isinstance(out, dict)]
    return sum(count for count in counts if isinstance(count, int) and not isinstance(count, bool))


def _tracks(dvc_file: Path, target: Path) -> bool:
    outs = dvc_outs(dvc_file)
    if outs is None:   # by DVC's naming, `X.dvc` still tracks `X`
        return True
    return any(isinstance(out, dict) and dvc_file.parent / str(out.get("path", "")) == target for out in outs)


def tracking_file(root: Path, relative: str) -> Optional[Path]:
    """The `.dvc` file tracking `relative` (a path, or a glob's fixed start), the most specific one first."""
    parts = fixed_parts(relative)
    if os.path.isabs(relative) or ".." in parts:
        return None
    for depth in range(len(parts), 0, -1):
        target = root.joinpath(*parts[:depth])
        candidate = target.with_name(target.name + ".dvc")
        if candidate.is_file() and _tracks(candidate, target):
            return candidate
    return None


def dvc_hint(root: Path, relative: str) -> str:
    """`: tracked by X.dvc but missing: run ...` for a missing path that DVC tracks, else ""."""
    dvc_file = tracking_file(root, relative)
    if dvc_file is None:
        return ""
    name = shown(root, dvc_file)
    return f": tracked by {name} but missing: run `dvc pull {name}`"
