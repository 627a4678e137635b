"""The lines a run prints per suite."""
from __future__ import annotations

from pathlib import Path

from mnn_parity.reports import terminal_summary
from tests.test_report_support import mixed


def test_terminal_summary():
    text = terminal_summary(mixed(), paths=[Path("reports/ocr.md"), Path("reports/ocr.json")])
    lines = text.splitlines()
    assert lines[0] == "ocr: 8 cases — 2 PASS, 2 FAIL, 1 ERROR, 1 CRASH, 1 XFAIL, 1 XPASS (3.5 s) [FAILED]"
    assert any(line.startswith("  FAIL dead-output cls/img-dead [cpu-low]: logits: all zero") for line in lines)
    assert "  goldens: 1 identical, 1 drifted, 1 regressed, 1 stale" in lines
    assert "  MNN 3.0.0 → 3.6.1" in lines
    assert lines[-1] == "  reports: reports/ocr.md, reports/ocr.json"
    assert len(lines) < 15
