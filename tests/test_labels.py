"""Integer labels re-judged on the logits a manifest names: near-tie flips apart from real ones.

Pure tests of `comparison/labels.py` on numpy arrays, the manifest's checks of `logits:`, and one run on the real
engines where MNN ignores ArgMax's select_last_index and so breaks exact ties the other way from ONNX Runtime.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mnn_parity.cli import main
from mnn_parity.comparison.labels import LabelFlips, judge_flips, label_flips, rejudged, without_logits
from mnn_parity.execution.label_flips import case_judgement, fetch_logits
from mnn_parity.manifest import ManifestError, load_suite
from mnn_parity.manifest.spec import Logits
from mnn_parity.manifest.tolerance import Tolerance
from mnn_parity.records import FailureClass, OutputComparison
from tests import onnx_models

TOL = Tolerance(atol=1e-4, rtol=1e-3, mismatch_max=0.0)


def _scores() -> np.ndarray:
    """(1, 3, 2, 2) logits: class 2 wins everywhere by a clear margin except at [0, 0, 1], a near tie of 0 and 2."""
    s = np.zeros((1, 3, 2, 2))
    s[0, 2] = 5.0
    s[0, 0, 0, 1] = 5.0 - 1e-7
    return s


def test_a_flip_between_near_equal_scores_is_a_near_tie_and_a_flip_across_a_clear_gap_is_real():
    ref = _scores()
    mnn = ref.copy()
    ref_labels = ref.argmax(axis=1)                          # (1, 2, 2), all 2
    mnn_labels = ref_labels.copy()
    mnn_labels[0, 0, 1] = 0                                  # the near tie, broken the other way
    mnn_labels[0, 1, 0] = 1                                  # class 1 scored 0 against 5: a real flip
    flips = label_flips(ref_labels, mnn_labels, ref, mnn, axis=1, tol=TOL)
    assert (flips.differing, flips.near_ties, flips.real_flips, flips.total) == (2, 1, 1, 4)
    assert flips.worst_index == (0, 1, 0) and (flips.worst_ref, flips.worst_mnn) == (2, 1)
    assert flips.worst_gap == pytest.approx(5.0)
    assert flips.largest_tie_gap == pytest.approx(1e-7)


def test_a_gap_within_mnns_own_error_on_the_scores_is_a_near_tie():
    ref = _scores()
    mnn = ref.copy()
    mnn[0, 1, 1, 0] = 5.5                                    # MNN's class 1 is 5.5 off: the flip is MNN's error
    ref_labels = ref.argmax(axis=1)
    mnn_labels = ref_labels.copy()
    mnn_labels[0, 1, 0] = 1
    assert label_flips(ref_labels, mnn_labels, ref, mnn, 1, TOL).near_ties == 1
    mnn[0, 1, 1, 0] = 4.0                                    # an error of 4 cannot bridge a gap of 5
    assert label_flips(ref_labels, mnn_labels, ref, mnn, 1, TOL).real_flips == 1


def test_keepdims_labels_give_the_index_in_their_own_shape():
    ref = _scores()
    ref_labels = ref.argmax(axis=1)[:, None]                 # (1, 1, 2, 2): ArgMax keepdims=1
    mnn_labels = ref_labels.copy()
    mnn_labels[0, 0, 1, 1] = 1
    flips = label_flips(ref_labels, mnn_labels, ref, ref, 1, TOL)
    assert flips.real_flips == 1 and flips.worst_index == (0, 0, 1, 1)


def test_axis_minus_one_and_mnns_labels_with_a_unit_axis_dropped():
    ref = np.moveaxis(_scores(), 1, -1)                      # (1, 2, 2, 3): classes last
    ref_labels = ref.argmax(axis=-1)
    mnn_labels = ref_labels.copy()
    mnn_labels[0, 0, 1] = 0
    flips = label_flips(ref_labels, mnn_labels[0], ref, ref[0], -1, TOL)   # MNN dropped the batch axis
    assert (flips.differing, flips.near_ties) == (1, 1)


def test_labels_the_logits_cannot_have_given_are_refused_not_guessed():
    ref = _scores()
    with pytest.raises(ValueError, match=r"do not give labels \(1, 3, 2\)"):
        label_flips(np.zeros((1, 3, 2), np.int64), np.zeros((1, 3, 2), np.int64), ref, ref, 1, TOL)
    with pytest.raises(ValueError, match="axis 4 is outside the rank-4 logits"):
        label_flips(np.zeros((1, 2, 2), np.int64), np.zeros((1, 2, 2), np.int64), ref, ref, 4, TOL)
    with pytest.raises(ValueError, match=r"MNN's logits \(1, 3, 2\) do not fit"):
        label_flips(np.zeros((1, 2, 2), np.int64), np.zeros((1, 2, 2), np.int64), ref, ref[..., 0], 1, TOL)


def test_a_class_id_past_the_classes_is_a_real_flip():
    ref = _scores()
    ref_labels = ref.argmax(axis=1)
    mnn_labels = ref_labels.copy()
    mnn_labels[0, 0, 0] = 7
    flips = label_flips(ref_labels, mnn_labels, ref, ref, 1, TOL)
    assert flips.real_flips == 1 and flips.worst_mnn == 7


def test_only_real_flips_count_against_mismatch_max():
    flips = LabelFlips(differing=42, near_ties=12, total=5000, worst_index=(0, 3, 4), worst_ref=2, worst_mnn=5,
                       worst_gap=0.25)
    failure, reason = judge_flips(flips, "x", Tolerance(mismatch_max=0.005))
    assert failure is FailureClass.OUT_OF_TOLERANCE
    assert reason == ("0.84% of labels differ: 30 real flips, 12 near ties by logits 'x' (mismatch_max 0.005); "
                      "worst at [0, 3, 4]: MNN 5 vs reference 2 (reference gap 0.25)")
    failure, reason = judge_flips(flips, "x", Tolerance(mismatch_max=0.006))   # 30 / 5000 = 0.006
    assert failure is None and reason.startswith("0.84% of labels differ: 30 real flips (0.6% <= mismatch_max")
    failure, reason = judge_flips(LabelFlips(12, 12, 5000, 3e-4), "x", Tolerance())
    assert (failure, reason) == (None, "12 labels differ, all near ties in logits 'x' (largest gap 3.0e-04)")


def _label_comparison(**kw) -> OutputComparison:
    base = dict(name="labels", ref_shape=(1, 2, 2), mnn_shape=(1, 2, 2), ref_dtype="int64", mnn_dtype="int32",
                tolerance=TOL, max_abs=1.0, mismatch_fraction=0.5, cosine=0.7,
                failure_class=FailureClass.OUT_OF_TOLERANCE, reason="50% of labels differ (mismatch_max 0)")
    return OutputComparison(**{**base, **kw})


def test_rejudged_records_are_new_and_carry_the_flips_as_an_argmax_agreement():
    original = _label_comparison()
    passed = rejudged(original, LabelFlips(2, 2, 4, 1e-7), "logits")
    assert passed.passed and passed.topk_agreement == 0.5 and passed.near_tie_flips == 2 and passed.topk_flips == 0
    assert not original.passed                               # the original record is untouched
    kept = without_logits(original, "logits", "MNN", "fused away")
    assert kept.failure_class is FailureClass.OUT_OF_TOLERANCE
    assert kept.reason == "50% of labels differ (mismatch_max 0) (logits 'logits' not available from MNN: fused away)"


def test_a_case_that_passes_only_by_near_ties_says_so():
    rescued = rejudged(_label_comparison(), LabelFlips(2, 2, 4, 1e-7), "logits")
    scores = _label_comparison(name="scores", ref_dtype="float32", failure_class=None, reason="", cosine=1.0)
    assert case_judgement((rescued, scores), {"labels"}) == (
        None, "labels: 2 labels differ, all near ties in logits 'logits' (largest gap 1.0e-07) "
              "(+1 more output within tolerance)")
    failing = _label_comparison(name="scores", ref_dtype="float32", reason="cosine 0.5 < 0.9999")
    assert case_judgement((rescued, failing), {"labels"})[0] is FailureClass.OUT_OF_TOLERANCE


def test_logits_that_are_a_graph_output_come_from_the_case_without_running_an_engine():
    ref, mnn = _scores(), _scores() + 1e-6
    fetched = fetch_logits(None, None, None, {}, ["scores"], {"scores": ref}, {"scores": mnn})
    assert fetched["scores"][0] is ref and fetched["scores"][1] is mnn


# -- the manifest

def argmax_model(path: Path, select_last_index: int = 1, relu: bool = False) -> Path:
    """x (1,2,4,4) -> 1x1 Conv -> logits (1,3,4,4) [-> Relu] -> ArgMax(axis 1, keepdims 0) -> labels (1,4,4) int64.

    Classes 0 and 1 have the same weights, so they tie exactly wherever they beat class 2: ONNX Runtime picks the
    last (select_last_index=1), MNN 3.6.1 ignores the attribute and picks the first."""
    weights = np.array([[1.0, 0.5], [1.0, 0.5], [-1.0, 2.0]], np.float32).reshape(3, 2, 1, 1)
    nodes = [helper.make_node("Conv", ["x", "w"], ["logits"])]
    if relu:   # MNN fuses Conv and Relu: the Conv's own output no longer exists in the converted model
        nodes.append(helper.make_node("Relu", ["logits"], ["scores"]))
    nodes.append(helper.make_node("ArgMax", ["scores" if relu else "logits"], ["labels"], axis=1, keepdims=0,
                                  select_last_index=select_last_index))
    graph = helper.make_graph(nodes, "argmax",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("labels", TensorProto.INT64, [1, 4, 4])],
                              [numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


MANIFEST = """\
suite: seg
limits: {{timeout_s: 60, memory_mb: 4096}}
latency: {{warmup: 0, repeat: 0}}
models:
  - name: {name}
    onnx: models/{onnx}.onnx
    inputs:
      x: {{files: inputs/*.npy, preprocess: [{{load: {{}}}}]}}
    outputs:
      {output}:
        logits:
          tensor: {tensor}
          axis: {axis}
"""


def _model_entry(name: str, onnx_name: str, tensor: str, axis: int = 1, output: str = "labels") -> str:
    return MANIFEST.format(name=name, onnx=onnx_name, tensor=tensor, axis=axis, output=output)


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    argmax_model(tmp_path / "models/seg.onnx")
    onnx_models.conv_relu(tmp_path / "models/conv.onnx", size=4)
    (tmp_path / "inputs").mkdir()
    np.save(tmp_path / "inputs/x0.npy", np.random.RandomState(0).randn(1, 2, 4, 4).astype(np.float32))
    return tmp_path


def _issues(root: Path, text: str) -> list[str]:
    (root / "suite.yaml").write_text(text)
    with pytest.raises(ManifestError) as caught:
        load_suite(root / "suite.yaml", root)
    return [str(issue) for issue in caught.value.issues]


def test_logits_load_as_a_frozen_spec_with_a_negative_axis_allowed(root):
    (root / "suite.yaml").write_text(_model_entry("seg", "seg", "logits", -3))
    assert load_suite(root / "suite.yaml", root).models[0].outputs["labels"].logits == Logits("logits", -3)


def test_an_unknown_tensor_is_named_with_file_line_and_key_path(root):
    assert _issues(root, _model_entry("seg", "seg", "logit")) == [
        "suite.yaml:12: models[0].outputs.labels.logits.tensor: the ONNX graph has no tensor 'logit' (did you "
        "mean 'logits'?): name a node's output, usually the input of the final ArgMax"]


def test_an_axis_past_the_logits_rank_is_refused(root):
    assert _issues(root, _model_entry("seg", "seg", "logits", 4)) == [
        "suite.yaml:13: models[0].outputs.labels.logits.axis: axis 4 is outside the rank-4 logits tensor: "
        "use 0 to 3, or -4 to -1 from the end"]


def test_logits_on_a_float_output_are_refused(root):
    issues = _issues(root, _model_entry("conv", "conv", "c", output="y"))
    assert issues == ["suite.yaml:11: models[0].outputs.y.logits: output 'y' is float, not integer labels: "
                      "`logits` re-judges the labels of an ArgMax; for scores, use `topk`"]


def test_the_schema_refuses_logits_without_a_tensor(root):
    text = _model_entry("seg", "seg", "logits").replace("          tensor: logits\n", "")
    assert any("logits" in issue and "tensor" in issue for issue in _issues(root, text))


# -- the real engines

@pytest.mark.slow
def test_ties_broken_the_other_way_pass_with_logits_and_fail_without_or_when_mnn_fused_them_away(
        tmp_path: Path, monkeypatch):
    argmax_model(tmp_path / "models/seg.onnx")
    argmax_model(tmp_path / "models/fused.onnx", relu=True)
    (tmp_path / "inputs").mkdir()
    np.save(tmp_path / "inputs/x0.npy", np.random.RandomState(0).randn(1, 2, 4, 4).astype(np.float32))
    entries = _model_entry("named", "seg", "logits").split("models:\n")
    plain = ("  - name: plain\n    onnx: models/seg.onnx\n"
             "    inputs:\n      x: {files: inputs/*.npy, preprocess: [{load: {}}]}\n")
    fused = _model_entry("fused", "fused", "logits").split("models:\n")[1]
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites/seg.yaml").write_text(entries[0] + "models:\n" + entries[1] + plain + fused)
    monkeypatch.setenv("MNN_PARITY_ROOT", str(tmp_path))
    monkeypatch.setenv("MNN_PARITY_CACHE_DIR", str(tmp_path / ".cache"))

    status = main(["run", "--localise", "never", "-q"])
    cases = {c["model"]: c for c in json.loads((tmp_path / "reports/seg.json").read_text())["cases"]}

    assert status == 1
    plain_case = cases["plain"]
    assert plain_case["verdict"] == "FAIL" and "75% of labels differ (mismatch_max 0)" in plain_case["reason"]
    named = cases["named"]
    assert named["verdict"] == "PASS" and named["failure_class"] is None
    assert named["reason"] == "labels: 12 labels differ, all near ties in logits 'logits' (largest gap 0.0e+00)"
    output = named["outputs"][0]
    assert (output["near_tie_flips"], output["topk_flips"], output["topk_agreement"]) == (12, 0, 0.25)
    assert output["mismatch_fraction"] == 0.75                 # the measurement itself is kept
    gone = cases["fused"]
    assert gone["verdict"] == "FAIL" and gone["failure_class"] == "out-of-tolerance"
    assert "(logits 'logits' not available from MNN: the converted model has no tensor" in gone["reason"]
    assert not list((tmp_path / ".cache/labels").iterdir())   # the scratch folders are removed
