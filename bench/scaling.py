"""How the conformance suite scales with workers: threads at --jobs 1 and 2, and a local Dask cluster of 1 and 2.

    .venv/bin/python bench/scaling.py [--sample N] [--executor threads|dask|both] [--repeat R]

The workload is what `mnn-parity conformance` runs (`conformance/run.py`: the session, then the per-op
classification; no per-case report files), on every runnable node test by default or every k-th of them with
`--sample`. Everything is converted once beforehand, untimed, so each timed run does the same work: engines,
comparison, classification. Each configuration runs `--repeat` times (default 1) and the fastest counts: on a
shared 2-core machine a neighbour's burst lands in one run, not in all. Prints the wall time and the CPU time of
this process and of its children beside the speed-up of 2 workers over 1 and its goal (>= 1.85). Asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GOAL = 1.85


def _cpu() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def timed_run(names: list[str], cache: Path, jobs: int, executor: str) -> tuple[float, float, float]:
    """(wall s, this process's CPU s, reaped children's CPU s) of one conformance run. Dask workers' own CPU is
    not visible here (they are the nanny's children), so for Dask only the wall time is comparable."""
    from mnn_parity.conformance.run import run_conformance

    own, children = _cpu()
    start = time.perf_counter()
    run = run_conformance(ROOT, jobs=jobs, names=names, cache_dir=cache, executor=executor)
    wall = time.perf_counter() - start
    if run.problems:
        raise SystemExit(f"the run reported problems: {run.problems[:3]}")
    own_after, children_after = _cpu()
    return wall, own_after - own, children_after - children


def main() -> None:
    from mnn_parity.conformance.build import load_tests

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=0, help="every k-th runnable test, this many (default: all)")
    parser.add_argument("--executor", choices=("threads", "dask", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    runnable = [t.name for t in load_tests(ROOT)[1] if not t.skipped]
    names = runnable[:: max(1, len(runnable) // args.sample)][: args.sample] if args.sample else runnable
    executors = ("threads", "dask") if args.executor == "both" else (args.executor,)
    with tempfile.TemporaryDirectory(prefix="mnn-parity-bench-scaling-") as folder:
        cache = Path(folder)
        timed_run(names, cache, 2, "threads")                 # converts everything once, untimed
        figures = {(executor, jobs): min((timed_run(names, cache, jobs, executor) for _ in range(args.repeat)),
                                         key=lambda f: f[0])
                   for executor in executors for jobs in (1, 2)}
    print(f"{len(names)} node tests (`mnn-parity conformance`'s workload), conversions cached, "
          f"best of {args.repeat}")
    for executor in executors:
        for jobs in (1, 2):
            wall, own, children = figures[(executor, jobs)]
            cpu = f", CPU: runner {own:6.2f} s, engine children {children:6.2f} s" if executor == "threads" else ""
            print(f"  {executor:8s} {jobs} worker(s) {wall:6.2f} s{cpu}")
        one, two = figures[(executor, 1)][0], figures[(executor, 2)][0]
        print(f"  {executor:8s} speed-up {one / two:.2f}x  (goal >= {GOAL}x)")
        if executor == "threads":
            # Two cores can at best share the CPU that two workers spend: that bounds the speed-up from above.
            cpu_two = sum(figures[(executor, 2)][1:])
            cores = min(2, os.cpu_count() or 1)
            print(f"  {executor:8s} ceiling from CPU time: {one / (cpu_two / cores):.2f}x  ({cpu_two:.1f} s of CPU at "
                  f"2 workers over {cores} cores; {sum(figures[(executor, 1)][1:]):.1f} s at 1)")


if __name__ == "__main__":
    main()
