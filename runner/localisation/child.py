"""The localiser's child process: every intermediate tensor from one engine, judged without the parent holding it.

    python sandbox.py ... -- child.py ort|mnn REQUEST.json

Imports only numpy and one engine (onnx/onnxruntime, or MNN), because the MNN side may run under an `--mnn
VERSION` interpreter holding nothing else; `compare.py` is loaded by path from this folder for the same reason.
stdout is pointed at stderr first: MNN's C++ prints there.

ort: run the model a segment at a time (`segments.py`; where it cannot be cut, the whole model with a chunk of
     wanted tensors marked as outputs), with ORT_DISABLE_ALL (either way the same bits as the plain model); write
     each tensor, and the feeds, to `store/<i>.npy`, each segment's entries as `part-<k>.json`, then the whole
     `index.json`.
mnn: read MNN's graph (`graph.json`), then ask the Module API for the observed names a chunk at a time (by count
     and MiB), comparing each with the stored reference here and appending one JSON line per tensor to
     `metrics.jsonl`; with `stream`, each part as ONNX Runtime publishes it.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# MNN graph entries that are no computed tensor (graph.MNN_OPAQUE in the parent; this file imports no package)
MNN_OPAQUE = ("Input", "Const")


def read_feeds(path: str) -> dict:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def load_sibling(name: str):
    """A module of this folder by path: the child imports nothing of the package (see the docstring)."""
    spec = importlib.util.spec_from_file_location(f"_mnn_parity_localisation_{name}", os.path.join(HERE, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # a dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def run_ort(request: dict) -> None:
    """Every wanted tensor a segment of the model at a time (`segments.py`), or, where the model cannot be cut,
    a session of the whole model per chunk of names: one run returning every intermediate held 2 GB for PP-OCR's
    detector on a 736x1472 page. Both keep about `budget_mb` of tensors alive at once."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(request["model"])
    feeds, index = read_feeds(request["feeds"]), {}
    types, sizes = reference_types(model, feeds)
    # `only`: just the names asked, for a store that lacks them (no final outputs, no feeds)
    finals = set() if request.get("only") else {o.name for o in model.graph.output}
    wanted = [n for n in request["names"] if n not in finals and types.get(n)]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = int(request.get("threads", 1))
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False   # the arena keeps every chunk's peak: chunking would save nothing

    def session(proto):
        return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])

    most, budget = int(request.get("chunk", 120)), float(request.get("budget_mb", 256))
    segments = load_sibling("segments")
    record = set(wanted) | finals
    cuts = None if request.get("whole") else segments.plan(model, record, types, sizes, most, budget)
    compared = names_mnn_compares(request.get("mnn_graph"))
    store = Store(request["store"], index, lambda name: compared is None or name in compared or name in finals)
    chunks = None if cuts is not None else by_budget(wanted, sizes, most, budget)
    parts = ([[t for t in cut.outputs if t in record] for cut in cuts] if cuts is not None
             else [[*finals, *chunks[0]], *chunks[1:]])
    # what each part will hold, before any is computed: the MNN child runs its forward meanwhile
    write_json(os.path.join(request["store"], "plan.json"),
               [[[t, sizes.get(t, 1.0)] for t in part if store.wants_file(t)] for part in parts])
    if cuts is None:
        record_by_marking(model, session, chunks, types, feeds, store)
    else:
        record_by_segments(model, session, segments, cuts, record, types, feeds, store)
    for name, value in [] if request.get("only") else feeds.items():
        # a segment may read a graph input: verification feeds it from here
        if name not in index:
            store.add(name, np.asarray(value), write=True)
    write_json(os.path.join(request["store"], "index.json"), index)


