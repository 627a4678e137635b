"""Golden store and drift classification, on the outputs of a tiny model computed with numpy: no engine needed."""
from __future__ import annotations

import dataclasses

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mnn_parity.goldens import serialization as golden_ser
from mnn_parity.goldens import storage as golden_mod
from mnn_parity.comparison import compare_output
from mnn_parity.goldens import (GOLDEN_LAYOUT, Golden, GoldenError, GoldenStore, attach_drift, classify_drift,
                                decode_name, encode_name)
from mnn_parity.manifest.spec import (BackendSpec, ConvertFlags, LatencySpec, Limits, ModelSpec, OutputSpec, Suite,
                                      TopK)
from mnn_parity.records import CaseResult, CaseRun, DriftClass, FailureClass, Verdict
from mnn_parity.manifest.tolerance import Tolerance

SUITE = "ocr suite/v1"          # unsafe for a path on purpose
TOL = Tolerance(atol=1e-4, rtol=1e-3, cosine_min=0.9999)
PROVENANCE = {
    "mnn_version": "3.6.1", "onnxruntime_version": "1.23.2",
    "convert_flags": {"fp16": False, "weight_quant_bits": 0, "optimize_level": 1},
    "onnx_sha256": "a" * 64, "mnn_model_sha256": "b" * 64, "input_sha256": {"x": "c" * 64},
    "preprocess": {"x": [{"dtype": "float32"}]},
    "runtime": {"device": "CPU", "precision": "high", "threads": 1, "memory": "normal", "power": "normal"},
    "reference_runtime": {"engine": "onnxruntime", "threads": 1}, "created": "2026-11-22T23:30:00Z",
}


