"""`mnn-parity new --tolerances`: tolerances proposed from a report, that pasted into the manifest make it pass.

Pure tests of `reports/propose.py` on hand-written report dicts, the command's refusals, and one run on the real
engines: a Conv chain converted with fp16 weights fails a too-tight tolerance, the proposal is pasted in as text,
and the rerun passes.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from mnn_parity.cli import main
from mnn_parity.reports import propose as p
from tests import onnx_models


def _out(name="y", max_abs=1e-3, cosine=0.999999, mismatch=1.0, failure=None, dtype="float32", passed=None,
         tol=None, **extra):
    return {"name": name, "ref_shape": [1, 4], "mnn_shape": [1, 4], "ref_dtype": dtype, "mnn_dtype": dtype,
            "tolerance": tol or {"atol": 1e-7, "rtol": 0.0, "cosine_min": 0.9999999, "mismatch_max": 0.0},
            "max_abs": max_abs, "max_rel": 0.5, "mean_abs": max_abs, "cosine": cosine, "mismatch_fraction": mismatch,
            "nan_ref": 0, "inf_ref": 0, "nan_mnn": 0, "inf_mnn": 0, "failure_class": failure, "reason": "",
            "passed": (failure is None) if passed is None else passed, **extra}


def _case(model="m", case="c0", backend="cpu", verdict="FAIL", outputs=(), failure="out-of-tolerance", reason=""):
    return {"model": model, "case": case, "backend": backend, "verdict": verdict, "failure_class": failure,
            "reason": reason, "outputs": list(outputs)}


def _report(*cases, suite="s"):
    return {"suite": suite, "started": "2026-01-01T00:00:00", "cases": list(cases),
            "environment": {"mnn_version": "3.6.1", "onnxruntime_version": "1.20.0"}}


def _only(proposal: p.Proposal, model="m", output="y") -> p.OutputProposal:
    found = [o for m in proposal.models if m.name == model for o in m.outputs if o.name == output]
    assert len(found) == 1
    return found[0]


# -- numbers

def test_round_up_gives_1_2_or_5_times_a_power_of_ten_never_below_the_value():
    assert [p.round_up(x) for x in (3.52e-3, 1e-3, 1.1e-3, 6e-5, 0.3, 7.0, 2e-300)] == \
        [5e-3, 1e-3, 2e-3, 1e-4, 0.5, 10.0, 2e-300]
    rng = random.Random(0)
    for _ in range(2000):
        x = 10 ** rng.uniform(-12, 6)
        up = p.round_up(x)
        assert x <= up < 2.5 * x * (1 + 1e-12)
        assert f"{up:e}"[0] in "125" and f"{up:e}"[1:8] == ".000000"


def test_numbers_are_written_as_yaml_that_reads_back_as_the_same_float():
    for x in (5e-5, 2e-12, 0.005, 2.0, 1e5, 5e7, 1e16, 0.99999999, 123456.789, 0.0):
        text = p.yaml_number(x)
        assert yaml.safe_load(f"v: {text}")["v"] == x, text      # PyYAML wants "5.0e-05", not "5e-05"
    assert p.cosine_text(5e-7) == "0.9999995"
    assert p.cosine_text(2.0) == "-1"                            # never below the schema's minimum


# -- proposals

def test_a_too_tight_output_gets_margin_times_its_worst_over_cases_and_backends():
    doc = _report(_case(case="a", outputs=[_out(max_abs=1.76e-3, cosine=1 - 1.6e-7)]),
                  _case(case="b", backend="low", outputs=[_out(max_abs=2.6e-3, cosine=1 - 3e-7)]))
    out = _only(p.propose(doc, 2.0))
    assert dict(out.tolerance) == {"atol": "0.01", "rtol": "0", "cosine_min": "0.999999"}
    assert "mismatch_max" not in out.tolerance                    # atol alone covers every element
    assert any("m [cpu] alone: {atol: 0.005" in c and "cosine_min: 0.9999995" in c for c in out.comments)
    assert any("m [low] alone: {atol: 0.01" in c for c in out.comments)
    assert "2 case(s) (a, b) x cpu, low" in out.comments[0]
    assert dict(_only(p.propose(doc, 1.0)).tolerance)["atol"] == "0.005"


@pytest.mark.parametrize("failure", ["dead-output", "nan-inf", "shape-mismatch", "output-layout"])
def test_a_failure_a_tolerance_would_hide_gets_a_comment_and_no_number(failure):
    doc = _report(_case(outputs=[_out()]),
                  _case(case="c1", backend="low", failure=failure, outputs=[_out(failure=failure)]))
    out = _only(p.propose(doc))
    assert out.tolerance == {}
    assert any(f"{failure} on c1 [low]" in c and "must not hide" in c for c in out.comments)


def test_cases_that_never_ran_and_expected_failures_are_named_on_the_model():
    doc = _report(_case(outputs=[_out()]), _case(backend="low", verdict="CRASH", failure=None, reason="SIGFPE"),
                  _case(model="x", verdict="XFAIL", outputs=[_out()]))
    models = {m.name: m for m in p.propose(doc).models}
    assert any("1 case(s) CRASH on low, not measured: SIGFPE" in c for c in models["m"].comments)
    assert any("XPASS" in c and "drop `expect`" in c for c in models["x"].comments)


def test_a_key_the_backend_sets_itself_comes_from_the_other_backends_and_a_too_tight_one_is_named():
    doc = _report(_case(outputs=[_out(cosine=1 - 1e-7)]),
                  _case(backend="low", outputs=[_out(cosine=1 - 4e-4)]))
    out = _only(p.propose(doc, 2.0, {"low": {"cosine_min": 0.9999}}))
    assert out.tolerance["cosine_min"] == "0.9999998"             # from cpu alone: low's own value wins on low
    assert any("backend low sets cosine_min: 0.9999 itself" in c and "may need cosine_min 0.999" in c
               and "backends.low.tolerance.cosine_min" in c for c in out.comments)


def test_labels_get_only_mismatch_max_and_none_when_they_passed_on_their_logits():
    labels = _out(dtype="int64", max_abs=3.0, cosine=0.2, mismatch=0.125, failure="out-of-tolerance")
    out = _only(p.propose(_report(_case(outputs=[labels]))))
    assert dict(out.tolerance) == {"mismatch_max": "0.5"}         # an atol >= 1 would judge them as numbers
    allowed = _out(dtype="int64", max_abs=3.0, mismatch=0.125, tol={"atol": 0.0, "mismatch_max": 0.2})
    kept = _only(p.propose(_report(_case(verdict="PASS", failure=None, outputs=[allowed]))))
    assert dict(kept.tolerance) == {"mismatch_max": "0.5"}        # passed within its mismatch_max: still needs one
    ties = _out(dtype="int64", max_abs=3.0, cosine=0.2, mismatch=0.75, near_tie_flips=3)
    tied = _only(p.propose(_report(_case(verdict="PASS", failure=None, outputs=[ties]))))
    assert tied.tolerance == {} and any("near ties" in c for c in tied.comments)


def test_bit_exact_outputs_keep_what_they_inherit_and_variants_share_their_entrys_block():
    doc = _report(_case(verdict="PASS", failure=None, outputs=[_out(max_abs=0.0, cosine=1.0, mismatch=0.0)]),
                  _case(model="m@fp16", outputs=[_out(max_abs=3e-3)]))
    proposal = p.propose(doc, manifest_outputs={"m": {"y": {"topk": {"k": 1, "axis": -1}}, "z": {"skip": True}}})
    assert [m.name for m in proposal.models] == ["m"]
    y = _only(proposal)
    assert y.tolerance["atol"] == "0.01" and any("m [cpu] alone: bit-exact" in c for c in y.comments)
    assert any("variants m@fp16" in c for c in proposal.models[0].comments)
    text = p.to_yaml(proposal)
    entry = yaml.safe_load(text)["models"][0]
    assert entry["outputs"]["y"] == {"tolerance": {"atol": 0.01, "rtol": 0, "cosine_min": 0.999995},
                                     "topk": {"k": 1, "axis": -1}}
    assert entry["outputs"]["z"] == {"skip": True}                # the pasted block replaces the whole one
    assert "MNN 3.6.1 against ONNX Runtime 1.20.0" in text


def test_reports_that_cannot_give_a_proposal_are_refused_naming_the_path():
    with pytest.raises(p.ProposalError, match=r"r\.json: a report of suite 'other', not 's'"):
        p.check_report(_report(_case(outputs=[_out()]), suite="other"), "s", "r.json")
    with pytest.raises(p.ProposalError, match=r"r\.json: no case of suite 's' was compared"):
        p.check_report(_report(_case(verdict="ERROR", failure=None)), "s", "r.json")
    with pytest.raises(p.ProposalError, match="finite number >= 1"):
        p.propose(_report(_case(outputs=[_out()])), margin=0.5)
    with pytest.raises(p.ProposalError, match="finite number >= 1"):
        p.propose(_report(_case(outputs=[_out()])), margin=float("inf"))


# -- the command, on the real engines

def conv_chain(path: Path, layers: int = 3, channels: int = 4, size: int = 8) -> Path:
    """Conv + Tanh layers: with fp16 weights MNN is ~1e-3 off ONNX Runtime, far outside an atol of 1e-7."""
    rs = np.random.RandomState(1)
    nodes, weights, previous = [], [], "x"
    for i in range(layers):
        weights.append(numpy_helper.from_array((rs.randn(channels, channels, 3, 3) / 3).astype(np.float32), f"w{i}"))
        out = "y" if i == layers - 1 else f"t{i}"
        nodes += [helper.make_node("Conv", [previous, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Tanh", [f"c{i}"], [out])]
        previous = out
    return onnx_models._save(path, nodes,
                             [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, size, size])],
                             weights)


HEADER = """suite: chain
latency: {warmup: 0, repeat: 0}
backends:
  cpu-fp32: {engine: mnn, device: CPU, precision: high, threads: 1}
  cpu-low: {engine: mnn, device: CPU, precision: low, threads: 2}
