"""Conversion variants: one manifest entry expanded into ordinary models, and bad variants named with their line."""
from __future__ import annotations

from pathlib import Path

import pytest

from mnn_parity.manifest import ManifestError, load_suite
from mnn_parity.manifest.variants import expand, split_name
from tests.repos import conv_root

BASE = """\
suite: unit
backends:
  cpu-fp32: {engine: mnn, precision: high}
  cpu-low: {engine: mnn, precision: low}
tolerance: {atol: 1.0e-4, rtol: 1.0e-3}
models:
  - name: conv
    description: the model itself
    onnx: models/conv.onnx
    convert: {fp16: false, optimize_level: 2}
    tolerance: {rtol: 0.01, cosine_min: 0.999}
    backends: [cpu-fp32, cpu-low]
    expect: {fail: "known defect"}
    inputs:
      x: {files: inputs/*.npy, preprocess: [{load: {}}]}
"""


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    return conv_root(tmp_path)


def load(root: Path, variants: str):
    path = root / "suite.yaml"
    path.write_text(BASE + variants)
    return load_suite(path, root)


def issues_of(root: Path, variants: str) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load(root, variants)
    return [str(issue) for issue in caught.value.issues]


def test_variants_expand_into_models_after_the_base_which_is_unchanged(root):
    suite = load(root, """\
    variants:
      fp16: {convert: {fp16: true}}
      w8:
        description: int8 weights
        convert: {weight_quant_bits: 8}
        tolerance: {cosine_min: 0.99}
        backends: [cpu-fp32]
        expect: {fail: "int8 weights collapse", backends: [cpu-fp32]}
""")
    base, fp16, w8 = suite.models
    assert [m.name for m in suite.models] == ["conv", "conv@fp16", "conv@w8"]
    assert (base.family, base.variant) == ("conv", None)
    assert (fp16.family, fp16.variant, w8.family, w8.variant) == ("conv", "fp16", "conv", "w8")
    assert base.convert.fp16 is False and base.expect_fail == "known defect"
    # convert and tolerance merge key by key over the model's
    assert fp16.convert.fp16 is True and fp16.convert.optimize_level == 2
    assert w8.convert.weight_quant_bits == 8 and w8.convert.fp16 is False and w8.convert.optimize_level == 2
    assert w8.tolerance == {"rtol": 0.01, "cosine_min": 0.99}
    assert fp16.tolerance == base.tolerance
    # backends replace; expect is never inherited
    assert fp16.backends == ("cpu-fp32", "cpu-low") and w8.backends == ("cpu-fp32",)
    assert fp16.expect_fail is None
    assert w8.expects_failure_on("cpu-fp32") == "int8 weights collapse"
    assert fp16.inputs == base.inputs and fp16.onnx == base.onnx


def test_each_variant_points_at_its_own_line(root):
    suite = load(root, "    variants:\n      fp16: {convert: {fp16: true}}\n"
                       "      w8: {convert: {weight_quant_bits: 8}}\n")
    lines = {m.name: m.line for m in suite.models}
    assert lines["conv"] == 7
    assert (lines["conv@fp16"], lines["conv@w8"]) == (BASE.count("\n") + 2, BASE.count("\n") + 3)


def test_unknown_key_in_a_variant_is_named_with_path_line_and_hint(root):
    found = issues_of(root, "    variants:\n      fp16: {convert: {fp16: true}, expect_fail: nope}\n")
    line = BASE.count("\n") + 2
    assert found == [f"suite.yaml:{line}: models[0].variants.fp16.expect_fail: unknown key 'expect_fail' "
                     "(did you mean 'expect'?)"]


def test_variant_names_must_be_path_safe(root):
    found = issues_of(root, "    variants:\n      'int8/ema': {convert: {fp16: true}}\n")
    line = BASE.count("\n") + 2
    assert found == [f"suite.yaml:{line}: models[0].variants.int8/ema: 'int8/ema' is not a name: a letter or digit, "
                     "then letters, digits, '_', '.' or '-', at most 64 characters"]


def test_a_variant_must_change_the_conversion(root):
    found = issues_of(root, """\
    variants:
      same: {convert: {fp16: false}}
      fp16: {convert: {fp16: true}}
      half: {convert: {fp16: true}, tolerance: {atol: 1.0}}
""")
    assert any("variants.same.convert: variant 'same' converts exactly as the model itself" in f for f in found)
    assert any("variants.half.convert: variant 'half' converts exactly as variant 'fp16'" in f for f in found)
    assert len(found) == 2


def test_a_variant_needs_a_convert(root):
    found = issues_of(root, "    variants:\n      low: {tolerance: {atol: 1.0}}\n")
    assert len(found) == 1 and "models[0].variants.low: 'convert' is a required property" in found[0]


def test_a_variant_names_backends_of_the_suite(root):
    found = issues_of(root, """\
    variants:
      w8: {convert: {weight_quant_bits: 8}, backends: [cpu-fp23], expect: {fail: x, backends: [gpu]}}
""")
    assert len(found) == 2
    assert any("variants.w8.backends[0]: no backend 'cpu-fp23'" in f for f in found)
    assert any("variants.w8.expect.backends[0]: no backend 'gpu'" in f for f in found)


def test_a_bad_convert_flag_in_a_variant_is_a_schema_error(root):
    found = issues_of(root, "    variants:\n      w9: {convert: {weight_quant_bits: 9}}\n")
    assert len(found) == 1 and "models[0].variants.w9.convert.weight_quant_bits: 9 is not one of" in found[0]


def test_model_names_cannot_hold_the_separator_so_split_name_is_unambiguous(root):
    path = root / "suite.yaml"
    path.write_text(BASE.replace("name: conv", "name: conv@fp16"))
    with pytest.raises(ManifestError) as caught:
        load_suite(path, root)
    assert "models[0].name" in str(caught.value)
    assert split_name("conv@fp16") == ("conv", "fp16") and split_name("conv") == ("conv", None)


def test_expand_drops_variants_from_the_base_and_copies_nothing_shared_by_reference():
    model = {"name": "m", "onnx": "m.onnx", "convert": {"fp16": False}, "expect": {"fail": "x"},
             "variants": {"h": {"convert": {"fp16": True}}}}
    (base, none), (variant, name) = list(expand(model))
    assert none is None and "variants" not in base and base["expect"] == {"fail": "x"}
    assert name == "h" and variant["name"] == "m@h" and "expect" not in variant
    variant["convert"]["weight_quant_bits"] = 8
    assert model["convert"] == {"fp16": False}


def test_a_model_name_selects_its_variants_a_variant_name_only_itself_and_the_pytest_items_stay_exact(root):
    from mnn_parity.execution.plan import RunOptions, plan

    suite = load(root, "    variants:\n      fp16: {convert: {fp16: true}}\n      w8: {convert: {weight_quant_bits: 8}}\n")

    def chosen(models, with_variants=True):
        options = RunOptions(models=frozenset(models), with_variants=with_variants)
        return [item.model.name for item in plan(suite, options, {})]

    assert chosen({"conv"}) == ["conv", "conv@fp16", "conv@w8"]
    assert chosen({"conv@w8"}) == ["conv@w8"]
    assert chosen({"conv"}, with_variants=False) == ["conv"]     # the pytest plugin runs one item's model
    assert chosen({"con"}) == []
