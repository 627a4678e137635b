"""Tolerances and their cascade: suite → model → output → backend, the most specific key winning.

A backend's tolerance is the most specific because precision is a property of the backend: `precision: low`
loosens every output of every model run on it.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Mapping, Optional


@dataclass(frozen=True)
class Tolerance:
    atol: float = 1e-4
    rtol: float = 1e-3
    cosine_min: float = 0.9999
    mismatch_max: float = 0.0      # fraction of elements allowed outside atol + rtol*|ref|

    def with_overrides(self, overrides: Optional[Mapping[str, float]]) -> "Tolerance":
        if not overrides:
            return self
        known = {f.name for f in fields(self)}
        return replace(self, **{k: float(v) for k, v in overrides.items() if k in known})

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def cascade(*levels: Optional[Mapping[str, float]]) -> Tolerance:
    """Apply partial tolerance maps in order, least specific first; missing keys keep the earlier value."""
    tolerance = Tolerance()
    for level in levels:
        tolerance = tolerance.with_overrides(level)
    return tolerance
