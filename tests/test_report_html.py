"""The HTML report: one self-contained file, an <img> per plot, valid markup, and the per-layer profile hook."""
from __future__ import annotations

import base64
import io
import re
import sys
from dataclasses import replace
from html.parser import HTMLParser

import pytest
from PIL import Image

from mnn_parity.records import CaseResult, DriftClass, Verdict
from mnn_parity.reports.html import render_html
from tests.test_report_support import EXPECT, bad_output, case, drift, good_output, mixed, summary

VOID = {"meta", "img", "br", "hr", "input", "link"}


class _Checker(HTMLParser):
    """Collects every tag and attribute, and fails on an element closed out of order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()


def _parse(page: str) -> _Checker:
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.stack == [], checker.stack
    return checker


def _images(page: str) -> list[Image.Image]:
    found = []
    for tag, attrs in _parse(page).tags:
        if tag == "img":
            prefix = "data:image/png;base64,"
            assert attrs["src"].startswith(prefix) and attrs.get("alt")
            found.append(Image.open(io.BytesIO(base64.b64decode(attrs["src"][len(prefix):]))))
    return found


def _no_goldens():
    return summary([case("det", "page", Verdict.PASS, [good_output("map")], backend=b, latency=None)
                    for b in ("cpu-fp32", "cpu-low")]
                   + [case("rec", "line", Verdict.FAIL, [bad_output("probs")]),
                      case("rec", "line2", Verdict.FAIL, [bad_output("probs")]).expecting(EXPECT)])


def _assert_self_contained(page: str) -> None:
    # base64 is any letters: a PNG's may spell "hTtP" by chance, and is no reference to anything
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", page)
    assert "http" not in text.lower()
    assert re.findall(r'src="(?!data:)', page) == []
    for forbidden in ("<script", "<link", "<iframe", "url(", "@import"):
        assert forbidden not in text.lower(), forbidden


@pytest.mark.slow
def test_report_with_goldens_is_self_contained_with_an_image_per_plot():
    page = render_html(mixed())
    _assert_self_contained(page)
    images = _images(page)
    # error plots, one per model output: det·y, det·sigmoid_0.tmp_0, cls·logits, cls·boxes, vad·y; then latency
    # against the golden and against ONNX Runtime
    assert len(images) == 7 == page.count("<figure>")
    assert all(img.format == "PNG" and img.width >= 800 for img in images)
    alts = re.findall(r'<img [^>]*alt="([^"]+)"', page)
    assert alts == ["det · y", "det · sigmoid_0.tmp_0", "cls · logits", "cls · boxes", "vad · y",
                    "MNN latency now against the golden", "MNN latency against ONNX Runtime"]


def test_report_without_goldens_has_no_golden_latency_plot_and_says_why():
    page = render_html(_no_goldens())
    _assert_self_contained(page)
    assert len(_images(page)) == 3          # det·map, rec·probs, latency against ONNX Runtime
    assert "MNN latency now against the golden" not in page
    assert "No golden latencies to compare with yet" in page
    assert 'id="changes"' not in page       # nothing to say about drift without goldens


def test_html_shows_the_markdown_tables_in_full():
    page = render_html(mixed())
    for heading in ("Summary: 8 cases", "Worst verdict per model and backend", "What changed since the goldens",
                    "Failures (5)", "Latency", "Warnings (1)", "Expected failures (XFAIL) (1)", "Passes (2)"):
        assert f"{heading}</h" in page, heading
    assert '<td class="fail"><strong>FAIL (FAIL 1, PASS 2)</strong></td>' in page
    assert f"<td>{EXPECT}</td>" in page
    assert '<td class="slow"><strong>3.00×</strong></td>' in page
    assert "<th>1−cos</th>" in page
    assert page.index('id="summary"') < page.index('id="errors"') < page.index('id="failures"')


def test_html_escapes_names_and_reasons():
    page = render_html(summary([case("det", 'a"b<script>', Verdict.FAIL, [bad_output()],
                                     reason="x < y & <img src=http://evil>")]))
    assert "<script>" not in page and "evil>" not in page
    assert "a&quot;b&lt;script&gt;" in page
    _parse(page)


def test_html_renders_when_no_output_was_compared():
    page = render_html(summary([case("rec", "line", Verdict.ERROR, reason="conversion failed\nlog")]))
    assert "No outputs were compared" in page and "<pre>conversion failed\nlog</pre>" in page
    assert _images(page) == []


def test_html_without_matplotlib_still_renders_the_tables(monkeypatch):
    monkeypatch.setitem(sys.modules, "mnn_parity.reports.plots", None)   # import now raises ImportError
    page = render_html(mixed())
    assert "Plots need matplotlib" in page and "<img" not in page
    assert "Failures (5)</h2>" in page


@pytest.mark.slow
def test_per_layer_profile_renders_only_for_cases_that_carry_localisation():
    assert 'id="layers"' not in render_html(mixed())
    found = {"status": "blamed", "node": "Conv_7", "op_type": "Conv", "tensor": "conv2", "verified": "yes",
             "profile": [["conv1", 3, 1e-12, 1e-7], ["conv2", 7, 1e-4, 3e-3], ["sigmoid", 9, None, None]]}
    base = case("det", "page", Verdict.FAIL, [bad_output()])
    localised = replace(base, localisation=found)
    page = render_html(summary([localised, case("det", "text", Verdict.PASS)]))
    section = page[page.index('id="layers"'):]
    assert "Per-layer error</h2>" in section and "det/page [cpu-fp32]" in section
    assert "First divergent op: Conv_7 (Conv), tensor conv2, verified: yes." in section
    assert section.count("<img") == 1 and "<td>conv2</td><td>7</td><td>1.00e-04</td><td>3.00e-03</td>" in section
    assert 'href="#layers"' in page
    assert "The dashed line marks the blamed tensor conv2 (position 7)." in section


def test_the_layer_plot_marks_the_blamed_tensor_only_when_it_was_profiled():
    from mnn_parity.reports.plots import blamed_position, layer_plot

    rows = [("conv1", 3, 1e-12, 1e-7), ("conv2", 7, 1e-4, 3e-3), ("sigmoid", 9, None, None)]
    assert blamed_position(rows, "conv2") == 7 and blamed_position(rows, "sigmoid") == 9
    assert blamed_position(rows, "elsewhere") is None and blamed_position(rows, None) is None
    marked, plain = layer_plot("det/page", rows, "conv2"), layer_plot("det/page", rows, "elsewhere")
    assert "blamed tensor conv2 (position 7)" in marked.caption and "blamed" not in plain.caption
    assert marked.png != plain.png and marked.png.startswith(b"\x89PNG")


@pytest.mark.parametrize("results", [[], [case("m", "a", Verdict.CRASH)]])
def test_html_renders_empty_and_crash_only_runs(results):
    page = render_html(summary(results))
    _assert_self_contained(page)
    _parse(page)


@pytest.mark.slow
def test_latency_caption_mentions_the_noise_band_only_when_a_median_is_in_it():
    assert "grey band" not in render_html(mixed())          # every golden and current median is above 1 ms
    fast = summary([case("det", "tiny", Verdict.PASS, latency={"reference": 0.4, "mnn": 0.5},
                         drift=drift(DriftClass.IDENTICAL, mnn_golden=0.3))])
    assert "In the grey band a median is under 1 ms, too noisy to flag." in render_html(fast)


def test_a_plot_that_fails_costs_its_picture_not_the_report(monkeypatch):
    import mnn_parity.reports.plots as plots

    def broken(_):
        raise ValueError("no finite values")

    monkeypatch.setattr(plots, "latency_plots", broken)
    page = render_html(mixed())
    assert "Plots could not be drawn: ValueError: no finite values" in page
    assert len(_images(page)) == 5                          # the error plots still drawn


def test_a_missing_matplotlib_is_named_once(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    page = render_html(mixed())
    assert page.count("Plots need matplotlib") == 1 and "<img" not in page


def test_past_the_plot_cap_failing_outputs_are_plotted_first(monkeypatch):
    from mnn_parity.reports import plots

    monkeypatch.setattr(plots, "PLOTS_MAX", 2)
    drawn = []
    monkeypatch.setattr(plots, "_error_plot", lambda model, output, by_backend: drawn.append(model) or model)
    results = [case(f"good{i}", "c", Verdict.PASS, [good_output("y")]) for i in range(3)]
    results.append(case("broken", "c", Verdict.FAIL, [bad_output("y")]))
    made, left_out = plots.error_plots(summary(results))
    assert drawn == ["good0", "broken"] and len(made) == 2 and left_out == 2   # chosen by failure, drawn in order
