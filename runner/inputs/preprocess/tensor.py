"""What every step family asks of the array it is given, and how the pipeline hands an array back."""
from __future__ import annotations

import numpy as np

from mnn_parity.inputs.preprocess.errors import StepError


def contiguous(x: np.ndarray) -> np.ndarray:
    # Not np.ascontiguousarray: it turns a 0-d array (a scalar input such as a sample rate) into shape (1,).
    return x if x.flags.c_contiguous else x.copy(order="C")


def need_rank(x: np.ndarray, ranks: tuple[int, ...], what: str) -> None:
    if x.ndim not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise StepError(f"expects {what} (rank {want}), got an array of shape {tuple(x.shape)}")


def refuse_complex(x: np.ndarray) -> None:
    # Every cast a step makes (astype, Pillow's float planes) would keep the real part without a word.
    if x.dtype.kind == "c":
        raise StepError(f"the array is complex ({x.dtype}): no engine input takes complex numbers, and a cast "
                        "would silently drop the imaginary part")
