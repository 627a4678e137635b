"""A problem in a manifest, said where the user can find it: file, line, key path, message."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Iterable, Optional

# A message quotes what the user wrote; a 50 MB string quoted back broke the report.
MAX_MESSAGE = 400


@dataclass(frozen=True)
class ManifestIssue:
    file: str
    path: str           # dotted key path, e.g. models[0].inputs.x.files
    line: Optional[int]
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path or '<top>'}: {self.message}"


class ManifestError(Exception):
    def __init__(self, issues: list[ManifestIssue]):
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


def format_path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int) or not _plain(part):
            text += f"[{part!r}]" if isinstance(part, str) else f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def _plain(key: str) -> bool:
    # a key with a newline or a space would break the one-line `file:line: key.path: message` form
    return bool(key) and all(c.isprintable() and not c.isspace() for c in key)


def did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, [str(option) for option in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def line_of(lines: dict[tuple, int], path: Iterable[Any]) -> Optional[int]:
    """The line of the path, or of its nearest written ancestor (a missing key is reported where its parent is)."""
    parts = tuple(path)
    while parts not in lines and parts:
        parts = parts[:-1]
    return lines.get(parts)


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    return text if len(text) <= limit else f"{text[:limit - 20]}… ({len(text)} characters)"


class Issues:
    """Collects the problems of one manifest, placing each key path on its line."""

    def __init__(self, label: str, lines: dict[tuple, int]):
        self.label = label
        self.lines = lines
        self.found: list[ManifestIssue] = []

    def add(self, path: Iterable[Any], message: str) -> None:
        path = list(path)
        # one issue, one line: an ONNX parser's or a user's newline would split it
        self.found.append(ManifestIssue(self.label, format_path(path), line_of(self.lines, path),
                                        shorten(" ".join(message.splitlines()))))
