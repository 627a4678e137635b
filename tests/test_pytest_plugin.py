"""The pytest plugin on the real engines: `pytest suites/` gives each case the outcome the command line's verdict
means, under -k, --junitxml and xdist, and stays out of the way where there is no manifest."""
from __future__ import annotations

import dataclasses
import json
import re
import xml.etree.ElementTree as ET
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest

from mnn_parity.cli import main
from mnn_parity.goldens.serialization import read_npz, write_npz
from mnn_parity.manifest.tolerance import Tolerance
from mnn_parity.pytest_items import judge
from mnn_parity.pytest_plugin import ModelRun, is_manifest
from mnn_parity.rootdir import find_root
from mnn_parity.records import CaseResult, Drift, DriftClass, OutputComparison, Verdict
from tests import onnx_models

pytest_plugins = ["pytester"]


def model_entry(name: str, onnx: str, files: str, *extra: str) -> str:
    """A manifest's model entry reading `.npy` files into input x; `extra` are more `key: value` lines."""
    lines = [f"  - name: {name}", f"    onnx: models/{onnx}.onnx", *(f"    {line}" for line in extra),
             "    inputs:", f"      x: {{files: inputs/{files}/*.npy, preprocess: [{{load: {{}}}}]}}"]
    return "\n".join(lines) + "\n"


ONE_BACKEND = "backends: [cpu-fp32]"
MANIFEST = """\
suite: plug
description: one model per verdict, through pytest
backends:
  cpu-fp32: {engine: mnn, device: CPU, precision: high, threads: 1}
  cpu-low: {engine: mnn, device: CPU, precision: low, threads: 1}
tolerance: {atol: 1.0e-3, rtol: 1.0e-3, cosine_min: 0.999}
limits: {timeout_s: 60, memory_mb: 4096}
latency: {warmup: 0, repeat: 1}
models:
""" + "".join([
    model_entry("conv", "conv", "image"),
    model_entry("round", "round", "halves", ONE_BACKEND),
    model_entry("round-known", "round", "halves", ONE_BACKEND, "expect: {fail: MNN rounds half away from zero}"),
    model_entry("conv-known", "conv", "image", ONE_BACKEND, "max_cases: 1",
                "expect: {fail: thought broken but fixed since}"),
    model_entry("maxpool", "maxpool", "image", ONE_BACKEND, "max_cases: 1"),
    model_entry("convint", "convint", "bytes", ONE_BACKEND)])

ITEMS = ["conv/img0[cpu-fp32]", "conv/img0[cpu-low]", "conv/img1[cpu-fp32]", "conv/img1[cpu-low]",
         "round/halves[cpu-fp32]", "round-known/halves[cpu-fp32]", "conv-known/img0[cpu-fp32]",
         "maxpool/img0[cpu-fp32]", "convint/b0[cpu-fp32]"]
# what each command-line verdict must become in pytest
OUTCOME = {"PASS": "PASSED", "FAIL": "FAILED", "ERROR": "FAILED", "CRASH": "FAILED", "XFAIL": "XFAIL",
           "XPASS": "XPASS"}
SUMMARY_LINE = re.compile(r"^(PASSED|FAILED|XFAIL|XPASS|ERROR|SKIPPED) suites/[\w.-]+\.ya?ml::(\S+)")


