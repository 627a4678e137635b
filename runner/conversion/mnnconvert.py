"""ONNX → MNN conversion through MNN's converter extension, in a child process, cached.

The converter exits 0 and prints nothing alarming on stderr even when it fails, so success is judged from its
log ("Converted Success!") and the output file, and the log is kept for the report. It runs as
`_tools.mnnconvert(argv)` (`converter_child.py`) behind the sandbox: never the `mnnconvert` console script or
`MNN.tools`, which pip-install a logging SDK (downgrading protobuf under onnx) and post telemetry on start.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from mnn_parity import sandbox
from mnn_parity.conversion import cache
from mnn_parity.fsutil import atomic_write_text
from mnn_parity.hashing import sha256_file
from mnn_parity.manifest.spec import ConvertFlags, Limits

CONVERTER_SCRIPT = Path(__file__).with_name("converter_child.py")
SUCCESS_MARK = "Converted Success!"
_UNSUPPORTED = re.compile(r"These Op Not Support:\s*(.*)")
# MNN 3.6.1 writes "ONNX::ConvInteger | ONNX::MatMulInteger"; older releases separate with spaces or commas.
_OP_SEPARATORS = re.compile(r"[\s|,]+")
_TAIL_LINES = 6


def converter_args(flags: ConvertFlags) -> list[str]:
    args = ["--optimizeLevel", str(flags.optimize_level)]
    if flags.fp16:
        args.append("--fp16")
    if flags.weight_quant_bits:
        args += ["--weightQuantBits", str(flags.weight_quant_bits)]
    if flags.weight_quant_asymmetric:
        args.append("--weightQuantAsymmetric")
    if not flags.keep_input_format:
        # Measured on 3.6.1: the converter keeps the input format by default, and any spelling of this flag
        # (`--keepInputFormat`, `=0`, `=false`) switches it off, giving an NC4HW4 input.
        args.append("--keepInputFormat=false")
    return args + list(flags.extra_args)


@dataclass(frozen=True)
class Conversion:
    ok: bool
    mnn_model: Optional[Path]
    log: str
    reason: str = ""                  # why it failed, for the verdict
    unsupported_ops: tuple[str, ...] = ()
    cached: bool = False
    key: str = ""
    mnn_sha256: str = ""
    onnx_sha256: str = ""             # hashed once here for the cache key; provenance records it too
    log_path: Optional[Path] = None   # where the log stays on disk (a crash's log is kept beside the cache)


@dataclass(frozen=True)
class ConverterEnv:
    python: Path
    mnn_version: str


def cache_key(onnx_sha256: str, mnn_version: str, flags: ConvertFlags) -> str:
    material = json.dumps({"onnx": onnx_sha256, "mnn": mnn_version, "flags": flags.as_dict()}, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:24]


def parse_unsupported(log: str) -> tuple[str, ...]:
    ops: list[str] = []
    for match in _UNSUPPORTED.finditer(log):
        for token in _OP_SEPARATORS.split(match.group(1)):
            name = token.split("::")[-1]
            if name and name not in ops:
                ops.append(name)
    return tuple(ops)


def judge_log(log: str, output: Path) -> tuple[bool, str, tuple[str, ...]]:
    """Success means the converter said so *and* left a non-empty model file; anything else names the cause."""
    unsupported = parse_unsupported(log)
    if unsupported:
        return False, "MNN cannot convert op(s): " + ", ".join(unsupported), unsupported
    if SUCCESS_MARK not in log:
        lines = [line.strip() for line in log.splitlines()
                 if line.strip() and not line.startswith(sandbox.NOTICE)]
        hint = next((line for line in reversed(lines) if "rror" in line or "ail" in line or "not" in line.lower()),
                    lines[-1] if lines else "no output")
        return False, f"converter did not report success: {hint}", ()
    if not output.exists() or output.stat().st_size == 0:
        return False, "converter reported success but wrote no model file", ()
    return True, "", ()


def log_tail(log: str, lines: int = _TAIL_LINES, limit: int = 600) -> str:
    """The last words of a log on one line, for a verdict's reason."""
    kept = [line.strip() for line in log.splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-limit:] or "(the log is empty)"


