"""The localiser's child process: every intermediate tensor from one engine, judged without the parent holding it.

    python sandbox.py ... -- child.py ort|mnn REQUEST.json

Imports only numpy and one engine (onnx/onnxruntime, or MNN), because the MNN side may run under an `--mnn
VERSION` interpreter holding nothing else; `compare.py` is loaded by path from this folder for the same reason.
stdout is pointed at stderr first: MNN's C++ prints there.

ort: run the model with the wanted tensors marked as outputs, a chunk per session, and ORT_DISABLE_ALL (marked +
     DISABLE_ALL gave the same bits as the plain model); write each tensor, and the feeds, to `store/<i>.npy` with
     an `index.json`.
mnn: read MNN's graph (`graph.json`), then ask the Module API for the observed names a chunk at a time (the
     parent sizes the chunks), comparing each with the stored reference here and appending one JSON line per
     tensor to `metrics.jsonl`.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def load_compare():
    spec = importlib.util.spec_from_file_location("_mnn_parity_localisation_compare", os.path.join(HERE, "compare.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_feeds(path: str) -> dict:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def run_ort(request: dict) -> None:
    """A session per chunk of names (by count and by bytes): one run returning every intermediate held 2 GB for
    PP-OCR's detector on a 736x1472 page; recomputing the model per chunk is cheaper than that."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(request["model"])
    feeds, index = read_feeds(request["feeds"]), {}
    types, sizes = reference_types(model, feeds)
    declared = len(model.graph.output)
    finals = {o.name for o in model.graph.output}
    wanted = [n for n in request["names"] if n not in finals and types.get(n)]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = int(request.get("threads", 1))
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False   # the arena keeps every chunk's peak: chunking would save nothing
    for names in by_budget(wanted, sizes, int(request.get("chunk", 120)), float(request.get("budget_mb", 256))):
        del model.graph.output[declared:]
        for name in names:
            # no shape: a wrong static guess would make ORT refuse the run
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs() if o.name not in index]
        for name, value in zip(names, session.run(names, feeds)):
            index[name] = save_reference(request["store"], len(index), np.asarray(value))
        del session
    for name, value in feeds.items():   # a segment may read a graph input: verification feeds it from here
        index.setdefault(name, save_reference(request["store"], len(index), np.asarray(value)))
    with open(os.path.join(request["store"], "index.json"), "w") as out:
        json.dump(index, out)