@pytest.fixture(scope="module")
def model_outputs() -> dict[str, np.ndarray]:
    """Outputs of a tiny model, softmax(x @ W) and relu(x), with names that are unsafe as file names.

    Computed with numpy in float32 (these tests must not need an engine): the store and drift only care that they
    are real-looking float32 outputs of a model."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 5)).astype(np.float32)
    x = rng.standard_normal((3, 8)).astype(np.float32)
    logits = x @ w
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return {"probs/0": (e / e.sum(axis=-1, keepdims=True)).astype(np.float32),
            "relu:0": np.maximum(x, np.float32(0))}


def make_run(ref: dict, mnn: dict, verdict: Verdict = Verdict.PASS, model: str = "tiny/det", case: str = "doc 1.png",
             backend: str = "cpu-fp32", provenance: dict | None = None, tolerance: Tolerance = TOL,
             latency: float = 2.5, suite: str = SUITE) -> CaseRun:
    outputs = [compare_output(n, ref[n], mnn[n], tolerance) for n in mnn if n in ref]
    failure = next((o.failure_class for o in outputs if o.failure_class), None)
    if verdict in (Verdict.ERROR, Verdict.CRASH):
        outputs, failure = [], None
    result = CaseResult(suite=suite, model=model, case=case, backend=backend, verdict=verdict,
                        failure_class=failure if verdict in (Verdict.FAIL, Verdict.XFAIL) else None,
                        reason="signal 11" if verdict == Verdict.CRASH else "", outputs=outputs,
                        latency_ms={"reference": 1.0, "mnn": latency})
    return CaseRun(result=result, ref_outputs=dict(ref), mnn_outputs=dict(mnn),
                   provenance=dict(PROVENANCE if provenance is None else provenance))


def perturbed(outputs: dict, delta: float) -> dict:
    return {n: (v + np.asarray(delta, dtype=v.dtype)).astype(v.dtype) for n, v in outputs.items()}


def blessed(store: GoldenStore, run: CaseRun) -> Golden:
    store.bless(SUITE, [run], replace_all=False)
    r = run.result
    g = store.load(SUITE, r.model, r.case, r.backend)
    assert g is not None
    return g


def assert_same_arrays(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for n in a:
        assert a[n].dtype == b[n].dtype and a[n].shape == b[n].shape
        assert a[n].tobytes() == b[n].tobytes()


# --- names ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ppocr-det", "a/b", "..", ".", ".hidden", "ü x%41", "con:1\\2", "100%", "a.b_c-d"])
def test_encoded_names_are_flat_safe_and_reversible(name):
    enc = encode_name(name)
    assert decode_name(enc) == name
    assert "/" not in enc and "\\" not in enc and not enc.startswith(".")
    assert set(enc) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.%")


def test_empty_and_overlong_names_are_refused():
    with pytest.raises(GoldenError):
        encode_name("")
    with pytest.raises(GoldenError, match="too long"):
        encode_name("/" * 100)


# --- store ---------------------------------------------------------------------------------------------------

def test_round_trip_keeps_arrays_names_order_and_provenance(tmp_path, model_outputs):
    store = GoldenStore(tmp_path / "goldens")
    mnn = dict(perturbed(model_outputs, 1e-6))
    mnn["ids"] = np.array([[3, 1], [0, 2]], dtype=np.int64)
    mnn["half"] = np.linspace(0, 1, 7, dtype=np.float16)
    mnn["mask"] = np.array([True, False])
    mnn["scalar"] = np.float32(4.5) * np.ones((), np.float32)
    mnn["fortran"] = np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3))
    ref = dict(model_outputs, ids=mnn["ids"], half=mnn["half"], mask=mnn["mask"], scalar=mnn["scalar"],
               fortran=mnn["fortran"])
    run = make_run(ref, mnn, verdict=Verdict.FAIL)
    run = run.with_result(dataclasses.replace(run.result, failure_class=FailureClass.TOPK_FLIP))
    written = store.bless(SUITE, [run], replace_all=False)
    assert written == [("tiny/det", "doc 1.png", "cpu-fp32")]

    g = store.load(SUITE, "tiny/det", "doc 1.png", "cpu-fp32")
    assert_same_arrays(g.mnn_outputs, mnn)
    assert_same_arrays(g.ref_outputs, ref)
    p = g.provenance
    for k, v in PROVENANCE.items():
        assert p[k] == v
    assert p["layout"] == GOLDEN_LAYOUT
    assert p["verdict"] == "FAIL"
    assert p["failure_class"] == "topk-flip"
    assert p["latency_ms"] == {"reference": 1.0, "mnn": 2.5}
    assert p["tolerance"]["probs/0"] == TOL.as_dict()
    assert p["outputs"] == list(mnn)
    assert store.keys(SUITE) == {("tiny/det", "doc 1.png", "cpu-fp32")}
    assert store.load(SUITE, "tiny/det", "other", "cpu-fp32") is None
    assert store.load("no such suite", "tiny/det", "doc 1.png", "cpu-fp32") is None
    assert store.keys("no such suite") == set()

    suite_dir = tmp_path / "goldens" / encode_name(SUITE)
    assert (suite_dir / "LAYOUT").read_text().strip() == str(GOLDEN_LAYOUT)
    leaf = suite_dir / encode_name("tiny/det") / "cpu-fp32"
    assert sorted(p.name for p in leaf.iterdir()) == ["doc%201.png.json", "doc%201.png.mnn.npz", "doc%201.png.ref.npz"]


def test_npz_is_plain_numpy_and_loads_without_pickle(tmp_path, model_outputs):
    store = GoldenStore(tmp_path)
    blessed(store, make_run(model_outputs, model_outputs))
    path = tmp_path / encode_name(SUITE) / encode_name("tiny/det") / "cpu-fp32" / "doc%201.png.mnn.npz"
    with np.load(path, allow_pickle=False) as npz:
        assert list(npz["__names__"]) == ["probs/0", "relu:0"]
        np.testing.assert_array_equal(npz["o1"], model_outputs["relu:0"])

    # A golden tampered to hold a pickled object must be refused, not unpickled.
    np.savez(path, __names__=np.array(["probs/0"]), o0=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(GoldenError, match=str(path.name)):
        store.load(SUITE, "tiny/det", "doc 1.png", "cpu-fp32")


def test_object_arrays_are_refused_and_leave_goldens_alone(tmp_path, model_outputs):
    store = GoldenStore(tmp_path)
    blessed(store, make_run(model_outputs, model_outputs))
    bad = make_run(model_outputs, dict(model_outputs), case="other")
    bad.mnn_outputs["labels"] = np.array(["a", None], dtype=object)
    with pytest.raises(GoldenError, match="pickle"):
        store.bless(SUITE, [bad], replace_all=False)
    assert store.keys(SUITE) == {("tiny/det", "doc 1.png", "cpu-fp32")}
    assert sorted(p.name for p in tmp_path.iterdir()) == [encode_name(SUITE)]


def test_reblessing_identical_outputs_writes_identical_bytes(tmp_path, model_outputs):
    store = GoldenStore(tmp_path)
    run = make_run(model_outputs, perturbed(model_outputs, 1e-6))
    store.bless(SUITE, [run], replace_all=False)
    files = sorted((tmp_path / encode_name(SUITE)).rglob("*.npz"))
    before = {p: p.read_bytes() for p in files}
    store.bless(SUITE, [run], replace_all=True)
    assert {p: p.read_bytes() for p in files} == before


def test_unreadable_golden_names_the_file(tmp_path, model_outputs):
    store = GoldenStore(tmp_path)
    blessed(store, make_run(model_outputs, model_outputs))
    leaf = tmp_path / encode_name(SUITE) / encode_name("tiny/det") / "cpu-fp32"
    npz = leaf / "doc%201.png.ref.npz"
    npz.write_bytes(npz.read_bytes()[:50])
    with pytest.raises(GoldenError, match=r"doc%201\.png\.ref\.npz"):
        store.load(SUITE, "tiny/det", "doc 1.png", "cpu-fp32")
    (leaf / "doc%201.png.json").write_text("{not json")
    with pytest.raises(GoldenError, match=r"doc%201\.png\.json"):
        store.load(SUITE, "tiny/det", "doc 1.png", "cpu-fp32")


def test_bless_refuses_crash_and_error_runs_and_writes_nothing(tmp_path, model_outputs):
    store = GoldenStore(tmp_path / "goldens")
    runs = [make_run(model_outputs, model_outputs, case="ok"),
            make_run(model_outputs, {}, verdict=Verdict.CRASH, case="boom"),
            make_run(model_outputs, {}, verdict=Verdict.ERROR, case="bad", backend="cpu-low")]
    with pytest.raises(GoldenError) as info:
        store.bless(SUITE, runs, replace_all=True)
    message = str(info.value)
    assert "tiny/det/boom/cpu-fp32: CRASH (signal 11)" in message
    assert "tiny/det/bad/cpu-low: ERROR" in message
    assert "/ok/" not in message
    assert store.keys(SUITE) == set()
    assert not (tmp_path / "goldens").exists() or not any((tmp_path / "goldens").iterdir())


def test_bless_refuses_runs_of_another_suite_and_duplicates(tmp_path, model_outputs):
    store = GoldenStore(tmp_path)
    with pytest.raises(GoldenError, match="another suite"):
        store.bless(SUITE, [make_run(model_outputs, model_outputs, suite="vad")], replace_all=True)
    with pytest.raises(GoldenError, match="twice"):
        store.bless(SUITE, [make_run(model_outputs, model_outputs)] * 2, replace_all=True)


def test_filtered_bless_keeps_other_keys_and_replace_all_drops_them(tmp_path, model_outputs):
    store = GoldenStore(tmp_path)
    v1, v2 = perturbed(model_outputs, 1e-6), perturbed(model_outputs, 2e-6)
    store.bless(SUITE, [make_run(model_outputs, v1, case="c1"), make_run(model_outputs, v1, case="c2"),
                        make_run(model_outputs, v1, case="c1", backend="cpu-low")], replace_all=True)
    store.bless(SUITE, [make_run(model_outputs, v2, case="c1")], replace_all=False)
    assert store.keys(SUITE) == {("tiny/det", "c1", "cpu-fp32"), ("tiny/det", "c2", "cpu-fp32"),
                                 ("tiny/det", "c1", "cpu-low")}
    assert_same_arrays(store.load(SUITE, "tiny/det", "c1", "cpu-fp32").mnn_outputs, v2)
    assert_same_arrays(store.load(SUITE, "tiny/det", "c2", "cpu-fp32").mnn_outputs, v1)
    assert_same_arrays(store.load(SUITE, "tiny/det", "c1", "cpu-low").mnn_outputs, v1)

    store.bless(SUITE, [make_run(model_outputs, v2, case="c2")], replace_all=True)
    assert store.keys(SUITE) == {("tiny/det", "c2", "cpu-fp32")}
    assert store.load(SUITE, "tiny/det", "c1", "cpu-fp32") is None


@pytest.mark.parametrize("replace_all", [False, True])
def test_bless_dying_half_way_leaves_previous_goldens(tmp_path, model_outputs, monkeypatch, replace_all):
    root = tmp_path / "goldens"
    store = GoldenStore(root)
    v1 = perturbed(model_outputs, 1e-6)
    store.bless(SUITE, [make_run(model_outputs, v1, case=c) for c in ("c1", "c2", "c3")], replace_all=True)
    real_write = golden_ser.write_npz
    calls = []

    def failing_write(path, arrays):
        calls.append(path)
        if len(calls) == 3:          # the second case's first file
            raise OSError(28, "No space left on device")
        real_write(path, arrays)

    monkeypatch.setattr(golden_ser, "write_npz", failing_write)
    v2 = perturbed(model_outputs, 5e-6)
    with pytest.raises(OSError, match="No space"):
        store.bless(SUITE, [make_run(model_outputs, v2, case=c) for c in ("c1", "c2", "new")], replace_all=replace_all)
    assert len(calls) == 3
    monkeypatch.undo()

    assert sorted(p.name for p in root.iterdir()) == [encode_name(SUITE)]   # no temp tree leaked
    assert store.keys(SUITE) == {("tiny/det", c, "cpu-fp32") for c in ("c1", "c2", "c3")}
    for c in ("c1", "c2", "c3"):
        assert_same_arrays(store.load(SUITE, "tiny/det", c, "cpu-fp32").mnn_outputs, v1)
    assert not list(root.rglob("*.part"))


def test_bless_killed_between_the_two_renames_is_recovered(tmp_path, model_outputs, monkeypatch):
    """Without renameat2's exchange the swap is two renames: dying between them must not lose the goldens."""
    root = tmp_path
    store = GoldenStore(root)
    v1, v2 = perturbed(model_outputs, 1e-6), perturbed(model_outputs, 5e-6)
    store.bless(SUITE, [make_run(model_outputs, v1, case="c1"), make_run(model_outputs, v1, case="c2")],
                replace_all=True)
    monkeypatch.setattr(golden_mod, "_exchange", lambda a, b: False)
    real_rename = os.rename
    renames = []

    def dying_rename(src, dst):
        renames.append((src, dst))
        if len(renames) == 2:        # old tree already set aside, new tree not yet in place
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(golden_mod.os, "rename", dying_rename)
    with pytest.raises(KeyboardInterrupt):
        store.bless(SUITE, [make_run(model_outputs, v2, case="c1")], replace_all=False)
    monkeypatch.setattr(golden_mod.os, "rename", real_rename)

    assert not (root / encode_name(SUITE)).exists()
    assert store.keys(SUITE) == {("tiny/det", "c1", "cpu-fp32"), ("tiny/det", "c2", "cpu-fp32")}
    assert_same_arrays(store.load(SUITE, "tiny/det", "c1", "cpu-fp32").mnn_outputs, v1)

    # The next bless restores the set-aside tree first, so a filtered bless still keeps c2.
    store.bless(SUITE, [make_run(model_outputs, v2, case="c1")], replace_all=False)
    assert sorted(p.name for p in root.iterdir()) == [encode_name(SUITE)]
    assert_same_arrays(store.load(SUITE, "tiny/det", "c1", "cpu-fp32").mnn_outputs, v2)
    assert_same_arrays(store.load(SUITE, "tiny/det", "c2", "cpu-fp32").mnn_outputs, v1)


