"""Repository containment, on real files and symlinks: what a glob or a model would open must lie inside the root."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from mnn_parity.paths import MAX_GLOB_MATCHES, expand_glob, external_data_problems, inside, match_glob
from tests import onnx_models


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """repo/ (the root) with data and links out of it; outside/ beside it holding files a glob must not reach."""
    root, outside = tmp_path / "repo", tmp_path / "outside"
    for folder in (root / "data/sub", root / "x/y", root / "links", outside / "deep"):
        folder.mkdir(parents=True)
    for path in (root / "data/a.npy", root / "data/sub/b.npy", outside / "secret.npy", outside / "s.npz",
                 outside / "deep/x.npy"):
        np.save(path, np.zeros(2, np.float32))
    (root / "links/leak.npy").symlink_to(outside / "secret.npy")
    (root / "links/deep").symlink_to(outside / "deep", target_is_directory=True)
    (root / "links/ok.npy").symlink_to(root / "data/a.npy")
    return root


def rel(root: Path, paths) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def test_inside_follows_symlinks_and_dots(tree: Path):
    assert inside(tree, "data/a.npy") and inside(tree, tree / "data/sub/b.npy") and inside(tree, ".")
    assert inside(tree, "links/ok.npy")                      # a link that stays inside is fine
    assert not inside(tree, "links/leak.npy")                # named, it leads out
    assert not inside(tree, "data/../../outside/secret.npy")
    assert not inside(tree, tree.parent / "outside/secret.npy")
    assert not inside(tree, "/etc/passwd")


def test_a_symlink_loop_is_not_inside(tree: Path):
    (tree / "loop").symlink_to(tree / "loop")
    assert not inside(tree, "loop")


@pytest.mark.parametrize("pattern", ["*/../../outside/*.npy", "x/*/../../../outside/s.npz", "../outside/*.npy",
                                     str(Path("/") / "tmp" / "*")])
def test_dots_after_a_wildcard_cannot_leave(tree: Path, pattern: str):
    files, problems = expand_glob(tree, pattern)
    assert files == []
    assert problems and all("outside the repository root" in p or "leaves the repository root" in p
                            for p in problems), problems
    assert any(str(tree) in p for p in problems)


def test_the_lexical_escape_is_reported_even_when_nothing_matches(tree: Path):
    _, problems = expand_glob(tree, "*/../../nowhere/*.npy")
    assert problems == [f"glob '*/../../nowhere/*.npy' leaves the repository root {tree}"]


def test_a_wildcard_does_not_walk_through_a_link_out(tree: Path):
    files, problems = expand_glob(tree, "links/*.npy")
    assert rel(tree, files) == ["links/ok.npy"]              # the inside link is kept, the other refused
    assert len(problems) == 1 and "links/leak.npy -> " in problems[0] and "secret.npy" in problems[0]

    files, problems = expand_glob(tree, "links/*/x.npy")
    assert files == [] and "links/deep/x.npy" in problems[0] and "outside the repository root" in problems[0]

    files, problems = expand_glob(tree, "links/**/*.npy")
    assert "links/leak.npy" not in rel(tree, files) and "links/deep/x.npy" not in rel(tree, files)
    assert problems


def test_folders_are_not_files_and_no_match_is_said(tree: Path):
    files, problems = expand_glob(tree, "*")
    assert set(rel(tree, files)) == set() and len(problems) == 1
    assert "matches only folders" in problems[0] and "data" in problems[0]

    files, problems = expand_glob(tree, "data/*.png")
    assert files == [] and problems == [f"glob 'data/*.png' matches no file under the repository root {tree}"]

    files, problems = expand_glob(tree, "data/**/*.npy")
    assert rel(tree, files) == ["data/a.npy", "data/sub/b.npy"] and problems == []


def test_double_star_does_not_walk_symlinked_folders(tree: Path):
    """glob's `**` follows them: two links to `.` made it run for minutes, one to `/` would walk the machine."""
    (tree / "data/sub/again").symlink_to(tree / "data", target_is_directory=True)
    (tree / "data/sub/more").symlink_to(tree, target_is_directory=True)
    started = time.monotonic()
    match = match_glob(tree, "**/*.npy")
    assert time.monotonic() - started < 5
    assert rel(tree, match.files) == ["data/a.npy", "data/sub/b.npy", "links/ok.npy"]
    assert rel(tree, match.outside) == ["links/leak.npy"]       # named by `*.npy`; links/deep is not entered
    # a symlinked folder named before the `**` is still searched, and refused if it leads out
    assert rel(tree, match_glob(tree, "links/deep/**/*.npy").outside) == ["links/deep/x.npy"]