def plugin_args() -> list[str]:
    """`-p` until the entry point is installed; after that a second registration under the module's name is an
    error in pytest, so nothing."""
    registered = any(ep.name == "mnn_parity" for ep in entry_points(group="pytest11"))
    # this module imported the plugin already: too late for pytest to rewrite its asserts (it has none)
    return [] if registered else ["-p", "mnn_parity.pytest_plugin", "-W", "ignore::pytest.PytestAssertRewriteWarning"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One conversion cache for the module: a model converted by the command line is not converted again."""
    return tmp_path_factory.mktemp("mnn-parity-cache")


@pytest.fixture()
def repo(pytester: pytest.Pytester, cache_dir: Path, monkeypatch) -> Path:
    root = pytester.path
    onnx_models.conv_relu(root / "models/conv.onnx")
    onnx_models.round_half(root / "models/round.onnx")
    onnx_models.maxpool_kernel_only(root / "models/maxpool.onnx")
    onnx_models.conv_integer(root / "models/convint.onnx")
    rng = np.random.RandomState(7)
    for folder in ("image", "halves", "bytes"):
        (root / "inputs" / folder).mkdir(parents=True)
    for index in range(2):
        np.save(root / f"inputs/image/img{index}.npy", rng.rand(1, 3, 8, 8).astype(np.float32))
    np.save(root / "inputs/halves/halves.npy", np.array([[0.5, 1.5, 2.5, -0.5, 3.5, 4.5, -2.5, 0.25]], np.float32))
    np.save(root / "inputs/bytes/b0.npy", rng.randint(0, 255, (1, 3, 8, 8)).astype(np.uint8))
    (root / "suites").mkdir()
    (root / "suites/plug.yaml").write_text(MANIFEST)
    (root / "suites/other.yaml").write_text("name: not a manifest\nmodels: [a, b]\n")
    (root / "ci.yml").write_text("suite: also not a manifest\n")
    (root / ".mnn-parity").write_text("")          # the root is found as the command line finds it
    monkeypatch.delenv("MNN_PARITY_ROOT", raising=False)
    monkeypatch.setenv("MNN_PARITY_CACHE_DIR", str(cache_dir))
    return root


def run_pytest(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, str]]:
    result = pytester.runpytest(*plugin_args(), "-p", "no:cacheprovider", "-rA", *args)
    outcomes = {}
    for line in result.outlines:
        match = SUMMARY_LINE.match(line)
        if match:
            outcomes[re.sub(r"@.*$", "", match.group(2))] = match.group(1)
    return result, outcomes


def cli_verdicts(repo: Path, *args: str) -> dict[str, dict]:
    out = repo.parent / f"{repo.name}-cli-reports"
    main(["run", str(repo / "suites/plug.yaml"), "--report-dir", str(out), "--jobs", "2", "-q", *args])
    cases = json.loads((out / "plug.json").read_text())["cases"]
    return {f"{c['model']}/{c['case']}[{c['backend']}]": c for c in cases}


def test_collects_one_item_per_model_case_and_backend_and_ignores_other_yaml(pytester, repo: Path):
    result = pytester.runpytest(*plugin_args(), "-p", "no:cacheprovider", "--collect-only", "-q", ".")
    ids = [line for line in result.outlines if "::" in line]
    assert ids == [f"suites/plug.yaml::{item}" for item in ITEMS]


def test_the_root_option_wins_over_the_working_folder(pytester, repo: Path, monkeypatch):
    (repo / ".mnn-parity").unlink()
    monkeypatch.chdir(repo / "suites")        # with no marker above it, the root would be this folder
    args = (*plugin_args(), "-p", "no:cacheprovider", "--collect-only", "-q", "plug.yaml")

    def names(*more: str) -> list[str]:
        return [line.split("::")[1] for line in pytester.runpytest(*args, *more).outlines if "::" in line]

    assert names() == ["manifest"]
    assert names("--mnn-parity-root", "..") == ITEMS


def test_without_a_manifest_the_plugin_loads_nothing(pytester, repo: Path):
    (repo / "suites/plug.yaml").unlink()
    pytester.makepyfile(test_plain="""
        import sys

        def test_nothing_of_the_runner_was_imported():
            assert not [m for m in sys.modules if m.startswith("mnn_parity.") and m not in (
                "mnn_parity.pytest_plugin", "mnn_parity.cli")]
    """)
    result = pytester.runpytest_subprocess(*plugin_args(), "-p", "no:cacheprovider", "-q", ".")
    result.assert_outcomes(passed=1)


def test_a_bad_manifest_is_one_failing_item_with_file_line_and_key(pytester, repo: Path):
    manifest = MANIFEST.replace("suite: plug", "suite: bad").replace("tolerance: {atol", "tolerence: {atol")
    (repo / "suites/bad.yaml").write_text(manifest.replace("x: {files: inputs/halves", "z: {files: inputs/halves", 1))
    (repo / "suites/twin.yaml").write_text(MANIFEST)
    result = pytester.runpytest(*plugin_args(), "-p", "no:cacheprovider", "suites/bad.yaml", "suites/twin.yaml",
                                "suites/plug.yaml", "-k", "manifest")
    result.assert_outcomes(failed=2, deselected=len(ITEMS))
    lines = result.outlines
    assert "suites/bad.yaml:6: tolerence: unknown key 'tolerence' (did you mean 'tolerance'?)" in lines
    assert "suites/bad.yaml:18: models[1].inputs.z: the model has no input 'z'; it has ['x']" in lines
    assert "suites/plug.yaml:1: suite: suite name 'plug' is also used by suites/twin.yaml" in lines


@pytest.mark.slow
def test_outcomes_equal_the_command_line_verdicts_and_junit_lists_the_same_cases(pytester, repo: Path):
    expected = cli_verdicts(repo)
    result, outcomes = run_pytest(pytester, "suites", "--junitxml", str(repo / "junit.xml"))

    assert sorted(expected) == sorted(ITEMS)
    assert outcomes == {item: OUTCOME[case["verdict"]] for item, case in expected.items()}
    assert {expected[i]["verdict"] for i in ITEMS} == {"PASS", "FAIL", "XFAIL", "XPASS", "CRASH", "ERROR"}
    result.stdout.fnmatch_lines(["*FAIL (out-of-tolerance): y: * of elements differ by more than atol*", "*| output *| shape *",
                                 "*golden: new; no golden*", "*CRASH: MNN killed by SIGFPE*",
                                 "*ERROR: conversion failed*ConvInteger*"])
    testcases = ET.parse(repo / "junit.xml").getroot().iter("testcase")
    assert sorted(case.get("name") for case in testcases) == sorted(ITEMS)
    assert not (repo / "reports").exists()      # no report unless asked for


@pytest.mark.slow
def test_k_selects_and_the_report_covers_the_models_run(pytester, repo: Path):
    result, outcomes = run_pytest(pytester, "suites", "-k", "round", "--mnn-parity-report-dir", "out")
    assert outcomes == {"round/halves[cpu-fp32]": "FAILED", "round-known/halves[cpu-fp32]": "XFAIL"}
    report = json.loads((repo / "out/plug.json").read_text())
    assert sorted((c["model"], c["verdict"]) for c in report["cases"]) == [("round", "FAIL"),
                                                                         ("round-known", "XFAIL")]
    assert (repo / "out/plug.md").exists()


@pytest.mark.slow
def test_a_selection_runs_only_its_cases_and_a_failure_says_where_mnn_goes_wrong(pytester, repo: Path):
    result, outcomes = run_pytest(pytester, "suites", "-k", "conv and img1 and cpu-low and not known or round and not "
                                  "known", "--mnn-parity-report-dir", "out")
    assert outcomes == {"conv/img1[cpu-low]": "PASSED", "round/halves[cpu-fp32]": "FAILED"}
    report = json.loads((repo / "out/plug.json").read_text())
    # one case of conv's four ran: -k narrowed the model's run, not only the items reported
    assert sorted((c["model"], c["case"], c["backend"]) for c in report["cases"]) == [
        ("conv", "img1", "cpu-low"), ("round", "halves", "cpu-fp32")]
    # the run localised the failing case (as `mnn-parity run` does): the failure shows what it found
    result.stdout.fnmatch_lines(["FAIL (out-of-tolerance): *", "first divergent op: * (Round), tensor *"])


def test_a_setup_problem_fails_every_item_even_an_expected_failure(pytester, repo: Path):
    result, outcomes = run_pytest(pytester, "suites", "-k", "round", "--mnn-parity-mnn", "../3.5")
    assert outcomes == {"round/halves[cpu-fp32]": "FAILED", "round-known/halves[cpu-fp32]": "FAILED"}
    result.stdout.fnmatch_lines(["no verdict: cannot use MNN ../3.5: not a usable MNN version*"])


@pytest.mark.slow
def test_two_xdist_workers_give_the_command_line_verdicts(pytester, repo: Path):
    expected = cli_verdicts(repo)
    result, outcomes = run_pytest(pytester, "suites", "-n", "2")
    assert outcomes == {item: OUTCOME[case["verdict"]] for item, case in expected.items()}
    _, grouped = run_pytest(pytester, "suites", "-n", "2", "--dist", "loadgroup")
    assert grouped == outcomes


DRIFT_MANIFEST = """\
suite: drift
tolerance: {atol: 0.05, rtol: 0.0, cosine_min: 0.9}
latency: {warmup: 0, repeat: 1}
models:
""" + model_entry("conv", "conv", "image", "convert: {fp16: FP16}")


@pytest.mark.slow
def test_drift_is_gated_as_the_command_line_gates_it(pytester, repo: Path):
    (repo / "suites/plug.yaml").unlink()
    manifest = repo / "suites/drift.yaml"
    manifest.write_text(DRIFT_MANIFEST.replace("FP16", "false"))
    assert main(["bless", str(manifest), "--goldens", str(repo / "blessed"), "-q"]) == 0
    manifest.write_text(DRIFT_MANIFEST.replace("FP16", "true"))        # reconverted: MNN's outputs move a little
    goldens = ("--mnn-parity-goldens", "blessed")

    _, outcomes = run_pytest(pytester, "suites", *goldens)
    assert set(outcomes.values()) == {"PASSED"}                        # drifted is not in the default set
    result, outcomes = run_pytest(pytester, "suites", *goldens, "--mnn-parity-fail-on", "drifted")
    assert set(outcomes.values()) == {"FAILED"}
    result.stdout.fnmatch_lines(["PASS: within tolerance*", "*golden: drifted (blessed under MNN *, verdict PASS) — "
                                 "fails: --mnn-parity-fail-on changed, drifted, regressed; *converter flags changed*"])
    _, outcomes = run_pytest(pytester, "suites", "--mnn-parity-fail-on", "new")   # the default store: empty
    assert set(outcomes.values()) == {"FAILED"}

    golden = repo / "blessed/drift/conv/cpu-fp32/img0.mnn.npz"
    write_npz(golden, {name: value * 1.5 + 1 for name, value in read_npz(golden).items()})
    result, outcomes = run_pytest(pytester, "suites", *goldens)
    assert outcomes == {"conv/img0[cpu-fp32]": "FAILED", "conv/img1[cpu-fp32]": "PASSED"}   # changed: gated
    result.stdout.fnmatch_lines(["*golden: changed (blessed under MNN *) — fails: --mnn-parity-fail-on changed, "
                                 "regressed*"])
    _, outcomes = run_pytest(pytester, "suites", *goldens, "--mnn-parity-fail-on", "none")
    assert set(outcomes.values()) == {"PASSED"}

    (repo / "inputs/image/img1.npy").unlink()
    result, outcomes = run_pytest(pytester, "suites", *goldens, "--mnn-parity-fail-on", "none",
                                  "--mnn-parity-fail-on", "stale")     # `none` drops the defaults, not `stale`
    assert outcomes == {"conv/img0[cpu-fp32]": "PASSED", "stale-goldens": "FAILED"}
    assert "stale goldens (no case left): conv/img1 [cpu-fp32]" in result.outlines


# -- without the engines

def _result(verdict: Verdict, drift: DriftClass | None = None, warnings: tuple[str, ...] = ()) -> CaseResult:
    output = OutputComparison("y", (1, 4), (1, 4), "float32", "float32", Tolerance(), max_abs=0.5, cosine=0.9)
    return CaseResult("s", "m", "c", "cpu", verdict, reason="why", outputs=(output,), warnings=warnings,
                      drift=Drift(drift, note="MNN 3.5.0 → 3.6.1") if drift else None)


def _run(*results: CaseResult, problems: tuple[str, ...] = ()) -> ModelRun:
    return ModelRun({(r.case, r.backend): r for r in results}, problems, None, frozenset({"regressed", "changed"}))


@pytest.mark.parametrize("verdict, drift, outcome", [
    (Verdict.PASS, None, "pass"), (Verdict.PASS, DriftClass.DRIFTED, "pass"),
    (Verdict.PASS, DriftClass.CHANGED, "fail"), (Verdict.XFAIL, None, "xfail"),
    (Verdict.XFAIL, DriftClass.REGRESSED, "fail"), (Verdict.XPASS, None, "pass"),
    (Verdict.FAIL, None, "fail"), (Verdict.ERROR, None, "fail"), (Verdict.CRASH, None, "fail")])
def test_each_verdict_and_drift_has_its_outcome(verdict: Verdict, drift: DriftClass | None, outcome: str):
    judgement = judge(_result(verdict, drift), _run())
    assert judgement.outcome == outcome
    assert ("verdict", verdict.value) in judgement.properties


def test_a_failure_says_the_verdict_reason_metrics_and_golden():
    message = judge(_result(Verdict.PASS, DriftClass.CHANGED), _run()).message
    assert message.startswith("PASS: why")
    assert "| y " in message and "5.00e-01" in message
    assert "golden: changed — fails: --mnn-parity-fail-on changed, regressed; MNN 3.5.0 → 3.6.1" in message


def test_an_unread_golden_or_a_missing_result_never_passes():
    assert judge(_result(Verdict.PASS, warnings=("golden not compared: layout 9",)), _run()).outcome == "fail"
    missing = judge(None, _run(problems=("goldens/ is tracked by goldens.dvc but missing",)))
    assert missing.outcome == "fail" and "goldens.dvc" in missing.message


def test_a_failure_shows_the_localisation_found_by_the_run():
    found = {"status": "blamed", "node": "r0", "op_type": "Round", "tensor": "y", "rel": 1.0, "cosine": 0.5,
             "verified": "yes", "kind": "op-semantics", "suggestion": "MNN rounds halves away from zero"}
    failing = _result(Verdict.FAIL)
    message = judge(dataclasses.replace(failing, localisation=found), _run()).message
    assert ("first divergent op: r0 (Round), tensor y: max rel 1.00e+00, cosine 5.00e-01; verified alone: yes"
            in message.splitlines())
    assert "diagnosis: op-semantics — MNN rounds halves away from zero" in message.splitlines()
    drift = judge(dataclasses.replace(failing, localisation={"status": "drift", "tensor": "y"}), _run())
    assert "localisation: drift, at tensor y" in drift.message.splitlines()


def test_manifests_are_recognised_by_their_top_level_keys(tmp_path: Path):
    cases = {"a.yaml": "suite: a\nmodels: []\n", "b.yml": '"suite": b\n"models":\n  - x\n',
             "c.yaml": "name: c\nmodels: []\n", "d.yaml": "nested:\n  suite: d\n  models: []\n",
             "e.txt": "suite: e\nmodels: []\n"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    assert [name for name in cases if is_manifest(tmp_path / name)] == ["a.yaml", "b.yml"]


def test_the_root_is_the_option_then_the_environment_then_the_nearest_marker(tmp_path: Path, monkeypatch):
    (tmp_path / "repo/suites").mkdir(parents=True)
    (tmp_path / "repo/.git").mkdir()
    manifest = tmp_path / "repo/suites/a.yaml"
    monkeypatch.delenv("MNN_PARITY_ROOT", raising=False)
    assert find_root(manifest, None) == (tmp_path / "repo").resolve()
    monkeypatch.setenv("MNN_PARITY_ROOT", str(tmp_path))
    assert find_root(manifest, None) == tmp_path.resolve()
    assert find_root(manifest, tmp_path / "repo/suites") == (tmp_path / "repo/suites").resolve()
