"""How one golden is written and read: path-safe names, byte-deterministic .npz, provenance JSON.

Arrays are stored as `o0`, `o1`, ... with their names in `__names__` (a unicode array): any output name survives,
order included, and nothing needs pickle to load. The .npz files have fixed zip timestamps, so re-blessing
unchanged outputs changes no bytes and DVC stores identical copies once.
"""
from __future__ import annotations

import datetime as _dt
import json
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from mnn_parity.fsutil import atomic_write, atomic_write_bytes
from mnn_parity.records import CaseRun

GOLDEN_LAYOUT = 1
_NAMES_KEY = "__names__"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
_MAX_ENCODED = 200       # leaves room for ".mnn.npz"/".part" under the usual 255-byte file-name limit


@dataclass(frozen=True)
class Golden:
    mnn_outputs: dict[str, np.ndarray]
    ref_outputs: dict[str, np.ndarray]
    provenance: dict
    path: Optional[Path] = None      # the provenance file it was read from, for error messages


class GoldenError(Exception):
    """A golden that cannot be read or written; the message names the file."""


def encode_name(name: str) -> str:
    """A reversible, path-safe file name: percent-encode UTF-8 bytes outside [A-Za-z0-9._-] and a leading dot.

    A leading dot is encoded so no suite, model or case can be ".", "..", hidden, or collide with the
    store's own temporary directories (which start with a dot).
    """
    if not isinstance(name, str) or not name:
        raise GoldenError(f"cannot store an empty name: {name!r}")
    out = []
    for i, ch in enumerate(name):
        if ch in _SAFE and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    encoded = "".join(out)
    if len(encoded) > _MAX_ENCODED:
        raise GoldenError(f"name too long to store as a file name ({len(encoded)} > {_MAX_ENCODED}): {name!r}")
    return encoded


def decode_name(encoded: str) -> str:
    return urllib.parse.unquote(encoded, errors="replace")


def write_golden(tree: Path, key: tuple[str, str, str], run: CaseRun) -> None:
    model, case, backend = key
    directory = tree / encode_name(model) / encode_name(backend)
    directory.mkdir(parents=True, exist_ok=True)
    base = encode_name(case)
    r = run.result
    meta = dict(run.provenance)
    meta.update({
        "layout": GOLDEN_LAYOUT,
        "suite": r.suite, "model": r.model, "case": r.case, "backend": r.backend,
        "verdict": r.verdict.value,
        "failure_class": r.failure_class.value if r.failure_class is not None else None,
        "reason": r.reason,
        "latency_ms": dict(r.latency_ms),
        "tolerance": {c.name: c.tolerance.as_dict() for c in r.outputs},
        "outputs": list(run.mnn_outputs),
        "blessed": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    })
    write_npz(directory / f"{base}.mnn.npz", run.mnn_outputs)
    write_npz(directory / f"{base}.ref.npz", run.ref_outputs)
    try:
        text = json.dumps(meta, indent=2, sort_keys=True, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise GoldenError(f"{directory / base}.json: provenance of {'/'.join(key)} is not plain JSON ({exc})") from exc
    atomic_write_bytes(directory / f"{base}.json", (text + "\n").encode())


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """An .npz np.load reads without pickle, byte-identical for identical arrays (np.savez stamps the time)."""
    names = list(arrays)

    def write(handle) -> None:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            entries = [(_NAMES_KEY, np.array(names, dtype=str))]
            entries += [(f"o{i}", np.asarray(arrays[n])) for i, n in enumerate(names)]
            for key, value in entries:
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                with zf.open(info, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, value, allow_pickle=False)

    try:
        atomic_write(path, write)
    except ValueError as exc:    # object arrays: they would need pickle to come back
        raise GoldenError(f"{path}: cannot store without pickle ({exc})") from exc


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise GoldenError(f"{path}: unreadable golden provenance ({exc})") from exc
    if not isinstance(data, dict):
        raise GoldenError(f"{path}: golden provenance is not a JSON object")
    return data


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = [str(n) for n in npz[_NAMES_KEY]]
            arrays = {name: npz[f"o{i}"] for i, name in enumerate(names)}
    except FileNotFoundError as exc:
        raise GoldenError(f"{path}: golden outputs missing") from exc
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise GoldenError(f"{path}: unreadable golden outputs ({type(exc).__name__}: {exc})") from exc
    return arrays


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"not JSON-serialisable in golden provenance: {type(value).__name__}")
