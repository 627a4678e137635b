"""`pytest suites/`: every suite manifest collected as tests, one item per model, case and backend.

Registered as the `pytest11` entry point `mnn_parity`, so it loads in every pytest run where mnn-parity is
installed; until a file is recognised as a manifest it does nothing but declare its options. A manifest is a
`*.yaml`/`*.yml` with a top-level `suite:` and `models:` key (other YAML files are left alone); it is loaded with
`manifest.load_suite` and its cases listed with `inputs.cases.list_cases`, as the command line does. Items are
named `<model>/<case>[<backend>]`; a manifest with errors is one failing item, `manifest`, whose message holds the
`file:line: key.path: message` lines.

Running an item runs its model through the session the command line uses (`Session.run_suites`, one model per
call): the first item of a model converts it, runs the reference and every backend on every case and compares
with the goldens; the outcome is cached for the rest of the process and each item reports its own case:

    PASS          passed
    FAIL          failed: verdict, failure class, reason, per-output metrics
    ERROR, CRASH  failed, with the reason
    XFAIL         xfailed, with the reason
    XPASS         XPASS: the item of an expected failure carries a non-strict `xfail` mark, so news is visible
                  without failing the run (exit status 0, as on the command line)

whatever the verdict, a drift class in the fail-on set (default regressed and changed) fails the item, with the
golden comparison; so does a golden that could not be read (exit status 2 on the command line).

`--mnn-parity-fail-on stale` adds one item per manifest, `stale-goldens`, failing when a golden has no case left.

Under pytest-xdist every worker collects every manifest and runs the models of the items it is given, each at
most once; a model whose items land on two workers runs on both, with the same verdicts. Items carry an
`xdist_group` mark per model, so `-n N --dist loadgroup` keeps each model on one worker and runs it once.

After selection (`-k`, `-m`, `--deselect`, `--lf`), a model runs only the cases and backends its remaining items
name: `-k page_line03` converts the model and runs that case, not every case of it.

Reports are not written unless `--mnn-parity-report-dir DIR` is given: then, at the end of the session, each
suite's reports (as `mnn-parity run` writes them, through `reports.write_reports`) cover the cases this process
ran. Under xdist no report is written (each worker saw only part of a suite; `mnn-parity run` writes the whole
report) and the terminal summary says so.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import pytest

if TYPE_CHECKING:
    from mnn_parity.manifest.spec import Suite
    from mnn_parity.records import CaseResult
    from mnn_parity.reports import RunSummary
    from mnn_parity.session import SessionConfig, SuiteOutcome

SUFFIXES = (".yaml", ".yml")
# Enough for any manifest's top-level keys; a huge YAML file elsewhere in a repository is not read whole.
SNIFF_BYTES = 1 << 20
_TOP_KEY = re.compile(r"""^["']?(suite|models)["']?[ \t]*:""", re.MULTILINE)


def pytest_addoption(parser: pytest.Parser) -> None:
    from mnn_parity.cli import DRIFT_CLASSES

    group = parser.getgroup("mnn-parity", "mnn-parity suite manifests")
    group.addoption("--mnn-parity-fail-on", action="append", metavar="CLASS", choices=DRIFT_CLASSES + ("none",),
                    help="a drift class that also fails a case, besides regressed and changed (repeatable); "
                         "`none` drops those two (alone: no drift gating)")
    group.addoption("--mnn-parity-goldens", metavar="DIR", help="golden store (default: <root>/goldens)")
    group.addoption("--mnn-parity-root", metavar="DIR",
                    help="repository root of the manifests (default: $MNN_PARITY_ROOT, else the nearest folder "
                         "above the manifest holding .git or .mnn-parity)")
    group.addoption("--mnn-parity-mnn", metavar="VERSION", help="run the MNN side under this MNN release")
    group.addoption("--mnn-parity-report-dir", metavar="DIR",
                    help="write each suite's reports here, for the models run (not under xdist)")


def is_manifest(path: Path) -> bool:
    if path.suffix not in SUFFIXES:
        return False
    try:
        with path.open("rb") as stream:
            head = stream.read(SNIFF_BYTES).decode("utf-8", "replace")
    except OSError:
        return False
    return set(_TOP_KEY.findall(head)) == {"suite", "models"}


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> Optional[pytest.Collector]:
    if not is_manifest(file_path):
        return None
    from mnn_parity.pytest_items import ManifestFile

    return ManifestFile.from_parent(parent, path=file_path, state=state_of(parent.config))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """After `-k`, `-m`, `--deselect` and `--lf` have had their say: each model runs only the cases and backends
    of its items that are left, so selecting one case does not run (and localise) all the others."""
    state = config.stash.get(STATE, None)
    if state is not None:
        state.select(items)


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(STATE, None)
    if state is not None and state.report_dir is not None and not is_xdist_worker(session.config):
        state.write_reports()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if config.getoption("mnn_parity_report_dir", None) and _under_xdist(config):
        terminalreporter.write_line("mnn-parity: no report written under pytest-xdist (-n): each worker ran part of "
                                    "a suite; run without -n, or `mnn-parity run --report-dir DIR`")


def is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _under_xdist(config: pytest.Config) -> bool:
    return bool(getattr(config.option, "numprocesses", None)) or is_xdist_worker(config)


@dataclass(frozen=True)
class ModelRun:
    """One model's run, as each of its items needs it."""
    results: dict[tuple[str, str], CaseResult]     # (case, backend) → result, drift attached
    problems: tuple[str, ...]                       # setup problems: gate, MNN environment, goldens unreadable
    outcome: Optional[SuiteOutcome]
    fail_on: frozenset[str]


@dataclass
class ParityState:
    """Per pytest process (so per xdist worker): options, suite names seen, and each model's run, cached."""
    config: pytest.Config
    suite_paths: dict[str, Path] = field(default_factory=dict)
    runs: dict[tuple[Path, str], ModelRun] = field(default_factory=dict)
    # (manifest, model) → the cases and backends of its selected items; a model not in it runs whole
    selected: dict[tuple[Path, str], tuple[frozenset[str], frozenset[str]]] = field(default_factory=dict)

    def option(self, name: str) -> Optional[str]:
        return self.config.getoption(f"mnn_parity_{name}", None)

    def path_option(self, name: str) -> Optional[Path]:
        """A folder given on the command line, read from where pytest was started (a test may chdir)."""
        value = self.option(name)
        return (self.config.invocation_params.dir / value).resolve() if value else None

    @property
    def fail_on(self) -> frozenset[str]:
        from mnn_parity.cli import fail_on

        return fail_on(self.option("fail_on"))

    @property
    def report_dir(self) -> Optional[Path]:
        return self.path_option("report_dir")

    def root(self, manifest: Path) -> Path:
        from mnn_parity.rootdir import find_root

        return find_root(manifest, self.path_option("root"))

    def claim(self, suite: str, path: Path) -> Optional[Path]:
        """The manifest that already uses this suite name, if another does: their goldens would collide."""
        first = self.suite_paths.setdefault(suite, path)
        return first if first != path else None

    def select(self, items: list[pytest.Item]) -> None:
        from mnn_parity.pytest_items import CaseItem

        chosen: dict[tuple[Path, str], tuple[set[str], set[str]]] = {}
        for item in items:
            if isinstance(item, CaseItem):
                cases, backends = chosen.setdefault((item.suite.path, item.model), (set(), set()))
                cases.add(item.case)
                backends.add(item.backend)
        self.selected = {key: (frozenset(c), frozenset(b)) for key, (c, b) in chosen.items()}

    def model_run(self, suite: Suite, model: str) -> ModelRun:
        key = (suite.path, model)
        if key not in self.runs:
            self.runs[key] = self._run(suite, model)
        return self.runs[key]

    def session_config(self, suite: Suite, model: Optional[str] = None) -> SessionConfig:
        from mnn_parity.session import SessionConfig

        cases, backends = self.selected.get((suite.path, model), (None, None)) if model else (None, None)
        return SessionConfig(root=suite.root, mnn=self.option("mnn"), jobs=1,
                             models=frozenset({model}) if model else None, with_variants=False,   # an item each
                             cases=cases, backends=backends,
                             goldens_dir=self.path_option("goldens"), fail_on=self.fail_on)

    def _run(self, suite: Suite, model: str) -> ModelRun:
        from mnn_parity.session import Session

        config = self.session_config(suite, model)
        result = Session(config).run_suites([suite], write_reports=False)
        if result.interrupted:
            raise KeyboardInterrupt
        outcome = result.outcomes[0] if result.outcomes else None
        results = {(r.case, r.backend): r for r in outcome.summary.results} if outcome else {}
        return ModelRun(results, result.problems, outcome, config.fail_on)

    def write_reports(self) -> None:
        from mnn_parity.reports import write_reports

        by_suite: dict[str, list[SuiteOutcome]] = {}
        for run in self.runs.values():
            if run.outcome is not None:
                by_suite.setdefault(run.outcome.suite.name, []).append(run.outcome)
        for outcomes in by_suite.values():
            write_reports(merged_summary(outcomes), self.report_dir)


def merged_summary(outcomes: list[SuiteOutcome]) -> RunSummary:
    """One suite's summary from the runs of its models, each made by its own session call."""
    first = outcomes[0].summary
    baseline = next((o.summary.environment.get("baseline_mnn_version") for o in outcomes
                     if o.summary.environment.get("baseline_mnn_version")), None)
    return dataclasses.replace(
        first, environment={**first.environment, "baseline_mnn_version": baseline},
        results=tuple(r for o in outcomes for r in o.summary.results),
        stale=tuple(key for o in outcomes for key in o.summary.stale),
        duration_s=sum(o.summary.duration_s for o in outcomes))


STATE = pytest.StashKey[ParityState]()


def state_of(config: pytest.Config) -> ParityState:
    if STATE not in config.stash:
        config.stash[STATE] = ParityState(config)
    return config.stash[STATE]
