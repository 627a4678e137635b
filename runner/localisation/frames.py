"""A streamed (stateful) case reduced to one frame that localisation can take like any other case.

A streamed model runs frame by frame, feeding named outputs back as inputs (`engines/worker.run_stream`); its
outputs are the frames' outputs stacked on axis 0. Localising the whole stream would mean intermediates of every
frame; the fault shows in the first frame whose outputs leave tolerance. That frame is rebuilt with the state
ONNX Runtime carried into it ("teacher forcing"), so both engines see the same inputs:
- if MNN still diverges there, the fault is in that frame's own computation, and the usual localisation names it;
- if it agrees, MNN was only wrong because its own slightly different state was fed back: the error built up
  through the recurrence, which is accumulated drift, not one op.
Pure functions over arrays; `execution/localise_step.py` runs the engines.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from mnn_parity.comparison import compare_output
from mnn_parity.manifest.tolerance import Tolerance


@dataclass(frozen=True)
class Frame:
    index: int
    count: int
    output: str            # the output that left tolerance first (or was worst, when none did)
    diverged: bool         # False: no frame left tolerance; `index` is the worst frame by cosine


def frames_of(stacked: Mapping[str, np.ndarray], names: Sequence[str]) -> int:
    """How many frames the stacked outputs hold (the fewest, should an engine have stopped short)."""
    counts = [int(np.asarray(stacked[n]).shape[0]) for n in names if n in stacked and np.ndim(stacked[n]) > 0]
    return min(counts) if counts else 0


def choose_frame(ref: Mapping[str, np.ndarray], mnn: Mapping[str, np.ndarray],
                 tolerances: Mapping[str, Tolerance]) -> Optional[Frame]:
    """The first frame where an output leaves its tolerance; else the frame with the lowest cosine (for
    `--localise always` on a passing case). None when there is nothing to compare frame by frame."""
    names = [n for n in tolerances if n in ref and n in mnn]
    count = min(frames_of(ref, names), frames_of(mnn, names))
    if count == 0:
        return None
    worst: Optional[tuple[float, int, str]] = None
    for index in range(count):
        for name in names:
            judged = compare_output(name, np.asarray(ref[name][index]), np.asarray(mnn[name][index]),
                                    tolerances[name])
            if not judged.passed:
                return Frame(index, count, name, True)
            cosine = 1.0 if judged.cosine is None else judged.cosine
            if worst is None or cosine < worst[0]:
                worst = (cosine, index, name)
    _, index, name = worst
    return Frame(index, count, name, False)


def frame_feeds(feeds: Mapping[str, np.ndarray], stream: Mapping, ref: Mapping[str, np.ndarray],
                index: int) -> dict[str, np.ndarray]:
    """The inputs of frame `index` as the stream gave them to ONNX Runtime: the frame itself, each carried state
    from the reference's previous frame (the case's own initial state for frame 0), every other input as fed."""
    source = stream["input"]
    frame = {name: np.asarray(value) for name, value in feeds.items() if name != source}
    frame[source] = np.asarray(feeds[source][index])
    if index > 0:
        for state_input, state_output in (stream.get("carry") or {}).items():
            frame[state_input] = np.asarray(ref[state_output][index - 1])
    return frame
