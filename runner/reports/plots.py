"""The HTML report's plots, as PNG bytes: how far MNN is from the reference per output, and latency against the
golden and the reference.

matplotlib is imported inside the functions (it takes a second to import, and only the HTML report needs it), and
only its object API is used: no pyplot, so no global backend is switched and nothing opens a window.
"""
from __future__ import annotations

import io
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from mnn_parity.records import CaseResult, OutputComparison, Verdict
from mnn_parity.reports.formatting import ONE_MINUS_COS, finite
from mnn_parity.reports.policy import RunSummary, is_slow

PLOTS_MAX = 40    # error plots, one per model output: past this a page is slow to load and no one reads them all
DPI = 100
COLOURS = {"pass": "#2e7d32", "fail": "#c62828", "xfail": "#ef6c00"}
KIND_LABELS = {"pass": "within tolerance", "fail": "out of tolerance", "xfail": "expected failure (XFAIL)"}


@dataclass(frozen=True)
class Plot:
    title: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class _Point:
    value: float
    kind: str     # a key of COLOURS


def error_plots(s: RunSummary) -> tuple[list[Plot], int]:
    """One plot per model output: max abs and 1−cos of every case on every backend, on log scales, beside the
    tolerance. Returns the plots and how many outputs were left out past PLOTS_MAX."""
    groups: dict[tuple[str, str], dict[str, list[tuple[CaseResult, OutputComparison]]]] = {}
    for r in s.results:
        for o in r.outputs:
            groups.setdefault((r.model, o.name), defaultdict(list))[r.backend].append((r, o))
    # Past the cap, the outputs that failed are chosen first, then the furthest from the reference: a long run's
    # plots should show what went wrong, not the first models of the manifest. They are drawn in manifest order.
    chosen = {key for key, _ in sorted(groups.items(), key=lambda item: _plot_rank(item[1]))[:PLOTS_MAX]}
    plots = [_error_plot(model, output, by_backend)
             for (model, output), by_backend in groups.items() if (model, output) in chosen]
    return plots, max(0, len(groups) - PLOTS_MAX)


def _plot_rank(by_backend: Mapping[str, list]) -> tuple[int, float]:
    pairs = [pair for pairs in by_backend.values() for pair in pairs]
    failed = any(_kind(r, o) == "fail" for r, o in pairs)
    gaps = [g for g in (_gap(o) for _, o in pairs) if g is not None and finite(g)]
    return (0 if failed else 1, -max(gaps, default=0.0))


def _error_plot(model: str, output: str, by_backend: Mapping[str, list]) -> Plot:
    fig = _figure(10, 3.2, right=1.7)
    left, right = fig.subplots(1, 2)
    backends = list(by_backend)
    skipped = 0
    for ax, metric, label, limit in ((left, _max_abs, "max abs", lambda t: t.atol),
                                     (right, _gap, f"{ONE_MINUS_COS}", lambda t: 1.0 - t.cosine_min)):
        points = {b: [_Point(metric(o), _kind(r, o)) for r, o in pairs] for b, pairs in by_backend.items()}
        limits = {b: limit(pairs[0][1].tolerance) for b, pairs in by_backend.items()}
        skipped += _strip(ax, backends, points, limits, label)
    fig.suptitle(f"{model} · {output}", fontsize=11)
    _figure_legend(fig, (left, right))
    cases = sum(len(pairs) for pairs in by_backend.values())
    caption = (f"{model} / {output}: {cases} case(s) on {len(backends)} backend(s). Each dot is one case; the dashed "
               "line is the tolerance (atol: an element also passes within rtol·|reference|).")
    if skipped:
        caption += f" {skipped} value(s) not finite (NaN/Inf) are not drawn."
    return Plot(f"{model} · {output}", caption, _png(fig))


def _max_abs(o: OutputComparison) -> Optional[float]:
    return o.max_abs


def _gap(o: OutputComparison) -> Optional[float]:
    return None if o.cosine is None else max(0.0, 1.0 - float(o.cosine))


def _kind(r: CaseResult, o: OutputComparison) -> str:
    if o.passed:
        return "pass"
    return "xfail" if r.verdict is Verdict.XFAIL else "fail"