def test_leftover_temp_tree_of_a_killed_bless_is_ignored_then_removed(tmp_path, model_outputs):
    store = GoldenStore(tmp_path)
    store.bless(SUITE, [make_run(model_outputs, model_outputs, case="c1")], replace_all=True)
    other = "ocr suite/v1.b"      # a suite whose name extends this one's must be left alone
    store.bless(other, [make_run(model_outputs, model_outputs, case="o", suite=other)], replace_all=True)
    leftover = store.staging / f"{encode_name(SUITE)}~tmp-killed"
    (leftover / encode_name("tiny/det") / "cpu-fp32").mkdir(parents=True)
    (leftover / encode_name("tiny/det") / "cpu-fp32" / "junk.json").write_text("{}")
    assert store.keys(SUITE) == {("tiny/det", "c1", "cpu-fp32")}
    store.bless(SUITE, [make_run(model_outputs, model_outputs, case="c2")], replace_all=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([encode_name(SUITE), encode_name(other)])
    assert store.keys(other) == {("tiny/det", "o", "cpu-fp32")}
    assert not leftover.exists()


def test_a_killed_bless_leaves_nothing_inside_the_tracked_folder(tmp_path, model_outputs, monkeypatch):
    """The goldens folder is tracked by DVC: staging lives beside it, so `dvc status` never sees a half bless."""
    root = tmp_path / "goldens"
    store = GoldenStore(root)
    store.bless(SUITE, [make_run(model_outputs, model_outputs, case="c1")], replace_all=True)

    def killed(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(golden_mod, "_link_tree", killed)
    with pytest.raises(KeyboardInterrupt):
        store.bless(SUITE, [make_run(model_outputs, model_outputs, case="c2")], replace_all=False)
    assert sorted(p.name for p in root.iterdir()) == [encode_name(SUITE)]
    assert store.staging.parent == root.parent and not store.staging.is_relative_to(root)


def test_a_second_bless_at_the_same_time_is_refused_and_writes_nothing(tmp_path, model_outputs):
    import fcntl

    store = GoldenStore(tmp_path / "goldens")
    store.staging.mkdir(parents=True)
    with open(store.staging / "bless.lock", "a") as held:      # another process in the middle of a bless
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(GoldenError, match="another bless"):
            store.bless(SUITE, [make_run(model_outputs, model_outputs, case="c1")], replace_all=True)
    assert not (tmp_path / "goldens").exists()
    store.bless(SUITE, [make_run(model_outputs, model_outputs, case="c1")], replace_all=True)
    assert store.keys(SUITE) == {("tiny/det", "c1", "cpu-fp32")}


def test_swap_without_exchange_still_replaces_the_tree(tmp_path, model_outputs, monkeypatch):
    monkeypatch.setattr(golden_mod, "_exchange", lambda a, b: False)
    store = GoldenStore(tmp_path)
    store.bless(SUITE, [make_run(model_outputs, model_outputs, case="c1")], replace_all=True)
    store.bless(SUITE, [make_run(model_outputs, model_outputs, case="c2")], replace_all=True)
    assert store.keys(SUITE) == {("tiny/det", "c2", "cpu-fp32")}
    assert sorted(p.name for p in tmp_path.iterdir()) == [encode_name(SUITE)]


def test_layout_mismatch_names_the_file(tmp_path, model_outputs):
    store = GoldenStore(tmp_path)
    blessed(store, make_run(model_outputs, model_outputs))
    layout = tmp_path / encode_name(SUITE) / "LAYOUT"
    layout.write_text("999\n")
    for call in (lambda: store.load(SUITE, "tiny/det", "doc 1.png", "cpu-fp32"), lambda: store.keys(SUITE),
                 lambda: store.bless(SUITE, [make_run(model_outputs, model_outputs, case="x")], replace_all=False)):
        with pytest.raises(GoldenError) as info:
            call()
        assert str(layout) in str(info.value) and "999" in str(info.value)
    # Re-blessing everything starts a fresh tree in the current layout.
    store.bless(SUITE, [make_run(model_outputs, model_outputs, case="x")], replace_all=True)
    assert store.keys(SUITE) == {("tiny/det", "x", "cpu-fp32")}

    meta = tmp_path / encode_name(SUITE) / encode_name("tiny/det") / "cpu-fp32" / "x.json"
    data = json.loads(meta.read_text())
    data["layout"] = 0
    meta.write_text(json.dumps(data))
    with pytest.raises(GoldenError, match=str(meta)):
        store.load(SUITE, "tiny/det", "x", "cpu-fp32")


def test_stale_keys_are_goldens_without_a_current_case(tmp_path, model_outputs):
    store = GoldenStore(tmp_path)
    store.bless(SUITE, [make_run(model_outputs, model_outputs, case=c) for c in ("a", "b", "c")], replace_all=True)
    current = {("tiny/det", "a", "cpu-fp32"), ("tiny/det", "new", "cpu-fp32")}
    assert store.stale_keys(SUITE, current) == [("tiny/det", "b", "cpu-fp32"), ("tiny/det", "c", "cpu-fp32")]
    assert store.stale_keys("empty", current) == []


# --- drift ---------------------------------------------------------------------------------------------------

def test_no_golden_is_new(model_outputs):
    drift = classify_drift(make_run(model_outputs, model_outputs), None, TOL)
    assert drift.drift_class == DriftClass.NEW and drift.outputs == ()
    assert drift.note == "no golden" and drift.golden_verdict is None


def test_bit_exact_outputs_are_identical(tmp_path, model_outputs):
    g = blessed(GoldenStore(tmp_path), make_run(model_outputs, perturbed(model_outputs, 1e-6), latency=3.0))
    run = make_run(model_outputs, perturbed(model_outputs, 1e-6), latency=9.0)
    drift = classify_drift(run, g, TOL)
    assert drift.drift_class == DriftClass.IDENTICAL
    assert [o.name for o in drift.outputs] == ["probs/0", "relu:0"]
    assert all(o.max_abs == 0.0 and o.passed for o in drift.outputs)
    assert drift.golden_verdict == "PASS" and drift.golden_mnn_version == "3.6.1"
    assert drift.latency_ms_golden == {"reference": 1.0, "mnn": 3.0}
    assert drift.note == ""


def test_one_ulp_is_not_identical_but_drifted(tmp_path, model_outputs):
    g = blessed(GoldenStore(tmp_path), make_run(model_outputs, model_outputs))
    nudged = dict(model_outputs)
    nudged["relu:0"] = np.nextafter(model_outputs["relu:0"], np.float32(np.inf))
    drift = classify_drift(make_run(model_outputs, nudged), g, TOL)
    assert drift.drift_class == DriftClass.DRIFTED
    assert all(o.passed for o in drift.outputs) and drift.outputs[1].max_abs > 0


def test_dtype_change_with_equal_values_is_not_identical(tmp_path, model_outputs):
    g = blessed(GoldenStore(tmp_path), make_run(model_outputs, model_outputs))
    widened = {n: v.astype(np.float64) for n, v in model_outputs.items()}
    drift = classify_drift(make_run(model_outputs, widened), g, TOL)
    assert drift.drift_class == DriftClass.DRIFTED
    assert "dtype float32 → float64" in drift.note


def test_change_beyond_tolerance_while_failing_both_times_is_changed(tmp_path, model_outputs):
    g = blessed(GoldenStore(tmp_path), make_run(model_outputs, perturbed(model_outputs, 0.05), verdict=Verdict.FAIL))
    drift = classify_drift(make_run(model_outputs, perturbed(model_outputs, 0.2), verdict=Verdict.FAIL), g, TOL)
    assert drift.drift_class == DriftClass.CHANGED
    assert all(o.failure_class == FailureClass.OUT_OF_TOLERANCE for o in drift.outputs)
    assert drift.outputs[0].max_abs == pytest.approx(0.15, rel=1e-3)


def test_small_change_while_failing_both_times_is_drifted(tmp_path, model_outputs):
    g = blessed(GoldenStore(tmp_path), make_run(model_outputs, perturbed(model_outputs, 0.05), verdict=Verdict.XFAIL))
    run = make_run(model_outputs, perturbed(model_outputs, 0.05 + 1e-6), verdict=Verdict.XFAIL)
    assert classify_drift(run, g, TOL).drift_class == DriftClass.DRIFTED


def test_passing_then_failing_is_regressed(tmp_path, model_outputs):
    g = blessed(GoldenStore(tmp_path), make_run(model_outputs, model_outputs, verdict=Verdict.PASS))
    drift = classify_drift(make_run(model_outputs, perturbed(model_outputs, 0.2), verdict=Verdict.FAIL), g, TOL)
    assert drift.drift_class == DriftClass.REGRESSED
    assert len(drift.outputs) == 2 and not drift.outputs[0].passed
    # An expected pass (XPASS) that now fails as expected is also a regression of the outputs.
    g = blessed(GoldenStore(tmp_path / "x"), make_run(model_outputs, model_outputs, verdict=Verdict.XPASS))
    drift = classify_drift(make_run(model_outputs, perturbed(model_outputs, 0.2), verdict=Verdict.XFAIL), g, TOL)
    assert drift.drift_class == DriftClass.REGRESSED


def test_crash_after_a_passing_golden_is_regressed(tmp_path, model_outputs):
    g = blessed(GoldenStore(tmp_path), make_run(model_outputs, model_outputs))
    drift = classify_drift(make_run(model_outputs, {}, verdict=Verdict.CRASH), g, TOL)
    assert drift.drift_class == DriftClass.REGRESSED
    assert "no MNN outputs now (CRASH)" in drift.note


def test_failing_then_passing_is_fixed(tmp_path, model_outputs):
    g = blessed(GoldenStore(tmp_path), make_run(model_outputs, perturbed(model_outputs, 0.2), verdict=Verdict.FAIL))
    drift = classify_drift(make_run(model_outputs, model_outputs, verdict=Verdict.PASS), g, TOL)
    assert drift.drift_class == DriftClass.FIXED
    g = blessed(GoldenStore(tmp_path / "x"), make_run(model_outputs, perturbed(model_outputs, 0.2),
                                                       verdict=Verdict.XFAIL))
    drift = classify_drift(make_run(model_outputs, model_outputs, verdict=Verdict.XPASS), g, TOL)
    assert drift.drift_class == DriftClass.FIXED


def test_renamed_or_reshaped_outputs_are_changed(tmp_path, model_outputs):
    g = blessed(GoldenStore(tmp_path), make_run(model_outputs, model_outputs))
    renamed = {"probs/0": model_outputs["probs/0"], "relu_out": model_outputs["relu:0"]}
    ref = dict(model_outputs, relu_out=model_outputs["relu:0"])
    drift = classify_drift(make_run(ref, renamed), g, TOL)
    assert drift.drift_class == DriftClass.CHANGED
    assert "outputs missing since the golden: relu:0" in drift.note
    assert "outputs new since the golden: relu_out" in drift.note
    assert [o.name for o in drift.outputs] == ["probs/0"]

    reshaped = dict(model_outputs, **{"relu:0": model_outputs["relu:0"].reshape(8, 3)})
    ref = dict(model_outputs, **{"relu:0": reshaped["relu:0"]})
    drift = classify_drift(make_run(ref, reshaped), g, TOL)
    assert drift.drift_class == DriftClass.CHANGED
    assert drift.outputs[1].failure_class == FailureClass.SHAPE_MISMATCH
    assert "relu:0: shape (3, 8) → (8, 3)" in drift.note


def test_reordered_but_equal_outputs_are_identical_and_say_so(tmp_path, model_outputs):
    g = blessed(GoldenStore(tmp_path), make_run(model_outputs, model_outputs))
    reordered = {"relu:0": model_outputs["relu:0"], "probs/0": model_outputs["probs/0"]}
    drift = classify_drift(make_run(model_outputs, reordered), g, TOL)
    assert drift.drift_class == DriftClass.IDENTICAL
    assert "output order changed: [probs/0, relu:0] → [relu:0, probs/0]" in drift.note


def test_model_hash_change_is_noted_and_still_compared(tmp_path, model_outputs):
    g = blessed(GoldenStore(tmp_path), make_run(model_outputs, model_outputs))
    prov = dict(PROVENANCE, onnx_sha256="f" * 64, mnn_model_sha256="e" * 64, mnn_version="3.5.0",
                input_sha256={"x": "d" * 64})
    drift = classify_drift(make_run(model_outputs, perturbed(model_outputs, 1e-6), provenance=prov), g, TOL)
    assert drift.drift_class == DriftClass.DRIFTED
    assert "golden onnx hash differs: model changed" in drift.note
    assert "reconverted" not in drift.note          # the model change explains the new MNN file
    assert "MNN 3.6.1 → 3.5.0" in drift.note and "inputs changed: x" in drift.note
    assert drift.golden_mnn_version == "3.6.1"

    prov = dict(PROVENANCE, mnn_model_sha256="e" * 64,
                convert_flags=dict(PROVENANCE["convert_flags"], fp16=True))
    drift = classify_drift(make_run(model_outputs, model_outputs, provenance=prov), g, TOL)
    assert drift.drift_class == DriftClass.IDENTICAL
    assert "golden MNN model hash differs: reconverted" in drift.note
    assert "converter flags changed: fp16 False → True" in drift.note


def test_identical_outputs_with_a_new_verdict_say_why(tmp_path, model_outputs):
    g = blessed(GoldenStore(tmp_path), make_run(model_outputs, model_outputs))
    drift = classify_drift(make_run(model_outputs, model_outputs, verdict=Verdict.FAIL), g, TOL)
    assert drift.drift_class == DriftClass.IDENTICAL
    assert "verdict PASS → FAIL with bit-identical MNN outputs" in drift.note


def test_drift_uses_each_outputs_own_tolerance(tmp_path, model_outputs):
    loose = Tolerance(atol=0.1, rtol=0.0, cosine_min=0.9)
    g = blessed(GoldenStore(tmp_path), make_run(model_outputs, model_outputs, tolerance=loose))
    run = make_run(model_outputs, perturbed(model_outputs, 0.01), tolerance=loose)
    assert run.result.verdict == Verdict.PASS
    assert classify_drift(run, g, TOL).drift_class == DriftClass.DRIFTED
    # Without per-output tolerances in the result, the case tolerance decides.
    run = run.with_result(dataclasses.replace(run.result, outputs=()))
    assert classify_drift(run, g, TOL).drift_class == DriftClass.CHANGED


def test_golden_of_another_layout_is_an_error(model_outputs):
    g = Golden(mnn_outputs=dict(model_outputs), ref_outputs=dict(model_outputs),
               provenance={"layout": 0, "verdict": "PASS"}, path=Path("goldens/s/m/b/c.json"))
    with pytest.raises(GoldenError, match=r"goldens/s/m/b/c\.json.*layout 0"):
        classify_drift(make_run(model_outputs, model_outputs), g, TOL)


# --- drift: the golden is the reference -------------------------------------------------------------------------

def golden_of(mnn: dict, verdict: str = "PASS", path: Path | None = Path("goldens/s/m/b/c.json"), **provenance
              ) -> Golden:
    prov = dict(PROVENANCE, layout=GOLDEN_LAYOUT, verdict=verdict, latency_ms={"mnn": 2.0}, **provenance)
    return Golden(mnn_outputs=dict(mnn), ref_outputs=dict(mnn), provenance=prov, path=path)


LOOSE_TOPK = Tolerance(atol=0.1, rtol=0.0, cosine_min=0.9)   # elements may move by 0.1: argmax can flip inside it


def test_argmax_flip_since_the_golden_inside_tolerance_is_changed():
    # Every element within atol 0.1 of the golden, but the top class moved from 0 to 1 and the golden's scores
    # were 0.15 apart, more than the 0.08 they moved by: a real flip, not a near tie.
    old = {"cls": np.array([[0.55, 0.4, 0.05]], np.float32)}
    now = {"cls": np.array([[0.47, 0.48, 0.05]], np.float32)}
    run = make_run(now, now, tolerance=LOOSE_TOPK)
    assert classify_drift(run, golden_of(old), TOL).drift_class == DriftClass.DRIFTED     # no top-k declared
    drift = classify_drift(run, golden_of(old), TOL, topk={"cls": TopK()})
    assert drift.drift_class == DriftClass.CHANGED
    assert drift.outputs[0].failure_class == FailureClass.TOPK_FLIP and drift.outputs[0].topk_flips == 1
    assert drift.outputs[0].mismatch_fraction == 0.0


def test_drift_measures_the_current_output_against_the_golden_not_the_reverse():
    # rtol is relative to the golden's value: 2.0 → 1.5 is within rtol 0.25 (0.5 <= 0.5), 1.5 → 2.0 is not.
    tol = Tolerance(atol=0.0, rtol=0.25, cosine_min=0.0)
    old = {"y": np.array([2.0, 1.0], np.float32)}
    now = {"y": np.array([1.5, 1.0], np.float64)}
    drift = classify_drift(make_run(now, now, tolerance=tol), golden_of(old), tol)
    assert drift.drift_class == DriftClass.DRIFTED
    o = drift.outputs[0]
    assert (o.ref_dtype, o.mnn_dtype) == ("float32", "float64")
    assert o.max_rel == 0.25
    back = classify_drift(make_run(old, old, tolerance=tol), golden_of(now), tol)
    assert back.drift_class == DriftClass.CHANGED


def test_same_bytes_of_another_dtype_are_not_identical():
    old = {"y": np.zeros(4, np.float32)}
    now = {"y": np.zeros(4, np.int32)}       # the same 16 zero bytes
    drift = classify_drift(make_run(now, now), golden_of(old), TOL)
    assert drift.drift_class == DriftClass.DRIFTED
    assert drift.note == "y: dtype float32 → int32"


def test_string_outputs_are_compared_for_equality():
    labels = {"labels": np.array(["cat", "dog"])}
    same = classify_drift(make_run({}, dict(labels)), golden_of(labels), TOL)
    assert same.drift_class == DriftClass.IDENTICAL
    o = same.outputs[0]
    assert (o.name, o.ref_shape, o.mnn_shape, o.ref_dtype, o.mnn_dtype) == ("labels", (2,), (2,), "<U3", "<U3")
    assert o.passed and o.reason == "" and o.tolerance == TOL and o.cosine is None

    now = {"labels": np.array(["cat", "dog", "emu0"])}
    drift = classify_drift(make_run({}, now), golden_of(labels), TOL)
    assert drift.drift_class == DriftClass.CHANGED
    o = drift.outputs[0]
    assert (o.name, o.ref_shape, o.mnn_shape, o.ref_dtype, o.mnn_dtype) == ("labels", (2,), (3,), "<U3", "<U4")
    assert o.failure_class == FailureClass.OUT_OF_TOLERANCE and o.tolerance == TOL
    assert o.reason == ("differs, and not comparable numerically "
                        "(output 'labels': cannot compare reference dtype <U3)")


def test_string_outputs_of_equal_shape_that_differ_are_changed():
    drift = classify_drift(make_run({}, {"labels": np.array(["cat", "cow"])}),
                           golden_of({"labels": np.array(["cat", "dog"])}), TOL)
    assert drift.drift_class == DriftClass.CHANGED
    assert drift.outputs[0].failure_class == FailureClass.OUT_OF_TOLERANCE


def test_golden_with_an_unknown_verdict_has_none():
    drift = classify_drift(make_run(model_outputs_fixed(), model_outputs_fixed()),
                           golden_of(model_outputs_fixed(), verdict="SKIPPED"), TOL)
    assert drift.golden_verdict is None
    assert drift.drift_class == DriftClass.IDENTICAL


def model_outputs_fixed() -> dict:
    return {"y": np.array([1.0, 2.0], np.float32)}


def test_golden_of_another_layout_without_a_path_says_golden():
    g = Golden(mnn_outputs={}, ref_outputs={}, provenance={"layout": 0, "verdict": "PASS"})
    with pytest.raises(GoldenError, match=r"^golden: golden layout 0, this runner reads layout 1; re-bless"):
        classify_drift(make_run(model_outputs_fixed(), model_outputs_fixed()), g, TOL)


# --- drift notes ------------------------------------------------------------------------------------------------

def test_only_a_model_change_is_noted_exactly():
    y = model_outputs_fixed()
    prov = dict(PROVENANCE, onnx_sha256="f" * 64, mnn_model_sha256="e" * 64)
    assert classify_drift(make_run(y, y, provenance=prov), golden_of(y), TOL).note == \
        "golden onnx hash differs: model changed"


def test_every_provenance_change_is_noted_with_what_changed():
    y = model_outputs_fixed()
    old = dict(mnn_model_sha256="b", convert_flags={"fp16": False, "optimize_level": 1, "extra": []},
               mnn_version="3.6.1", onnxruntime_version="1.23.2", input_sha256={"x": "c"},
               preprocess={"x": [{"dtype": "float32"}]}, runtime={"threads": 1, "power": "normal", "device": "CPU"},
               reference_runtime={"engine": "onnxruntime", "threads": 1})
    new = dict(mnn_model_sha256="e", convert_flags={"fp16": True, "optimize_level": 2, "extra": []},
               mnn_version="3.7.0", onnxruntime_version="1.24.0", input_sha256={"x": "d", "y": "f"},
               preprocess={"x": [{"dtype": "float16"}]}, runtime={"threads": 4, "device": "CPU"},
               reference_runtime={"engine": "onnxruntime", "threads": 2})
    drift = classify_drift(make_run(y, y, provenance=new), Golden(dict(y), dict(y), dict(
        old, layout=GOLDEN_LAYOUT, verdict="PASS")), TOL)
    assert drift.drift_class == DriftClass.IDENTICAL
    assert drift.note.split("; ") == [
        "golden MNN model hash differs: reconverted",
        "converter flags changed: fp16 False → True, optimize_level 1 → 2",
        "MNN 3.6.1 → 3.7.0",
        "onnxruntime 1.23.2 → 1.24.0",
        "inputs changed: x 'c' → 'd', y '(unset)' → 'f'",
        "preprocessing changed: x [{'dtype': 'float32'}] → [{'dtype': 'float16'}]",
        "runtime config changed: power 'normal' → '(unset)', threads 1 → 4",
        "reference runtime config changed: threads 1 → 2",
    ]


def test_a_provenance_entry_that_changed_type_is_shown_whole():
    y = model_outputs_fixed()
    drift = classify_drift(make_run(y, y, provenance=dict(PROVENANCE, preprocess=None)), golden_of(y), TOL)
    assert drift.note == "preprocessing changed: {'x': [{'dtype': 'float32'}]} → None"


def test_provenance_present_on_one_side_only_is_not_a_change():
    y = model_outputs_fixed()
    prov = {k: v for k, v in PROVENANCE.items() if k not in ("runtime", "onnxruntime_version")}
    assert classify_drift(make_run(y, y, provenance=prov), golden_of(y), TOL).note == ""


def test_several_missing_and_new_outputs_are_listed():
    old = {"a": np.ones(2), "b": np.ones(2), "keep": np.ones(2)}
    now = {"keep": np.ones(2), "c": np.ones(2), "d": np.ones(2)}
    drift = classify_drift(make_run(now, now), golden_of(old), TOL)
    assert drift.drift_class == DriftClass.CHANGED
    assert drift.note == "outputs missing since the golden: a, b; outputs new since the golden: c, d"


def test_a_failed_run_that_still_has_outputs_does_not_claim_it_has_none():
    y = model_outputs_fixed()
    drift = classify_drift(make_run({}, y, verdict=Verdict.ERROR), golden_of(y), TOL)
    assert "no MNN outputs" not in drift.note
    drift = classify_drift(make_run({}, {}, verdict=Verdict.ERROR), golden_of(y), TOL)
    assert drift.note == "no MNN outputs now (ERROR); outputs missing since the golden: y"
    assert drift.drift_class == DriftClass.REGRESSED


# --- attach_drift: every run of a suite against its golden ---------------------------------------------------------

def drift_suite(tolerance: dict | None = None, topk: bool = False) -> Suite:
    model = ModelSpec(name="tiny/det", onnx=Path("/m/tiny.onnx"), convert=ConvertFlags(), tolerance={}, inputs={},
                      outputs={"cls": OutputSpec("cls", topk=TopK() if topk else None), "y": OutputSpec("y")})
    return Suite(name=SUITE, description="", path=Path("/m/s.yaml"), root=Path("/m"), reference={},
                 backends={"cpu-fp32": BackendSpec("cpu-fp32", {"device": "CPU"})}, tolerance=dict(tolerance or {}),
                 limits=Limits(), latency=LatencySpec(), models=(model,))


def test_attach_drift_classifies_every_run_and_leaves_the_inputs_alone(tmp_path, model_outputs):
    store = GoldenStore(tmp_path)
    store.bless(SUITE, [make_run(model_outputs, model_outputs, case="c1"),
                        make_run(model_outputs, model_outputs, case="gone")], replace_all=True)
    runs = [make_run(model_outputs, model_outputs, case="c1"),
            make_run(model_outputs, model_outputs, case="new"),
            make_run(model_outputs, {}, verdict=Verdict.CRASH, case="crashed new"),
            make_run(model_outputs, {}, verdict=Verdict.CRASH, case="gone")]
    judged, baseline, errors = attach_drift(drift_suite(), runs, store)
    assert [r.result.case for r in judged] == ["c1", "new", "crashed new", "gone"]
    classes = [r.result.drift.drift_class if r.result.drift else None for r in judged]
    assert classes == [DriftClass.IDENTICAL, DriftClass.NEW, None, DriftClass.REGRESSED]
    assert baseline == "3.6.1" and errors == []
    assert all(r.result.drift is None for r in runs)            # new records; the old ones unchanged
    assert judged[0].mnn_outputs is runs[0].mnn_outputs


def test_attach_drift_baseline_is_the_first_golden_found(tmp_path, model_outputs):
    store = GoldenStore(tmp_path)
    store.bless(SUITE, [make_run(model_outputs, model_outputs, case="a",
                                 provenance=dict(PROVENANCE, mnn_version="3.5.0")),
                        make_run(model_outputs, model_outputs, case="b")], replace_all=True)
    runs = [make_run(model_outputs, model_outputs, case=c) for c in ("none", "a", "b")]
    assert attach_drift(drift_suite(), runs, store)[1] == "3.5.0"
    assert attach_drift(drift_suite(), runs[::-1], store)[1] == "3.6.1"
    assert attach_drift(drift_suite(), runs[:1], store)[1] is None


def test_attach_drift_warns_about_a_golden_it_cannot_read(tmp_path, model_outputs):
    store = GoldenStore(tmp_path)
    store.bless(SUITE, [make_run(model_outputs, model_outputs, case=c) for c in ("bad", "ok")], replace_all=True)
    leaf = tmp_path / encode_name(SUITE) / encode_name("tiny/det") / "cpu-fp32"
    (leaf / "bad.json").write_text("{not json")
    runs = [make_run(model_outputs, model_outputs, case=c) for c in ("bad", "ok")]
    judged, baseline, errors = attach_drift(drift_suite(), runs, store)
    bad, ok = (r.result for r in judged)
    assert bad.drift is None
    assert len(bad.warnings) == 1 and bad.warnings[0].startswith("golden not compared: ")
    assert "bad.json" in bad.warnings[0]
    assert len(errors) == 1 and errors[0].startswith("tiny/det/bad [cpu-fp32]: ") and "bad.json" in errors[0]
    assert errors[0].endswith(bad.warnings[0][len("golden not compared: "):])
    assert ok.drift.drift_class == DriftClass.IDENTICAL and ok.warnings == ()
    assert baseline == "3.6.1"


def test_attach_drift_uses_the_manifests_topk(tmp_path):
    store = GoldenStore(tmp_path)
    old = {"cls": np.array([[0.55, 0.4, 0.05]], np.float32)}
    now = {"cls": np.array([[0.47, 0.48, 0.05]], np.float32)}
    store.bless(SUITE, [make_run(old, old, tolerance=LOOSE_TOPK)], replace_all=True)
    run = make_run(now, now, tolerance=LOOSE_TOPK)
    assert attach_drift(drift_suite(topk=False), [run], store)[0][0].result.drift.drift_class == DriftClass.DRIFTED
    assert attach_drift(drift_suite(topk=True), [run], store)[0][0].result.drift.drift_class == DriftClass.CHANGED


def test_attach_drift_falls_back_to_the_suites_tolerance(tmp_path, model_outputs):
    store = GoldenStore(tmp_path)
    store.bless(SUITE, [make_run(model_outputs, model_outputs)], replace_all=True)
    run = make_run(model_outputs, perturbed(model_outputs, 0.01))
    run = run.with_result(dataclasses.replace(run.result, outputs=()))    # no per-output tolerance recorded
    strict = attach_drift(drift_suite(), [run], store)[0][0].result.drift
    assert strict.drift_class == DriftClass.CHANGED
    loose = attach_drift(drift_suite({"atol": 0.1, "cosine_min": 0.9}), [run], store)[0][0].result.drift
    assert loose.drift_class == DriftClass.DRIFTED
    assert loose.outputs[0].tolerance == Tolerance(atol=0.1, cosine_min=0.9)
