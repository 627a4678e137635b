"""The pinned source table (`data_sources.json`): what data/ holds and where each file comes from.

Each file is a member of a public PyPI wheel pinned by sha256, or a text-line crop of such a member. The table is
checked as a whole (every problem at once), and `data/SOURCES.md` is rendered from it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence

from mnn_parity.bundled.errors import DataError
from mnn_parity.hashing import sha256_bytes

SOURCES_TABLE = Path(__file__).with_name("data_sources.json")
DATA_DIR = "data"
SOURCES_MD = "SOURCES.md"                        # generated from the table; part of data/, so of its hash

_SHA256_CHARS = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class FileSource:
    member: str            # path inside the wheel
    destination: str       # path from the repository root, under data/
    sha256: str
    size: int
    licence: str
    description: str


@dataclass(frozen=True)
class WheelSource:
    project: str
    version: str
    filename: str
    sha256: str
    size: int
    licence: str
    origin: str
    homepage: str
    files: tuple[FileSource, ...]

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"


@dataclass(frozen=True)
class CropSource:
    """A region of an image already in data/, stored as binary PGM/PPM (uncompressed, so byte-identical anywhere).

    The OCR recogniser and angle classifier need single text lines; the pinned wheels ship only whole pages.
    """
    source: str                          # destination of a copied image, under data/
    box: tuple[int, int, int, int]       # top, left, bottom, right in source pixels (bottom/right exclusive)
    destination: str
    sha256: str
    licence: str
    description: str


@dataclass(frozen=True)
class Sources:
    wheels: tuple[WheelSource, ...]
    crops: tuple[CropSource, ...] = ()


def in_data(destination: str) -> str:
    """A destination's path relative to data/ ("data/images/x.png" → "images/x.png")."""
    return destination[len(DATA_DIR) + 1:]


# ------------------------------------------------------------------------------------------------- validation

