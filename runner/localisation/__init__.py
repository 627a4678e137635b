"""Say where MNN first goes wrong: the first op whose error jumps, verified standalone, with a reproducer.

    from mnn_parity.localisation import localise
    result = localise(onnx_path, mnn_path, feeds, runtime, convert_flags, tolerance_hint, workdir, limits,
                      repro_dir=..., case=Case(model, case, backend, tolerance))
    result.to_json()

Imported lazily: onnx and the engines' hosts load only when a localisation runs.
"""
from __future__ import annotations

from typing import Any

__all__ = ["Case", "Localisation", "LocaliseOptions", "localise"]


def __getattr__(name: str) -> Any:
    if name in ("localise", "Case"):
        from mnn_parity.localisation import locate

        return getattr(locate, name)
    if name in ("Localisation", "LocaliseOptions"):
        from mnn_parity.localisation import result

        return getattr(result, name)
    raise AttributeError(name)
