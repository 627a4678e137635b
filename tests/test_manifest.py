"""Manifest validation gathers every problem with its file, key path and line; the tolerance cascade."""
from __future__ import annotations

from pathlib import Path

import pytest

from mnn_parity.manifest import ManifestError, load_suite, load_suites
from mnn_parity.manifest.semantic import shapes_fit
from mnn_parity.manifest.tolerance import Tolerance, cascade
from tests.repos import conv_root

GOOD = """\
suite: unit
backends:
  cpu-fp32: {engine: mnn, device: CPU, precision: high, threads: 1, tolerance: {atol: 0.5}}
  cpu-low: {engine: mnn, precision: low}
tolerance: {atol: 1.0e-4, rtol: 1.0e-3}
models:
  - name: conv
    onnx: models/conv.onnx
    tolerance: {rtol: 0.01, cosine_min: 0.99}
    inputs:
      x:
        files: inputs/*.npy
        preprocess:
          - load: {}
    outputs:
      y: {tolerance: {atol: 0.001, mismatch_max: 0.1}}
"""


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return conv_root(tmp_path)


def write(root: Path, text: str, name: str = "suite.yaml") -> Path:
    path = root / name
    path.write_text(text)
    return path


def issues_of(root: Path, text: str) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load_suite(write(root, text), root)
    return [str(issue) for issue in caught.value.issues]


def test_good_manifest_loads_with_every_runtime_parameter_explicit(root):
    suite = load_suite(write(root, GOOD), root)
    assert suite.name == "unit"
    assert suite.backends["cpu-low"].runtime == {"device": "CPU", "precision": "low", "threads": 1,
                                                 "memory": "normal", "power": "normal"}
    assert suite.models[0].onnx == (root / "models/conv.onnx").resolve()


def test_tolerance_cascades_suite_model_output_backend(root):
    suite = load_suite(write(root, GOOD), root)
    model = suite.models[0]
    # suite atol 1e-4 < output atol 1e-3 < backend atol 0.5 (most specific wins); rtol from the model
    assert suite.tolerance_for(model, "y", "cpu-fp32") == Tolerance(atol=0.5, rtol=0.01, cosine_min=0.99,
                                                                    mismatch_max=0.1)
    assert suite.tolerance_for(model, "y", "cpu-low").atol == 0.001
    assert suite.tolerance_for(model, "other", "cpu-low") == Tolerance(atol=1e-4, rtol=0.01, cosine_min=0.99)


def test_cascade_keeps_earlier_values_for_missing_keys():
    assert cascade({"atol": 1.0}, None, {"rtol": 0.5}) == Tolerance(atol=1.0, rtol=0.5)


def test_every_schema_error_at_once_with_line_and_hint(root):
    text = GOOD.replace("tolerance: {atol: 1.0e-4", "tolerence: {atol: 1.0e-4") \
               .replace("precision: low}", "precision: lowest}") \
               .replace("    outputs:", "    ouputs:")
    found = issues_of(root, text)
    assert "suite.yaml:4: backends.cpu-low.precision: 'lowest' is not one of ['normal', 'high', 'low', 'lowBF16']" in found
    assert "suite.yaml:5: tolerence: unknown key 'tolerence' (did you mean 'tolerance'?)" in found
    assert "suite.yaml:15: models[0].ouputs: unknown key 'ouputs' (did you mean 'outputs'?)" in found
    assert len(found) == 3


def test_unknown_preprocess_step_is_named_with_a_hint(root):
    found = issues_of(root, GOOD.replace("- load: {}", "- lod: {}"))
    assert any("suite.yaml:14: models[0].inputs.x.preprocess[0]" in f and "'lod'" in f and "'load'" in f
               for f in found), found


def test_semantic_checks_name_model_inputs_outputs_and_shapes(root):
    text = GOOD.replace("      x:\n        files", "      x:\n        shape: [1, 3, 9, 8]\n        files") \
               .replace("      y: {tolerance", "      why: {tolerance")
    found = issues_of(root, text)
    assert any("models[0].inputs.x.shape: shape [1, 3, 9, 8] does not fit the model's [1, 3, 8, 8]" in f for f in found)
    assert any("models[0].outputs.why: the model has no output 'why'" in f for f in found)


def test_yaml_syntax_error_names_the_line(root):
    found = issues_of(root, "suite: x\nmodels: [\n  - name: a\n")
    assert len(found) == 1 and found[0].startswith("suite.yaml:") and "not valid YAML" in found[0]


def test_missing_required_keys_and_wrong_types(root):
    found = issues_of(root, "suite: 3\nmodels:\n  - onnx: a.onnx\n")
    assert any("suite: 3 is not of type 'string'" in f for f in found)
    assert any("models[0]: 'name' is a required property" in f for f in found)


def test_duplicate_suite_names_across_files(root):
    write(root, GOOD, "a.yaml")
    write(root, GOOD, "b.yaml")
    with pytest.raises(ManifestError) as caught:
        load_suites([root / "a.yaml", root / "b.yaml"], root)
    assert "suite name 'unit' is also used by" in str(caught.value)


def test_backend_names_in_models_must_exist(root):
    found = issues_of(root, GOOD.replace("    tolerance: {rtol", "    backends: [cpu-fp16]\n    tolerance: {rtol"))
    assert any("models[0].backends[0]: no backend 'cpu-fp16' in this suite" in f for f in found)


@pytest.mark.parametrize("declared, actual, fits", [
    ([1, 3, None, None], (1, 3, 224, 224), True),
    ([1, 3, 224, 224], (1, 3, None, None), True),
    ([3, 1, 224, 224], (1, 3, 224, 224), False),
    ([1, 3, 224], (1, 3, 224, 224), False),
    ([5], (), True),
])
def test_shapes_fit(declared, actual, fits):
    assert shapes_fit(declared, actual) is fits


def test_exponent_floats_without_a_dot_are_numbers(root):
    """YAML 1.1 (PyYAML's default) reads `1e-4` as a string; manifests read it as YAML 1.2 does."""
    suite = load_suite(write(root, GOOD.replace("tolerance: {atol: 1.0e-4", "tolerance: {atol: 1e-4")), root)
    assert suite.tolerance["atol"] == 1e-4


def test_a_bad_option_of_a_known_step_is_reported_on_the_option_not_as_an_unknown_step(root):
    found = issues_of(root, GOOD.replace("- load: {}", "- decode: {color: RGB}\n          - resize: {height: TODO, width: 8}"))
    assert any("models[0].inputs.x.preprocess[1].resize.height: 'TODO' is not of type 'integer'" in f for f in found), found
    assert not any("unknown step" in f for f in found)
