"""`mnn-parity`: parse the command line, hand it to a `Session`, print what it says. No flow lives here.

Exit status 0 as expected, 1 a failure, 2 bad manifest or setup (also any internal error), 130 interrupted.
Heavy modules (onnx, numpy, the engines) are imported inside the commands so that `--help` answers at once.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional

EXIT_OK, EXIT_SETUP, EXIT_INTERRUPTED = 0, 2, 130
DRIFT_CLASSES = ("regressed", "changed", "drifted", "new", "stale")


def say(message: str = "") -> None:
    print(message, file=sys.stderr, flush=True)


def fail_on(chosen: Optional[list[str]]) -> frozenset[str]:
    """`--fail-on X` adds X to the default classes; `--fail-on none` switches drift gating off."""
    from mnn_parity.session import DEFAULT_FAIL_ON

    chosen = chosen or []
    if "none" in chosen:
        return frozenset(c for c in chosen if c != "none")
    return DEFAULT_FAIL_ON | frozenset(chosen)


def executor_choice(value: str) -> str:
    from mnn_parity.execution.executors import ExecutorError, check_choice

    try:
        return check_choice(value)
    except ExecutorError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def session_for(args):
    from mnn_parity.session import Session, SessionConfig

    def path(value):
        return Path(value).resolve() if value else None

    config = SessionConfig(
        root=args.root_dir, mnn=getattr(args, "mnn", None), jobs=getattr(args, "jobs", 0) or 0,
        backends=frozenset(args.backend) if getattr(args, "backend", None) else None,
        models=frozenset(args.model) if getattr(args, "model", None) else None,
        with_variants=args.command != "localise",   # localising costs seconds a case: the model named, only
        goldens_dir=path(getattr(args, "goldens", None)), report_dir=path(getattr(args, "report_dir", None)),
        fail_on=fail_on(getattr(args, "fail_on", None)), junit=path(getattr(args, "junit", None)),
        localise=getattr(args, "localise", None) or ("always" if args.command == "localise" else "never"),
        cases=frozenset(args.case) if getattr(args, "case", None) else None,
        executor=getattr(args, "executor", None) or "threads")
    from mnn_parity.progress import terminal_events

    return Session(config, terminal_events(getattr(args, "verbosity", 1)))


def _paths(args) -> list[Path]:
    return [Path(p).resolve() for p in args.paths] or [args.root_dir / "suites"]


def _finish(result) -> int:
    from mnn_parity.reports import github_outputs, terminal_summary

    github_outputs(result, os.environ)   # step summary and annotations, only inside GitHub Actions
    for outcome in result.outcomes:
        say(terminal_summary(outcome.summary))
        say("reports: " + ", ".join(str(p) for p in outcome.report_paths))
    for problem in result.problems:
        say(problem)
    if result.interrupted:
        say("interrupted: every engine and converter was stopped; the reports above are partial")
    elif result.problems:
        say(f"{len(result.problems)} problem(s) in manifests or setup (exit status 2)")
    return result.exit_status


def cmd_validate(args) -> int:
    result = session_for(args).validate(_paths(args))
    for problem in result.problems:
        say(problem)
    if not result.problems:
        for suite in result.suites:
            say(f"ok: {suite.path} — suite {suite.name!r}, {len(suite.models)} model(s), "
                f"backends {', '.join(suite.backends)}")
    return result.exit_status


def _run_flow(args, flow: str) -> int:
    session = session_for(args)
    try:
        result = getattr(session, flow)(_paths(args))
    finally:
        session.events.close()   # a live progress display must give the terminal back, even on Ctrl-C
    return _finish(result)


def cmd_run(args) -> int:
    return _run_flow(args, "run")


def cmd_localise(args) -> int:
    """Run one model (optionally one case and backend) and name where MNN first goes wrong on each case."""
    session = session_for(args)
    try:
        result = session.run(_paths(args))
    finally:
        session.events.close()
    status = _finish(result)
    for outcome in result.outcomes:
        for case in outcome.summary.results:
            if case.localisation:
                say(localisation_line(case.to_json(), case.localisation))
    return status


def localisation_line(case: dict, found: dict) -> str:
    from mnn_parity.reports.terminal import localisation_text

    return f"{case['model']}/{case['case']} [{case['backend']}] {case['verdict']}: " + "; ".join(
        localisation_text(found))


def cmd_bless(args) -> int:
    return _run_flow(args, "bless")


def cmd_new(args) -> int:
    """`new MODEL.onnx` writes a starting manifest; `new --tolerances MANIFEST` prints tolerances from its report."""
    if bool(args.model) == bool(args.tolerances):
        say("new: give exactly one of MODEL.onnx (write a starting manifest) or --tolerances MANIFEST "
            "(propose tolerances from its last report)")
        return EXIT_SETUP
    if args.tolerances:
        from mnn_parity.manifest import ManifestError
        from mnn_parity.reports.propose import ProposalError, proposal_for
        from mnn_parity.rootdir import find_root

        if args.output or args.force:
            say("new --tolerances prints the proposal; -o/--force are for `new MODEL.onnx`")
            return EXIT_SETUP
        manifest = Path(args.tolerances).resolve()
        try:
            text = proposal_for(manifest, find_root(manifest, args.root),
                                Path(args.report_dir).resolve() if args.report_dir else None, args.margin)
        except (ManifestError, ProposalError) as error:
            say(str(error))
            return EXIT_SETUP
        print(text, end="")
        return EXIT_OK
    from mnn_parity.scaffold import ScaffoldError, write_manifest

    try:
        path = write_manifest(Path(args.model), Path(args.output) if args.output else None, args.root_dir,
                              force=args.force)
    except ScaffoldError as error:
        say(str(error))
        return EXIT_SETUP
    say(f"wrote {path}: fill in the inputs' files and preprocessing, then `mnn-parity validate {path}`")
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    from mnn_parity.repo_init import InitError, init_repository, next_steps

    try:
        result = init_repository(Path(args.dir))
    except (InitError, OSError) as error:     # OSError: DIR is a file, or not writable
        say(f"init: {error}")
        return EXIT_SETUP
    say(next_steps(result))
    return EXIT_OK


def cmd_data(args) -> int:
    from mnn_parity.bundled import restore as data
    from mnn_parity.repo_init import pins_bundled_data

    root = args.root_dir
    if not pins_bundled_data(root):
        # A team's repository: its data/ (if any) is its own, and rebuilding mnn-parity's set there would clobber it.
        say(f"data {args.action}: nothing to do in {root}: it only concerns mnn-parity's own bundled data set "
            "(data/, pinned by data.dvc in the mnn-parity repository). Your own data is restored by `dvc pull` and "
            "checked by `dvc status`.")
        return EXIT_OK
    try:
        from mnn_parity.conformance import source as conformance_source

        if args.action == "verify":
            differences = data.verify(root)
            if conformance_source.pinned(root):
                differences += conformance_source.differences(root)
            for line in differences:
                say(line)
            return EXIT_SETUP if differences else EXIT_OK
        report = data.restore(root)
        fetched = (f", rebuilt from {len(report.downloaded)} pinned wheels ({report.downloaded_bytes / 1e6:.1f} MB)"
                   if report.downloaded else "")
        say(f"data/: {report.action}, {report.files} files match data.dvc{fetched}")
        for note in report.notes:
            say(f"  {note}")
        if conformance_source.pinned(root):   # the ONNX node tests `mnn-parity conformance` runs
            tree = conformance_source.restore(root)
            say(f"{conformance_source.TREE}/: {tree.action}, matches {conformance_source.DVC_FILE}"
                + (f"; {tree.note}" if tree.note else ""))
        return EXIT_OK
    except data.DataError as error:
        say(f"data: {error}")
        return EXIT_SETUP


def cmd_conformance(args) -> int:
    """ONNX's backend node tests through the same session as `run`; writes reports/conformance.{md,json}."""
    from mnn_parity.bundled.errors import DataError
    from mnn_parity.conformance import report, source
    from mnn_parity.conformance.run import run_conformance
    from mnn_parity.progress import terminal_events

    root = args.root_dir
    if not source.pinned(root):
        say(f"conformance: {root} has no {source.DVC_FILE}: the node tests are pinned in mnn-parity's own "
            "repository (run it from a clone of mnn-parity)")
        return EXIT_SETUP
    try:
        source.restore(root)
    except DataError as error:
        say(f"conformance: {error}")
        return EXIT_SETUP
    events = terminal_events(args.verbosity)
    try:
        run = run_conformance(root, mnn=args.mnn, jobs=args.jobs, ops=args.op, names=args.test, events=events,
                              executor=args.executor)
    finally:
        events.close()
    report_dir = Path(args.report_dir).resolve() if args.report_dir else root / "reports"
    paths, moved = report.write(run, report_dir, Path(args.compare).resolve() if args.compare else None,
                                complete=not (args.op or args.test))
    totals = report.totals(run.outcomes)
    say("conformance: " + ", ".join(f"{k} {v}" for k, v in totals.items() if v) + f" in {run.duration_s:.0f} s")
    if args.compare:
        say(f"since {args.compare}: {len(moved['fixed'])} test(s) fixed, {len(moved['broken'])} broken")
    say("reports: " + ", ".join(str(p) for p in paths))
    for problem in run.problems:
        say(problem)
    if run.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_SETUP if run.problems else (1 if moved["broken"] else EXIT_OK)