def _strip(ax, backends: Sequence[str], points: Mapping[str, list[_Point]], limits: Mapping[str, float],
           label: str) -> int:
    """Dots per backend on a log axis; exact zeros sit on the axis floor as open triangles. Returns how many values
    were not finite (not drawn)."""
    values = [p.value for ps in points.values() for p in ps if p.value is not None and finite(p.value)]
    positive = [v for v in [*values, *limits.values()] if v > 0]
    floor = 10 ** math.floor(math.log10(min(positive))) / 10 if positive else 1e-12
    seen: set[str] = set()
    for i, backend in enumerate(backends):
        drawn = [p for p in points[backend] if p.value is not None and finite(p.value)]
        spread = min(0.5 / max(len(drawn), 1), 0.08)
        batches: dict[tuple[str, bool], tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
        for n, p in enumerate(drawn):
            xs, ys = batches[(p.kind, p.value <= 0)]
            xs.append(i + (n - (len(drawn) - 1) / 2) * spread)
            ys.append(floor if p.value <= 0 else p.value)
        for (kind, zero), (xs, ys) in batches.items():
            name = "exactly 0" if zero else KIND_LABELS[kind]
            ax.scatter(xs, ys, s=26, marker="v" if zero else "o", facecolors="none" if zero else COLOURS[kind],
                       edgecolors=COLOURS[kind], label=None if name in seen else name, zorder=3)
            seen.add(name)
        if limits.get(backend, 0) > 0:
            ax.hlines(limits[backend], i - 0.4, i + 0.4, colors="#555", linestyles="--", zorder=2,
                      label=None if "tolerance" in seen else "tolerance")
            seen.add("tolerance")
    from matplotlib.ticker import NullLocator

    ax.set_yscale("log")
    ax.yaxis.set_minor_locator(NullLocator())   # errors span ten decades: minor ticks are clutter, and slow to draw
    # Headroom above the highest dot or tolerance: a tolerance line on the frame's edge was hard to see.
    ax.set_ylim(floor / 2, max([*positive, floor]) * 4)
    ax.set_xticks(range(len(backends)), backends)
    ax.set_xlim(-0.6, len(backends) - 0.4)
    ax.set_ylabel(label)
    ax.grid(axis="y", which="major", alpha=0.3)
    return sum(1 for ps in points.values() for p in ps if p.value is not None and not finite(p.value))


def latency_plots(s: RunSummary) -> list[Plot]:
    """MNN's median latency against the golden's (where goldens hold one) and against ONNX Runtime's."""
    plots = []
    golden = _latency_points(s, lambda r: r.drift.latency_ms_golden.get("mnn") if r.drift is not None else None)
    if golden:
        caption = "Each dot is one case."
        if s.slowdown_max is not None:
            caption += f" Above the dotted line: over {s.slowdown_max:g}× the golden."
        # The band is drawn only when a dot is in it, and then said: an unexplained grey edge puzzled readers.
        noisy = any(min(x, y) < s.slowdown_floor_ms for ps in golden.values() for x, y, _, _ in ps)
        if noisy:
            caption += f" In the grey band a median is under {s.slowdown_floor_ms:g} ms, too noisy to flag."
        title = "MNN latency now against the golden"
        plots.append(Plot(title, caption, _scatter(title, golden, "golden MNN median (ms)", "MNN median now (ms)",
                                                   s.slowdown_max, s.slowdown_floor_ms if noisy else None)))
    reference = _latency_points(s, lambda r: r.latency_ms.get("reference"), flag=False)
    if reference:
        title = "MNN latency against ONNX Runtime"
        plots.append(Plot(title, "Each dot is one case. Above the diagonal: MNN is slower than ONNX Runtime on the "
                          "same input.", _scatter(title, reference, "ONNX Runtime median (ms)", "MNN median (ms)",
                                                  None, None)))
    return plots


def _latency_points(s: RunSummary, baseline, flag: bool = True) -> dict[str, list[tuple[float, float, str, bool]]]:
    points: dict[str, list] = defaultdict(list)
    for r in (r for r in s.results if r.verdict.ran):   # a case that errored or crashed timed nothing whole
        then, now = baseline(r), r.latency_ms.get("mnn")
        if then and now and finite(then) and finite(now) and then > 0 and now > 0:
            points[r.backend].append((float(then), float(now), f"{r.model}/{r.case}", flag and is_slow(r, s)))
    return dict(points)


def _scatter(title: str, points: Mapping[str, list], xlabel: str, ylabel: str, ratio: Optional[float],
             floor_ms: Optional[float]) -> bytes:
    fig = _figure(8.6, 5.6, right=1.9)
    ax = fig.subplots()
    ax.set_title(title, fontsize=11)
    every = [v for ps in points.values() for x, y, _, _ in ps for v in (x, y)]
    low, high = min(every) / 1.6, max(every) * 1.6
    ax.plot([low, high], [low, high], color="#555", linewidth=1, label="same")
    if ratio is not None:
        ax.plot([low, high], [low * ratio, high * ratio], color="#c62828", linestyle=":", linewidth=1,
                label=f"{ratio:g}× slower")
    if floor_ms:
        ax.axvspan(low, floor_ms, color="#9e9e9e", alpha=0.15, linewidth=0)
        ax.axhspan(low, floor_ms, color="#9e9e9e", alpha=0.15, linewidth=0)
    for i, (backend, ps) in enumerate(points.items()):
        ax.scatter([p[0] for p in ps], [p[1] for p in ps], s=24, color=f"C{i}", label=backend, zorder=3)
    # Ringed, not named: cases with close timings stacked their names into an unreadable smear; the table names them.
    flagged = [p for ps in points.values() for p in ps if p[3]]
    if flagged:
        ax.scatter([p[0] for p in flagged], [p[1] for p in flagged], s=90, facecolors="none",
                   edgecolors=COLOURS["fail"], linewidths=1.4, label="flagged (see the table)", zorder=4)
    _plain_log_axes(ax, low, high)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(which="major", alpha=0.3)
    _figure_legend(fig, (ax,))
    return _png(fig)


def _plain_log_axes(ax, low: float, high: float) -> None:
    """Log axes labelled 3, 30, 300 rather than 3×10⁰: milliseconds are read, not decoded."""
    from matplotlib.ticker import LogFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _figure_legend(fig, axes) -> None:
    """One legend for the figure, outside the axes: inside, it hid points and tolerance lines."""
    entries: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="upper right", fontsize=8, frameon=False)


