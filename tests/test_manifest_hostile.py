"""Hostile manifests: each refused quickly, with `file:line: key.path: message`, all problems at once, exit 2."""
from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

from mnn_parity.cli import main
from mnn_parity.manifest import ManifestError, load_suite
from tests.test_manifest import GOOD, issues_of, root, write  # noqa: F401  (root is a fixture)


def validate(root: Path, text: str, capsys) -> tuple[int, list[str]]:
    """What `mnn-parity validate` says of this manifest: its exit status and its lines."""
    write(root, text)
    capsys.readouterr()
    status = main(["--root", str(root), "validate", str(root / "suite.yaml")])
    err = capsys.readouterr().err
    assert "internal error" not in err and "Traceback" not in err, err
    return status, err.splitlines()


def test_a_key_written_twice_is_an_error_naming_both_lines(root, capsys):
    text = GOOD.replace("    tolerance: {rtol: 0.01, cosine_min: 0.99}\n",
                        "    tolerance: {rtol: 0.01, cosine_min: 0.99}\n    onnx: models/other.onnx\n")
    text = text.replace("suite: unit\n", "suite: unit\nsuite: unit\n")
    status, err = validate(root, text, capsys)
    assert status == 2
    assert "suite.yaml:2: suite: key 'suite' is written twice, on lines 1 and 2; " \
           "YAML would silently keep only the last" in err
    assert any(line.startswith("suite.yaml:11: models[0].onnx: key 'onnx' is written twice, on lines 9 and 11")
               for line in err), err


def test_a_merge_may_override_a_key_without_being_a_duplicate(root):
    text = GOOD.replace("tolerance: {atol: 1.0e-4, rtol: 1.0e-3}",
                        "tolerance: &t {atol: 1.0e-4, rtol: 1.0e-3}\nlatency: {warmup: 1}") \
               .replace("    tolerance: {rtol: 0.01, cosine_min: 0.99}", "    tolerance: {<<: *t, rtol: 0.01}")
    suite = load_suite(write(root, text), root)
    assert suite.models[0].tolerance == {"atol": 1e-4, "rtol": 0.01}


BILLION_LAUGHS = "lol0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"lol{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))


def test_an_alias_bomb_is_refused_fast_and_small(root, capsys):
    assert len(BILLION_LAUGHS) < 600        # expands to 9^9 ~ 387 million strings
    before, started = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.monotonic()
    status, err = validate(root, BILLION_LAUGHS, capsys)
    assert time.monotonic() - started < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000     # KiB
    problems = [line for line in err if line.startswith("suite.yaml:")]
    assert status == 2 and len(problems) == 1, err
    assert "aliases expand this to" in problems[0] and "refused" in problems[0]


def test_an_alias_that_contains_itself_is_refused(root):
    (found,) = issues_of(root, "suite: &s [a, *s]\n")
    assert found == "suite.yaml:1: <top>: an alias refers to a value that contains it: refused"


@pytest.mark.parametrize("text, line", [
    ("suite: " + "[" * 500 + "]" * 500 + "\n", 1),
    ("suite: x\n" + "".join("  " * i + f"k{i}:\n" for i in range(500)), 33),
    ("suite: x\nmodels:\n" + "".join("  " * i + "- \n" for i in range(1, 500)), 34),
])
def test_deep_nesting_is_a_clear_error_not_a_recursion_error(root, capsys, text, line):
    status, err = validate(root, text, capsys)
    assert status == 2 and err[0] == f"suite.yaml:{line}: <top>: nested deeper than 32 levels: refused", err


def test_aliases_cannot_nest_deeper_than_text_may(root):
    levels = "[" * 10 + "{}" + "]" * 10
    text = f"a0: &a0 {levels}\n" + "".join(f"a{i}: &a{i} {levels.replace('{}', f'*a{i - 1}')}\n" for i in range(1, 5))
    (found,) = issues_of(root, text)
    assert "aliases nest this 33 levels deep, over the 32" in found


