"""Paths in a manifest: nothing opened outside the repository, folders are not cases, missing DVC data is named."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mnn_parity.manifest import ManifestError, load_suite
from tests import onnx_models
from tests.test_paths import external_model, point_weights_at

MANIFEST = """\
suite: paths
models:
  - name: conv
    onnx: {onnx}
    {source}
    inputs:
      x:
        {files}preprocess:
          - load: {{}}
"""
FILES_LINE, CASES_LINE, ONNX_LINE = 8, 5, 4


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    root, outside = tmp_path / "repo", tmp_path / "outside"
    onnx_models.conv_relu(root / "models/conv.onnx")
    for folder in (root / "inputs/sub", root / "x/y", root / "links", outside / "deep"):
        folder.mkdir(parents=True)
    np.save(root / "inputs/a.npy", np.ones((1, 3, 8, 8), np.float32))
    for path in (outside / "secret.npy", outside / "deep/x.npy"):
        np.save(path, np.ones((1, 3, 8, 8), np.float32))
    np.savez(outside / "s.npz", x=np.ones((1, 3, 8, 8), np.float32))
    (root / "links/leak.npy").symlink_to(outside / "secret.npy")
    (root / "links/deep").symlink_to(outside / "deep", target_is_directory=True)
    return root


def issues_of(root: Path, onnx: str = "models/conv.onnx", files: str = "inputs/*.npy", cases: str = "") -> list[str]:
    text = MANIFEST.format(onnx=onnx, source=f"cases: '{cases}'" if cases else "",
                           files=f"files: '{files}'\n        " if files else "")
    (root / "suite.yaml").write_text(text)
    with pytest.raises(ManifestError) as caught:
        load_suite(root / "suite.yaml", root)
    return [str(issue) for issue in caught.value.issues]


def test_the_fixture_manifest_is_good(root: Path):
    (root / "suite.yaml").write_text(MANIFEST.format(onnx="models/conv.onnx", source="",
                                                     files="files: 'inputs/*.npy'\n        "))
    assert load_suite(root / "suite.yaml", root).models[0].inputs["x"].files == ("inputs/*.npy",)


@pytest.mark.parametrize("files", ["*/../../outside/*.npy", "links/*.npy", "links/*/x.npy", "links/**/*.npy"])
def test_a_files_glob_that_reaches_outside_is_refused(root: Path, files: str):
    (found,) = issues_of(root, files=files)
    assert found.startswith(f"suite.yaml:{FILES_LINE}: models[0].inputs.x.files: glob '{files}' ")
    assert f"outside the repository root {root}" in found or f"leaves the repository root {root}" in found


def test_a_cases_glob_that_reaches_outside_is_refused(root: Path):
    found = issues_of(root, files="", cases="x/*/../../../outside/s.npz")
    assert any(f.startswith(f"suite.yaml:{CASES_LINE}: models[0].cases: glob 'x/*/../../../outside/s.npz' ")
               and f"repository root {root}" in f for f in found), found


def test_a_glob_matching_only_folders_is_an_error_not_zero_cases(root: Path):
    (found,) = issues_of(root, files="x/*")
    assert found == (f"suite.yaml:{FILES_LINE}: models[0].inputs.x.files: glob 'x/*' matches only folders, "
                     f"no file, under the repository root {root}: x/y")


def test_a_named_model_linked_outside_is_refused(root: Path):
    onnx_models.conv_relu(root.parent / "outside/conv.onnx")
    (root / "models/link.onnx").symlink_to(root.parent / "outside/conv.onnx")
    (found,) = issues_of(root, onnx="models/link.onnx")
    assert found.startswith(f"suite.yaml:{ONNX_LINE}: models[0].onnx: path 'models/link.onnx' leaves the "
                            f"repository root {root}")


def test_external_data_pointing_outside_fails_validation(root: Path):
    external_model(root / "models/ext.onnx")
    (root / "good.yaml").write_text(MANIFEST.format(onnx="models/ext.onnx", source="",
                                                    files="files: inputs/*.npy\n        "))
    assert load_suite(root / "good.yaml", root).models[0].onnx == root / "models/ext.onnx"   # inside: fine
    point_weights_at(root / "models/ext.onnx", "../../../../../../../../../etc/passwd")
    (found,) = issues_of(root, onnx="models/ext.onnx")
    assert found.startswith(f"suite.yaml:{ONNX_LINE}: models[0].onnx: 'models/ext.onnx': external data "
                            "'../../../../../../../../../etc/passwd' resolves to /etc/passwd, outside the "
                            f"repository root {root}")


# ---------------------------------------------------------------------------------------------------- DVC
def test_a_missing_model_under_a_dvc_tracked_folder_says_how_to_get_it(root: Path):
    (root / "data.dvc").write_text("outs:\n- md5: 0123.dir\n  path: data\n")
    (found,) = issues_of(root, onnx="data/models/det.onnx")
    assert found == (f"suite.yaml:{ONNX_LINE}: models[0].onnx: no file 'data/models/det.onnx' under the repository "
                     f"root {root}: tracked by data.dvc but missing: run `dvc pull data.dvc`")


def test_a_dvc_file_beside_the_model_is_the_one_named(root: Path):
    (root / "data.dvc").write_text("outs:\n- path: data\n")
    (root / "data/models").mkdir(parents=True)
    (root / "data/models/x.onnx.dvc").write_text("outs:\n- md5: abc\n  path: x.onnx\n")
    (found,) = issues_of(root, onnx="data/models/x.onnx")
    assert found.endswith("tracked by data/models/x.onnx.dvc but missing: run `dvc pull data/models/x.onnx.dvc`")


def test_a_glob_matching_nothing_under_dvc_data_says_how_to_get_it(root: Path):
    (root / "data.dvc").write_text("outs:\n- path: data\n")
    (found,) = issues_of(root, files="data/images/*.png")
    assert found == (f"suite.yaml:{FILES_LINE}: models[0].inputs.x.files: glob 'data/images/*.png' matches no file "
                     f"under the repository root {root}: tracked by data.dvc but missing: run `dvc pull data.dvc`")


def test_no_dvc_hint_without_a_dvc_file_or_for_another_path(root: Path):
    (root / "other.dvc").write_text("outs:\n- path: other\n")
    (root / "data.dvc").write_text("outs:\n- path: something-else\n")    # named data.dvc, tracks another path
    (found,) = issues_of(root, onnx="data/models/det.onnx")
    assert found == (f"suite.yaml:{ONNX_LINE}: models[0].onnx: no file 'data/models/det.onnx' under the repository "
                     f"root {root}")