def layer_plot(title: str, rows: Sequence[tuple[str, int, Optional[float], Optional[float]]],
               blamed: Optional[str] = None) -> Plot:
    """1−cos per intermediate tensor in graph order, for the per-layer error profile of a localised case; the
    blamed tensor, when it is among the rows, is marked so the jump the blame rests on is seen at once."""
    fig = _figure(10, 3.2, right=0.3)
    ax = fig.subplots()
    drawn = [(i, float(e)) for _, i, e, _ in rows if e is not None and finite(e)]
    floor = min([e for _, e in drawn if e > 0] or [1e-12]) / 10
    ax.plot([i for i, _ in drawn], [e if e > 0 else floor for _, e in drawn], marker="o", markersize=3,
            color=COLOURS["fail"])
    mark = blamed_position(rows, blamed)
    caption = f"{title}: {ONE_MINUS_COS} of each intermediate tensor MNN kept unchanged, in graph order."
    if mark is not None:
        ax.axvline(mark, color=COLOURS["xfail"], linestyle="--", linewidth=1.2, label=f"blamed: {blamed}")
        ax.legend(loc="upper left", fontsize="small", frameon=False)
        caption += f" The dashed line marks the blamed tensor {blamed} (position {mark})."
    ax.set_yscale("log")
    ax.set_xlabel("position in the ONNX graph")
    ax.set_ylabel(ONE_MINUS_COS)
    ax.grid(alpha=0.3)
    return Plot(title, caption, _png(fig))


def blamed_position(rows: Sequence[tuple[str, int, Optional[float], Optional[float]]],
                    blamed: Optional[str]) -> Optional[int]:
    """The graph position of the blamed tensor among the profile rows, or None when it is not one of them."""
    return next((int(i) for t, i, _, _ in rows if blamed is not None and t == blamed), None)


def _figure(width: float, height: float, right: float):
    from matplotlib.figure import Figure

    # Fixed margins, not a layout engine: constrained layout measured every tick label and tripled the time.
    fig = Figure(figsize=(width, height), dpi=DPI)
    fig.subplots_adjust(left=0.8 / width, right=1 - right / width, bottom=0.55 / height, top=1 - 0.45 / height,
                        wspace=1.2 / width * 2)
    return fig


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    # No "Software" stamp: the same run gives the same bytes whichever matplotlib wrote them.
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
