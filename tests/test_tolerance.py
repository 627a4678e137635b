"""Tolerances and their cascade: suite → model → output → backend, the most specific level winning (DESIGN §4).

Built from the typed suite directly, so these tests need no manifest file, no engine and no data.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from mnn_parity.manifest.spec import (BackendSpec, ConvertFlags, LatencySpec, Limits, ModelSpec, OutputSpec, Suite,
                                      TopK)
from mnn_parity.manifest.tolerance import Tolerance, cascade

DEFAULT = Tolerance()


def make_suite(suite_tol=None, model_tol=None, output_tol=None, backend_tol=None) -> tuple[Suite, ModelSpec]:
    model = ModelSpec(name="det", onnx=Path("/m/det.onnx"), convert=ConvertFlags(), tolerance=dict(model_tol or {}),
                      inputs={}, outputs={"boxes": OutputSpec("boxes", dict(output_tol or {})),
                                          "scores": OutputSpec("scores", topk=TopK(k=1))})
    backends = {"cpu-fp32": BackendSpec("cpu-fp32", {"device": "CPU", "precision": "high"}),
                "cpu-low": BackendSpec("cpu-low", {"device": "CPU", "precision": "low"}, dict(backend_tol or {}))}
    suite = Suite(name="s", description="", path=Path("/m/s.yaml"), root=Path("/m"), reference={},
                  backends=backends, tolerance=dict(suite_tol or {}), limits=Limits(), latency=LatencySpec(),
                  models=(model,))
    return suite, model


# --- Tolerance ----------------------------------------------------------------------------------------------------

def test_defaults():
    assert DEFAULT.as_dict() == {"atol": 1e-4, "rtol": 1e-3, "cosine_min": 0.9999, "mismatch_max": 0.0}


def test_overrides_replace_only_the_keys_given_and_make_floats():
    t = DEFAULT.with_overrides({"atol": 1, "mismatch_max": "0.25"})
    assert t == Tolerance(atol=1.0, rtol=1e-3, cosine_min=0.9999, mismatch_max=0.25)
    assert type(t.atol) is float and type(t.mismatch_max) is float
    assert DEFAULT.atol == 1e-4                       # frozen: the original is untouched


def test_unknown_keys_are_ignored():
    # the schema rejects them in a manifest; a hand-made map must not crash or add attributes
    assert DEFAULT.with_overrides({"atol": 0.5, "topk": 3}) == Tolerance(atol=0.5)


@pytest.mark.parametrize("nothing", [None, {}])
def test_no_overrides_is_the_same_tolerance(nothing):
    base = Tolerance(atol=0.3)
    assert base.with_overrides(nothing) is base


def test_cascade_applies_levels_in_order_and_skips_missing_ones():
    assert cascade() == DEFAULT
    assert cascade(None, {}) == DEFAULT
    t = cascade({"atol": 1.0, "rtol": 0.5}, None, {"atol": 2.0}, {"cosine_min": 0.9})
    assert t == Tolerance(atol=2.0, rtol=0.5, cosine_min=0.9, mismatch_max=0.0)
    # a later level wins, whatever its value (0 is a value, not "unset")
    assert cascade({"atol": 1.0}, {"atol": 0}).atol == 0.0


# --- Suite.tolerance_for: the cascade a run judges with -----------------------------------------------------------

def test_each_level_contributes_the_keys_it_sets():
    suite, model = make_suite(suite_tol={"mismatch_max": 0.01}, model_tol={"cosine_min": 0.99},
                              output_tol={"rtol": 0.02}, backend_tol={"atol": 0.03})
    assert suite.tolerance_for(model, "boxes", "cpu-low") == Tolerance(atol=0.03, rtol=0.02, cosine_min=0.99,
                                                                       mismatch_max=0.01)


def test_suite_level_tolerance_applies_to_every_output_and_backend():
    suite, model = make_suite(suite_tol={"atol": 0.5, "mismatch_max": 0.1})
    for output in ("boxes", "scores", "not declared"):
        for backend in ("cpu-fp32", "cpu-low"):
            t = suite.tolerance_for(model, output, backend)
            assert (t.atol, t.mismatch_max) == (0.5, 0.1)
            assert (t.rtol, t.cosine_min) == (DEFAULT.rtol, DEFAULT.cosine_min)


def test_the_most_specific_level_wins():
    levels = dict(suite_tol={"atol": 1.0}, model_tol={"atol": 2.0}, output_tol={"atol": 3.0},
                  backend_tol={"atol": 4.0})
    suite, model = make_suite(**levels)
    assert suite.tolerance_for(model, "boxes", "cpu-low").atol == 4.0    # backend: precision is its property
    assert suite.tolerance_for(model, "boxes", "cpu-fp32").atol == 3.0   # that backend sets nothing
    assert suite.tolerance_for(model, "scores", "cpu-fp32").atol == 2.0  # that output sets nothing
    suite, model = make_suite(suite_tol={"atol": 1.0})
    assert suite.tolerance_for(model, "boxes", "cpu-fp32").atol == 1.0


def test_backend_beats_output_even_when_looser():
    # `precision: low` loosens every output of every model run on it, including outputs with their own tolerance
    suite, model = make_suite(output_tol={"atol": 1e-5, "cosine_min": 0.99999}, backend_tol={"atol": 1e-2})
    t = suite.tolerance_for(model, "boxes", "cpu-low")
    assert t.atol == 1e-2
    assert t.cosine_min == 0.99999


def test_an_output_the_manifest_does_not_declare_gets_the_model_level():
    suite, model = make_suite(model_tol={"rtol": 0.2}, output_tol={"rtol": 0.7})
    assert suite.tolerance_for(model, "not declared", "cpu-fp32").rtol == 0.2
    assert suite.tolerance_for(model, "", "cpu-fp32").rtol == 0.2
    assert suite.tolerance_for(model, "boxes", "cpu-fp32").rtol == 0.7


def test_an_unknown_backend_is_an_error_not_a_default():
    suite, model = make_suite()
    with pytest.raises(KeyError):
        suite.tolerance_for(model, "boxes", "gpu")
