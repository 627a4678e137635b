"""What an ONNX model declares: its inputs and outputs with their shapes. Read without running anything, and
without loading external weights, by validation, `mnn-parity new` and execution alike."""
from __future__ import annotations

from pathlib import Path


def onnx_dims(value_info) -> tuple:
    """Each dimension of a tensor: its size, its symbolic name, or None when it is dynamic and unnamed.

    Some exporters write -1 (or 0) rather than a name for a dynamic dimension: that is not a size.
    """
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or None)
                 for d in value_info.type.tensor_type.shape.dim)


def onnx_signature(path: Path) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """Input and output names of an ONNX model with their shapes (None for a dynamic dimension)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}

    def shape_of(value_info) -> tuple:
        return tuple(d if isinstance(d, int) else None for d in onnx_dims(value_info))

    inputs = {vi.name: shape_of(vi) for vi in model.graph.input if vi.name not in initializers}
    outputs = {vi.name: shape_of(vi) for vi in model.graph.output}
    return inputs, outputs
