"""How numbers, names and table cells read in every report, so Markdown, JUnit and the terminal agree."""
from __future__ import annotations

import enum
import math
from typing import Iterable, Optional, Sequence

from tabulate import tabulate

from mnn_parity.records import CaseResult

NONE = "–"   # an empty cell still says "nothing here" rather than looking like a rendering gap
ONE_MINUS_COS = "1−cos"   # cosines of 0.9999999 and 1 print alike; their distance from 1 is what tells them apart


class Strong(str):
    """A table cell to stress: bold in Markdown, <strong> in HTML, where `tone` (a verdict, lower case) colours it.

    Rows are built once as plain text with these marks (see `tables`), then escaped by each format."""
    tone: str

    def __new__(cls, value: object, tone: str = "") -> "Strong":
        made = super().__new__(cls, value)
        made.tone = tone
        return made


def enum_value(x: Optional[enum.Enum]) -> Optional[str]:
    return None if x is None else x.value


def finite(x: object) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def ident(r: CaseResult) -> str:
    return f"{r.model}/{r.case} [{r.backend}]"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    # disable_numparse: cells are pre-formatted text; tabulate must not reformat "1e-04" or "007".
    return tabulate(list(rows), headers=list(headers), tablefmt="github", disable_numparse=True)


def md_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table from plain-text rows (see `tables`): every cell escaped, `Strong` cells in bold."""
    return table([cell(h) for h in headers], [[md_cell(c) for c in row] for row in rows])


def md_cell(value: str) -> str:
    return f"**{cell(value)}**" if isinstance(value, Strong) and value else cell(value)


def text(s: object) -> str:
    """Plain text safe in Markdown prose: no raw HTML tags from case names or reasons ('>' stays readable)."""
    return str(s).replace("&", "&amp;").replace("<", "&lt;")


def cell(s: object) -> str:
    return text(str(s)).replace("\r", " ").replace("\n", " ").replace("|", "\\|")


def short(s: object, n: int) -> str:
    s = str(s)
    return s if len(s) <= n else s[: n - 1] + "…"


def first_line(s: Optional[str]) -> str:
    s = (s or "").strip()
    return s.splitlines()[0] if s else ""


def shape(dims: Sequence[int]) -> str:
    return "×".join(str(int(d)) for d in dims) if dims else "scalar"


def fmt_e(x: Optional[float]) -> str:
    return _number(x, ".2e")


def fmt_cos(x: Optional[float]) -> str:
    """A cosine as its distance from 1 (`4.6e-10`), in scientific notation so that every digit that differs shows."""
    if x is None or not finite(x):
        return _number(x, "")
    # A cosine is clamped to [-1, 1] when measured: exactly 1 reads as 0, not as a tiny negative rounding error.
    gap = max(0.0, 1.0 - float(x))
    return "0" if gap == 0.0 else format(gap, ".1e")


def _number(x: Optional[float], spec: str) -> str:
    if x is None:
        return NONE
    return format(float(x), spec) if finite(x) else str(float(x))


def fmt_pct(x: Optional[float]) -> str:
    if x is None:
        return NONE
    return f"{100 * float(x):.3g}%"


def fmt_ms(x: Optional[float]) -> str:
    if x is None or not finite(x):
        return NONE
    return f"{float(x):.1f}" if float(x) >= 1 else f"{float(x):.3f}"
