"""`mnn-parity new MODEL.onnx`: a starting manifest written from the model's own inputs and outputs.

The user fills in what only they know (where the data is, how it is preprocessed); every such place is a
`TODO` line, and dynamic dimensions are named so that nothing is silently guessed.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from mnn_parity.modelinfo import onnx_dims


class ScaffoldError(Exception):
    pass


_IMAGE_RANK = 4


def _slug(text: str) -> str:
    # 64: the longest suite and model name a manifest accepts
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:64].strip("-.") or "model"


def describe_model(path: Path) -> tuple[list[dict], list[dict]]:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:   # DecodeError and friends: the file is not an ONNX protobuf
        raise ScaffoldError(f"{path}: not an ONNX model ({type(error).__name__}: {error})")
    initializers = {init.name for init in model.graph.initializer}

    def describe(value_info) -> dict:
        tensor = value_info.type.tensor_type
        dims = list(onnx_dims(value_info))
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "float32"
        return {"name": value_info.name, "shape": dims, "dtype": dtype}

    inputs = [describe(vi) for vi in model.graph.input if vi.name not in initializers]
    outputs = [describe(vi) for vi in model.graph.output]
    return inputs, outputs


def render_manifest(model_rel: str, name: str, inputs: list[dict], outputs: list[dict]) -> str:
    def shape_text(shape) -> str:
        return "[" + ", ".join(str(d) if isinstance(d, int) else "null" for d in shape) + "]"

    lines = [
        f"# Starting manifest for {model_rel}, written by `mnn-parity new`.",
        "# Fill in every TODO, then: mnn-parity validate <this file>",
        f"suite: {name}",
        f"description: TODO say what {name} is and what data it sees",
        "reference: {engine: onnxruntime, threads: 1}",
        "backends:",
        "  cpu-fp32: {engine: mnn, device: CPU, precision: high, threads: 1}",
        "  cpu-low:  {engine: mnn, device: CPU, precision: low, threads: 2, tolerance: {cosine_min: 0.999}}",
        "tolerance: {atol: 1.0e-4, rtol: 1.0e-3, cosine_min: 0.9999}",
        "models:",
        f"  - name: {name}",
        f"    onnx: {model_rel}",
        "    convert: {fp16: false, weight_quant_bits: 0, optimize_level: 1}",
        "    inputs:",
    ]
    for position, spec in enumerate(inputs):
        dynamic = [d or f"axis {axis}" for axis, d in enumerate(spec["shape"]) if not isinstance(d, int)]
        lines.append(f"      {spec['name']}:")
        note = f"  # dynamic: {', '.join(map(str, dynamic))} — set by your preprocessing" if dynamic else ""
        lines.append(f"        shape: {shape_text(spec['shape'])}{note}")
        if position == 0:
            lines.append("        files: TODO/path/to/inputs/*.png   # one case per file, relative to the repo root")
            if len(spec["shape"]) == _IMAGE_RANK:
                height, width = spec["shape"][2], spec["shape"][3]
                size = (f"{{height: {height}, width: {width}}}" if isinstance(height, int) and isinstance(width, int)
                        else "{height: TODO, width: TODO}")
                lines += [
                    "        preprocess:   # TODO match the model's training-time preprocessing",
                    "          - decode: {color: RGB}",
                    f"          - resize: {size}",
                    "          - normalize: {scale: 0.00392156862745098, mean: [0.485, 0.456, 0.406], "
                    "std: [0.229, 0.224, 0.225]}",
                    "          - layout: NCHW",
                    f"          - dtype: {spec['dtype']}",
                ]
            else:
                lines += ["        preprocess:   # TODO how a file becomes this tensor",
                          "          - load: {}",
                          f"          - dtype: {spec['dtype']}"]
        else:
            static = [d if isinstance(d, int) else 1 for d in spec["shape"]]
            lines += [
                "        preprocess:   # TODO a constant input; or give every input per case with `cases: *.npz`",
                f"          - zeros: {{shape: {static}, dtype: {spec['dtype']}}}",
            ]
    lines.append("    outputs:")
    for spec in outputs:
        axis = class_axis(spec["shape"]) if spec["dtype"].startswith(("float", "bfloat")) else None
        hint = (f"a suggestion, if these are class scores: {{topk: {{k: 1, axis: {axis}}}}}" if axis is not None
                else "add tolerance: to loosen or tighten it")
        lines.append(f"      {spec['name']}: {{}}   # shape {shape_text(spec['shape'])}, {spec['dtype']}; {hint}")
    return "\n".join(lines) + "\n"


def class_axis(shape: list) -> Optional[int]:
    """The axis class scores most likely lie on, from the output's shape alone; None when there is no guess.

    The rule: [C] -> 0; [N, C] -> 1; [N, T, C] -> 2, the last, since a rank-3 score tensor is usually a sequence
    (a CTC text recogniser, a tagger), except [N, C, L] with C fixed and L dynamic, whose class count is the fixed
    one -> 1; rank 4 and up is channels-first ([N, C, H, W], a segmentation map) -> 1. A suggestion only: the
    shape cannot tell an [N, T, C] from an [N, C, L] with both fixed.
    """
    rank = len(shape)
    if rank == 0:
        return None
    if rank == 3 and isinstance(shape[1], int) and not isinstance(shape[2], int):
        return 1
    return {1: 0, 2: 1, 3: 2}.get(rank, 1)


def write_manifest(model: Path, output: Optional[Path], root: Path, force: bool = False) -> Path:
    if not model.is_file():
        raise ScaffoldError(f"{model}: no such file (looked for {model.resolve()}; a relative path is read from "
                            f"the working folder, {Path.cwd()}; the repository root is {root})")
    resolved = model.resolve()
    try:
        model_rel = str(resolved.relative_to(root.resolve()))
    except ValueError:
        raise ScaffoldError(f"{model}: the model must be inside the repository ({root}): copy it into a folder of "
                            "your own there (say models/; `dvc add models` if it is large), not data/, which holds "
                            "mnn-parity's bundled data set")
    inputs, outputs = describe_model(resolved)
    name = _slug(resolved.stem)
    target = output or root / "suites" / f"{name}.yaml"
    if target.exists() and not force:
        raise ScaffoldError(f"{target} exists; pass --force to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_manifest(model_rel, name, inputs, outputs))
    return target
