"""Cases at run time refuse what `validate` refuses: nothing read from outside the repository, `.npz` read safely."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mnn_parity.inputs.cases import Case, build_feeds, list_cases
from mnn_parity.inputs.preprocess import PreprocessError
from mnn_parity.manifest.spec import ConvertFlags, InputSpec, ModelSpec


def model_of(files=None, cases=None, max_cases=None) -> ModelSpec:
    inputs = {"x": InputSpec("x", tuple(files) if files else None, ({"load": {}},) if files else ())}
    return ModelSpec("m", Path("m.onnx"), ConvertFlags(), {}, inputs, {}, cases=cases, max_cases=max_cases)


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    root, outside = tmp_path / "repo", tmp_path / "outside"
    (root / "data/one").mkdir(parents=True)
    (root / "data/two").mkdir()
    outside.mkdir()
    np.save(root / "data/one/a.npy", np.full((2,), 1, np.float32))
    np.save(root / "data/two/a.npy", np.full((2,), 2, np.float32))
    np.save(outside / "secret.npy", np.full((2,), 7, np.float32))
    np.savez(outside / "s.npz", x=np.full((2,), 7, np.float32))
    (root / "data/link.npy").symlink_to(outside / "secret.npy")
    return root


def test_cases_are_the_files_inside_with_unique_names(root: Path):
    cases = list_cases(model_of(files=["data/*/*.npy"]), root)
    assert [(c.name, c.label, c.refused) for c in cases] == [("data/one/a", "data/one/a.npy", ""),
                                                            ("data/two/a", "data/two/a.npy", "")]
    assert build_feeds(model_of(files=["data/*/*.npy"]), cases[1], {})["x"].tolist() == [2, 2]


@pytest.mark.parametrize("pattern", ["data/*.npy", "*/../../outside/*.npy", "data/*/../../../outside/s.npz"])
def test_a_match_leading_outside_is_a_refused_case_that_is_never_read(root: Path, pattern: str):
    model = model_of(cases=pattern) if pattern.endswith(".npz") else model_of(files=[pattern])
    cases = list_cases(model, root)
    assert cases and all("the repository root" in case.refused for case in cases), cases
    for case in cases:
        with pytest.raises(PreprocessError, match="the repository root"):
            build_feeds(model, case, {})


def test_a_file_swapped_for_a_link_after_listing_is_refused_when_read(root: Path):
    model = model_of(files=["data/one/*.npy"])
    (case,) = list_cases(model, root)
    assert case.refused == ""
    os.remove(root / "data/one/a.npy")
    (root / "data/one/a.npy").symlink_to(root.parent / "outside/secret.npy")
    with pytest.raises(PreprocessError, match="now leads to .*outside the repository root"):
        build_feeds(model, case, {})


def test_folders_matched_are_not_cases(root: Path):
    cases = list_cases(model_of(files=["data/*"]), root)     # data/one/, data/two/ and data/link.npy
    assert [(c.label, bool(c.refused)) for c in cases] == [("data/link.npy", True)]


def test_max_cases_keeps_the_first_in_order(root: Path):
    cases = list_cases(model_of(files=["data/*/*.npy"], max_cases=1), root)
    assert [c.label for c in cases] == ["data/one/a.npy"]


def npz_case(root: Path, name: str, **arrays) -> Case:
    path = root / "data" / name
    np.savez(path, **arrays)
    return Case(path.stem, path, f"data/{name}", root.resolve())


def test_npz_cases_are_read_without_pickle_or_complex(root: Path):
    model = model_of(cases="data/*.npz")
    good = npz_case(root, "good.npz", x=np.arange(3, dtype=np.float32))
    assert build_feeds(model, good, {})["x"].tolist() == [0, 1, 2]
    # np.load would hand the complex array over and the engines would drop its imaginary part silently
    with pytest.raises(PreprocessError, match="complex"):
        build_feeds(model, npz_case(root, "complex.npz", x=np.ones(2, np.complex64)), {})
    with pytest.raises(PreprocessError, match="pickle"):
        build_feeds(model, npz_case(root, "objects.npz", x=np.array([{"a": 1}], dtype=object)), {})


def test_an_npz_whose_header_claims_too_much_is_refused_before_inflating(root: Path):
    path = root / "data/huge.npz"
    with zipfile.ZipFile(path, "w") as archive, archive.open("x.npy", "w") as member:
        np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (1 << 31,)})   # 8 GiB claimed, no data
    with pytest.raises(PreprocessError, match="8192 MiB"):
        build_feeds(model_of(cases="data/*.npz"), Case("huge", path, "data/huge.npz", root.resolve()), {})
