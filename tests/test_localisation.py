"""Localisation's pure parts, without engines: the comparison, the trust test, the jump test, the JSON contract."""
from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto, helper

from mnn_parity.localisation import Localisation
from mnn_parity.localisation.blame import Candidate, jump_candidates, segment
from mnn_parity.localisation.compare import diverges, measure, within
from mnn_parity.localisation.diagnose import kind_of_blame, layout_of
from mnn_parity.localisation.graph import OnnxGraph, structurally_trusted
from mnn_parity.manifest.spec import ConvertFlags, QuantizeSpec


def chain_graph() -> OnnxGraph:
    nodes = [helper.make_node("Conv", ["x", "w"], ["conv"], name="conv"),
             helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
             helper.make_node("Round", ["relu"], ["round"], name="round"),
             helper.make_node("Mul", ["round", "round"], ["y"], name="mul")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [helper.make_tensor("w", TensorProto.FLOAT, [2, 2, 1, 1], [1, 0, 0, 1])])
    return OnnxGraph(helper.make_model(graph))


def metric(err: float, rel: float) -> dict:
    return {"status": "ok", "err": err, "rel": rel, "cos": 1.0 - err}


def test_measure_drops_unit_axes_and_names_shape_nan_and_int_divergences():
    ref = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    assert measure(ref.reshape(2, 1, 3), ref)["status"] == "ok"
    assert measure(ref.reshape(3, 2), ref)["status"] == "layout"
    assert measure(np.zeros(5, np.float32), ref)["status"] == "shape"
    bad = ref.copy()
    bad[0, 0, 0] = np.nan
    assert measure(bad, ref)["status"] == "nan"
    assert measure(np.array([1, 2]), np.array([1, 3]))["status"] == "int"
    assert diverges(measure(np.zeros(5, np.float32), ref), "high")


@pytest.mark.parametrize("seed", range(6))
def test_float32_blocks_give_the_float64_errors(seed):
    # The fast path sums float32 blocks; its 1 - cosine and max rel must be what float64 sums give
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5_000, 100_000))
    ref = (rng.standard_normal(n) * 10.0 ** rng.uniform(-4, 4)).astype(np.float32)
    noise = 10.0 ** rng.uniform(-7, -1)
    mnn = ((ref + rng.standard_normal(n) * np.abs(ref).max() * noise) * (1 + noise)).astype(np.float32)
    got = measure(mnn, ref)
    a, b = mnn.astype(np.float64), ref.astype(np.float64)
    exact = 1.0 - a @ b / math.sqrt((a @ a) * (b @ b))
    assert got["err"] == pytest.approx(exact, rel=1e-4, abs=1e-12)
    assert got["rel"] == pytest.approx(np.abs(a - b).max() / np.abs(b).max(), rel=1e-6)
    assert got["abs"] == pytest.approx(np.abs(a - b).max(), rel=1e-6)


def test_float32_magnitudes_whose_squares_overflow_take_the_exact_path():
    ref = np.full(10_000, 3e20, np.float32)
    got = measure(ref * np.float32(1.5), ref)
    assert got["status"] == "ok" and got["err"] == pytest.approx(0.0, abs=1e-12)
    assert got["rel"] == pytest.approx(0.5, rel=1e-6)


def test_divergence_needs_both_rel_and_cosine():
    ref = np.linspace(1, 2, 100)
    one_spike = ref.copy()
    one_spike[0] += 0.1                                    # max-rel 5 %, cosine still ~0.9999
    assert not diverges(measure(one_spike, ref), "high")
    assert diverges(measure(ref[::-1].copy(), ref), "high")
    assert not diverges(measure(ref * 1.001, ref), "high")  # scale off by 0.1 %: rel below 1e-2


def test_structural_trust_refuses_a_name_computed_from_a_later_tensor():
    graph = chain_graph()
    # MNN 3.6.1 on Conv1D+Relu: `relu` holds the fused Conv, `conv` holds Round(relu)
    mnn = {"x": {"op": "Input", "inputs": []}, "relu": {"op": "Convolution", "inputs": ["x"]},
           "conv": {"op": "ROUND", "inputs": ["relu"]}, "y": {"op": "BinaryOp", "inputs": ["conv", "k"]},
           "k": {"op": "Const", "inputs": []}}
    assert structurally_trusted("relu", graph, mnn)
    assert not structurally_trusted("conv", graph, mnn)
    assert structurally_trusted("y", graph, mnn)   # graph outputs always


def test_trust_walks_through_mnn_made_names_to_onnx_ancestors():
    graph = chain_graph()
    mnn = {"x": {"op": "Input", "inputs": []}, "x__tr": {"op": "ConvertTensor", "inputs": ["x"]},
           "relu": {"op": "Convolution", "inputs": ["x__tr", "merged_const"]},
           "merged_const": {"op": "Const", "inputs": []}}
    assert structurally_trusted("relu", graph, mnn)


