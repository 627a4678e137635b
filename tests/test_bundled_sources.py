"""The pinned source table of data/: well-formed, complete for the suites, every problem named, and SOURCES.md
rendered from it byte for byte as data.dvc pins it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnn_parity.bundled import sources as src
from mnn_parity.bundled.errors import DataError
from mnn_parity.hashing import sha256_bytes

ROOT = Path(__file__).resolve().parent.parent


def test_source_table_is_well_formed():
    raw = json.loads(src.SOURCES_TABLE.read_text())
    assert src.validate_sources(raw) == []
    sources = src.load_sources()
    destinations = [f.destination for w in sources.wheels for f in w.files] + [c.destination for c in sources.crops]
    assert len(destinations) == len(set(destinations))
    for crop in sources.crops:
        assert len(crop.sha256) == 64 and crop.licence and crop.destination.startswith("data/")
    for wheel in sources.wheels:
        assert len(wheel.sha256) == 64 and wheel.licence and wheel.origin.startswith("https://pypi.org/project/")
        assert wheel.filename.endswith(".whl")
        for f in wheel.files:
            assert len(f.sha256) == 64 and f.licence
            assert f.destination.startswith("data/") and ".." not in Path(f.destination).parts


def test_source_table_holds_what_the_suites_need():
    sources = src.load_sources()
    dests = {f.destination for w in sources.wheels for f in w.files} | {c.destination for c in sources.crops}
    for folder, minimum in (("data/images/documents/", 2), ("data/images/photos/", 3), ("data/images/text_lines/", 3),
                            ("data/audio/speech/", 3), ("data/models/ppocr/", 3), ("data/models/silero/", 1)):
        assert sum(d.startswith(folder) for d in dests) >= minimum, folder


@pytest.mark.parametrize("mutate, expected", [
    (lambda t: t["wheels"][0]["files"][0].update(destination="../outside.png"), "relative path without '..'"),
    (lambda t: t["wheels"][0]["files"][0].update(destination="elsewhere/x.png"), "must be inside data/"),
    (lambda t: t["wheels"][0]["files"][0].update(destination="data/SOURCES.md"), "generated"),
    (lambda t: t["wheels"][0]["files"][0].pop("licence"), "licence: missing"),
    (lambda t: t["wheels"][0]["files"][0].update(size=-1), "files[0].size: must be a non-negative integer"),
    (lambda t: t["wheels"][0].update(sha256="abc"), "wheels[0].sha256"),
    (lambda t: t["wheels"][0].update(filename="x.tar.gz"), "wheels[0].filename: must name a .whl file"),
    (lambda t: t["wheels"][0].update(files=[]), "wheels[0].files: must be a non-empty list"),
    (lambda t: t["wheels"][1]["files"][0].update(destination=t["wheels"][0]["files"][0]["destination"]),
     "written twice"),
    (lambda t: t["crops"][0].update(source="data/not/copied.png"), "not a file copied from a wheel"),
    (lambda t: t["crops"][0].update(box=[10, 10, 5, 20]), "top < bottom"),
    (lambda t: t["crops"][0].update(destination="data/images/text_lines/x.png"), ".pgm or .ppm"),
    (lambda t: t.update(crops={}), "crops: must be a list"),
])
def test_source_table_validation_names_the_problem(mutate, expected):
    table = json.loads(src.SOURCES_TABLE.read_text())
    mutate(table)
    errors = src.validate_sources(table)
    assert any(expected in e for e in errors), errors


def test_a_malformed_table_is_a_data_error_listing_every_problem(tmp_path):
    table = json.loads(src.SOURCES_TABLE.read_text())
    table["wheels"][0]["sha256"] = "abc"
    table["crops"][0]["box"] = [1, 1, 1, 1]
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table))
    with pytest.raises(DataError, match=r"(?s)malformed data source table:.*wheels\[0\]\.sha256.*crops\[0\]\.box"):
        src.load_sources(path)


def test_sources_md_is_deterministic_and_lists_every_file():
    sources = src.load_sources()
    text = src.render_sources_md(sources)
    shuffled = src.Sources(tuple(reversed(sources.wheels)), tuple(reversed(sources.crops)))
    assert text == src.render_sources_md(shuffled)
    for crop in sources.crops:
        assert f"`{crop.destination[len('data/'):]}`" in text
    for wheel in sources.wheels:
        assert wheel.sha256 in text
        for f in wheel.files:
            assert f"`{f.destination[len('data/'):]}`" in text


def test_sources_md_is_the_one_data_dvc_pins():
    """SOURCES.md is part of data/, so of the hash data.dvc pins: its rendering may not change by a byte."""
    expected = src.expected_tree(src.load_sources())[src.SOURCES_MD]
    assert sha256_bytes(src.render_sources_md(src.load_sources()).encode("utf-8")) == expected
    committed = ROOT / "data" / src.SOURCES_MD
    if not committed.is_file():
        pytest.skip("data/ is not restored here")
    assert committed.read_bytes() == src.render_sources_md(src.load_sources()).encode("utf-8")
