"""Streamed (stateful) models localised one frame at a time: the first frame out of tolerance, fed the state ONNX
Runtime carried into it (`localisation/frames.py`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mnn_parity.cli import main
from mnn_parity.localisation.frames import choose_frame, frame_feeds
from mnn_parity.manifest.tolerance import cascade
from tests import localisation_models as models
from tests.repos import make_repo

TOL = cascade({"atol": 1e-4, "rtol": 1e-3, "cosine_min": 0.9999})
STREAM = {"input": "x", "carry": {"h": "h_next"}}


def test_the_first_frame_out_of_tolerance_is_chosen_and_named_by_its_output():
    ref = {"y": np.zeros((5, 3), np.float32), "h_next": np.zeros((5, 3), np.float32)}
    mnn = {"y": ref["y"].copy(), "h_next": ref["h_next"].copy()}
    mnn["h_next"][3] += 1.0
    mnn["y"][4] += 1.0
    frame = choose_frame(ref, mnn, {"y": TOL, "h_next": TOL})
    assert (frame.index, frame.count, frame.output, frame.diverged) == (3, 5, "h_next", True)


def test_with_no_frame_out_of_tolerance_the_worst_by_cosine_is_chosen():
    rng = np.random.RandomState(0)
    ref = {"y": rng.rand(4, 8).astype(np.float32) + 1}
    mnn = {"y": ref["y"].copy()}
    mnn["y"][2, 0] += 1e-6
    frame = choose_frame(ref, mnn, {"y": TOL})
    assert (frame.index, frame.diverged) == (2, False)


def test_nothing_to_compare_frame_by_frame_gives_no_frame():
    assert choose_frame({"y": np.zeros((3, 2))}, {}, {"y": TOL}) is None


def test_a_frame_is_fed_the_references_state_from_the_frame_before():
    feeds = {"x": np.arange(12, dtype=np.float32).reshape(3, 1, 4), "h": np.full((1, 4), 7, np.float32),
             "sr": np.array(16000)}
    ref = {"h_next": np.arange(12, dtype=np.float32).reshape(3, 1, 4) * -1}
    first = frame_feeds(feeds, STREAM, ref, 0)
    assert np.array_equal(first["h"], feeds["h"]) and np.array_equal(first["x"], feeds["x"][0])
    later = frame_feeds(feeds, STREAM, ref, 2)
    assert np.array_equal(later["h"], ref["h_next"][1]) and np.array_equal(later["x"], feeds["x"][2])
    assert later["sr"] == 16000 and set(later) == {"x", "h", "sr"}


MANIFEST = """\
suite: loop
latency: {warmup: 0, repeat: 0}
models:
  - name: stateful
    onnx: models/stateful.onnx
    inputs:
      x: {files: inputs/*.npy, preprocess: [{load: {}}]}
      h: {preprocess: [{zeros: {shape: [1, 4], dtype: float32}}]}
    stream: {input: x, carry: {h: h_next}}
"""


@pytest.mark.slow
def test_a_streamed_fail_is_localised_at_its_first_divergent_frame_on_the_real_engines(tmp_path: Path, monkeypatch):
    repo = make_repo(tmp_path, monkeypatch, {"loop": MANIFEST}, models.stateful_round, "stateful",
                     {"frames": models.stateful_frames()})
    assert main(["run", "-q"]) == 1
    (case,) = json.loads((repo / "reports/loop.json").read_text())["cases"]
    assert case["verdict"] == "FAIL"
    found = case["localisation"]
    assert found["frame"] == 2
    assert found["status"] == "blamed" and found["op_type"] == "Round" and found["node"] == "round"
    assert found["verified"] != "no" and (Path(found["repro"]) / "ISSUE.md").exists()
    assert "frame 2 of 4" in found["suggestion"]
    with np.load(Path(found["repro"]) / "case.npz") as repro:   # that frame's input of the Round, not the stream
        (value,) = [repro[k] for k in repro.files]
    assert np.array_equal(value.reshape(-1), [0.5, 2.5, 1.5, 0.5])
    assert "at frame 2" in (repo / "reports/loop.md").read_text()
