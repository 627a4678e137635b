"""One session orchestrates a run, whoever asked for it (the command line, the pytest plugin, the Python API):

    load manifests → plan work items → execute (judged against the reference) → drift against goldens
    → stale goldens → summary → reports → exit status

Nothing here parses arguments or prints: progress and messages go to an `Events` object the caller supplies.
Exit status: 0 all as expected; 1 a failure, crash, error or failing drift; 2 a bad manifest or setup (the good
suites still run); 130 interrupted (a partial report is written and says so).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from mnn_parity.manifest.spec import Suite
from mnn_parity.manifest.variants import selected
from mnn_parity.records import CaseResult, CaseRun

EXIT_OK, EXIT_FAIL, EXIT_SETUP, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_FAIL_ON = frozenset({"regressed", "changed"})


class Events:
    """What a session tells its caller as it goes; every hook is optional."""

    def message(self, text: str) -> None: ...

    def suite_started(self, suite: Suite, mnn_version: str, cases: int) -> None: ...

    def phase(self, model: str, what: str) -> None: ...

    def case_done(self, result: CaseResult) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SessionConfig:
    root: Path
    mnn: Optional[str] = None                    # another MNN release for the MNN side
    jobs: int = 0                                # 0: the core count
    backends: Optional[frozenset[str]] = None
    models: Optional[frozenset[str]] = None
    with_variants: bool = True                   # a name in `models` selects its `<name>@<variant>` models too
    goldens_dir: Optional[Path] = None           # default <root>/goldens, tracked by goldens.dvc
    report_dir: Optional[Path] = None            # default <root>/reports
    cache_dir: Optional[Path] = None             # default $MNN_PARITY_CACHE_DIR, else <root>/.cache
    fail_on: frozenset[str] = DEFAULT_FAIL_ON    # drift classes that fail the run
    junit: Optional[Path] = None
    localise: str = "fail"                       # never | fail | always: name the first divergent op
    cases: Optional[frozenset[str]] = None       # only these cases (the `localise` command)
    converter: str = "persistent"                # or "fresh": a converter child per conversion (RunOptions)
    executor: str = "threads"                    # threads | processes | dask | dask://HOST:PORT (executors.py)

    @property
    def goldens(self) -> Path:
        return self.goldens_dir or self.root / "goldens"

    @property
    def reports(self) -> Path:
        return self.report_dir or self.root / "reports"

    @property
    def cache(self) -> Path:
        env = os.environ.get("MNN_PARITY_CACHE_DIR")
        return self.cache_dir or (Path(env) if env else self.root / ".cache")


@dataclass(frozen=True)
class SuiteOutcome:
    suite: Suite
    runs: tuple[CaseRun, ...]            # judged, expectation and drift applied
    summary: object                      # reports.RunSummary
    setup_errors: tuple[str, ...] = ()
    report_paths: tuple[Path, ...] = ()


@dataclass(frozen=True)
class SessionResult:
    outcomes: tuple[SuiteOutcome, ...] = ()
    problems: tuple[str, ...] = ()       # manifest issues and setup errors, each a line for the user
    exit_status: int = EXIT_OK
    interrupted: bool = False
    suites: tuple[Suite, ...] = ()


@dataclass
class _Executed:
    suite: Suite
    runs: list[CaseRun]
    environment: dict
    setup_errors: list[str] = field(default_factory=list)
    started: str = ""
    duration_s: float = 0.0


class Session:
    def __init__(self, config: SessionConfig, events: Optional[Events] = None):
        self.config = config
        self.events = events or Events()

    # -- the three flows

    def validate(self, paths: Iterable[Path]) -> SessionResult:
        from mnn_parity.inputs.dry_run import dry_run_inputs

        suites, problems = self.load(paths)
        problems += dry_run_inputs(suites)
        return SessionResult(problems=tuple(problems), suites=tuple(suites),
                             exit_status=EXIT_SETUP if problems else EXIT_OK)

    def run(self, paths: Iterable[Path]) -> SessionResult:
        suites, problems = self.load(paths)
        return self.run_suites(suites, problems)

    def run_suites(self, suites: list[Suite], problems: Iterable[str] = (),
                   write_reports: bool = True) -> SessionResult:
        """`run` for suites already loaded: the pytest plugin loads each manifest while collecting, runs one
        model at a time (`config.models`) and writes reports itself, if asked, once every model has run."""
        problems = list(problems)
        self._finish_killed_bless()
        gate = self._golden_gate()
        if gate or not suites:
            return SessionResult(problems=tuple(problems + gate), exit_status=EXIT_SETUP if problems or gate
                                 else EXIT_OK)
        executed, env_problem, interrupted = self._execute_all(suites, write_reports)
        if env_problem:
            return SessionResult(problems=tuple(problems + [env_problem]), exit_status=EXIT_SETUP)
        outcomes = [self._conclude(run, interrupted, write_reports) for run in executed]
        return self._result(outcomes, problems, interrupted)

    def bless(self, paths: Iterable[Path]) -> SessionResult:
        from mnn_parity.goldens import GoldenStore
        from mnn_parity.goldens.storage import BlessBusy

        suites, problems = self.load(paths)
        problems += self._golden_gate()     # blessing over unpulled goldens would drop every other suite's pin
        if problems:
            return SessionResult(problems=tuple(problems), exit_status=EXIT_SETUP)
        store = GoldenStore(self.config.goldens)
        try:
            # held from before the run until `dvc add goldens` is done: a second bless is refused at once,
            # instead of running its suites and then racing this one's writes or its `dvc add`
            with store.exclusive():
                return self._bless_locked(suites, store)
        except BlessBusy as busy:
            return SessionResult(problems=(f"bless refused: {busy}",), exit_status=EXIT_SETUP)

    def _bless_locked(self, suites: list[Suite], store) -> SessionResult:
        from mnn_parity.goldens import GoldenError

        executed, env_problem, interrupted = self._execute_all(suites)
        if env_problem or interrupted:
            return SessionResult(problems=tuple([env_problem or "interrupted: nothing was blessed"]),
                                 exit_status=EXIT_INTERRUPTED if interrupted else EXIT_SETUP)
        refused = 0
        store.mark_untracked()
        for run in executed:
            blessable = [r for r in run.runs if r.result.verdict.ran]
            for r in run.runs:
                if not r.result.verdict.ran:
                    refused += 1
                    self.events.message(f"not blessed: {r.result.model}/{r.result.case} [{r.result.backend}] "
                                        f"{r.result.verdict.value}: {r.result.reason[:200]}")
            try:
                store.bless(run.suite.name, blessable,
                            replace_all=not (self.config.models or self.config.backends))
            except GoldenError as error:
                return SessionResult(problems=(f"bless failed, previous goldens kept: {error}",),
                                     exit_status=EXIT_SETUP)
            self.events.message(f"blessed {len(blessable)} golden(s) for suite {run.suite.name} under MNN "
                                f"{run.environment['mnn_version']}")
        untracked = self._track_goldens()
        if untracked:
            return SessionResult(suites=tuple(suites), problems=(untracked,), exit_status=EXIT_SETUP)
        store.clear_untracked()
        return SessionResult(suites=tuple(suites), exit_status=EXIT_FAIL if refused else EXIT_OK)

    # -- stages

    def load(self, paths: Iterable[Path]) -> tuple[list[Suite], list[str]]:
        """Every manifest on its own: one bad manifest is reported, the good ones still run."""
        from mnn_parity.manifest import ManifestError, find_manifests, load_suite
        from mnn_parity.manifest.load import missing_manifest

        suites, problems, names = [], [], {}
        for path in find_manifests([Path(p) for p in paths]):
            try:
                if not path.exists():
                    raise ManifestError([missing_manifest(path, self.config.root)])
                suite = load_suite(path, self.config.root)
            except ManifestError as error:
                problems += [str(issue) for issue in error.issues]
                continue
            if suite.name in names:
                problems.append(f"{path}:1: suite: suite name {suite.name!r} is also used by {names[suite.name]}")
                continue
            names[suite.name] = path
            suites.append(suite)
        return suites, problems

    def _golden_gate(self) -> list[str]:
        """A CI job that forgot `dvc pull` must not silently compare against nothing, nor a bless replace the
        pinned goldens by the few it writes: goldens.dvc pins files and goldens/ is missing, or holds none (an
        empty folder left by a failed pull, or made by hand)."""
        dvc_file = self.config.root / "goldens.dvc"
        if self.config.goldens_dir is not None or not dvc_file.exists():
            return []
        goldens = self.config.goldens
        if not goldens.exists():
            return ["goldens/ is tracked by goldens.dvc but missing: run `dvc pull goldens.dvc` "
                    f"(repository root {self.config.root})"]
        from mnn_parity.manifest.dvc import pinned_files

        pinned = pinned_files(dvc_file)
        if pinned and not any(path.is_file() for path in goldens.rglob("*")):
            return [f"goldens/ is tracked by goldens.dvc ({pinned} file(s)) but holds no file: run "
                    f"`dvc pull goldens.dvc` (repository root {self.config.root})"]
        return []

    def _execute_all(self, suites: list[Suite], write: bool = True) -> tuple[list[_Executed], str, bool]:
        from mnn_parity.conversion.mnn_env import MnnEnvError, ensure_env
        from mnn_parity.execution.executors import ExecutorError, Interrupted, make_executor

        try:
            env = ensure_env(self.config.mnn)   # shared by every repository: the user cache, or $MNN_PARITY_MNN_ENVS
        except MnnEnvError as error:
            return [], f"cannot use MNN {self.config.mnn}: {error}", False
        from mnn_parity.conversion.cache import sweep

        sweep(self.config.cache)   # what killed conversions left behind
        try:   # one executor for every suite: a Dask cluster starts once per session
            executor = make_executor(self.config.executor, self.config.jobs or os.cpu_count() or 1).start()
        except ExecutorError as error:
            return [], str(error), False
        executed = []
        try:
            for suite in suites:
                try:
                    executed.append(self._execute(suite, env, executor, write))
                except Interrupted as stop:
                    executed.append(stop.partial)
                    return executed, "", True
        finally:
            executor.close()
        return executed, "", False

    def _execute(self, suite: Suite, env, executor, write: bool = True) -> _Executed:
        from mnn_parity.execution.executors import Interrupted
        from mnn_parity.execution.plan import RunOptions, environment, now, plan

        options = RunOptions(mnn_python=env.python, mnn_version=env.version, cache_dir=self.config.cache,
                             backends=self.config.backends, models=self.config.models,
                             with_variants=self.config.with_variants,
                             jobs=self.config.jobs or os.cpu_count() or 1, cases=self.config.cases,
                             localise=self.config.localise, converter=self.config.converter,
                             report_dir=self.config.reports if write else None)   # no reports, no reproducers
        info = environment(options)
        items = plan(suite, options, info)
        self.events.suite_started(suite, env.version, _case_count(items))
        started, clock = now(), time.monotonic()
        try:
            outcomes = executor.run(items, self.events.case_done, self.events.phase)
        except Interrupted as stop:
            stop.partial = _merge(suite, stop.outcomes, info, started, time.monotonic() - clock)
            raise
        return _merge(suite, outcomes, info, started, time.monotonic() - clock)

    def _conclude(self, executed: _Executed, interrupted: bool, write: bool = True) -> SuiteOutcome:
        """Drift, stale goldens, summary and reports for one executed suite."""
        from mnn_parity.goldens import GoldenStore, attach_drift
        from mnn_parity.reports import RunSummary, write_reports
        from mnn_parity.reports.ladder import MODEL_BYTES_KEY, model_bytes

        store = GoldenStore(self.config.goldens)
        store.recover()
        suite = executed.suite
        judged, baseline, golden_errors = attach_drift(suite, executed.runs, store)
        current = {(r.result.model, r.result.case, r.result.backend) for r in judged}
        stale = [key for key in store.stale_keys(suite.name, current)
                 if selected(key[0], self.config.models, self.config.with_variants)
                 and (self.config.backends is None or key[2] in self.config.backends)] if not interrupted else []
        environment = {**executed.environment, "baseline_mnn_version": baseline}
        sizes = model_bytes(judged)          # the precision ladder's .mnn sizes, from the runs' provenance
        if sizes:
            environment[MODEL_BYTES_KEY] = sizes
        if interrupted:
            environment["interrupted"] = "yes: the run was stopped by the user; this report is partial"
        summary = RunSummary(suite=suite.name, description=suite.description, environment=environment,
                             results=tuple(r.result for r in judged), stale=tuple(stale), started=executed.started,
                             duration_s=executed.duration_s, fail_on=frozenset(self.config.fail_on),
                             slowdown_max=suite.latency.slowdown_max)
        paths = write_reports(summary, self.config.reports) if write else []
        return SuiteOutcome(suite, tuple(judged), summary, tuple(executed.setup_errors + golden_errors),
                            tuple(paths))

    def _result(self, outcomes: list[SuiteOutcome], problems: list[str], interrupted: bool) -> SessionResult:
        from mnn_parity.fsutil import atomic_write_text
        from mnn_parity.reports import exit_status, render_junit

        summaries = [o.summary for o in outcomes]
        if self.config.junit:
            atomic_write_text(self.config.junit, render_junit(summaries))
        problems = problems + [f"setup: {e}" for o in outcomes for e in o.setup_errors]
        if interrupted:
            status = EXIT_INTERRUPTED
        elif problems:
            status = EXIT_SETUP
        else:
            status = exit_status(summaries)
        return SessionResult(tuple(outcomes), tuple(problems), status, interrupted,
                             tuple(o.suite for o in outcomes))

    def _finish_killed_bless(self) -> None:
        """A bless killed between its swap and the end of its `dvc add goldens`: do the add now, unless a bless is
        running (it does its own)."""
        from mnn_parity.goldens import GoldenStore
        from mnn_parity.goldens.storage import BlessBusy

        store = GoldenStore(self.config.goldens)
        if self.config.goldens_dir is not None or not store.untracked_pending():
            return
        try:
            with store.exclusive():
                if not self._track_goldens():
                    store.clear_untracked()
        except BlessBusy:
            return

    def _track_goldens(self) -> str:
        """`dvc add goldens`; a setup problem to return when goldens.dvc pins goldens/ and now no longer matches
        it (a later `dvc status` would say modified, a teammate's `dvc pull` would bring the old goldens back)."""
        from mnn_parity.bundled.restore import dvc_track

        if self.config.goldens_dir is not None:
            self.events.message("goldens/ not tracked by DVC: a --goldens folder is not tracked")
            return ""
        problem = dvc_track(self.config.root, "goldens")
        if problem and (self.config.root / "goldens.dvc").exists():
            return (f"goldens/ was blessed but goldens.dvc could not be updated ({problem}): run `dvc add goldens` "
                    f"(repository root {self.config.root})")
        self.events.message("goldens.dvc updated: `git add goldens.dvc && dvc push` to share them" if not problem
                            else f"goldens/ not tracked by DVC: {problem}")
        return ""


def _merge(suite: Suite, outcomes, info: dict, started: str, duration_s: float) -> _Executed:
    runs = [run for outcome in outcomes for run in outcome.runs]
    seen = next((o.onnxruntime_version for o in outcomes if o.onnxruntime_version), "")
    environment = {**info, "onnxruntime_version": seen or info.get("onnxruntime_version", "")}
    return _Executed(suite, runs, environment, [e for o in outcomes for e in o.setup_errors], started, duration_s)


def _case_count(items) -> int:
    """For the progress display only: a model whose cases cannot be listed counts for one."""
    from mnn_parity.inputs.cases import list_cases

    total = 0
    for item in items:
        try:
            cases = len([c for c in list_cases(item.model, item.suite.root)
                         if item.options.cases is None or c.name in item.options.cases]) or 1
        except Exception:   # the run itself reports why; a progress bar must not
            cases = 1
        total += cases * len(item.backends)
    return total