@pytest.mark.parametrize("old, new, where", [
    ("atol: 1.0e-4", "atol: .nan", "suite.yaml:5: tolerance.atol"),
    ("cosine_min: 0.99}", "cosine_min: .nan}", "suite.yaml:9: models[0].tolerance.cosine_min"),
    ("mismatch_max: 0.1", "mismatch_max: .NaN", "suite.yaml:16: models[0].outputs.y.tolerance.mismatch_max"),
    ("tolerance: {atol: 0.5}", "tolerance: {atol: .inf}", "suite.yaml:3: backends.cpu-fp32.tolerance.atol"),
    ("suite: unit\n", "suite: unit\nlimits: {timeout_s: .inf}\n", "suite.yaml:2: limits.timeout_s"),
    ("suite: unit\n", "suite: unit\nlatency: {slowdown_max: .inf}\n", "suite.yaml:2: latency.slowdown_max"),
    ("- load: {}", "- load: {}\n          - scale: {factor: -.inf}", "suite.yaml:15: models[0].inputs.x.preprocess[1].scale.factor"),
])
def test_non_finite_numbers_are_refused_where_they_are_written(root, capsys, old, new, where):
    assert old in GOOD
    status, err = validate(root, GOOD.replace(old, new), capsys)
    assert status == 2
    assert any(line.startswith(f"{where}: ") and "is not a finite number" in line for line in err), err


@pytest.mark.parametrize("name", ['"unit\\n"', "u" * 65, '"unit/../x"', '""', '"-unit"'])
def test_a_suite_name_must_be_a_plain_short_name(root, name):
    found = issues_of(root, GOOD.replace("suite: unit", f"suite: {name}"))
    assert len(found) == 1 and found[0].startswith("suite.yaml:1: suite: "), found


def test_a_64_character_name_is_fine(root):
    assert load_suite(write(root, GOOD.replace("suite: unit", "suite: " + "u" * 64)), root).name == "u" * 64


@pytest.mark.parametrize("old, new, where", [
    ("  cpu-low:", '  "cpu-low\\n":', "suite.yaml:4: backends['cpu-low\\n']"),
    ("  - name: conv", '  - name: "conv\\n"', "suite.yaml:7: models[0].name"),
])
def test_backend_and_model_names_are_anchored_too(root, old, new, where):
    found = issues_of(root, GOOD.replace(old, new))
    assert any(f.startswith(where) and "is not a name" in f for f in found), found


def test_descriptions_are_capped_and_not_quoted_back_whole(root):
    found = issues_of(root, GOOD.replace("suite: unit\n", "suite: unit\ndescription: " + "d" * 50_000 + "\n"))
    assert found == ["suite.yaml:2: description: 50000 characters, over the 2000 allowed"]
    assert load_suite(write(root, GOOD.replace("suite: unit\n", "suite: unit\ndescription: " + "d" * 2000 + "\n")),
                      root).description == "d" * 2000


def test_an_oversized_manifest_is_refused_unread(root):
    found = issues_of(root, GOOD + "#" * (3 << 20) + "\n")
    assert found == ["suite.yaml: <top>: over 2 MiB, more than a manifest is: refused"]


def test_keys_that_yaml_reads_as_numbers_booleans_or_null_are_placed_on_their_own_line(root):
    found = issues_of(root, GOOD + "1: x\nnull: y\ntrue: z\n1.5: w\n")
    assert found == ["suite.yaml:17: 1: unknown key '1'", "suite.yaml:18: null: unknown key 'null'",
                     "suite.yaml:19: true: unknown key 'true'", "suite.yaml:20: 1.5: unknown key '1.5'"]


def test_an_output_named_by_digits_matches_the_model_output_of_that_name(root):
    """PyTorch exports name outputs `345`; `345:` in YAML is that name, not the integer."""
    found = issues_of(root, GOOD.replace("      y: {tolerance", "      345: {tolerance"))
    assert found == ["suite.yaml:16: models[0].outputs.345: the model has no output '345'; it has ['y']"]


def test_a_list_as_a_key_is_a_yaml_error_with_its_line(root):
    (found,) = issues_of(root, GOOD + "? [a, b]\n: c\n")
    assert found.startswith("suite.yaml:17: <top>: not valid YAML: found a list or mapping as a key")


def test_a_bad_manifest_exits_2_with_every_problem(root, capsys):
    text = GOOD.replace("atol: 0.001", "atol: .nan").replace("suite: unit", "suite: unit\nsuite: unit")
    status, err = validate(root, text, capsys)
    assert status == 2 and len([line for line in err if line.startswith("suite.yaml:")]) == 2, err
    with pytest.raises(ManifestError):
        load_suite(root / "suite.yaml", root)
