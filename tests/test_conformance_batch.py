"""The persistent converter (runner/conversion/batch.py) on real node-test models: one child converts several
models with the one-shot child's contract (log and how it died), and a crash is the model's own, not a previous
model's leftovers (it is retried once in a fresh child)."""
from __future__ import annotations

from pathlib import Path

import pytest

from mnn_parity.conformance.build import LIMITS
from mnn_parity.conformance.source import TREE
from mnn_parity.conversion.batch import PersistentConverter
from mnn_parity.conversion.mnnconvert import CONVERTER_SCRIPT, converter_args, judge_log
from mnn_parity.conversion.mnn_env import current_env
from mnn_parity.manifest.spec import ConvertFlags

ROOT = Path(__file__).resolve().parent.parent


def _argv(test: str, output: Path) -> list[str]:
    return ["-f", "ONNX", "--modelFile", str(ROOT / TREE / test / "model.onnx"), "--MNNModel", str(output),
            "--bizCode", "mnn-parity", *converter_args(ConvertFlags())]


@pytest.fixture
def converter():
    made = PersistentConverter()
    yield made
    made.close()


def _convert(converter, test: str, folder: Path) -> tuple[str, str, Path]:
    work = folder / test
    work.mkdir()
    log, crash = converter.run_tool(current_env().python, CONVERTER_SCRIPT, _argv(test, work / "model.mnn"), LIMITS,
                                    work / "convert.log")
    return log, crash, work / "model.mnn"


def test_one_child_converts_several_models_each_with_its_own_log(converter, tmp_path):
    for test, inputs in (("test_relu", "[ x, ]"), ("test_add", "[ x, y, ]"), ("test_matmul_2d", "[ a, b, ]")):
        log, crash, model = _convert(converter, test, tmp_path)
        assert crash == ""
        assert judge_log(log, model)[0], log
        assert f"inputTensors : {inputs}" in log and log.count("Converted Success!") == 1
    assert converter.started == 1


def test_a_crash_is_named_and_the_next_model_still_converts(converter, tmp_path):
    _convert(converter, "test_relu", tmp_path)                   # the child has been used: a crash is retried
    log, crash, model = _convert(converter, "test_dynamicquantizelinear_expanded", tmp_path)
    assert crash == "killed by SIGSEGV" and not model.exists()
    assert converter.started == 2                                # ... once, in a fresh child
    log, crash, model = _convert(converter, "test_abs", tmp_path)
    assert crash == "" and judge_log(log, model)[0]
