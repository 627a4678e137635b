"""How numbers, names and table cells read in every report, so Markdown, JUnit and the terminal agree."""
from __future__ import annotations

import enum
import math
from typing import Iterable, Optional, Sequence

from tabulate import tabulate

from mnn_parity.records import CaseResult

NONE = "–"   # an empty cell still says "nothing here" rather than looking like a rendering gap


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
    return _number(x, ".6f")


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
