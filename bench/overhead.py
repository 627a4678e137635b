"""What the runner adds on top of the engines: its wall time beside a minimal script making the same calls.

    .venv/bin/python bench/overhead.py [MANIFEST ...] [--jobs 1]

For the given suites (default: every manifest in suites/), models quantized by MNN's quantizer left out (the
minimal script would need the quantizer too):
1. one untimed run fills the conversion cache (in a temporary folder);
2. the runner, timed: `Session.run` with nothing changed — it must convert nothing (counted from the cache), and
   it preprocesses, runs every case on the reference and every backend in its sandboxed engine processes with the
   suite's latency warmup and repeats, compares, writes its reports;
3. the floor, timed: one process, the same `.mnn` files, the same engine classes loaded in-process, the same
   preprocessing, and per case the same calls (`timed` with the same warmup and repeats, streamed models frame by
   frame); no comparison, no reports.
Prints both, the ratio beside its goal (<= 1.05), and what the runner converted. Figures only; asserts nothing.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def load(manifests: list[Path]):
    from mnn_parity.manifest.load import load_suite

    return [load_suite(path, ROOT) for path in manifests]


def unquantized(suite) -> frozenset[str]:
    return frozenset(m.name for m in suite.models if m.convert.quantize is None)


def run_runner(manifests: list[Path], suites, work: Path, jobs: int) -> tuple[float, int]:
    """Seconds of one `run`, and how many conversions it made (new cache entries)."""
    from mnn_parity.session import Session, SessionConfig

    models = frozenset().union(*(unquantized(s) for s in suites))
    config = SessionConfig(root=ROOT, jobs=jobs, models=models, localise="never", cache_dir=work / "cache",
                           goldens_dir=work / "goldens", report_dir=work / "reports")
    converted = work / "cache" / "converted"
    before = len(list(converted.iterdir())) if converted.exists() else 0
    start = time.perf_counter()
    Session(config).run(manifests)
    seconds = time.perf_counter() - start
    return seconds, len(list(converted.iterdir())) - before


def floor(suites, work: Path) -> float:
    """The same engine calls, in this process, on the runner's own cached conversions."""
    from mnn_parity.conversion.mnn_env import current_env
    from mnn_parity.conversion.mnnconvert import ConverterEnv, convert
    from mnn_parity.engines.protocol import EngineSpec, load_engine
    from mnn_parity.engines.worker import run_stream, timed
    from mnn_parity.inputs.cases import build_feeds, constant_feeds, list_cases

    env = current_env()
    start = time.perf_counter()
    for suite in suites:
        for model in (m for m in suite.models if m.name in unquantized(suite)):
            conversion = convert(model.onnx, model.convert, ConverterEnv(env.python, env.version),
                                 work / "cache" / "converted", suite.limits)   # a cache hit: converted in step 1
            if not conversion.ok:
                continue
            outputs = tuple(name for name, spec in model.outputs.items() if not spec.skip)
            constants = constant_feeds(model)
            feeds = [build_feeds(model, case, constants) for case in list_cases(model, suite.root)]
            specs = [EngineSpec("onnxruntime", model.onnx, (), outputs, dict(suite.reference))]
            specs += [EngineSpec("mnn", conversion.mnn_model, tuple(model.inputs), outputs, dict(b.runtime))
                      for b in suite.backends_for(model)]
            for spec in specs:
                engine = load_engine(spec)
                for case_feeds in feeds:
                    run = ((lambda e=engine, f=case_feeds: run_stream(e, f, model.stream)) if model.stream
                           else (lambda e=engine, f=case_feeds: e.infer(f)))
                    timed(run, suite.latency.warmup, suite.latency.repeat)
                engine.close()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifests", nargs="*", help="default: every manifest in suites/")
    parser.add_argument("--jobs", type=int, default=1, help="the runner's --jobs (the floor runs serially)")
    args = parser.parse_args()
    manifests = [Path(m).resolve() for m in args.manifests] or sorted((ROOT / "suites").glob("*.yaml"))
    suites = load(manifests)
    with tempfile.TemporaryDirectory(prefix="mnn-parity-bench-overhead-") as folder:
        work = Path(folder)
        _, first = run_runner(manifests, suites, work, args.jobs)      # fills the conversion cache
        runner_s, converted = run_runner(manifests, suites, work, args.jobs)
        floor_s = floor(suites, work)
    models = sum(len(unquantized(s)) for s in suites)
    print(f"suites: {', '.join(s.name for s in suites)}; {models} models (MNN-quantized ones left out); "
          f"--jobs {args.jobs}; the first run converted {first}")
    print(f"  minimal in-process script     {floor_s:7.2f} s")
    print(f"  runner, nothing changed        {runner_s:7.2f} s   ratio {runner_s / floor_s:.2f}  (goal <= 1.05); "
          f"converted {converted} (goal 0)")


if __name__ == "__main__":
    main()