def convert(onnx_path: Path, flags: ConvertFlags, env: ConverterEnv, cache_dir: Path,
            limits: Limits = Limits()) -> Conversion:
    """Convert once per (ONNX content, MNN version, flags); a rerun with nothing changed converts nothing."""
    cache_dir = Path(cache_dir).resolve()   # the converter runs with its staging folder as working directory
    onnx_sha = sha256_file(onnx_path)
    key = cache_key(onnx_sha, env.mnn_version, flags)
    entry = cache_dir / key
    found = _from_entry(entry, key, onnx_sha)
    if found is not None:
        return found
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache.remove_stale_staging(cache_dir)
    cache.discard_unusable(cache_dir, entry)
    staging = cache.new_staging(cache_dir, key)
    try:
        result, crashed = _convert_into(staging, onnx_path, flags, env, limits, key, onnx_sha)
        crash_log = cache_dir / f"{key}.crash.log"
        if crashed:
            # A crash may be the machine's fault (memory, timeout): kept for the user, not remembered as a verdict.
            atomic_write_text(crash_log, result.log)
            return dataclasses.replace(result, log_path=crash_log)
        if cache.install(staging, entry):
            crash_log.unlink(missing_ok=True)
            return dataclasses.replace(result, mnn_model=entry / cache.MODEL if result.ok else None,
                                       log_path=entry / cache.LOG)
        theirs = _from_entry(entry, key, onnx_sha)   # another run converted the same model at the same time
        if theirs is None:
            return dataclasses.replace(result, ok=False, mnn_model=None,
                                       reason=f"the conversion cache entry {entry} is unusable")
        return dataclasses.replace(theirs, cached=False)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def kill_all_children() -> int:
    """Kill every converter running now (Ctrl-C): each `convert` in progress returns "killed by SIGKILL" at once,
    and remembers nothing. Engine workers are the pool's (`WorkerPool.kill_all`)."""
    return sandbox.kill_all_children("converter")


def _from_entry(entry: Path, key: str, onnx_sha: str) -> Optional[Conversion]:
    meta = cache.read_entry(entry)
    if meta is None:
        return None
    log_path = entry / cache.LOG
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    if meta.get("ok"):
        return Conversion(True, entry / cache.MODEL, log, cached=True, key=key,
                          mnn_sha256=meta.get("mnn_sha256", ""), onnx_sha256=onnx_sha, log_path=log_path)
    return Conversion(False, None, log, meta.get("reason", ""), tuple(meta.get("unsupported_ops", ())),
                      cached=True, key=key, onnx_sha256=onnx_sha, log_path=log_path)


def _convert_into(staging: Path, onnx_path: Path, flags: ConvertFlags, env: ConverterEnv, limits: Limits,
                  key: str, onnx_sha: str) -> tuple[Conversion, bool]:
    """Run the converter with `staging` as its folder and fill it as a cache entry; True when it crashed."""
    output = staging / cache.MODEL
    argv = ["-f", "ONNX", "--modelFile", str(Path(onnx_path).resolve()), "--MNNModel", str(output),
            "--bizCode", "mnn-parity", *converter_args(flags)]
    log, crash = _run_converter(env.python, argv, limits, staging / cache.LOG)
    if crash:
        ok, reason = False, f"converter crashed: {crash}; its log ends: {log_tail(log)}"
        unsupported = parse_unsupported(log)
    else:
        ok, reason, unsupported = judge_log(log, output)
    mnn_sha = sha256_file(output) if ok else ""
    if not ok:
        output.unlink(missing_ok=True)
    meta = {"ok": ok, "reason": reason, "unsupported_ops": list(unsupported), "onnx_sha256": onnx_sha,
            "mnn_version": env.mnn_version, "flags": flags.as_dict(), "mnn_sha256": mnn_sha}
    atomic_write_text(staging / cache.META, json.dumps(meta, indent=1))
    conversion = Conversion(ok, output if ok else None, log, reason, unsupported, key=key, mnn_sha256=mnn_sha,
                            onnx_sha256=onnx_sha)
    return conversion, bool(crash)


def _run_converter(python: Path, argv: list[str], limits: Limits, log_file: Path) -> tuple[str, str]:
    """Run the converter behind the sandbox; return its combined log and, if it died, how."""
    with tempfile.TemporaryDirectory(prefix="mnn-parity-convert-") as scratch, open(log_file, "wb") as sink:
        try:
            proc = sandbox.spawn(sandbox.command(python, CONVERTER_SCRIPT, argv, limits.memory_mb), "converter",
                                 stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 cwd=log_file.parent, env=sandbox.child_env(scratch))
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
