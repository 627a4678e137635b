"""Does `run --jobs 2` still hang? Runs the bundled multi-model suites N times through the CLI and counts.

    .venv/bin/python bench/hang_loop.py [--runs 50] [--timeout 900] [--jobs 2] [SUITE ...]

The hang this guards against: the runner spun in OpenBLAS inside np.dot (a cosine) while another thread started an
engine worker with `preexec_fn`, i.e. a real fork, whose OpenBLAS fork handler shut the BLAS thread pool down under
the running np.dot (2 hangs in 8 runs). Each run is `mnn-parity run SUITES --jobs 2` in a child process with its own
report and goldens folders in a temporary directory; a run that outlives the timeout counts as hung, its Python
threads' stacks are dumped (faulthandler, on SIGABRT) into the log folder, and it is killed. Conversions are cached
in the repository's `.cache/` as in normal use, so the first run converts and the rest do not.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).with_name("mnn-parity")
DEFAULT_SUITES = ("suites/ocr.yaml", "suites/vad.yaml")


def one_run(index: int, suites: list[str], jobs: int, timeout: float, work: Path) -> tuple[str, float]:
    """('exit N' | 'HUNG', seconds) for one CLI run."""
    folder = work / f"run-{index:03d}"
    folder.mkdir()
    argv = [str(CLI), "run", *suites, "--jobs", str(jobs), "--report-dir", str(folder / "reports"),
            "--goldens", str(folder / "goldens")]
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}   # SIGABRT then prints every thread's stack
    with open(folder / "output.log", "wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
        try:
            returncode = proc.wait(timeout=timeout)
            return f"exit {returncode}", time.monotonic() - started
        except subprocess.TimeoutExpired:
            elapsed = time.monotonic() - started
            proc.send_signal(signal.SIGABRT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return "HUNG", elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="*", default=list(DEFAULT_SUITES))
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before a run counts as hung")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep every run's log folder, not only hung ones")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="mnn-parity-hang-loop-"))
    print(f"command: {CLI} run {' '.join(args.suites)} --jobs {args.jobs} --report-dir … --goldens …  "
          f"(cwd {ROOT}, timeout {args.timeout:g} s, logs in {work})", flush=True)
    outcomes: list[tuple[str, float]] = []
    for index in range(1, args.runs + 1):
        outcome, seconds = one_run(index, args.suites, args.jobs, args.timeout, work)
        outcomes.append((outcome, seconds))
        folder = work / f"run-{index:03d}"
        note = ""
        if outcome not in ("exit 0", "exit 1", "HUNG"):   # not a verdict: the run itself went wrong, say why
            lines = (folder / "output.log").read_text(errors="replace").strip().splitlines()
            note = f"  ({lines[-1][:150] if lines else 'no output'})"
        print(f"run {index:3d}/{args.runs}: {outcome:8s} {seconds:7.1f} s{note}", flush=True)
        if outcome in ("exit 0", "exit 1") and not args.keep:
            shutil.rmtree(folder)
    finished = [s for o, s in outcomes if o != "HUNG"]
    hung = len(outcomes) - len(finished)
    codes = sorted({o for o, _ in outcomes if o != "HUNG"})
    print(f"\n{len(outcomes)} runs: {len(finished)} finished ({', '.join(codes) or '-'}), {hung} hung")
    if finished:
        print(f"seconds per finished run: mean {statistics.mean(finished):.1f}, median "
              f"{statistics.median(finished):.1f}, min {min(finished):.1f}, max {max(finished):.1f}")
    if hung:
        print(f"stacks of the hung runs: {work}/run-*/output.log")
    if any(o not in ("exit 0", "exit 1", "HUNG") for o, _ in outcomes):
        print(f"logs of the runs that went wrong: {work}/run-*/output.log")
    return 1 if hung else 0


if __name__ == "__main__":
    sys.exit(main())
