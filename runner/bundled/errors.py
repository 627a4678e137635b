"""What goes wrong with data/: a setup error (exit status 2), or a tree that differs from its pins."""
from __future__ import annotations

from typing import Sequence


class DataError(Exception):
    """Data cannot be restored or checked (bad source table, failed download, DVC failure): a setup error."""


class DataMismatchError(DataError):
    """`data/` differs from what `data.dvc` pins; `differences` names each file."""

    def __init__(self, differences: Sequence[str]):
        self.differences = list(differences)
        super().__init__("data/ does not match data.dvc:\n  " + "\n  ".join(self.differences))
