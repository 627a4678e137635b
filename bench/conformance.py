"""The conformance suite's speed: the runner beside a one-process-per-test harness, and --jobs 2 beside --jobs 1.

    .venv/bin/python bench/conformance.py [--sample N] [--full]

On a sample of the runnable node tests (every k-th, so all kinds of ops are in it), each timed cold (a fresh
conversion cache):
  - the runner: `run_conformance` (the same Session as `mnn-parity run`), --jobs 1 and --jobs 2;
  - a harness that starts one Python process per test, which converts the model (in the sandboxed converter
    child, as the rules require), runs ONNX Runtime and MNN in itself and compares: what a hand-written loop does.
Peak RSS of the parent and of its children is read from getrusage. Each figure is printed with its goal beside it.
`--full` also times the whole suite at --jobs 2. Prints figures only; asserts nothing.
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HARNESS = r"""
import sys, numpy as np
from pathlib import Path
from mnn_parity.comparison import compare_output
from mnn_parity.conformance.build import LIMITS, ONNX_TOLERANCE
from mnn_parity.conversion.mnn_env import current_env
from mnn_parity.conversion.mnnconvert import ConverterEnv, convert
from mnn_parity.engines.protocol import EngineSpec, load_engine
from mnn_parity.inputs.arrays import load_npz
from mnn_parity.manifest.spec import ConvertFlags
from mnn_parity.manifest.tolerance import cascade
tree, test, cache = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
env = current_env()
onnx_path = tree / test / "model.onnx"
conversion = convert(onnx_path, ConvertFlags(), ConverterEnv(env.python, env.version), cache, LIMITS)
if not conversion.ok:
    print("not-converted"); sys.exit(0)
feeds = load_npz(next((tree / test / "inputs").glob("*.npz")))
ref = load_engine(EngineSpec("onnxruntime", onnx_path, tuple(feeds), ())).infer(feeds)
mnn = load_engine(EngineSpec("mnn", conversion.mnn_model, tuple(feeds), tuple(ref),
                             {"device": "CPU", "precision": "high", "threads": 1})).infer(feeds)
tol = cascade(ONNX_TOLERANCE)
ok = all(compare_output(k, v, np.asarray(mnn[k]), tol).passed for k, v in ref.items() if k in mnn)
print("pass" if ok else "fail")
"""


def sample_tests(every: int) -> list[str]:
    from mnn_parity.conformance.build import load_tests

    _, tests = load_tests(ROOT)
    runnable = [t.name for t in tests if not t.skipped]
    return runnable[::every]


def time_runner(names: list[str], jobs: int, cache: Path, persistent: bool = False) -> tuple[float, dict, dict]:
    """Wall time, totals and each test's status. `persistent`: conversions go through one long-lived converter
    child per thread (runner/conversion/batch.py, what a run uses); otherwise a fresh child per conversion."""
    from mnn_parity.conformance.coverage import totals
    from mnn_parity.conformance.run import run_conformance

    start = time.perf_counter()
    run = run_conformance(ROOT, jobs=jobs, names=names, cache_dir=cache,
                          converter="persistent" if persistent else "fresh")
    elapsed = time.perf_counter() - start
    return elapsed, totals(run.outcomes), {o.name: o.status for o in run.outcomes}


def time_harness(names: list[str], cache: Path) -> tuple[float, int]:
    tree = ROOT / "conformance" / "onnx-node"
    start, died = time.perf_counter(), 0
    for name in names:
        done = subprocess.run([sys.executable, "-c", HARNESS, str(tree), name, str(cache / name)],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
        died += done.returncode != 0    # MNN crashing in-process takes the harness's process with it
    return time.perf_counter() - start, died


def peak_rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sample", type=int, default=60, help="tests in the sample (default 60)")
    parser.add_argument("--full", action="store_true", help="also time the whole suite at --jobs 2")
    parser.add_argument("--fresh", action="store_true", help="the full run with a fresh converter per conversion")
    args = parser.parse_args()
    from mnn_parity.conformance.build import load_tests

    runnable = len([t for t in load_tests(ROOT)[1] if not t.skipped])
    names = sample_tests(max(1, runnable // args.sample))[: args.sample]
    with tempfile.TemporaryDirectory(prefix="bench-conformance-") as scratch:
        work = Path(scratch)
        harness_s, died = time_harness(names, work / "harness")
        harness_rss = peak_rss_mb(resource.RUSAGE_CHILDREN)
        one_s, counts, statuses = time_runner(names, 1, work / "jobs1", persistent=True)
        two_s, _, _ = time_runner(names, 2, work / "jobs2", persistent=True)
        warm_s, _, _ = time_runner(names, 1, work / "jobs1", persistent=True)
        f_one_s, _, f_statuses = time_runner(names, 1, work / "f1")
        f_two_s, _, _ = time_runner(names, 2, work / "f2")
        full = time_runner([], 2, work / "full", persistent=not args.fresh) if args.full else None
    print(f"sample: {len(names)} of {runnable} runnable node tests, cold conversion cache each time; "
          + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    print(f"  one process per test (harness)   {harness_s:7.2f} s   ({died} harness processes died with MNN)")
    print("  the runner as it runs (one long-lived converter child per thread):")
    print(f"    runner --jobs 1                {one_s:7.2f} s   ratio to harness {one_s / harness_s:.3f}  "
          f"(goal <= 0.10)")
    print(f"    runner --jobs 2                {two_s:7.2f} s   ratio to harness {two_s / harness_s:.3f}  "
          f"(goal <= 0.10)")
    print(f"    --jobs 2 speed-up over --jobs 1 {one_s / two_s:6.2f} x   (goal >= 1.85 x)")
    print(f"    runner --jobs 1, warm cache    {warm_s:7.2f} s   (no conversion: the engines and the runner alone)")
    print("  with a fresh converter child per conversion (RunOptions.converter = 'fresh'):")
    print(f"    runner --jobs 1                {f_one_s:7.2f} s   ratio to harness {f_one_s / harness_s:.3f}")
    print(f"    runner --jobs 2                {f_two_s:7.2f} s   ratio to harness {f_two_s / harness_s:.3f}")
    same = sum(statuses[n] == f_statuses.get(n) for n in statuses)
    print(f"    same outcome with either converter: {same} of {len(statuses)} tests")
    print(f"  peak RSS: parent {peak_rss_mb(resource.RUSAGE_SELF):.0f} MB, largest child "
          f"{peak_rss_mb(resource.RUSAGE_CHILDREN):.0f} MB (harness processes alone {harness_rss:.0f} MB)")
    if full is not None:
        print(f"  full suite --jobs 2{' (fresh converters)' if args.fresh else ''}  {full[0]:7.2f} s   "
              + ", ".join(f"{k} {v}" for k, v in full[1].items() if v))


if __name__ == "__main__":
    main()
