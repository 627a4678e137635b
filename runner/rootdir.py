"""Which repository every manifest path is relative to: an explicit root, else $MNN_PARITY_ROOT, else the nearest
folder holding .git or .mnn-parity above where we start (a manifest, or the working directory).

One answer for the command line and the pytest plugin, computed per call: no state survives between calls.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

MARKER = ".mnn-parity"        # `mnn-parity init` writes it where no .git marks the root
MARKERS = (".git", MARKER)


def find_root(start: Optional[Path] = None, override: Optional[Path] = None) -> Path:
    if override:
        return Path(override).resolve()
    if os.environ.get("MNN_PARITY_ROOT"):
        return Path(os.environ["MNN_PARITY_ROOT"]).resolve()
    here = Path(start or Path.cwd()).resolve()
    here = here if here.is_dir() else here.parent
    for candidate in (here, *here.parents):
        if any((candidate / marker).exists() for marker in MARKERS):
            return candidate
    return Path.cwd().resolve()
