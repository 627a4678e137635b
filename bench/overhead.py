"""How much the runner adds on top of the engines: its wall time beside a minimal script making the same calls.

    .venv/bin/python bench/overhead.py [MANIFEST] [--repeat N]

The minimal script loads each converted model once per backend in this process and runs every case once, as a
hand-written parity check would; the runner does the same work through its child processes (timing turned off,
conversions already cached). Preprocessing is timed separately, since both pay for it. Prints figures only.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mnn_parity.inputs.cases import build_feeds, constant_feeds, list_cases  # noqa: E402
from mnn_parity.conversion.mnnconvert import ConverterEnv, convert  # noqa: E402
from mnn_parity.manifest.load import LatencySpec, load_suite, onnx_signature  # noqa: E402
from mnn_parity.conversion.mnn_env import current_env  # noqa: E402
from mnn_parity.execution.model_work import RunOptions, run_suite  # noqa: E402
from runner.worker import MnnEngine, OnnxRuntimeEngine, run_stream  # noqa: E402


def minimal(suite, feeds_by_model, converted) -> float:
    start = time.perf_counter()
    for model in suite.models:
        _, outputs = onnx_signature(model.onnx)
        names = list(outputs)
        inputs = list(onnx_signature(model.onnx)[0])
        engines = [OnnxRuntimeEngine(str(model.onnx), [], names, {k: v for k, v in suite.reference.items()})]
        engines += [MnnEngine(str(converted[model.name]), inputs, names, backend.runtime)
                    for backend in suite.backends_for(model)]
        for engine in engines:
            for feeds in feeds_by_model[model.name]:
                if model.stream:
                    run_stream(engine, feeds, model.stream)
                else:
                    engine.infer(feeds)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("manifest", nargs="?", default=str(ROOT / "suites/ocr.yaml"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    suite = load_suite(Path(args.manifest), ROOT)
    suite = replace(suite, latency=LatencySpec(warmup=0, repeat=0))
    env = current_env()
    cache = ROOT / ".cache"
    converted = {}
    for model in suite.models:
        conversion = convert(model.onnx, model.convert, ConverterEnv(env.python, env.version), cache / "converted")
        if conversion.ok:
            converted[model.name] = conversion.mnn_model
    suite = replace(suite, models=tuple(m for m in suite.models if m.name in converted))

    start = time.perf_counter()
    feeds_by_model = {}
    for model in suite.models:
        constants = constant_feeds(model)
        feeds_by_model[model.name] = [build_feeds(model, case, constants) for case in list_cases(model, ROOT)]
    preprocess_s = time.perf_counter() - start
    cases = sum(len(v) for v in feeds_by_model.values())
    runs = sum(len(v) * (1 + len(suite.backends_for(m))) for m, v in
               ((m, feeds_by_model[m.name]) for m in suite.models))

    options = RunOptions(mnn_python=env.python, mnn_version=env.version, cache_dir=cache, jobs=1)
    runner_times, minimal_times = [], []
    for _ in range(args.repeat):
        start = time.perf_counter()
        run_suite(suite, options)
        runner_times.append(time.perf_counter() - start)
        minimal_times.append(minimal(suite, feeds_by_model, converted))
    parallel = RunOptions(**{**options.__dict__, "jobs": 2})
    start = time.perf_counter()
    run_suite(suite, parallel)
    parallel_s = time.perf_counter() - start

    runner_s = statistics.median(runner_times)
    minimal_s = statistics.median(minimal_times)
    same_work = minimal_s + preprocess_s      # the runner preprocesses inside its run; the minimal script did it above
    print(f"suite {suite.name}: {len(suite.models)} models, {cases} cases, {runs} engine runs "
          f"(reference + {len(suite.backends)} backends), median of {args.repeat}")
    print(f"  preprocessing (both pay it)     {preprocess_s:8.2f} s")
    print(f"  minimal in-process script       {minimal_s:8.2f} s")
    print(f"  minimal + preprocessing         {same_work:8.2f} s")
    print(f"  runner, --jobs 1                {runner_s:8.2f} s   overhead {runner_s - same_work:+.2f} s "
          f"({(runner_s / same_work - 1) * 100:+.0f}%: worker processes, arrays through files, comparison)")
    print(f"  runner, --jobs 2                {parallel_s:8.2f} s")


if __name__ == "__main__":
    main()
