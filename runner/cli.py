"""`mnn-parity`: validate, run, bless, new, data. Exit status 0 as expected, 1 a failure, 2 bad manifest or setup.

Heavy modules (onnx, numpy, the engines) are imported inside the commands so that `--help` answers at once.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional

EXIT_OK, EXIT_FAIL, EXIT_SETUP = 0, 1, 2
DRIFT_FAIL_CHOICES = ("regressed", "changed", "drifted", "new", "stale")


def repo_root() -> Path:
    """The repository the manifests live in: the nearest folder up from here holding suites/ or data.dvc."""
    env = os.environ.get("MNN_PARITY_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "data.dvc").exists() or (candidate / "suites").is_dir() or (candidate / ".git").exists():
            return candidate
    return here


def say(message: str = "") -> None:
    print(message, file=sys.stderr, flush=True)


def _paths(args) -> list[Path]:
    return [Path(p) for p in args.paths] or [repo_root() / "suites"]


def _load(args):
    from mnn_parity.manifest.load import ManifestError, load_suites

    try:
        return load_suites(_paths(args), repo_root())
    except ManifestError as error:
        for issue in error.issues:
            say(str(issue))
        say(f"{len(error.issues)} problem(s) in the manifest(s); nothing was run.")
        return None


# ---------------------------------------------------------------------------------------------------- validate
def cmd_validate(args) -> int:
    suites = _load(args)
    if suites is None:
        return EXIT_SETUP
    problems = dry_run_inputs(suites)
    for problem in problems:
        say(problem)
    if problems:
        return EXIT_SETUP
    for suite in suites:
        say(f"ok: {suite.path} — suite {suite.name!r}, {len(suite.models)} model(s), "
            f"backends {', '.join(suite.backends)}")
    return EXIT_OK


def dry_run_inputs(suites) -> list[str]:
    """Preprocess the first case of every model: a bad image or a wrong shape is found before any engine runs."""
    from mnn_parity.inputs.cases import build_feeds, constant_feeds, list_cases, shape_problem
    from mnn_parity.modelinfo import onnx_signature
    from mnn_parity.inputs.preprocess import PreprocessError

    problems = []
    for suite in suites:
        for model in suite.models:
            cases = list_cases(model, suite.root)
            if not cases:
                continue
            try:
                feeds = build_feeds(model, cases[0], constant_feeds(model))
            except PreprocessError as error:
                problems.append(f"{suite.path}: model {model.name!r}: {error}")
                continue
            inputs, _ = onnx_signature(model.onnx)
            streamed = (model.stream or {}).get("input")
            for name, feed in feeds.items():
                problem = shape_problem(name, feed, inputs.get(name), name == streamed)
                if problem:
                    problems.append(f"{suite.path}: model {model.name!r}, case {cases[0].name!r}: {problem}")
    return problems


# ---------------------------------------------------------------------------------------------------- run / bless
def _mnn_env(args):
    from mnn_parity.conversion.mnn_env import MnnEnvError, ensure_env

    try:
        return ensure_env(args.mnn, repo_root() / ".cache" / "mnn-envs")
    except MnnEnvError as error:
        say(f"cannot use MNN {args.mnn}: {error}")
        return None


def _options(args, env):
    from mnn_parity.execution.model_work import RunOptions

    return RunOptions(mnn_python=env.python, mnn_version=env.version, cache_dir=repo_root() / ".cache",
                      backends=frozenset(args.backend) if args.backend else None,
                      models=frozenset(args.model) if args.model else None,
                      jobs=args.jobs or os.cpu_count() or 1)


def _goldens_dir(args) -> Path:
    return Path(args.goldens).resolve() if args.goldens else repo_root() / "goldens"


def _progress(result) -> None:
    mark = {"PASS": ".", "XFAIL": "x", "XPASS": "X", "FAIL": "F", "ERROR": "E", "CRASH": "C"}[result.verdict.value]
    line = f"  {mark} {result.model}/{result.case} [{result.backend}] {result.verdict.value}"
    if result.verdict.value not in ("PASS", "XFAIL"):
        line += f" — {result.reason[:160]}"
    say(line)


def _execute(args):
    """Load, then run every suite; returns (suite runs, exit status) — status is final when runs is None."""
    suites = _load(args)
    if suites is None:
        return None, EXIT_SETUP
    env = _mnn_env(args)
    if env is None:
        return None, EXIT_SETUP
    from mnn_parity.execution.model_work import run_suite

    options = _options(args, env)
    runs = []
    for suite in suites:
        say(f"suite {suite.name} ({suite.path}): MNN {env.version}")
        runs.append(run_suite(suite, options, _progress))
    return runs, EXIT_OK


def cmd_run(args) -> int:
    runs, status = _execute(args)
    if runs is None:
        return status
    from mnn_parity.goldens.store import GoldenStore, attach_drift, stale_keys
    from mnn_parity.reports.render import RunSummary, atomic_write_text, exit_status, render_junit, terminal_summary, write_reports

    store = GoldenStore(_goldens_dir(args))
    summaries = []
    golden_errors: list[str] = []
    for suite_run in runs:
        suite = suite_run.suite
        judged, baseline, errors = attach_drift(suite, suite_run.runs, store)
        golden_errors += errors
        current = {(r.result.model, r.result.case, r.result.backend) for r in judged}
        selected = {m.name for m in suite.models if args.model is None or m.name in args.model}
        stale = [key for key in stale_keys(store, suite.name, current)
                 if key[0] in selected and (not args.backend or key[2] in args.backend)]
        environment = {**suite_run.environment, "baseline_mnn_version": baseline}
        summary = RunSummary(suite=suite.name, description=suite.description, environment=environment,
                             results=[r.result for r in judged], stale=stale, started=suite_run.started,
                             duration_s=suite_run.duration_s, fail_on=set(args.fail_on),
                             slowdown_max=suite.latency.slowdown_max)
        report_dir = Path(args.report_dir) if args.report_dir else repo_root() / "reports"
        paths = write_reports(summary, report_dir)
        summaries.append(summary)
        say(terminal_summary(summary))
        say("reports: " + ", ".join(str(p) for p in paths))
    if args.junit:
        atomic_write_text(Path(args.junit), render_junit(summaries))
    setup_errors = [error for suite_run in runs for error in suite_run.setup_errors] + golden_errors
    for error in setup_errors:
        say(f"setup: {error}")
    return EXIT_SETUP if setup_errors else exit_status(summaries)


def cmd_bless(args) -> int:
    runs, status = _execute(args)
    if runs is None:
        return status
    from mnn_parity.goldens.store import GoldenError, GoldenStore

    store = GoldenStore(_goldens_dir(args))
    refused = 0
    for suite_run in runs:
        blessable = [r for r in suite_run.runs if r.result.verdict.value not in ("ERROR", "CRASH")]
        for r in suite_run.runs:
            if r.result.verdict.value in ("ERROR", "CRASH"):
                refused += 1
                say(f"not blessed: {r.result.model}/{r.result.case} [{r.result.backend}] "
                    f"{r.result.verdict.value}: {r.result.reason[:200]}")
        try:
            written = store.bless(suite_run.suite.name, blessable,
                                  replace_all=not (args.model or args.backend))
        except GoldenError as error:
            say(f"bless failed, previous goldens kept: {error}")
            return EXIT_SETUP
        say(f"blessed {len(written)} golden(s) for suite {suite_run.suite.name} under MNN "
            f"{suite_run.environment['mnn_version']}")
    from mnn_parity.bundled.restore import dvc_track

    problem = dvc_track(repo_root(), "goldens") if not args.goldens else "a --goldens folder is not tracked"
    say("goldens.dvc updated: commit it with your change" if not problem else f"goldens/ not tracked by DVC: {problem}")
    return EXIT_FAIL if refused else EXIT_OK


# ---------------------------------------------------------------------------------------------------- new / data
def cmd_new(args) -> int:
    from mnn_parity.scaffold import ScaffoldError, write_manifest

    try:
        path = write_manifest(Path(args.model), Path(args.output) if args.output else None, repo_root(),
                              force=args.force)
    except ScaffoldError as error:
        say(str(error))
        return EXIT_SETUP
    say(f"wrote {path}: fill in the inputs' files and preprocessing, then `mnn-parity validate {path}`")
    return EXIT_OK


def cmd_data(args) -> int:
    from mnn_parity.bundled import restore as data

    root = repo_root()
    try:
        if args.action == "verify":
            differences = data.verify(root)
            for line in differences:
                say(line)
            return EXIT_SETUP if differences else EXIT_OK
        report = data.restore(root)
        fetched = (f", rebuilt from {len(report.downloaded)} pinned wheels ({report.downloaded_bytes / 1e6:.1f} MB)"
                   if report.downloaded else "")
        say(f"data/: {report.action}, {report.files} files match data.dvc{fetched}")
        for note in report.notes:
            say(f"  {note}")
        return EXIT_OK
    except data.DataError as error:
        say(f"data: {error}")
        return EXIT_SETUP


# ---------------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnn-parity", description=(
        "Check ONNX models converted to MNN against ONNX Runtime on real data, and see what changed "
        "when MNN or a conversion changed."))
    commands = parser.add_subparsers(dest="command", required=True)

    def with_paths(sub):
        sub.add_argument("paths", nargs="*", help="manifests or folders of them (default: suites/)")
        return sub

    with_paths(commands.add_parser("validate", help="check manifests: schema, files, names and shapes"))

    for name, text in (("run", "run suites and write reports"), ("bless", "record goldens from a run")):
        sub = with_paths(commands.add_parser(name, help=text))
        sub.add_argument("--backend", action="append", help="only this backend (repeatable)")
        sub.add_argument("--model", action="append", help="only this model (repeatable)")
        sub.add_argument("--mnn", metavar="VERSION", help="run the MNN side under this MNN release")
        sub.add_argument("--jobs", type=int, default=0, help="models run in parallel (default: core count)")
        sub.add_argument("--goldens", metavar="DIR", help="golden store (default: goldens/, tracked by goldens.dvc)")
        if name == "run":
            sub.add_argument("--report-dir", help="where reports go (default: reports/)")
            sub.add_argument("--junit", metavar="FILE", help="also write JUnit XML here")
            sub.add_argument("--fail-on", action="append", choices=DRIFT_FAIL_CHOICES,
                             help="drift classes that fail the run (default: regressed, changed)")

    new = commands.add_parser("new", help="write a starting manifest for an ONNX model")
    new.add_argument("model", help="the .onnx file")
    new.add_argument("-o", "--output", help="manifest to write (default: suites/<model>.yaml)")
    new.add_argument("--force", action="store_true", help="overwrite an existing manifest")

    data = commands.add_parser("data", help="restore or verify data/ against data.dvc")
    data.add_argument("action", choices=("restore", "verify"))
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "fail_on", None) is None and args.command == "run":
        args.fail_on = ["regressed", "changed"]
    handler = {"validate": cmd_validate, "run": cmd_run, "bless": cmd_bless, "new": cmd_new, "data": cmd_data}
    return handler[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
