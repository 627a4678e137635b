"""What the pytest plugin collects from a manifest, and how a case's verdict becomes a pytest outcome.

The manifest loader is imported when a manifest is collected and the engines only when an item runs, so that
`--collect-only` on a large suite answers quickly.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional, Union, cast

import pytest

if TYPE_CHECKING:
    from mnn_parity.manifest.spec import Suite
    from mnn_parity.pytest_plugin import ModelRun, ParityState
    from mnn_parity.records import CaseResult

# A converter log as the reason: its head says what went wrong, and a terminal is not a place for all of it.
REASON_MAX = 4000


class MnnParityWarning(pytest.PytestWarning):
    """A case's warning (say, an input with near-zero variance: not a meaningful test input)."""


class ManifestFile(pytest.File):
    def __init__(self, *, state: ParityState, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state = state

    def collect(self) -> Iterator[pytest.Item]:
        from mnn_parity.manifest import ManifestError, load_suite
        from mnn_parity.paths import shown

        root = self.state.root(self.path)
        try:
            suite = load_suite(self.path, root)
        except ManifestError as error:
            yield ManifestProblem.from_parent(self, name="manifest", lines=tuple(str(i) for i in error.issues))
            return
        other = self.state.claim(suite.name, self.path)
        if other is not None:
            line = (f"{shown(root, self.path)}:1: suite: suite name {suite.name!r} is also used by "
                    f"{shown(root, other)}")
            yield ManifestProblem.from_parent(self, name="manifest", lines=(line,))
            return
        yield from self._cases(suite)

    def _cases(self, suite: Suite) -> Iterator[pytest.Item]:
        from mnn_parity.inputs.cases import list_cases

        keys = []
        for model in suite.models:
            backends = suite.backends_for(model)
            for case in list_cases(model, suite.root):
                for backend in backends:
                    keys.append((model.name, case.name, backend.name))
                    yield CaseItem.from_parent(self, name=f"{model.name}/{case.name}[{backend.name}]", suite=suite,
                                               model=model.name, case=case.name, backend=backend.name,
                                               expect=model.expects_failure_on(backend.name))
        if "stale" in self.state.fail_on:
            yield StaleGoldens.from_parent(self, name="stale-goldens", suite=suite, keys=frozenset(keys))


class ManifestProblem(pytest.Item):
    """A manifest that cannot be run: one failing item, with every problem on its own line."""

    def __init__(self, *, lines: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lines = lines

    def runtest(self) -> None:
        pytest.fail("\n".join(self.lines), pytrace=False)

    def reportinfo(self) -> tuple[Union[Path, str], Optional[int], str]:
        return self.path, None, f"manifest {self.path.name}"


class CaseItem(pytest.Item):
    """One case on one backend; the first item of a model runs the whole model (cached per process)."""

    def __init__(self, *, suite: Suite, model: str, case: str, backend: str, expect: Optional[str],
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.suite, self.model, self.case, self.backend = suite, model, case, backend
        self.extra_keyword_matches.update({suite.name, model, backend})
        if expect:
            # non-strict, and only an imperative xfail counts: an XPASS shows as XPASS, a failing drift fails
            self.add_marker(pytest.mark.xfail(reason=f"expected to fail: {expect}", strict=False,
                                              raises=pytest.xfail.Exception))
        if self.config.pluginmanager.hasplugin("xdist"):
            self.add_marker(pytest.mark.xdist_group(name=f"{suite.name}/{model}"))

    def runtest(self) -> None:
        run = _state(self).model_run(self.suite, self.model)
        judgement = judge(run.results.get((self.case, self.backend)), run)
        self.user_properties.extend(judgement.properties)
        for warning in judgement.warnings:
            warnings.warn(MnnParityWarning(f"{self.model}/{self.case} [{self.backend}]: {warning}"), stacklevel=1)
        if judgement.outcome == "xfail":
            pytest.xfail(judgement.message)
        if judgement.outcome == "fail":
            pytest.fail(judgement.message, pytrace=False)

    def reportinfo(self) -> tuple[Union[Path, str], Optional[int], str]:
        return self.path, None, f"{self.model}/{self.case} [{self.backend}]"


class StaleGoldens(pytest.Item):
    """With `--mnn-parity-fail-on stale`: the suite's goldens whose case no longer exists."""

    def __init__(self, *, suite: Suite, keys: frozenset[tuple[str, str, str]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.suite, self.keys = suite, keys

    def runtest(self) -> None:
        from mnn_parity.goldens import GoldenError, GoldenStore

        store = GoldenStore(_state(self).session_config(self.suite).goldens)
        try:
            stale = store.stale_keys(self.suite.name, self.keys)
        except GoldenError as error:
            pytest.fail(f"goldens not readable: {error}", pytrace=False)
        if stale:
            pytest.fail("stale goldens (no case left): " + ", ".join(f"{m}/{c} [{b}]" for m, c, b in stale),
                        pytrace=False)

    def reportinfo(self) -> tuple[Union[Path, str], Optional[int], str]:
        return self.path, None, f"stale goldens of suite {self.suite.name}"


def _state(item: pytest.Item) -> ParityState:
    return cast(ManifestFile, item.parent).state


@dataclass(frozen=True)
class Judgement:
    outcome: str                                   # "pass", "fail" or "xfail"
    message: str = ""
    properties: tuple[tuple[str, str], ...] = ()   # for JUnit XML
    warnings: tuple[str, ...] = ()


def judge(result: Optional[CaseResult], run: ModelRun) -> Judgement:
    """The pytest outcome of one case: its verdict, then its drift against the fail-on set, then its golden."""
    from mnn_parity.records import Verdict
    from mnn_parity.reports import drift_fails
    from mnn_parity.reports.formatting import first_line

    if result is None:
        why = "\n".join(run.problems) or "the model's run has no result for this case (did its files change?)"
        return Judgement("fail", f"no verdict: {why}")
    properties = (("verdict", result.verdict.value),
                  *((("failure_class", result.failure_class.value),) if result.failure_class else ()),
                  *((("drift", result.drift.drift_class.value),) if result.drift else ()))
    # a golden that could not be read is exit status 2 for the command line: never a silent pass here
    unread = any(w.startswith("golden not compared") for w in result.warnings)
    failing_drift = drift_fails(result, run.fail_on)
    if result.verdict.is_bad or failing_drift or unread:
        return Judgement("fail", describe(result, run.fail_on if failing_drift else frozenset()), properties)
    if result.verdict is Verdict.XFAIL:
        return Judgement("xfail", first_line(result.reason), properties)
    return Judgement("pass", "", properties, result.warnings)


def describe(result: CaseResult, failing: frozenset[str]) -> str:
    """Verdict, class and reason first (what CI front ends show), then the metrics, then the golden."""
    from mnn_parity.reports.formatting import short
    from mnn_parity.reports.markdown_cases import outputs_table
    from mnn_parity.reports.terminal import localisation_text

    head = result.verdict.value + (f" ({result.failure_class.value})" if result.failure_class else "")
    lines = [f"{head}: {short(result.reason, REASON_MAX)}" if result.reason else head]
    lines += [f"warning: {w}" for w in result.warnings]
    if result.outputs:
        lines += ["", "per output, MNN against the reference:", outputs_table(result.outputs)]
    drift = result.drift
    if drift is not None:
        gate = f" — fails: --mnn-parity-fail-on {', '.join(sorted(failing))}" if failing else ""
        blessed = (f" (blessed under MNN {drift.golden_mnn_version}, verdict "
                   f"{drift.golden_verdict.value if drift.golden_verdict else '?'})" if drift.golden_mnn_version else "")
        lines += ["", f"golden: {drift.drift_class.value}{blessed}{gate}" + (f"; {drift.note}" if drift.note else "")]
        if drift.outputs:
            lines += ["per output, MNN now against the golden:", outputs_table(drift.outputs)]
    if result.localisation:
        lines += ["", *localisation_text(result.localisation)]
    return "\n".join(lines)