def test_jump_test_blames_the_op_whose_error_jumps_not_its_heirs():
    graph = chain_graph()
    metrics = {"relu": metric(1e-12, 1e-7), "round": metric(0.1, 0.5), "y": metric(0.12, 0.6)}
    divergent, candidates = jump_candidates(graph, metrics, set(metrics), "high")
    assert divergent == ["round", "y"]
    assert [c.tensor for c in candidates] == ["round"]
    assert [graph.nodes[i].name for i in segment(graph, candidates[0])] == ["round"]


def test_growing_error_without_a_jump_gives_no_candidate():
    graph = chain_graph()
    metrics = {"relu": metric(0.004, 0.05), "round": metric(0.015, 0.1), "y": metric(0.03, 0.2)}
    divergent, candidates = jump_candidates(graph, metrics, set(metrics), "low")
    assert divergent == ["round", "y"] and candidates == []


def test_segment_spans_vanished_ops_back_to_the_frontier():
    graph = chain_graph()
    blamed = Candidate("round", 0.1, 0.0, ("x",))
    assert [graph.nodes[i].name for i in segment(graph, blamed)] == ["conv", "relu", "round"]


def test_layout_only_differences_are_recognised():
    ref = np.random.RandomState(0).rand(1, 3, 4).astype(np.float32)
    assert layout_of(ref.reshape(3, 1, 4), ref, "high").startswith("unit axes")
    assert "permuted" in layout_of(np.transpose(ref, (0, 2, 1)).copy(), ref, "high")
    assert layout_of(np.random.RandomState(1).rand(1, 4, 3).astype(np.float32), ref, "high") is None


def test_kinds():
    assert kind_of_blame("concrete", False, 1, 0.0, None, False) == "single-op-fault"
    assert kind_of_blame("concrete", False, 2, 0.0, None, False) == "fusion"
    assert kind_of_blame("symbolic", True, 1, 0.0, None, False) == "shape-dependent"
    assert kind_of_blame("no", False, 1, 0.01, None, False) == "accumulated-drift"
    assert kind_of_blame("concrete", False, 1, 0.0, 1e5, True) == "fp16-overflow"


def test_json_contract_has_exactly_the_agreed_keys_and_no_infinity():
    found = Localisation("blamed", "n", "Round", "t", math.inf, 0.5, 0.0, ("n",), "concrete", ("n",),
                         "single-op-fault", "s", "r", 1.23456, (("t", 2, math.inf, 0.5),))
    data = found.to_json()
    assert list(data) == ["status", "node", "op_type", "tensor", "rel", "cosine", "inherited_error", "segment",
                          "verified", "shortest", "kind", "suggestion", "repro", "seconds", "profile"]
    assert data["rel"] is None and data["profile"] == [["t", 2, None, 0.5]] and data["seconds"] == 1.235


def test_a_fault_only_with_symbolic_dims_is_called_shape_dependent(tmp_path):
    from mnn_parity.localisation.extract import Cut
    from mnn_parity.localisation.verify import Trial, Verifier, verify

    class Scripted(Verifier):
        """Symbolic cuts reproduce, concrete ones do not: what a recurrent op over a dynamic axis did."""
        def trial(self, indices, output, symbolic):
            self.used += 1
            return Trial(Cut(tmp_path / "m.onnx", ("x",), (output,), ("n",), symbolic), symbolic, {"status": "ok"})

        def modes(self, indices):
            return [True, False]

    verifier = Scripted(None, chain_graph(), {}, None, None, None, {}, "high", tmp_path, None)
    result = verify(verifier, [2], "round")
    assert result.verified == "symbolic" and result.shape_dependent and result.shortest == (2,)
    assert kind_of_blame(result.verified, result.shape_dependent, 1, 0.0, None, False) == "shape-dependent"


def test_the_cases_own_tolerance_is_judged_as_the_run_judges_it():
    ref = np.linspace(1, 2, 100)
    assert within(ref + 5e-5, ref, {"atol": 1e-4, "rtol": 0.0, "cosine_min": 0.9999})
    assert not within(ref + 5e-3, ref, {"atol": 1e-4, "rtol": 0.0, "cosine_min": 0.9999})
    assert within(ref + 5e-3, ref, {"atol": 1e-4, "rtol": 0.0, "cosine_min": 0.9999, "mismatch_max": 1.0})


@pytest.mark.parametrize("flags, runtime, hint", [
    (ConvertFlags(), {"precision": "high"}, "high"),
    (ConvertFlags(fp16=True), {}, "low"),
    (ConvertFlags(weight_quant_bits=8), {}, "low"),
    (ConvertFlags(quantize=QuantizeSpec(method="EMA")), {}, "low"),
    (ConvertFlags(), {"precision": "low"}, "low"),
])
def test_reduced_precision_conversions_are_judged_by_the_low_precision_bound(flags, runtime, hint):
    from mnn_parity.localisation.locate import effective_hint

    assert effective_hint("high", runtime, flags) == hint
