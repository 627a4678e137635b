"""The reference recorded a segment at a time, and tensors MNN fused away recorded only when asked for."""
from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mnn_parity.conversion.mnnconvert import ConverterEnv, convert
from mnn_parity.localisation import segments
from mnn_parity.localisation.graph import OnnxGraph
from mnn_parity.localisation.intermediates import MnnRequest, record_and_profile, run_child
from mnn_parity.localisation.intermediates import ReferenceStore
from mnn_parity.manifest.spec import ConvertFlags, Limits
from tests import localisation_models as models


def branchy(path: Path) -> Path:
    """x → Conv → Relu ─┬→ Mul(·, k) → Add(·, relu) → Sigmoid → y, with `k` a Constant node read across a cut."""
    weight = np.random.RandomState(0).randn(4, 4, 1, 1).astype(np.float32)
    nodes = [helper.make_node("Constant", [], ["k"], value=helper.make_tensor("kv", TensorProto.FLOAT, [1], [0.5]),
                              name="k"),
             helper.make_node("Conv", ["x", "w"], ["conv"], name="conv"),
             helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
             helper.make_node("Mul", ["relu", "k"], ["mul"], name="mul"),
             helper.make_node("Add", ["mul", "relu"], ["add"], name="add"),
             helper.make_node("Sigmoid", ["add"], ["y"], name="sigmoid")]
    graph = helper.make_graph(nodes, "branchy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
                              [onnx.numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, path)
    return path


def test_one_name_per_segment_feeds_each_cut_from_the_last_and_copies_constants(tmp_path: Path):
    model = onnx.load(branchy(tmp_path / "m.onnx"))
    record = {"conv", "relu", "mul", "add", "y"}
    cuts = segments.plan(model, record, {t: TensorProto.FLOAT for t in record | {"k"}}, {}, 1, 1e9)
    assert [[model.graph.node[i].name for i in c.nodes] for c in cuts] == [
        ["k", "conv"], ["relu"], ["k", "mul"], ["add"], ["sigmoid"]]
    assert cuts[3].inputs == ("mul", "relu")            # `relu` crosses two cuts
    assert cuts[1].outputs == ("relu",) and "k" not in cuts[0].outputs
    # a refill of early tensors computes only the prefix that holds them
    early = segments.plan(model, {"conv"}, {"conv": TensorProto.FLOAT}, {}, 10, 1e9)
    assert [list(c.nodes) for c in early] == [[0, 1]]                  # the Constant, the Conv, nothing after


def test_a_model_that_cannot_be_cut_is_recorded_whole(tmp_path: Path):
    model = onnx.load(branchy(tmp_path / "m.onnx"))
    then = helper.make_graph([helper.make_node("Identity", ["relu"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    model.graph.node.append(helper.make_node("If", ["c"], ["z"], then_branch=then, else_branch=then))
    types = {t: TensorProto.FLOAT for t in ("conv", "relu", "mul", "add", "y", "z")}
    assert segments.plan(model, {"y"}, types, {}, 1, 1e9) is None
    assert segments.plan(onnx.load(tmp_path / "m.onnx"), {"y"}, {}, {}, 1, 1e9) is None   # types unknown


def record(onnx_path: Path, feeds: Path, folder: Path, **extra) -> ReferenceStore:
    folder.mkdir(parents=True)
    names = OnnxGraph(onnx.load(str(onnx_path))).observable()
    run_child(Path(sys.executable), "ort", {"model": str(onnx_path), "feeds": str(feeds), "names": names,
                                            "store": str(folder), "threads": 1, "chunk": 1, "budget_mb": 1e9,
                                            **extra}, folder, Limits())
    return ReferenceStore.open(folder)


def test_segments_give_onnx_runtimes_own_bits(tmp_path: Path):
    onnx_path = branchy(tmp_path / "m.onnx")
    np.savez(tmp_path / "feeds.npz", x=np.random.RandomState(1).randn(1, 4, 6, 6).astype(np.float32))
    cut = record(onnx_path, tmp_path / "feeds.npz", tmp_path / "cut")
    whole = record(onnx_path, tmp_path / "feeds.npz", tmp_path / "whole", whole=True)
    assert len(list((tmp_path / "cut").glob("part-*.json"))) == 5     # one part per segment
    assert set(cut.index) == set(whole.index) == {"conv", "relu", "mul", "add", "y", "x"}
    for name in whole.index:
        assert np.array_equal(cut.load(name), whole.load(name)), name


@pytest.mark.slow   # ~1.5 s: a conversion and three children
def test_a_tensor_mnn_fused_away_gets_a_file_only_when_read(tmp_path: Path):
    onnx_path = models.fusable(tmp_path / "fusable.onnx")      # MNN 3.6.1 keeps no name of 5 of its tensors
    graph = OnnxGraph(onnx.load(str(onnx_path)))
    np.savez(tmp_path / "feeds.npz", x=np.random.RandomState(3).randn(1, 3, 8, 8).astype(np.float32))
    conversion = convert(onnx_path, ConvertFlags(), ConverterEnv(Path(sys.executable), version("MNN")),
                         tmp_path / "cache")
    request = MnnRequest(conversion.mnn_model, Path(sys.executable), tmp_path / "feeds.npz", list(graph.inputs),
                         list(graph.outputs), {"device": "CPU", "precision": "high", "threads": 1}, 40, 256.0)
    store, profile = record_and_profile(onnx_path, tmp_path / "feeds.npz", graph.observable(), tmp_path / "work",
                                        request, Limits(), dump=list(graph.outputs))
    fused = [n for n in graph.observable() if n in store and not store.saved(n)]
    assert fused and all(n not in profile.graph for n in fused)        # MNN's graph lacks exactly those
    assert all(store.saved(n) for n in profile.metrics)                  # every compared tensor had its file
    whole = record(onnx_path, tmp_path / "feeds.npz", tmp_path / "whole", whole=True)
    store.ensure(fused)                                                 # recorded on demand, in one child
    assert all(store.saved(n) for n in fused) and len(list(store.folder.glob("refill-*"))) == 1
    for name in fused:
        assert np.array_equal(store.load(name), whole.load(name)), name  # the same bits as a whole recording
