"""What the terminal shows while a session runs: a live display on a TTY (rich), plain lines elsewhere (CI logs).

Both are `session.Events`: the session calls them, they only print. `-q` keeps only problems, `-v` adds passes.
"""
from __future__ import annotations

import sys
import threading
from typing import Optional

MARKS = {"PASS": ".", "XFAIL": "x", "XPASS": "X", "FAIL": "F", "ERROR": "E", "CRASH": "C"}
AS_EXPECTED = ("PASS", "XFAIL")


def say(message: str = "") -> None:
    print(message, file=sys.stderr, flush=True)


def case_line(result) -> str:
    verdict = result.verdict.value
    line = f"  {MARKS[verdict]} {result.model}/{result.case} [{result.backend}] {verdict}"
    if verdict not in AS_EXPECTED:
        line += f" — {result.reason[:160]}"
    return line


class PlainEvents:
    """One line per case (per problem with -q), so a CI log says what happened in order."""

    def __init__(self, verbosity: int = 1):
        self.verbosity = verbosity

    def message(self, text: str) -> None:
        say(text)

    def suite_started(self, suite, mnn_version: str, cases: int) -> None:
        say(f"suite {suite.name} ({suite.path}): MNN {mnn_version}, {cases} case(s) to run")

    def phase(self, model: str, what: str) -> None:
        if self.verbosity > 1:
            say(f"  … {model}: {what}")

    def case_done(self, result) -> None:
        if self.verbosity > 0 or result.verdict.value not in AS_EXPECTED:
            say(case_line(result))

    def close(self) -> None:
        pass


class LiveEvents(PlainEvents):
    """A progress bar with cases done/total, the model and phase, elapsed and estimated time left; problems are
    printed above it as they happen so they stay on screen."""

    def __init__(self, verbosity: int = 1):
        super().__init__(verbosity)
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.console = Console(stderr=True)
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("elapsed,"), TimeRemainingColumn(), TextColumn("left"),
                            console=self.console, transient=True)
        self.task: Optional[int] = None
        self.lock = threading.Lock()    # cases finish on the executor's threads

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def suite_started(self, suite, mnn_version: str, cases: int) -> None:
        with self.lock:
            self.message(f"suite {suite.name} ({suite.path}): MNN {mnn_version}")
            if self.task is None:
                self.bar.start()
                self.task = self.bar.add_task(suite.name, total=cases)
            else:
                self.bar.reset(self.task, total=cases, description=suite.name)

    def phase(self, model: str, what: str) -> None:
        with self.lock:
            if self.task is not None:
                self.bar.update(self.task, description=f"{model}: {what}")

    def case_done(self, result) -> None:
        with self.lock:
            if self.verbosity > 1 or result.verdict.value not in AS_EXPECTED:
                self.message(case_line(result))
            if self.task is not None:
                self.bar.advance(self.task)

    def close(self) -> None:
        if self.task is not None:
            self.bar.stop()
            self.task = None


def terminal_events(verbosity: int = 1, stream=None):
    """Live on a terminal, plain lines when piped or in CI."""
    stream = stream or sys.stderr
    return LiveEvents(verbosity) if stream.isatty() else PlainEvents(verbosity)