def add_conformance_parser(commands) -> None:
    conformance = commands.add_parser("conformance", help="ONNX backend node tests through MNN: an op-coverage "
                                      "report (reports/conformance.md)")
    conformance.add_argument("--mnn", metavar="VERSION", help="run the MNN side under this MNN release")
    conformance.add_argument("--jobs", type=int, default=0, help="tests run in parallel (default: core count)")
    conformance.add_argument("--executor", default=None, type=executor_choice,
                             help="processes (--jobs worker processes; the default from 200 tests), threads (the "
                                  "default below), dask (a local cluster of --jobs workers) or dask://HOST:PORT")
    conformance.add_argument("--op", action="append", help="only the tests of this op, e.g. Relu (repeatable)")
    conformance.add_argument("--test", action="append", help="only this node test, e.g. test_relu (repeatable)")
    conformance.add_argument("--compare", metavar="JSON", help="a previous conformance JSON (e.g. "
                             "reports/conformance-mnn-3.5.0.json): list the tests fixed and broken since; "
                             "exit status 1 if any broke")
    conformance.add_argument("--report-dir", help="where reports go (default: reports/)")
    conformance.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=0, default=1,
                             help="print only tests that are not as expected")
    conformance.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=2,
                             help="also print every test and its phase")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnn-parity", description=(
        "Check ONNX models converted to MNN against ONNX Runtime on real data, and see what changed "
        "when MNN or a conversion changed."))
    parser.add_argument("--root", metavar="DIR", help="the repository manifest paths are relative to "
                        "(default: the nearest folder holding .git or .mnn-parity)")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_paths(sub):
        sub.add_argument("paths", nargs="*", help="manifests or folders of them (default: suites/)")
        return sub

    with_paths(commands.add_parser("validate", help="check manifests: schema, files, names and shapes"))
    for name, text in (("run", "run suites and write reports"), ("bless", "record goldens from a run")):
        sub = with_paths(commands.add_parser(name, help=text))
        sub.add_argument("--backend", action="append", help="only this backend (repeatable)")
        sub.add_argument("--model", action="append", help="only this model and its @variants, or NAME@VARIANT "
                         "for one variant (repeatable)")
        sub.add_argument("--mnn", metavar="VERSION", help="run the MNN side under this MNN release")
        sub.add_argument("--jobs", type=int, default=0, help="models run in parallel (default: core count)")
        sub.add_argument("--executor", default="threads", type=executor_choice,
                         metavar="threads|processes|dask|dask://HOST:PORT",
                         help="threads of this process (default), --jobs worker processes (for hundreds of small "
                              "models), a local Dask cluster of --jobs workers, or a running Dask scheduler's")
        sub.add_argument("--goldens", metavar="DIR", help="golden store (default: goldens/, tracked by goldens.dvc)")
        sub.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=0, default=1,
                         help="print only cases that are not as expected")
        sub.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=2,
                         help="also print every case and each model's phase")
        if name == "run":
            sub.add_argument("--report-dir", help="where reports go (default: reports/)")
            sub.add_argument("--junit", metavar="FILE", help="also write JUnit XML here")
            sub.add_argument("--localise", choices=("never", "fail", "always"), default="fail",
                             help="name the first divergent op of each FAIL case (default), of every case, or none")
            sub.add_argument("--fail-on", action="append", choices=DRIFT_CLASSES + ("none",),
                             help="a drift class that also fails the run, besides regressed and changed "
                                  "(repeatable); `none` switches drift gating off")
    localise = commands.add_parser("localise", help="name the op where MNN first goes wrong on a model's cases")
    localise.add_argument("paths", nargs=1, metavar="MANIFEST")
    localise.add_argument("--model", action="append", required=True, help="the model (repeatable)")
    localise.add_argument("--case", action="append", help="only this case (repeatable)")
    localise.add_argument("--backend", action="append", help="only this backend (repeatable)")
    localise.add_argument("--mnn", metavar="VERSION", help="run the MNN side under this MNN release")
    localise.add_argument("--report-dir", help="where reports and reproducers go (default: reports/)")
    new = commands.add_parser("new", help="write a starting manifest for an ONNX model, or propose a suite's "
                              "tolerances from its last report (--tolerances)")
    new.add_argument("model", nargs="?", help="the .onnx file")
    new.add_argument("-o", "--output", help="manifest to write (default: suites/<model>.yaml)")
    new.add_argument("--force", action="store_true", help="overwrite an existing manifest")
    new.add_argument("--tolerances", metavar="MANIFEST", help="instead of MODEL: print per model and output the "
                     "tolerance its last report needed, as YAML to paste into MANIFEST")
    new.add_argument("--report-dir", help="where the report is (default: reports/)")
    new.add_argument("--margin", type=float, default=2.0, help="each measured worst is multiplied by this "
                     "before rounding up (default 2)")
    init = commands.add_parser("init", help="prepare a repository: suites/, .gitignore, DVC for goldens/")
    init.add_argument("dir", nargs="?", default=".", help="the repository's root (default: here)")
    add_conformance_parser(commands)
    data = commands.add_parser("data", help="restore or verify mnn-parity's bundled data/ against data.dvc")
    data.add_argument("action", choices=("restore", "verify"))
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    from mnn_parity.rootdir import find_root

    args = build_parser().parse_args(argv)
    paths = getattr(args, "paths", None) or []
    args.root_dir = find_root(Path(paths[0]) if paths else None, args.root)
    handler = {"validate": cmd_validate, "run": cmd_run, "localise": cmd_localise, "bless": cmd_bless, "new": cmd_new, "init": cmd_init,
               "data": cmd_data, "conformance": cmd_conformance}
    try:
        return handler[args.command](args)
    except KeyboardInterrupt:
        say("interrupted")
        return EXIT_INTERRUPTED
    except Exception as error:   # a bug of ours must not look like a test failure (exit 1) to CI
        import traceback

        traceback.print_exc()
        say(f"internal error: {type(error).__name__}: {error} — please report it (exit status 2)")
        return EXIT_SETUP


if __name__ == "__main__":
    sys.exit(main())
