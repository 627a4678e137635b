"""How a run scales with workers: threads at --jobs 1 and 2, and a local Dask cluster of 1 and 2 workers.

    .venv/bin/python bench/scaling.py [--sample 300]

The workload is a sample of the conformance suite's node tests (every k-th runnable test), converted once
beforehand so that every timed run does the same work: engines, comparison, reports. Each executor runs it once;
the speed-up of 2 over 1 is printed beside the goal (>= 1.85). Figures only; asserts nothing.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed_run(names: list[str], cache: Path, jobs: int, executor: str) -> float:
    from mnn_parity.conformance.build import build_suite, load_tests, select
    from mnn_parity.conformance.source import TREE
    from mnn_parity.session import Session, SessionConfig

    source, every = load_tests(ROOT, TREE)
    suite = build_suite(ROOT, select(every, None, names), TREE, source)
    config = SessionConfig(root=ROOT, jobs=jobs, executor=executor, localise="never", cache_dir=cache,
                           goldens_dir=cache / "no-goldens", report_dir=cache / "reports")
    start = time.perf_counter()
    Session(config).run_suites([suite])
    return time.perf_counter() - start


def main() -> None:
    from mnn_parity.conformance.build import load_tests

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=300)
    args = parser.parse_args()
    runnable = [t.name for t in load_tests(ROOT)[1] if not t.skipped]
    names = runnable[:: max(1, len(runnable) // args.sample)][: args.sample]
    with tempfile.TemporaryDirectory(prefix="mnn-parity-bench-scaling-") as folder:
        cache = Path(folder)
        timed_run(names, cache, 2, "threads")                 # converts everything once, untimed
        figures = {(executor, jobs): timed_run(names, cache, jobs, executor)
                   for executor in ("threads", "dask") for jobs in (1, 2)}
    print(f"{len(names)} node tests, conversions cached")
    for executor in ("threads", "dask"):
        one, two = figures[(executor, 1)], figures[(executor, 2)]
        print(f"  {executor:8s} 1 worker {one:6.2f} s, 2 workers {two:6.2f} s: {one / two:.2f}x  (goal >= 1.85x)")


if __name__ == "__main__":
    main()