def reference_types(model, feeds: dict) -> tuple:
    """Element types, and sizes in MiB where shape inference knows them once the inputs' dims are the feeds'."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for value in probe.graph.input:
        if value.name in feeds and value.type.tensor_type.HasField("shape"):
            for dim, size in zip(value.type.tensor_type.shape.dim, feeds[value.name].shape):
                dim.Clear()
                dim.dim_value = int(size)
    try:
        graph = onnx.shape_inference.infer_shapes(probe).graph
    except Exception:   # types from the model as declared; sizes unknown
        graph = model.graph
    types, sizes = {}, {}
    for value in [*graph.value_info, *graph.output, *graph.input]:
        tensor = value.type.tensor_type
        types[value.name] = tensor.elem_type
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim]
        if tensor.HasField("shape") and all(dims):
            sizes[value.name] = float(np.prod(dims, dtype=np.float64)) * 4 / 2**20
    return types, sizes


def by_budget(names: list, sizes: dict, most: int, budget_mb: float) -> list:
    """Chunks of at most `most` names and about `budget_mb` MiB; a tensor of unknown size counts as 1 MiB."""
    chunks, used = [[]], 0.0
    for name in names:
        size = sizes.get(name, 1.0)
        if chunks[-1] and (len(chunks[-1]) >= most or used + size > budget_mb):
            chunks.append([])
            used = 0.0
        chunks[-1].append(name)
        used += size
    return chunks


def save_reference(store: str, position: int, value) -> dict:
    np.save(os.path.join(store, f"{position}.npy"), value)
    return {"file": f"{position}.npy", "shape": list(value.shape), "dtype": str(value.dtype),
            "maxabs": max_abs(value)}


def max_abs(value) -> float:
    """The largest finite magnitude, without copying a tensor that is finite throughout (the usual case)."""
    if value.size == 0 or value.dtype.kind not in "fiub":
        return 0.0
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        value = value[np.isfinite(value)]
        if value.size == 0:
            return 0.0
    return float(max(abs(float(value.max())), abs(float(value.min()))))


def mnn_graph(F, model: str) -> dict:
    """name -> {op, inputs}; each attribute read guarded, since some vars of a loaded dict throw on access."""
    graph = {}
    for name, var in F.load_as_dict(model).items():
        entry = {"op": "", "inputs": []}
        try:
            entry["op"] = str(var.op_type)
        except Exception:
            pass
        try:
            entry["inputs"] = [str(i.name) for i in var.inputs]
        except Exception:
            pass
        graph[str(name)] = entry
    return graph


def mnn_session(request: dict):
    import MNN.expr as F
    import MNN.nn as nn

    config = request.get("config", {})
    runtime = {"backend": config.get("device", "CPU"), "precision": config.get("precision", "high"),
               "numThread": int(config.get("threads", 1)), "memory": config.get("memory", "normal"),
               "power": config.get("power", "normal")}
    manager = nn.create_runtime_manager((runtime,))
    inputs, _ = F.get_inputs_and_outputs(F.load_as_dict(request["model"]))
    feeds = read_feeds(request["feeds"])
    order = list(request["inputs"])

    def variables():
        made = []
        for name in order:
            array = np.ascontiguousarray(feeds[name])
            dtype = F.int if array.dtype.kind in "iu" and array.dtype != np.uint8 else (
                F.uint8 if array.dtype == np.uint8 else F.float)
            var = F.const(array, list(array.shape), F.NCHW, dtype)
            if "NC4HW4" in str(inputs[name].data_format):
                var = F.convert(var, F.NC4HW4)
            made.append(var)
        return made

    held: list = []

    def forward(outputs: list) -> dict:
        module = nn.load_module_from_file(request["model"], order, outputs, runtime_manager=manager,
                                          shape_mutable=True, rearrange=False)
        results = module.forward(variables())
        results = results if isinstance(results, (list, tuple)) else [results]
        if len(results) < len(outputs):
            raise RuntimeError(f"MNN's forward produced {len(results)} of {len(outputs)} outputs")
        got, held[:] = {}, []
        for name, var in zip(outputs, results):
            if var.data_format == F.NC4HW4:
                var = F.convert(var, F.NCHW)
            # read() views MNN's buffer: hold the variable until the next forward instead of copying 1 GB
            held.append(var)
            got[name] = var.read()
        return got

    return F, forward


def run_mnn(request: dict) -> None:
    compare = load_compare()
    F, forward = mnn_session(request)
    graph = mnn_graph(F, request["model"])
    with open(os.path.join(request["out"], "graph.json"), "w") as out:
        json.dump(graph, out)
    with open(os.path.join(request["store"], "index.json")) as handle:
        index = json.load(handle)
    finals = list(request["outputs"])
    def wanted(name: str) -> bool:
        return name in index and (name in finals or (name in graph and graph[name]["op"] not in ("Input", "Const")))

    chunks = [[n for n in chunk if wanted(n)] for chunk in request["chunks"]]
    dump, dumped = set(request.get("dump", [])), {}
    with open(os.path.join(request["out"], "metrics.jsonl"), "a") as lines:
        for names in [c for c in chunks if c]:
            try:
                got = forward(finals + [n for n in names if n not in finals])
            except Exception as error:   # one name MNN cannot give must not cost the rest
                for name in names:
                    lines.write(json.dumps({"name": name, "status": "unavailable", "detail": str(error)}) + "\n")
                lines.flush()
                continue
            for name in names:
                ref = np.load(os.path.join(request["store"], index[name]["file"]), mmap_mode="r")
                metric = compare.measure(got[name], np.asarray(ref))
                lines.write(json.dumps({"name": name, "shape": list(got[name].shape), **metric}) + "\n")
                if name in dump:
                    dumped[name] = f"dump-{len(dumped)}.npy"
                    np.save(os.path.join(request["out"], dumped[name]), got[name])
            lines.flush()
    with open(os.path.join(request["out"], "dumps.json"), "w") as out:
        json.dump(dumped, out)


def main(argv: list) -> None:
    mode, request_path = argv
    with open(request_path) as handle:
        request = json.load(handle)
    os.dup2(2, 1)
    {"ort": run_ort, "mnn": run_mnn}[mode](request)


if __name__ == "__main__":
    main(sys.argv[1:])
