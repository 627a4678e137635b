"""Conversion through MNN's converter extension: judged by its log, cached, flags mapped, failures named."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mnn_parity.conversion.mnnconvert import (ConverterEnv, cache_key, convert, converter_args, judge_log,
                                              parse_unsupported)
from mnn_parity.manifest.spec import ConvertFlags
from mnn_parity.hashing import sha256_file
from tests import onnx_models

ENV = ConverterEnv(Path(sys.executable), "3.6.1")


def test_success_is_cached_and_a_flag_change_converts_again(tmp_path: Path):
    model = onnx_models.conv_relu(tmp_path / "conv.onnx")
    first = convert(model, ConvertFlags(), ENV, tmp_path / "cache")
    again = convert(model, ConvertFlags(), ENV, tmp_path / "cache")
    fp16 = convert(model, ConvertFlags(fp16=True), ENV, tmp_path / "cache")
    assert first.ok and not first.cached and "Converted Success!" in first.log
    assert again.cached and again.mnn_model == first.mnn_model and again.mnn_sha256 == first.mnn_sha256
    assert first.onnx_sha256 == again.onnx_sha256 == sha256_file(model)
    assert fp16.ok and not fp16.cached and fp16.mnn_model != first.mnn_model
    assert fp16.mnn_model.stat().st_size < first.mnn_model.stat().st_size or fp16.mnn_sha256 != first.mnn_sha256


def test_unsupported_op_is_named_and_the_failure_is_remembered(tmp_path: Path):
    model = onnx_models.conv_integer(tmp_path / "convint.onnx")
    failed = convert(model, ConvertFlags(), ENV, tmp_path / "cache")
    assert not failed.ok and failed.unsupported_ops == ("ConvInteger",)
    assert failed.reason == "MNN cannot convert op(s): ConvInteger"
    assert failed.mnn_model is None
    assert convert(model, ConvertFlags(), ENV, tmp_path / "cache").cached


def test_a_file_that_is_not_onnx_fails_with_the_converters_words(tmp_path: Path):
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    failed = convert(junk, ConvertFlags(), ENV, tmp_path / "cache")
    assert not failed.ok and "did not report success" in failed.reason and "file format" in failed.reason


def test_the_converter_never_touches_the_network_or_mnn_tools(tmp_path: Path, monkeypatch):
    """The child blocks MNN.tools (which pip-installs a logging SDK) and refuses sockets; success proves it ran."""
    model = onnx_models.conv_relu(tmp_path / "conv.onnx")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    conversion = convert(model, ConvertFlags(), ENV, tmp_path / "cache")
    assert conversion.ok
    assert "aliyun" not in conversion.log and "pip install" not in conversion.log


@pytest.mark.parametrize("flags, expected", [
    (ConvertFlags(), ["--optimizeLevel", "1"]),
    (ConvertFlags(fp16=True, weight_quant_bits=8, optimize_level=2),
     ["--optimizeLevel", "2", "--fp16", "--weightQuantBits", "8"]),
    (ConvertFlags(keep_input_format=False, weight_quant_asymmetric=True, weight_quant_bits=4),
     ["--optimizeLevel", "1", "--weightQuantBits", "4", "--weightQuantAsymmetric", "--keepInputFormat=false"]),
    (ConvertFlags.from_manifest({"extra_args": ["--saveStaticModel"]}), ["--optimizeLevel", "1", "--saveStaticModel"]),
])
def test_manifest_flags_map_to_converter_arguments(flags, expected):
    assert converter_args(flags) == expected


def test_cache_key_depends_on_model_version_and_flags():
    base = cache_key("a" * 64, "3.6.1", ConvertFlags())
    assert base == cache_key("a" * 64, "3.6.1", ConvertFlags())
    assert len({base, cache_key("b" * 64, "3.6.1", ConvertFlags()), cache_key("a" * 64, "3.5.0", ConvertFlags()),
                cache_key("a" * 64, "3.6.1", ConvertFlags(fp16=True))}) == 4


def test_judge_log_needs_both_the_success_line_and_the_file(tmp_path: Path):
    output = tmp_path / "m.mnn"
    assert judge_log("Converted Success!", output) == (False, "converter reported success but wrote no model file", ())
    output.write_bytes(b"x")
    assert judge_log("Start to Optimize\nConverted Success!\n", output)[0]
    failed = judge_log("[12:00] :220: These Op Not Support: ONNX::ConvInteger ONNX::DynamicQuantizeLSTM \n"
                       "Converted Failed!", output)
    assert failed == (False, "MNN cannot convert op(s): ConvInteger, DynamicQuantizeLSTM",
                      ("ConvInteger", "DynamicQuantizeLSTM"))
    assert parse_unsupported("nothing here") == ()
