"""The two errors of preprocessing: one a user sees, and one a step raises before it knows where it runs."""
from __future__ import annotations

from typing import Optional


class PreprocessError(Exception):
    """A step could not run. `step_index` is 1-based, as in the message; `step` is the step's name."""

    def __init__(self, message: str, file: Optional[str] = None, step_index: Optional[int] = None,
                 step: Optional[str] = None) -> None:
        # All four in args: an error sent back from a worker process is rebuilt from args, intact.
        super().__init__(message, file, step_index, step)
        self.file = file
        self.step_index = step_index
        self.step = step
        self.message = message

    def __str__(self) -> str:
        where = []
        if self.file is not None:
            where.append(f"{self.file}: ")
        if self.step_index is not None:
            where.append(f"step {self.step_index}" + (f" ({self.step})" if self.step else "") + ": ")
        elif self.step:
            where.append(f"{self.step}: ")
        return "".join(where) + self.message

    def located(self, file: Optional[str]) -> "PreprocessError":
        return PreprocessError(self.message, file=file, step_index=self.step_index, step=self.step)


class StepError(Exception):
    """A bad option or input inside one step; the pipeline adds the file and the step."""