def test_glob_semantics_kept(tree: Path):
    (tree / "data/.hidden.npy").write_bytes(b"")
    assert rel(tree, expand_glob(tree, "data/*.npy")[0]) == ["data/a.npy"]          # `*` skips hidden names
    assert rel(tree, expand_glob(tree, "data/.*.npy")[0]) == ["data/.hidden.npy"]
    assert rel(tree, expand_glob(tree, "data/[ab].npy")[0]) == ["data/a.npy"]
    assert rel(tree, expand_glob(tree, "data/sub/../a.npy")[0]) == ["data/sub/../a.npy"]
    assert rel(tree, expand_glob(tree, "./data//a.npy")[0]) == ["data/a.npy"]
    assert expand_glob(tree, "data/a.npy/*")[0] == []


def test_a_glob_of_thousands_of_parts_is_refused_not_a_recursion_error(tree: Path):
    pattern = "data/sub/../" * 1000 + "a.npy"      # stays inside, lexically and really
    files, problems = expand_glob(tree, pattern)
    assert files == [] and problems == [f"glob {pattern[:80]!r}… has more than 64 parts: refused"]


def test_matches_are_counted_and_capped(tree: Path, monkeypatch):
    monkeypatch.setattr("mnn_parity.paths.MAX_GLOB_MATCHES", 1)
    match = match_glob(tree, "data/**/*.npy")
    assert len(match.files) == 1 and "more than 1 paths" in match.problems[0]
    assert MAX_GLOB_MATCHES >= 10_000


# ---------------------------------------------------------------------------------------------------- ONNX external data
def external_model(path: Path) -> Path:
    """conv_relu with its weights in `weights.bin` beside it."""
    onnx_models.conv_relu(path)
    model = onnx.load(str(path))
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    return path


def point_weights_at(path: Path, location: str) -> None:
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(model, str(path))


def test_external_data_inside_the_repository_is_fine(tree: Path):
    model = external_model(tree / "models/conv.onnx")
    assert (tree / "models/weights.bin").is_file()
    assert external_data_problems(model, tree) == []


def test_external_data_pointing_out_is_refused(tree: Path):
    model = external_model(tree / "models/conv.onnx")
    point_weights_at(model, "../../../../../../../../etc/passwd")
    problems = external_data_problems(model, tree)
    assert len(problems) == 1 and "'../../../../../../../../etc/passwd'" in problems[0]
    assert f"outside the repository root {tree}" in problems[0] and "/etc/passwd" in problems[0]


def test_external_data_through_a_symlink_out_is_refused(tree: Path):
    model = external_model(tree / "models/conv.onnx")
    os.replace(tree / "models/weights.bin", tree.parent / "outside/weights.bin")
    (tree / "models/weights.bin").symlink_to(tree.parent / "outside/weights.bin")
    problems = external_data_problems(model, tree)
    assert len(problems) == 1 and "'weights.bin'" in problems[0] and "outside the repository root" in problems[0]


def test_missing_external_data_is_said(tree: Path):
    model = external_model(tree / "models/conv.onnx")
    (tree / "models/weights.bin").unlink()
    problems = external_data_problems(model, tree)
    assert len(problems) == 1 and "'weights.bin' does not exist" in problems[0]


def test_a_model_that_is_a_link_out_is_refused(tree: Path):
    onnx_models.conv_relu(tree.parent / "outside/conv.onnx")
    (tree / "conv.onnx").symlink_to(tree.parent / "outside/conv.onnx")
    problems = external_data_problems(tree / "conv.onnx", tree)
    assert len(problems) == 1 and "outside the repository root" in problems[0]
    assert external_data_problems(tree.parent / "outside/conv.onnx", tree) != []


def test_a_model_linked_from_another_folder_is_checked_against_both_folders(tree: Path):
    """ONNX Runtime resolves `location` against the link's folder, MNN's converter against the real one."""
    model = external_model(tree / "models/real/conv.onnx")
    (tree / "models/real/weights.bin").rename(tree / "models/weights.bin")
    point_weights_at(model, "../weights.bin")
    (tree / "alias.onnx").symlink_to(model)     # beside the link, ../weights.bin is outside the repository
    assert external_data_problems(model, tree) == []
    problems = external_data_problems(tree / "alias.onnx", tree)
    assert len(problems) == 1 and "'../weights.bin'" in problems[0]


def test_an_external_tensor_without_a_location_is_found_though_the_file_never_says_location(tree: Path):
    model = external_model(tree / "models/conv.onnx")
    proto = onnx.load(str(model), load_external_data=False)
    for tensor in proto.graph.initializer:
        del tensor.external_data[:]            # still data_location EXTERNAL: the bytes' only trace of it
    onnx.save_model(proto, str(model))
    assert b"location" not in model.read_bytes()
    assert external_data_problems(model, tree) == ["a tensor has external data without a location"]
