"""How the conformance suite scales with workers: --jobs 1 and 2 with worker processes (`conformance`'s default),
with threads, and on a local Dask cluster of 1 and 2.

    .venv/bin/python bench/scaling.py [--sample N] [--executor processes|threads|dask|all] [--repeat 3]

The workload is what `mnn-parity conformance` runs (`conformance/run.py`: the session, then the per-op
classification; no per-case report files), on every runnable node test by default or every k-th of them with
`--sample`. Everything is converted once beforehand, untimed, so each timed run does the same work: engines,
comparison, classification. Each round runs 1 worker then 2 (`--repeat` rounds, default 3) and the ratio is
taken within a round: on a shared machine whose speed drifts, a ratio across rounds measures the drift. Prints
each round's wall times, for threads the CPU time of this process and of its engine children and the speed-up
that CPU time allows on 2 cores (worker processes are the fork server's children, not this process's, so their CPU
is not visible here), and the median speed-up beside its goal (>= 1.85). `processes` at --jobs 1 runs in this process, as `conformance --jobs 1` does. Asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
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
    parser.add_argument("--executor", choices=("processes", "threads", "dask", "all"), default="processes")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runnable = [t.name for t in load_tests(ROOT)[1] if not t.skipped]
    names = runnable[:: max(1, len(runnable) // args.sample)][: args.sample] if args.sample else runnable
    executors = ("processes", "threads", "dask") if args.executor == "all" else (args.executor,)
    with tempfile.TemporaryDirectory(prefix="mnn-parity-bench-scaling-") as folder:
        cache = Path(folder)
        timed_run(names, cache, 2, "threads")                 # converts everything once, untimed
        # Rounds of 1 worker then 2, interleaved: this machine's speed drifts by a third over minutes, so a ratio
        # is taken within a round, never between a slow minute's 1 and a fast minute's 2.
        rounds = {executor: [(timed_run(names, cache, 1, executor), timed_run(names, cache, 2, executor))
                             for _ in range(args.repeat)] for executor in executors}
    print(f"{len(names)} node tests (`mnn-parity conformance`'s workload), conversions cached, "
          f"{args.repeat} round(s) of 1 worker then 2")
    for executor in executors:
        ratios = []
        for index, (one, two) in enumerate(rounds[executor], 1):
            ratios.append(one[0] / two[0])
            cpu = ""
            if executor == "threads":
                # Two cores can at best share the CPU that two workers spend: that bounds the speed-up.
                cores = min(2, os.cpu_count() or 1)
                cpu = (f"; CPU {sum(one[1:]):.1f} s and {sum(two[1:]):.1f} s (runner {one[1]:.1f}/{two[1]:.1f}): "
                       f"at most {one[0] / (sum(two[1:]) / cores):.2f}x on {cores} cores")
            print(f"  {executor:8s} round {index}: {one[0]:6.2f} s -> {two[0]:6.2f} s = {ratios[-1]:.2f}x{cpu}")
        print(f"  {executor:8s} median speed-up {statistics.median(ratios):.2f}x  (goal >= {GOAL}x)")


if __name__ == "__main__":
    main()
