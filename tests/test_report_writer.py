"""Writing reports: valid files, and an old report left whole when a render or a write fails."""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET

import pytest

import mnn_parity.reports.writer as writer
from mnn_parity.records import Verdict
from mnn_parity.reports import render_markdown, validate_report, write_reports
from tests.test_report_support import case, mixed, summary


@pytest.mark.slow
def test_write_reports_writes_valid_files(tmp_path):
    junit = tmp_path / "ci" / "junit.xml"
    paths = write_reports(mixed(), tmp_path / "reports", junit=junit)
    assert paths == [tmp_path / "reports" / "ocr.md", tmp_path / "reports" / "ocr.json",
                     tmp_path / "reports" / "ocr.html", junit]
    doc = json.loads(paths[1].read_text())
    validate_report(doc)
    assert paths[0].read_text() == render_markdown(mixed())
    assert ET.parse(junit).getroot().get("tests") == "8"
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["ocr.html", "ocr.json", "ocr.md"]
    assert "[ocr.html](ocr.html)" in paths[0].read_text()      # the Markdown links the HTML beside it


def test_failed_render_leaves_the_old_reports_intact(tmp_path, monkeypatch):
    out = tmp_path / "reports"
    junit = tmp_path / "junit.xml"
    write_reports(mixed(), out, junit=junit)
    before = {p.name: p.read_bytes() for p in [*out.iterdir(), junit]}
    changed = summary([case("det", "new-case", Verdict.PASS)])

    for target in ("render_markdown", "render_json", "render_html", "render_junit", "validate_report"):
        with monkeypatch.context() as m:
            m.setattr(writer, target, lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
            with pytest.raises(RuntimeError, match="boom"):
                write_reports(changed, out, junit=junit)
        after = {p.name: p.read_bytes() for p in [*out.iterdir(), junit]}
        assert after == before, target


@pytest.mark.slow
def test_interrupted_write_leaves_no_partial_file(tmp_path, monkeypatch):
    out = tmp_path / "reports"
    out.mkdir()
    (out / "ocr.md").write_text("old report\n")

    def fail(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        write_reports(mixed(), out)
    assert (out / "ocr.md").read_text() == "old report\n"
    assert [p.name for p in out.iterdir()] == ["ocr.md"]


def test_suite_names_that_are_not_file_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="cannot name a report file"):
        write_reports(summary([], suite="../escape"), tmp_path)