def names_mnn_compares(graph_path, wait_s: float = 60.0):
    """The tensors MNN's graph holds (the MNN child writes it within a second of starting), or None to write
    every tensor: one MNN fused away is never compared, and PP-OCR's detector has 31 % of its bytes in those.
    Verification may still read one; the parent records those afterwards (`ReferenceStore.load`)."""
    if not graph_path or not wait_for(graph_path, wait_s):
        return None
    with open(graph_path) as handle:
        graph = json.load(handle)
    return {name for name, entry in graph.items() if entry.get("op") not in MNN_OPAQUE}


class Store:
    """The reference being written: `index` (name -> entry), and which tensors get a file as well."""

    def __init__(self, folder: str, index: dict, wants_file):
        self.folder, self.index, self.wants_file = folder, index, wants_file

    def add(self, name: str, value, write: bool = False) -> dict:
        entry = {"shape": list(value.shape), "dtype": str(value.dtype), "maxabs": max_abs(value)}
        if write or self.wants_file(name):
            entry["file"] = f"{len(self.index)}.npy"
            np.save(os.path.join(self.folder, entry["file"]), value)
        self.index[name] = entry
        return entry

    def file(self, name: str):
        entry = self.index.get(name, {})
        return np.load(os.path.join(self.folder, entry["file"]), mmap_mode="r") if "file" in entry else None


def record_by_marking(model, session, chunks, types, feeds, store: Store) -> None:
    import onnx

    declared = len(model.graph.output)
    for k, names in enumerate(chunks):
        del model.graph.output[declared:]
        for name in names:
            # no shape: a wrong static guess would make ORT refuse the run
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
        run = session(model)
        names = [o.name for o in run.get_outputs() if o.name not in store.index]
        part = {name: store.add(name, np.asarray(value)) for name, value in zip(names, run.run(names, feeds))}
        del run
        publish(store.folder, k, part)


def record_by_segments(model, session, segments, cuts, record, types, feeds, store: Store) -> None:
    """Each segment fed from the graph's inputs, the store's files (memory-mapped) or `carried` (tensors with no
    file that a later segment reads, dropped after their last reader)."""
    carried: dict = {}
    for k, cut in enumerate(cuts):
        given = {t: feeds[t] if t in feeds else carried[t] if t in carried else store.file(t) for t in cut.inputs}
        run = session(segments.extract(model, cut, given, types))
        part = {}
        for name, value in zip(cut.outputs, run.run(list(cut.outputs), given)):
            if name in record and name not in store.index:
                part[name] = store.add(name, np.asarray(value))
            if "file" not in store.index.get(name, {}):
                carried[name] = value
        del run, given
        publish(store.folder, k, part)
        later = {t for c in cuts[k + 1:] for t in c.inputs}
        for name in [t for t in carried if t not in later]:
            del carried[name]


def publish(store: str, k: int, part: dict) -> None:
    """`part-<k>.json`: a streaming MNN child compares its tensors as soon as it exists."""
    write_json(os.path.join(store, f"part-{k}.json"), part)


def write_json(path: str, data) -> None:
    """Renamed into place whole: the other child polls for the file and must never read half of it."""
    with open(path + ".tmp", "w") as out:
        json.dump(data, out)
    os.replace(path + ".tmp", path)


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
        held.clear()   # the last chunk's buffers, freed before this forward allocates its own
        module = nn.load_module_from_file(request["model"], order, outputs, runtime_manager=manager,
                                          shape_mutable=True, rearrange=False)
        results = module.forward(variables())
        results = results if isinstance(results, (list, tuple)) else [results]
        if len(results) < len(outputs):
            raise RuntimeError(f"MNN's forward produced {len(results)} of {len(outputs)} outputs")
        got = {}
        for name, var in zip(outputs, results):
            if var.data_format == F.NC4HW4:
                var = F.convert(var, F.NCHW)
            # read() views MNN's buffer: hold the variable until the next forward instead of copying 1 GB
            held.append(var)
            got[name] = var.read()
        return got

    return F, forward