def validate_sources(raw: object) -> list[str]:
    """Every problem with a parsed source table, as messages; empty when well-formed."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("wheels"), list) or not raw["wheels"]:
        return ["the table must be an object with a non-empty list 'wheels'"]
    seen: set[str] = set()
    errors: list[str] = []
    for i, wheel in enumerate(raw["wheels"]):
        errors += _wheel_problems(wheel, f"wheels[{i}]", seen)
    crops = raw.get("crops", [])
    if not isinstance(crops, list):
        return errors + ["crops: must be a list"]
    copied = set(seen)
    for k, crop in enumerate(crops):
        errors += _crop_problems(crop, f"crops[{k}]", seen, copied)
    return errors


def _wheel_problems(wheel: object, where: str, seen: set[str]) -> list[str]:
    if not isinstance(wheel, Mapping):
        return [f"{where}: must be an object"]
    errors = _missing_strings(wheel, ("project", "version", "filename", "licence", "origin", "homepage"), where)
    errors += _check_sha(wheel.get("sha256"), f"{where}.sha256")
    if not str(wheel.get("filename", "")).endswith(".whl"):
        errors.append(f"{where}.filename: must name a .whl file")
    files = wheel.get("files")
    if not isinstance(files, list) or not files:
        return errors + [f"{where}.files: must be a non-empty list"]
    for j, entry in enumerate(files):
        at = f"{where}.files[{j}]"
        errors += _entry_problems(entry, at, ("member", "destination", "licence", "description"), seen)
        if isinstance(entry, Mapping) and (not isinstance(entry.get("size"), int) or entry["size"] < 0):
            errors.append(f"{at}.size: must be a non-negative integer")
    return errors


def _crop_problems(crop: object, at: str, seen: set[str], copied: set[str]) -> list[str]:
    errors = _entry_problems(crop, at, ("source", "destination", "licence", "description"), seen,
                             suffixes=(".pgm", ".ppm"))
    if not isinstance(crop, Mapping):
        return errors
    if crop.get("source") not in copied:
        errors.append(f"{at}.source: {crop.get('source')} is not a file copied from a wheel")
    box = crop.get("box")
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int) and v >= 0 for v in box)
            and box[0] < box[2] and box[1] < box[3]):
        errors.append(f"{at}.box: must be [top, left, bottom, right] with top < bottom, left < right")
    return errors


def _entry_problems(entry: object, at: str, keys: Sequence[str], seen: set[str],
                    suffixes: tuple[str, ...] = ()) -> list[str]:
    """What every table entry needs: its strings, a sha256, and a destination inside data/ written only once."""
    if not isinstance(entry, Mapping):
        return [f"{at}: must be an object"]
    errors = _missing_strings(entry, keys, at) + _check_sha(entry.get("sha256"), f"{at}.sha256")
    dest = entry.get("destination")
    if isinstance(dest, str):
        problem = _destination_problem(dest)
        if not problem and suffixes and not dest.endswith(suffixes):
            problem = f"{dest} must end in {' or '.join(suffixes)} (the only formats written)"
        if problem:
            errors.append(f"{at}.destination: {problem}")
        elif dest in seen:
            errors.append(f"{at}.destination: {dest} is written twice")
        seen.add(dest)
    return errors


def _missing_strings(entry: Mapping, keys: Sequence[str], where: str) -> list[str]:
    return [f"{where}.{key}: missing or empty" for key in keys if not isinstance(entry.get(key), str) or not entry.get(key)]


def _check_sha(value: object, where: str) -> list[str]:
    if not isinstance(value, str) or len(value) != 64 or not set(value) <= _SHA256_CHARS:
        return [f"{where}: must be 64 lower-case hex digits"]
    return []


def _destination_problem(dest: str) -> str:
    path = PurePosixPath(dest)
    if path.is_absolute() or ".." in path.parts or "\\" in dest:
        return f"{dest} must be a relative path without '..'"
    if len(path.parts) < 2 or path.parts[0] != DATA_DIR:
        return f"{dest} must be inside {DATA_DIR}/"
    if dest == f"{DATA_DIR}/{SOURCES_MD}":
        return f"{dest} is generated, not copied"
    return ""


# ---------------------------------------------------------------------------------------------------- reading

def load_sources(path: Path = SOURCES_TABLE) -> Sources:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the data source table: {exc}") from exc
    errors = validate_sources(raw)
    if errors:
        raise DataError(f"{path}: malformed data source table:\n  " + "\n  ".join(errors))
    wheels = tuple(
        WheelSource(project=w["project"], version=w["version"], filename=w["filename"], sha256=w["sha256"],
                    size=w.get("size", 0), licence=w["licence"], origin=w["origin"], homepage=w["homepage"],
                    files=tuple(FileSource(member=f["member"], destination=f["destination"], sha256=f["sha256"],
                                           size=f["size"], licence=f["licence"], description=f["description"])
                                for f in w["files"]))
        for w in raw["wheels"])
    crops = tuple(CropSource(source=c["source"], box=tuple(c["box"]), destination=c["destination"],
                             sha256=c["sha256"], licence=c["licence"], description=c["description"])
                  for c in raw.get("crops", []))
    return Sources(wheels, crops)


# ------------------------------------------------------------------------------------------------- SOURCES.md

# The text is part of data/ and so of the hash data.dvc pins: changing a byte of it (even the stale module path
# below) means re-pinning data/ with `dvc add data`.
_SOURCES_MD_HEAD = [
    "# Sources of data/",
    "",
    "Generated by `runner/data.py` from `runner/data_sources.json`; do not edit. Each file in the first table",
    "is a byte-identical copy of a member of a public PyPI wheel (pinned by sha256, listed last); the text-line",
    "crops are cut from those copies. `mnn-parity data restore` rebuilds this tree and checks it against data.dvc.",
    "",
    "| file | licence | from | description |",
    "|---|---|---|---|",
]


def render_sources_md(sources: Sources) -> str:
    """data/SOURCES.md: a pure function of the table (no dates, sorted), so its bytes and DVC hash are stable."""
    rows = sorted(((f, w) for w in sources.wheels for f in w.files), key=lambda pair: pair[0].destination)
    lines = list(_SOURCES_MD_HEAD)
    for f, w in rows:
        lines.append(f"| `{in_data(f.destination)}` | {_cell(f.licence)} | `{w.requirement}`: `{f.member}` "
                     f"| {_cell(f.description)} |")
    if sources.crops:
        lines += ["", "## Text-line crops", "",
                  "Regions of the files above, written as binary PGM/PPM (uncompressed, so identical on any machine).",
                  "", "| file | licence | from | box (top, left, bottom, right) | description |", "|---|---|---|---|---|"]
        for c in sorted(sources.crops, key=lambda c: c.destination):
            box = ", ".join(str(v) for v in c.box)
            lines.append(f"| `{in_data(c.destination)}` | {_cell(c.licence)} | `{in_data(c.source)}` | {box} "
                         f"| {_cell(c.description)} |")
    lines += ["", "## Wheels", "", "| wheel | sha256 | licence | origin | homepage |", "|---|---|---|---|---|"]
    for w in sorted(sources.wheels, key=lambda w: w.filename):
        lines.append(f"| `{w.filename}` | `{w.sha256}` | {_cell(w.licence)} | {w.origin} | {w.homepage} |")
    lines.append("")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def expected_tree(sources: Sources) -> dict[str, str]:
    """sha256 of every file data/ must hold, keyed by its path relative to data/."""
    tree = {in_data(f.destination): f.sha256 for w in sources.wheels for f in w.files}
    tree.update({in_data(c.destination): c.sha256 for c in sources.crops})
    tree[SOURCES_MD] = sha256_bytes(render_sources_md(sources).encode("utf-8"))
    return tree
