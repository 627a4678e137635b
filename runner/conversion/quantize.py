"""MNN's own int8 quantizer, a cached conversion step after `mnnconvert`: fp32 `.mnn` in, quantized `.mnn` out.

It runs as `_tools.mnnquant(argv)` (`quantize_child.py`) behind the sandbox, like the converter: never the
`mnnquant` console script or `MNN.tools.mnnquant`, which pip-install a logging SDK and post telemetry. Measured on
MNN 3.6.1: the extension returns success whatever happened (a run that wrote nothing included), some method and
model pairs die of SIGSEGV, and one printed "done" then died of SIGABRT. So success is all three of: "Quantize
model done!" in the log, a non-empty model file, and exit status 0. A death is a crash, its log quoted.

Calibration samples come preprocessed (`inputs.calibration`) and go to MNN as "sequence" folders; the entry is
keyed by the fp32 model's hash, the MNN version, the settings and the samples' hash.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from mnn_parity.conversion import cache
from mnn_parity.conversion.child import run_tool
from mnn_parity.conversion.result import Conversion, ConverterEnv, log_tail
from mnn_parity.fsutil import atomic_write_text
from mnn_parity.hashing import sha256_file
from mnn_parity.inputs.calibration import samples_sha256, write_sequence
from mnn_parity.inputs.preprocess import PreprocessError
from mnn_parity.manifest.spec import Limits, QuantizeSpec

QUANTIZER_SCRIPT = Path(__file__).with_name("quantize_child.py")
DONE_MARK = "Quantize model done!"
CONFIG = "quantize.json"
Feeds = dict[str, np.ndarray]


def quantizer_config(spec: QuantizeSpec, folder: Path, count: int) -> dict:
    """MNN's quantizer configuration for preprocessed samples (`input_type: sequence`)."""
    return {"path": str(folder), "used_sample_num": count, "input_type": "sequence",
            "feature_quantize_method": spec.method, "weight_quantize_method": spec.weights,
            "quant_bits": spec.bits,
            # EMA in sequence mode reads one sample per batch; a larger batch reads past the samples given
            "batch_size": 1, "skip_quant_op_names": list(spec.skip_ops), "debug": False}


def cache_key(fp32_sha256: str, mnn_version: str, spec: QuantizeSpec, calibration_sha256: str) -> str:
    material = json.dumps({"fp32_mnn": fp32_sha256, "mnn": mnn_version, "quantize": spec.as_dict(),
                           "calibration": calibration_sha256}, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:24]


def samples_problem(spec: QuantizeSpec, samples: Sequence[Feeds]) -> Optional[str]:
    """What MNN would crash on or silently mis-calibrate with, said before it runs."""
    if not samples:
        return "no calibration samples"
    names = [sorted(feeds) for feeds in samples]
    if any(n != names[0] for n in names):
        return f"calibration samples name different inputs: {names[0]} and {next(n for n in names if n != names[0])}"
    for index, feeds in enumerate(samples):
        bad = [name for name, array in feeds.items()
               if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all()]
        if bad:   # MNN reads values with `>>`, which stops at "nan": the rest of the tensor would be zeros
            return f"calibration sample {index + 1} has NaN or Inf in {bad}"
    shapes = sorted({tuple((name, feeds[name].shape) for name in names[0]) for feeds in samples})
    if spec.method == "KL" and len(shapes) > 1:
        shown = "; ".join(", ".join(f"{name} {list(shape)}" for name, shape in s) for s in shapes[:3])
        return (f"KL calibration needs every sample the same shape, got {len(shapes)} shapes ({shown}): "
                "preprocess to one size (resize and pad), or use method EMA")
    return None


def judge(log: str, output: Path, crash: str) -> tuple[bool, str]:
    if crash:
        return False, f"quantizer crashed: {crash}; its log ends: {log_tail(log)}"
    if DONE_MARK not in log:
        return False, f"quantizer did not report success; its log ends: {log_tail(log)}"
    if not output.exists() or output.stat().st_size == 0:
        return False, f"quantizer reported success but wrote no model file; its log ends: {log_tail(log)}"
    return True, ""


def quantize(fp32: Conversion, spec: QuantizeSpec, samples: Sequence[Feeds], env: ConverterEnv, cache_dir: Path,
             limits: Limits = Limits()) -> Conversion:
    """Quantize once per (fp32 model, MNN version, settings, calibration data); a failed fp32 step passes through."""
    if not fp32.ok or fp32.mnn_model is None:
        return fp32
    problem = samples_problem(spec, samples)
    if problem:
        return Conversion(False, None, "", problem, onnx_sha256=fp32.onnx_sha256)
    cache_dir = Path(cache_dir).resolve()   # the quantizer runs with its staging folder as working directory
    fp32_sha = fp32.mnn_sha256 or sha256_file(fp32.mnn_model)
    calibration_sha = samples_sha256(samples)
    key = cache_key(fp32_sha, env.mnn_version, spec, calibration_sha)
    entry = cache_dir / key
    try:
        return cache.cached_step(
            cache_dir, key, lambda: cache.conversion_from_entry(entry, key, fp32.onnx_sha256),
            lambda staging: _quantize_into(staging, fp32, spec, samples, env, limits, key, calibration_sha))
    except PreprocessError as error:   # a sample MNN's sequence format cannot hold (an input name like "../x")
        return Conversion(False, None, "", f"calibration samples: {error}", onnx_sha256=fp32.onnx_sha256)


def _quantize_into(staging: Path, fp32: Conversion, spec: QuantizeSpec, samples: Sequence[Feeds],
                   env: ConverterEnv, limits: Limits, key: str, calibration_sha: str) -> tuple[Conversion, bool]:
    """Run the quantizer with `staging` as its folder and fill it as a cache entry; True when it crashed."""
    output = staging / cache.MODEL
    folder = staging / "calibration"   # inside the cache, not /tmp: a detector's samples run to hundreds of MB
    try:
        count = write_sequence(samples, folder)
        atomic_write_text(staging / CONFIG, json.dumps(quantizer_config(spec, folder, count), indent=1))
        log, crash = run_tool(env.python, QUANTIZER_SCRIPT, [str(fp32.mnn_model), str(output), str(staging / CONFIG)],
                              limits, staging / cache.LOG)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    ok, reason = judge(log, output, crash)
    mnn_sha = sha256_file(output) if ok else ""
    if not ok:
        output.unlink(missing_ok=True)
    meta = {"ok": ok, "reason": reason, "onnx_sha256": fp32.onnx_sha256, "fp32_mnn_sha256": fp32.mnn_sha256,
            "mnn_version": env.mnn_version, "quantize": spec.as_dict(), "calibration_sha256": calibration_sha,
            "samples": len(samples), "mnn_sha256": mnn_sha}
    atomic_write_text(staging / cache.META, json.dumps(meta, indent=1))
    conversion = Conversion(ok, output if ok else None, log, reason, key=key, mnn_sha256=mnn_sha,
                            onnx_sha256=fp32.onnx_sha256, crash=crash)
    return conversion, bool(crash)