def wait_for(path: str, seconds: float = float("inf")) -> bool:
    """Whether `path` appeared within `seconds`; without a bound, the parent kills this child if the other one
    fails or the case times out."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def reference_plan(request: dict):
    """(every planned name with its MiB, name -> its part, part -> that part's index entries) of the reference:
    the finished store as one part, or, when streaming, ONNX Runtime's `plan.json`, a part's entries waited for
    (`part-<k>.json`) only when a comparison needs them, after MNN has run its forward."""
    store = request["store"]
    if not request.get("stream"):
        with open(os.path.join(store, "index.json")) as handle:
            index = json.load(handle)
        return [(n, entry_mib(e)) for n, e in index.items() if "file" in e], {n: 0 for n in index}, lambda k: index
    wait_for(os.path.join(store, "plan.json"))
    with open(os.path.join(store, "plan.json")) as handle:
        plan = json.load(handle)
    loaded: dict = {}

    def part(k: int) -> dict:
        if k not in loaded:
            path = os.path.join(store, f"part-{k}.json")
            wait_for(path)
            with open(path) as handle:
                loaded[k] = json.load(handle)
        return loaded[k]
    return ([(n, float(mib)) for names in plan for n, mib in names],
            {n: k for k, names in enumerate(plan) for n, _ in names}, part)


def entry_mib(entry: dict) -> float:
    return float(np.prod(entry["shape"], dtype=np.float64)) * np.dtype(entry["dtype"]).itemsize / 2**20


def run_mnn(request: dict) -> None:
    compare = load_sibling("compare")
    F, forward = mnn_session(request)
    graph = mnn_graph(F, request["model"])
    with open(os.path.join(request["out"], "graph.json"), "w") as out:
        json.dump(graph, out)
    finals = list(request["outputs"])
    asked = {n: i for i, n in enumerate(request["names"])}

    def wanted(name: str) -> bool:
        return name in asked and (name in finals or (name in graph and graph[name]["op"] not in MNN_OPAQUE))

    most, budget = int(request.get("chunk", 40)), float(request.get("budget_mb", 256))
    dump, dumped = set(request.get("dump", [])), {}
    planned, part_of, part = reference_plan(request)
    sizes = {n: mib for n, mib in planned if wanted(n)}
    names = sorted(sizes, key=asked.get)
    with open(os.path.join(request["out"], "metrics.jsonl"), "a") as lines:
        # chunks across ONNX Runtime's parts: a small last segment shares a forward instead of costing its own
        for chunk in by_budget(names, sizes, most, budget) if names else []:
            def entries(chunk=chunk) -> dict:
                return {k: v for p in sorted({part_of[n] for n in chunk}) for k, v in part(p).items()}
            compare_chunk(compare, forward, finals, chunk, entries, request, lines, dump, dumped)
    with open(os.path.join(request["out"], "dumps.json"), "w") as out:
        json.dump(dumped, out)


def compare_chunk(compare, forward, finals, names, entries, request, lines, dump, dumped) -> None:
    try:
        got = forward(finals + [n for n in names if n not in finals])
    except Exception as error:   # one name MNN cannot give must not cost the rest
        for name in names:
            lines.write(json.dumps({"name": name, "status": "unavailable", "detail": str(error)}) + "\n")
        lines.flush()
        return
    index = entries()
    for name in [n for n in names if "file" in index.get(n, {})]:
        ref = np.load(os.path.join(request["store"], index[name]["file"]), mmap_mode="r")
        metric = compare.measure(got[name], np.asarray(ref))
        lines.write(json.dumps({"name": name, "shape": list(got[name].shape), **metric}) + "\n")
        if name in dump:
            dumped[name] = f"dump-{len(dumped)}.npy"
            np.save(os.path.join(request["out"], dumped[name]), got[name])
    lines.flush()


def main(argv: list) -> None:
    mode, request_path = argv
    with open(request_path) as handle:
        request = json.load(handle)
    os.dup2(2, 1)
    {"ort": run_ort, "mnn": run_mnn}[mode](request)


if __name__ == "__main__":
    main(sys.argv[1:])
