"""How fast the command line answers: `mnn-parity --help` (goal < 0.3 s), `validate` of the bundled suites, and
building the 1,538-model conformance suite (goal < 10 s each; the conformance suite has no manifest to validate,
it is built from the index of the restored node tests).

    .venv/bin/python bench/startup.py [--repeat 5]

Each command runs as a user would run it, in a fresh process; the median of the repeats is printed beside its
goal. The conformance suite is validated as `mnn-parity conformance` builds it (reading every node test's ONNX
model for its signature), when `conformance/onnx-node/` has been restored. Figures only; asserts nothing.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "mnn_parity.cli"]
CONFORMANCE = ("from pathlib import Path; from mnn_parity.conformance.build import build_suite, load_tests; "
               "from mnn_parity.conformance.source import TREE; root = Path(%r); source, tests = load_tests(root); "
               "suite = build_suite(root, [t for t in tests if not t.skipped], TREE, source); "
               "print(len(suite.models))")


def median_seconds(argv: list[str], repeat: int) -> tuple[float, str]:
    times, out = [], ""
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        out = (done.stdout or done.stderr).strip().splitlines()[-1:] or [""]
    return statistics.median(times), out[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    help_s, _ = median_seconds([*CLI, "--help"], args.repeat)
    print(f"mnn-parity --help                 {help_s:6.3f} s   (goal < 0.3 s)")
    validate_s, said = median_seconds([*CLI, "validate", "suites/"], args.repeat)
    print(f"mnn-parity validate suites/       {validate_s:6.3f} s   (goal < 10 s)  {said}")
    if (ROOT / "conformance/onnx-node").is_dir():
        built_s, models = median_seconds([sys.executable, "-c", CONFORMANCE % str(ROOT)], max(1, args.repeat // 2))
        print(f"conformance suite built          {built_s:6.3f} s   (goal < 10 s)  {models} models")


if __name__ == "__main__":
    main()