tolerance: {atol: 1.0e-7, rtol: 0, cosine_min: 0.99999999}
models:
"""
ENTRY = """  - name: chain
    onnx: models/chain.onnx
    convert: {fp16: true}
    variants:
      fp32: {convert: {fp16: false}}
    inputs:
      x: {files: inputs/*.npy, preprocess: [{load: {}}]}
"""


def _pasted(manifest: str, proposal: str) -> str:
    """What a user does: copy the lines under `- name: chain` (the outputs block, comments and all) into the entry."""
    block = proposal.split("  - name: chain\n", 1)[1].split("\n  - name:", 1)[0]
    return manifest + block


@pytest.mark.slow
def test_the_proposal_pasted_into_the_manifest_validates_and_turns_a_too_tight_failure_into_a_pass(
        tmp_path: Path, monkeypatch, capsys):
    conv_chain(tmp_path / "models/chain.onnx")
    (tmp_path / "inputs").mkdir()
    for i in range(2):
        np.save(tmp_path / f"inputs/x{i}.npy", np.random.RandomState(i).randn(1, 4, 8, 8).astype(np.float32))
    manifest = tmp_path / "suites/chain.yaml"
    manifest.parent.mkdir()
    manifest.write_text(HEADER + ENTRY)
    monkeypatch.setenv("MNN_PARITY_ROOT", str(tmp_path))
    monkeypatch.setenv("MNN_PARITY_CACHE_DIR", str(tmp_path / ".cache"))
    monkeypatch.chdir(tmp_path)

    assert main(["new", "--tolerances", str(manifest)]) == 2      # no report yet
    assert f"{tmp_path / 'reports/chain.json'}: no report" in capsys.readouterr().err
    assert main(["run", "--localise", "never", "-q"]) == 1
    before = json.loads((tmp_path / "reports/chain.json").read_text())
    worst = max(o["max_abs"] for c in before["cases"] for o in c["outputs"])
    assert worst > 1e-4 and any(c["verdict"] == "FAIL" for c in before["cases"])
    capsys.readouterr()

    assert main(["new", "--tolerances", str(manifest)]) == 0
    proposal = capsys.readouterr().out
    atol = yaml.safe_load(proposal)["models"][0]["outputs"]["y"]["tolerance"]["atol"]
    assert atol == p.round_up(2 * worst)
    assert f"MNN {before['environment']['mnn_version']}" in proposal and "cpu-fp32, cpu-low" in proposal
    assert "chain@fp32" in proposal                               # the variant is measured into the same block

    manifest.write_text(_pasted(HEADER + ENTRY, proposal))
    assert main(["validate", str(manifest)]) == 0
    assert main(["run", "--localise", "never", "-q"]) == 0
    after = json.loads((tmp_path / "reports/chain.json").read_text())
    assert {c["verdict"] for c in after["cases"]} == {"PASS"} and len(after["cases"]) == len(before["cases"])


def test_the_command_refuses_another_suites_report_and_needs_exactly_one_of_model_or_tolerances(
        tmp_path: Path, monkeypatch, capsys):
    onnx_models.conv_relu(tmp_path / "models/chain.onnx", channels=4, size=8)
    (tmp_path / "inputs").mkdir()
    np.save(tmp_path / "inputs/x0.npy", np.zeros((1, 4, 8, 8), np.float32))
    manifest = tmp_path / "suites/chain.yaml"
    manifest.parent.mkdir()
    manifest.write_text(HEADER + ENTRY)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere/chain.json").write_text(json.dumps(_report(_case(outputs=[_out()]), suite="ocr")))
    monkeypatch.setenv("MNN_PARITY_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert main(["new", "--tolerances", str(manifest), "--report-dir", "elsewhere"]) == 2
    assert f"{tmp_path / 'elsewhere/chain.json'}: a report of suite 'ocr', not 'chain'" in capsys.readouterr().err
    assert main(["new"]) == 2
    assert main(["new", "models/chain.onnx", "--tolerances", str(manifest)]) == 2
    err = capsys.readouterr().err
    assert err.count("new: give exactly one of MODEL.onnx") == 2 and "--tolerances MANIFEST" in err
