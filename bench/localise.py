"""What localisation costs: wall time and peak memory of the parent and of its largest child.

    .venv/bin/python bench/localise.py [--model ppocr-det|ppocr-det@fp16|...|tiny] [--case 0] [--chunk N]

Converts the model first (cached in a temporary folder), times the case's plain run (a fresh ONNX Runtime and a
fresh MNN worker each loading the model and running the case once, as a run does), then localises the case in a
fresh process, so that process's peak RSS (RUSAGE_SELF), its largest child's (RUSAGE_CHILDREN: the ONNX
Runtime and MNN children, and the converter of each verification trial) and the largest sum over all of them at
one moment (sampled from /proc: the two engines' children run at once) are the localisation's own. Prints the
time ratio beside its goal (about 3x the plain run, plus verification), with verification's share, and the peak
memory beside its goal (under 2 GB). Inputs are the bundled suite's real cases, preprocessed as a run does. BENCH_FULL=1 prints the
whole result too.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def real_case(model_name: str, case_index: int) -> tuple[Path, dict, dict]:
    """A case of the bundled OCR suite, preprocessed as a run would: (onnx, feeds, convert flags)."""
    from mnn_parity.inputs.cases import build_feeds, constant_feeds, list_cases
    from mnn_parity.manifest.load import load_suite

    suite = load_suite(ROOT / "suites/ocr.yaml", ROOT)
    model = next(m for m in suite.models if m.name == model_name)
    case = list_cases(model, ROOT)[case_index]
    output = next(iter(model.outputs), "") if model.outputs else ""
    tolerance = suite.tolerance_for(model, output, next(iter(suite.backends))).as_dict()
    return ROOT / model.onnx, build_feeds(model, case, constant_feeds(model)), {**model.convert.as_dict(),
                                                                                "tolerance": tolerance}


def prepare(args: argparse.Namespace, work: Path) -> tuple[Path, Path, Path, dict]:
    from mnn_parity.conversion.mnnconvert import ConverterEnv, convert
    from mnn_parity.manifest.spec import ConvertFlags

    if args.model == "tiny":
        from tests import localisation_models

        onnx_path = localisation_models.round_chain(work / "round_chain.onnx")
        feeds, flags = {"x": localisation_models.halves((1, 4, 4, 4))}, {}
    else:
        onnx_path, feeds, flags = real_case(args.model, args.case)
    conversion = convert(onnx_path, ConvertFlags.from_manifest({k: v for k, v in flags.items() if k != "tolerance"}),
                         ConverterEnv(Path(sys.executable), version("MNN")), work / "cache")
    if not conversion.ok:
        raise SystemExit(f"conversion failed: {conversion.reason}")
    np.savez(work / "feeds.npz", **feeds)
    return onnx_path, conversion.mnn_model, work / "feeds.npz", flags


def plain_run(onnx_path: Path, mnn_path: Path, feeds: dict) -> float:
    """Seconds for the case as a run computes it: both engines started, loaded, and run once."""
    import onnx

    from mnn_parity.engines.host import EngineProcess, EngineSpec

    outputs = tuple(o.name for o in onnx.load(str(onnx_path), load_external_data=False).graph.output)
    start = time.perf_counter()
    for spec in (EngineSpec("onnxruntime", onnx_path, (), outputs),
                 EngineSpec("mnn", mnn_path, tuple(feeds), outputs)):
        with EngineProcess(spec) as engine:
            engine.infer(feeds)
    return time.perf_counter() - start


def descendants_rss_mb() -> float:
    """Resident MiB of this process and every process under it, from /proc."""
    total, todo = 0.0, [os.getpid()]
    while todo:
        pid = todo.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            total += next(int(l.split()[1]) for l in status.splitlines() if l.startswith("VmRSS:")) / 1024
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, StopIteration, ValueError):
            continue
    return total


class PeakSampler(threading.Thread):
    """The largest sum of resident memory over the localisation's processes, sampled every 20 ms: the ONNX Runtime
    and MNN children run at the same time, so their peaks add up."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.done = 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.peak = max(self.peak, descendants_rss_mb())


def inner(onnx_path: str, mnn_path: str, feeds_path: str, work: str, chunk: int, flags: dict) -> None:
    from mnn_parity.localisation import Case, locate, localise
    from mnn_parity.localisation.result import LocaliseOptions

    spent = {"verify": 0.0}
    verify = locate.verify

    def timed_verify(*args, **kwargs):
        begun = time.perf_counter()
        try:
            return verify(*args, **kwargs)
        finally:
            spent["verify"] += time.perf_counter() - begun

    locate.verify = timed_verify
    tolerance = flags.pop("tolerance", None)
    with np.load(feeds_path) as archive:
        feeds = {k: archive[k] for k in archive.files}
    sampler = PeakSampler()
    sampler.start()
    start = time.perf_counter()
    found = localise(Path(onnx_path), Path(mnn_path), feeds, {"device": "CPU", "precision": "high", "threads": 1},
                     flags, "high", Path(work) / "localise",
                     options=LocaliseOptions(chunk=chunk) if chunk else LocaliseOptions(),
                     case=Case(tolerance=tolerance))
    seconds = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    data = found.to_json()
    if os.environ.get("BENCH_FULL"):
        print(json.dumps(data), file=sys.stderr)
    print(json.dumps({"seconds": round(seconds, 2), "verification_s": round(spent["verify"], 2),
                      "status": data["status"], "node": data["node"], "profile_rows": len(data["profile"]),
                      "parent_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                      "child_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024,
                      "together_peak_mb": round(sampler.peak)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ppocr-det", help="a model of suites/ocr.yaml, or `tiny`")
    parser.add_argument("--case", type=int, default=0, help="which of its cases (files in sorted order)")
    parser.add_argument("--chunk", type=int, default=0, help="names per MNN forward (default: LocaliseOptions')")
    parser.add_argument("--inner", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(*args.inner[:4], int(args.inner[4]), json.loads(args.inner[5]))
        return
    with tempfile.TemporaryDirectory(prefix="mnn-parity-bench-localise-") as folder:
        work = Path(folder)
        onnx_path, mnn_path, feeds, flags = prepare(args, work)
        with np.load(feeds) as archive:
            arrays = {k: archive[k] for k in archive.files}
        plain = plain_run(onnx_path, mnn_path, arrays)
        report = subprocess.run([sys.executable, __file__, "--inner", str(onnx_path), str(mnn_path), str(feeds),
                                 str(work), str(args.chunk), json.dumps(flags)],
                                capture_output=True, text=True, check=False)
        line = report.stdout.strip().splitlines()[-1] if report.stdout.strip() else report.stderr[-2000:]
        if os.environ.get("BENCH_FULL"):
            print(report.stderr[-6000:])
        shapes = {k: list(v.shape) for k, v in arrays.items()}
        print(f"model={args.model} case={args.case} chunk={args.chunk} inputs={shapes}: {line}")
        try:
            found = json.loads(line)
        except ValueError:
            return
        peak = max(found["parent_peak_mb"], found["child_peak_mb"], found["together_peak_mb"])
        before = found["seconds"] - found["verification_s"]
        print(f"plain run {plain:.2f} s; localisation {found['seconds']:.2f} s = {found['seconds'] / plain:.1f}x, "
              f"of which verification {found['verification_s']:.2f} s: {before / plain:.1f}x before it "
              f"(goal: about 3x plus verification); peak RSS {peak} MB, all processes together "
              f"(goal: < 2048 MB)")


if __name__ == "__main__":
    main()
