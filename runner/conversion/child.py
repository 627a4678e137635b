"""One run of a conversion tool (converter, quantizer) in a sandboxed child, its output kept in a log file.

The tools are MNN's C++ extension, which writes through C stdio. Into a file, stdio buffers in blocks, and a
child killed by a signal takes its unwritten block with it: the lines that say what it was doing when it died.
`PYTHONUNBUFFERED` makes the interpreter switch C stdio to unbuffered before the extension is loaded.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Callable

from mnn_parity import sandbox
from mnn_parity.manifest.spec import Limits

KIND = "converter"   # what `mnnconvert.kill_all_children` kills on Ctrl-C: every conversion step's child
# (python, script, argv, limits, log file) -> (log, how it died or ""): `run_tool`, or a long-lived child's
ToolRunner = Callable[[Path, Path, list, Limits, Path], tuple[str, str]]


def run_tool(python: Path, script: Path, argv: list[str], limits: Limits, log_file: Path) -> tuple[str, str]:
    """Run `script ARGV` behind the sandbox in the log file's folder; return its combined log and, if it died,
    how ("" when it exited with status 0)."""
    with tempfile.TemporaryDirectory(prefix="mnn-parity-convert-") as scratch, open(log_file, "wb") as sink:
        env = sandbox.child_env(scratch)
        env["PYTHONUNBUFFERED"] = "1"
        try:
            proc = sandbox.spawn(sandbox.command(python, script, argv, limits.memory_mb), KIND,
                                 stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 cwd=log_file.parent, env=env)
        except OSError as error:
            return "", f"could not start {python}: {error}"
        try:
            returncode, timed_out = proc.wait(timeout=limits.timeout_s), False
        except subprocess.TimeoutExpired:
            sandbox.kill_group(proc)
            returncode, timed_out = proc.wait(), True
        finally:
            sandbox.forget(proc)
    log = log_file.read_text(errors="replace")
    if timed_out:
        return log, f"timeout after {limits.timeout_s:g} s"
    if returncode != 0:
        return log, sandbox.describe_exit(returncode, log[-4000:], limits)
    return log, ""
