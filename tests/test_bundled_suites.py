"""The bundled suites on the real data/: they validate, run clean, and tell an MNN upgrade apart.

These run the real PP-OCR and Silero models through both engines (about 40 s in all on two cores), so they are
what `make run` promises a user on a fresh machine.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnn_parity.cli import main

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One conversion cache for the module, outside the working tree: no test writes into the repository."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def in_repo(monkeypatch, cache):
    monkeypatch.setenv("MNN_PARITY_ROOT", str(ROOT))
    monkeypatch.setenv("MNN_PARITY_CACHE_DIR", str(cache))
    monkeypatch.chdir(ROOT)


def report(folder: Path, suite: str) -> dict:
    return json.loads((folder / f"{suite}.json").read_text())


def test_bundled_suites_validate():
    assert main(["validate"]) == 0


@pytest.mark.parametrize("suite", ["ocr", "vad"])
def test_bundled_suite_runs_clean_on_real_data(suite: str, tmp_path: Path):
    status = main(["run", f"suites/{suite}.yaml", "--report-dir", str(tmp_path), "--goldens", str(tmp_path / "g"),
                   "--junit", str(tmp_path / "junit.xml")])
    doc = report(tmp_path, suite)
    verdicts = {case["verdict"] for case in doc["cases"]}
    assert status == 0, [c for c in doc["cases"] if c["verdict"] not in ("PASS", "XFAIL")]
    assert verdicts <= {"PASS", "XFAIL"} and "PASS" in verdicts
    per_model = {}
    for case in doc["cases"]:
        per_model.setdefault(case["model"], set()).add(case["case"])
    assert all(len(cases) >= 3 for cases in per_model.values())                          # three real inputs or more
    # real inputs are not degenerate: no "not a meaningful test input" warning on any case
    assert not [c for c in doc["cases"] if any("meaningful" in w for w in c["warnings"])]
    assert (tmp_path / f"{suite}.md").read_text().startswith(f"# mnn-parity: {suite}")
    if suite == "ocr":   # conversion variants: each family's precision ladder, the base row first
        assert {f["family"] for f in doc["ladder"]} == {"ppocr-det", "ppocr-rec", "ppocr-cls"}
        assert all(f["rows"][0]["variant"] is None for f in doc["ladder"])


def test_expected_failures_are_real_disagreements(tmp_path: Path):
    """fp16-weight reconversions are kept in the suites as XFAIL: they must really fail, with a reason."""
    main(["run", "suites/ocr.yaml", "--model", "ppocr-rec@fp16", "--report-dir", str(tmp_path),
          "--goldens", str(tmp_path / "g")])
    cases = report(tmp_path, "ocr")["cases"]
    assert cases and all(c["verdict"] == "XFAIL" for c in cases)
    flips = sum(o["topk_flips"] + o["near_tie_flips"] for c in cases for o in c["outputs"])
    assert flips >= 1        # fp16 weights flip the recogniser's argmax somewhere on these 7 lines


def test_bless_under_mnn_350_then_run_under_the_installed_release(tmp_path: Path):
    goldens = tmp_path / "goldens"
    assert main(["bless", "suites/vad.yaml", "--model", "silero-vad", "--mnn", "3.5.0",
                 "--goldens", str(goldens)]) == 0
    main(["run", "suites/vad.yaml", "--model", "silero-vad", "--report-dir", str(tmp_path),
          "--goldens", str(goldens)])
    doc = report(tmp_path, "vad")
    assert doc["environment"]["baseline_mnn_version"] == "3.5.0"
    assert {c["drift"]["drift_class"] for c in doc["cases"]} <= {"identical", "drifted", "changed", "regressed"}
    assert all(c["drift"]["golden_mnn_version"] == "3.5.0" for c in doc["cases"])
    markdown = (tmp_path / "vad.md").read_text()
    assert "3.5.0 → 3.6.1" in markdown
