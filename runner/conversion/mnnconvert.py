"""ONNX → MNN conversion through MNN's converter extension, in a child process, cached.

The converter exits 0 and prints nothing alarming on stderr even when it fails, so success is judged from its
log ("Converted Success!") and the output file, and the log is kept for the report. It runs as
`_tools.mnnconvert(argv)` in a child process: never the `mnnconvert` console script or `MNN.tools`, which
pip-install a logging SDK (downgrading protobuf under onnx) and post telemetry on start.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from mnn_parity.engines.host import describe_exit, limit_child
from mnn_parity.manifest.spec import ConvertFlags, Limits
from mnn_parity.hashing import sha256_file

# The child imports only MNN's C++ converter extension, with MNN's Python tooling and the logging SDK made
# unimportable and outbound sockets refused: no telemetry, no pip, whatever the extension does.
_CHILD = r"""
import socket, sys
for blocked in ("MNN.tools", "MNN.tools.utils", "MNN.tools.utils.log", "aliyun", "aliyun.log"):
    sys.modules[blocked] = None
def _refuse(*args, **kwargs):
    raise OSError("mnn-parity: the converter may not use the network")
socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
import _tools
_tools.mnnconvert(["mnn-parity-convert"] + sys.argv[1:])   # argv[0]: a program name only
"""

SUCCESS_MARK = "Converted Success!"
_UNSUPPORTED = re.compile(r"These Op Not Support:\s*(.*)")


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
        for token in match.group(1).split():
            name = token.split("::")[-1].strip(",")
            if name and name not in ops:
                ops.append(name)
    return tuple(ops)


def judge_log(log: str, output: Path) -> tuple[bool, str, tuple[str, ...]]:
    """Success means the converter said so *and* left a non-empty model file; anything else names the cause."""
    unsupported = parse_unsupported(log)
    if unsupported:
        return False, "MNN cannot convert op(s): " + ", ".join(unsupported), unsupported
    if SUCCESS_MARK not in log:
        lines = [line.strip() for line in log.splitlines() if line.strip()]
        hint = next((line for line in reversed(lines) if "rror" in line or "ail" in line or "not" in line.lower()),
                    lines[-1] if lines else "no output")
        return False, f"converter did not report success: {hint}", ()
    if not output.exists() or output.stat().st_size == 0:
        return False, "converter reported success but wrote no model file", ()
    return True, "", ()


def convert(onnx_path: Path, flags: ConvertFlags, env: ConverterEnv, cache_dir: Path,
            limits: Limits = Limits()) -> Conversion:
    """Convert once per (ONNX content, MNN version, flags); a rerun with nothing changed converts nothing."""
    cache_dir = cache_dir.resolve()   # the converter runs with its staging folder as working directory
    onnx_sha = sha256_file(onnx_path)
    key = cache_key(onnx_sha, env.mnn_version, flags)
    entry = cache_dir / key
    model, log_path, meta_path = entry / "model.mnn", entry / "convert.log", entry / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        log = log_path.read_text() if log_path.exists() else ""
        if meta.get("ok") and model.exists():
            return Conversion(True, model, log, cached=True, key=key, mnn_sha256=meta.get("mnn_sha256", ""),
                              onnx_sha256=onnx_sha)
        if not meta.get("ok"):
            return Conversion(False, None, log, meta.get("reason", ""), tuple(meta.get("unsupported_ops", ())),
                              cached=True, key=key, onnx_sha256=onnx_sha)

    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
    try:
        output = staging / "model.mnn"
        argv = ["-f", "ONNX", "--modelFile", str(onnx_path.resolve()), "--MNNModel", str(output),
                "--bizCode", "mnn-parity", *converter_args(flags)]
        log, crash = _run_converter(env.python, argv, limits, staging)
        if crash:
            ok, reason, unsupported = False, f"converter crashed: {crash}", parse_unsupported(log)
        else:
            ok, reason, unsupported = judge_log(log, output)
        (staging / "convert.log").write_text(log)
        mnn_sha = sha256_file(output) if ok else ""
        meta = {"ok": ok, "reason": reason, "unsupported_ops": list(unsupported), "onnx_sha256": onnx_sha,
                "mnn_version": env.mnn_version, "flags": flags.as_dict(), "mnn_sha256": mnn_sha}
        if not ok and output.exists():
            output.unlink()
        (staging / "meta.json").write_text(json.dumps(meta, indent=1))
        if crash:
            # A crash may be the machine's fault (memory, timeout): do not remember it as the model's verdict.
            return Conversion(False, None, log, reason, unsupported, key=key, onnx_sha256=onnx_sha)
        shutil.rmtree(entry, ignore_errors=True)
        os.replace(staging, entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Conversion(ok, model if ok else None, log, reason, unsupported, key=key, mnn_sha256=mnn_sha,
                      onnx_sha256=onnx_sha)


def _run_converter(python: Path, argv: list[str], limits: Limits, workdir: Path) -> tuple[str, str]:
    """Run the converter; return its combined log and, if it died, how."""
    log_file = workdir / "raw.log"
    with open(log_file, "wb") as sink:
        proc = subprocess.Popen([str(python), "-c", _CHILD, *argv], stdout=sink, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=workdir, preexec_fn=limit_child(limits.memory_mb))
        try:
            returncode = proc.wait(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            return log_file.read_text(errors="replace"), f"timeout after {limits.timeout_s:g} s"
    log = log_file.read_text(errors="replace")
    if returncode != 0:
        return log, describe_exit(returncode, log[-4000:], limits)
    return log, ""
