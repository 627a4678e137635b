"""ONNX → MNN conversion through MNN's converter extension, in a child process, cached.

The converter exits 0 and prints nothing alarming on stderr even when it fails, so success is judged from its
log ("Converted Success!") and the output file, and the log is kept for the report. It runs as
`_tools.mnnconvert(argv)` (`converter_child.py`) behind the sandbox: never the `mnnconvert` console script or
`MNN.tools`, which pip-install a logging SDK (downgrading protobuf under onnx) and post telemetry on start.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Optional

from mnn_parity import sandbox
from mnn_parity.conversion import cache
from mnn_parity.conversion.child import KIND, ToolRunner, run_tool
# ConverterEnv, Conversion and log_tail are imported from here by the rest of the runner
from mnn_parity.conversion.result import Conversion, ConverterEnv, log_tail  # noqa: F401
from mnn_parity.fsutil import atomic_write_text
from mnn_parity.hashing import sha256_file
from mnn_parity.manifest.spec import ConvertFlags, Limits

CONVERTER_SCRIPT = Path(__file__).with_name("converter_child.py")
SUCCESS_MARK = "Converted Success!"
_UNSUPPORTED = re.compile(r"These Op Not Support:\s*(.*)")
# MNN 3.6.1 writes "ONNX::ConvInteger | ONNX::MatMulInteger"; older releases separate with spaces or commas.
_OP_SEPARATORS = re.compile(r"[\s|,]+")
# ONNX Runtime's quantization tools write these (QOperator format, dynamic quantization); MNN 3.6.1 converted the
# QDQ format of the same conv net but refused QLinearConv
ORT_QUANTIZED_OPS = frozenset({"QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearSigmoid",
                               "QLinearLeakyRelu", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat",
                               "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeLSTM",
                               "DynamicQuantizeMatMul", "QGemm"})
QUANTIZED_HINT = ("; the model was quantized with ONNX Runtime's tools: convert the float model instead and let "
                  "MNN quantize it (`convert: {quantize: {method: EMA}}`)")


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


def converter_flags(flags: ConvertFlags) -> dict:
    """The flags the converter itself sees: a later step's settings (`quantize`) must not convert again."""
    return {key: value for key, value in flags.as_dict().items() if key != "quantize"}


def cache_key(onnx_sha256: str, mnn_version: str, flags: ConvertFlags) -> str:
    material = json.dumps({"onnx": onnx_sha256, "mnn": mnn_version, "flags": converter_flags(flags)},
                          sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:24]


def parse_unsupported(log: str) -> tuple[str, ...]:
    ops: list[str] = []
    for match in _UNSUPPORTED.finditer(log):
        for token in _OP_SEPARATORS.split(match.group(1)):
            name = token.split("::")[-1].strip("|,")
            if name and name not in ops:
                ops.append(name)
    return tuple(ops)


def judge_log(log: str, output: Path) -> tuple[bool, str, tuple[str, ...]]:
    """Success means the converter said so *and* left a non-empty model file; anything else names the cause."""
    unsupported = parse_unsupported(log)
    if unsupported:
        hint = QUANTIZED_HINT if set(unsupported) & ORT_QUANTIZED_OPS else ""
        return False, "MNN cannot convert op(s): " + ", ".join(unsupported) + hint, unsupported
    if SUCCESS_MARK not in log:
        lines = [line.strip() for line in log.splitlines()
                 if line.strip() and not line.startswith(sandbox.NOTICE)]
        hint = next((line for line in reversed(lines) if "rror" in line or "ail" in line or "not" in line.lower()),
                    lines[-1] if lines else "no output")
        return False, f"converter did not report success: {hint}", ()
    if not output.exists() or output.stat().st_size == 0:
        return False, "converter reported success but wrote no model file", ()
    return True, "", ()


def convert(onnx_path: Path, flags: ConvertFlags, env: ConverterEnv, cache_dir: Path,
            limits: Limits = Limits(), tool: Optional[ToolRunner] = None) -> Conversion:
    """Convert once per (ONNX content, MNN version, flags); a rerun with nothing changed converts nothing.

    `tool` runs the converter child: a fresh one per call by default (`child.run_tool`), or a long-lived one
    (`batch.shared().run_tool`), the same contract either way."""
    cache_dir = Path(cache_dir).resolve()   # the converter runs with its staging folder as working directory
    onnx_sha = sha256_file(onnx_path)
    key = cache_key(onnx_sha, env.mnn_version, flags)
    entry = cache_dir / key
    return cache.cached_step(cache_dir, key, lambda: _from_entry(entry, key, onnx_sha),
                             lambda staging: _convert_into(staging, onnx_path, flags, env, limits, key, onnx_sha,
                                                           tool or run_tool))


def kill_all_children() -> int:
    """Kill every converter and quantizer running now (Ctrl-C): each step in progress returns "killed by SIGKILL"
    at once, and remembers nothing. Engine workers are the pool's (`WorkerPool.kill_all`)."""
    return sandbox.kill_all_children(KIND)


def _from_entry(entry: Path, key: str, onnx_sha: str) -> Optional[Conversion]:
    return cache.conversion_from_entry(entry, key, onnx_sha)


def _convert_into(staging: Path, onnx_path: Path, flags: ConvertFlags, env: ConverterEnv, limits: Limits,
                  key: str, onnx_sha: str, tool: ToolRunner) -> tuple[Conversion, bool]:
    """Run the converter with `staging` as its folder and fill it as a cache entry; True when it crashed."""
    output = staging / cache.MODEL
    argv = ["-f", "ONNX", "--modelFile", str(Path(onnx_path).resolve()), "--MNNModel", str(output),
            "--bizCode", "mnn-parity", *converter_args(flags)]
    log, crash = tool(env.python, CONVERTER_SCRIPT, argv, limits, staging / cache.LOG)
    if crash:
        ok, reason = False, f"converter crashed: {crash}; its log ends: {log_tail(log)}"
        unsupported = parse_unsupported(log)
    else:
        ok, reason, unsupported = judge_log(log, output)
    mnn_sha = sha256_file(output) if ok else ""
    if not ok:
        output.unlink(missing_ok=True)
    meta = {"ok": ok, "reason": reason, "unsupported_ops": list(unsupported), "onnx_sha256": onnx_sha,
            "mnn_version": env.mnn_version, "flags": converter_flags(flags), "mnn_sha256": mnn_sha}
    atomic_write_text(staging / cache.META, json.dumps(meta, indent=1))
    conversion = Conversion(ok, output if ok else None, log, reason, unsupported, key=key, mnn_sha256=mnn_sha,
                            onnx_sha256=onnx_sha, crash=crash)
    return conversion, bool(crash)
