"""`mnn-parity init [DIR]`: prepare a team's own repository for suites, goldens and reports.

Each step first looks at what is there and does only what is missing, so a second run changes nothing; nothing the
team wrote is overwritten (`.gitignore` is appended to, an existing manifest or DVC set-up is kept). DVC runs
through the venv's own `python -m dvc` in a child that dies with us, as `bless` runs `dvc add goldens`.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from mnn_parity.bundled.dvc import DVC_FILE, dvc_cli
from mnn_parity.bundled.sources import DATA_DIR, expected_tree, load_sources
from mnn_parity.rootdir import MARKER

EXAMPLE = Path("suites") / "example.yaml.sample"
GOLDENS = "goldens"          # session.SessionConfig.goldens: where a bless writes, tracked by goldens.dvc

_MARKER_TEXT = ("# mnn-parity: this folder is the repository root every manifest path is relative to.\n"
                "# Written by `mnn-parity init` because no .git sits here; keep it.\n")


class InitError(Exception):
    pass


@dataclass(frozen=True)
class InitResult:
    root: Path
    changes: tuple[str, ...]     # what this run did, one line each; empty when everything was already there
    scm: str                     # "git" (root of a git repository), "subdir" (inside one), "none"


def scm_kind(root: Path) -> str:
    if (root / ".git").exists():
        return "git"
    return "subdir" if any((parent / ".git").exists() for parent in root.parents) else "none"


def init_repository(root: Path) -> InitResult:
    """Prepare `root` (created if missing); raises InitError when DVC cannot be set up."""
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    scm = scm_kind(root)
    changes = _dvc(root, scm) + _marker(root, scm) + _ignore(root) + _example(root)
    return InitResult(root, tuple(changes), scm)


def _run_dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return dvc_cli(root, *args)
    except OSError as error:
        raise InitError(f"cannot start DVC (python -m dvc): {error}") from error


def _dvc(root: Path, scm: str) -> list[str]:
    changes = []
    if not (root / ".dvc").is_dir():
        # Inside a bigger git repository DVC wants --subdir; with no git at all, --no-scm.
        flags = {"git": (), "subdir": ("--subdir",), "none": ("--no-scm",)}[scm]
        done = _run_dvc(root, "init", "--quiet", *flags)
        if done.returncode != 0:
            raise InitError(f"`dvc init {' '.join(flags)}` failed: {(done.stderr or done.stdout).strip()}")
        changes.append("initialised DVC in .dvc/" + {"git": "", "subdir": " (--subdir: inside a larger git repository)",
                                                       "none": " (--no-scm: no git repository here)"}[scm])
    current = _run_dvc(root, "config", "--project", "core.analytics")
    if current.stdout.strip().lower() != "false":
        # DVC otherwise reports usage from every `dvc` call of every teammate; the design promises no network.
        done = _run_dvc(root, "config", "--project", "core.analytics", "false")
        if done.returncode != 0:
            raise InitError(f"cannot switch DVC analytics off: {(done.stderr or done.stdout).strip()}")
        changes.append("switched DVC analytics off (.dvc/config: core.analytics = false)")
    return changes


def _marker(root: Path, scm: str) -> list[str]:
    if scm == "git" or (root / MARKER).exists():
        return []
    (root / MARKER).write_text(_MARKER_TEXT, encoding="utf-8")
    return [f"wrote {MARKER} (marks the repository root where no .git does)"]


def ignored() -> tuple[str, ...]:
    """The conversion cache; reports, rewritten by every run; the folder beside goldens/ where a bless builds the
    new tree and keeps its lock; and goldens/ itself, which DVC stores and git versions through goldens.dvc.
    `dvc add goldens` would append `/goldens` to .gitignore at the first bless, a change nobody commits (the
    message says `git add goldens.dvc`); a teammate's `dvc pull` would then leave goldens/ untracked by git,
    one `git add -A` away from committing the arrays. Ignored here, it is committed with what init wrote, and
    DVC, seeing the folder ignored already, adds nothing."""
    from mnn_parity.goldens import GoldenStore

    return ".cache/", "reports/", GoldenStore(Path(GOLDENS)).staging.name + "/", f"/{GOLDENS}/"


def _ignore(root: Path) -> list[str]:
    path = root / ".gitignore"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    # `.cache`, `/.cache` and `/.cache/` all already ignore the folder: adding `.cache/` would only duplicate it
    present = {line.strip().strip("/") for line in text.splitlines()}
    missing = [entry for entry in ignored() if entry.strip("/") not in present]
    if not missing:
        return []
    prefix = "" if not text or text.endswith("\n") else "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(prefix + "# mnn-parity: conversion cache, reports, bless's staging folder, goldens (DVC stores "
                     "them; git versions goldens.dvc)\n"
                     + "".join(f"{entry}\n" for entry in missing))
    return [f".gitignore: added {', '.join(missing)}"]


def _example(root: Path) -> list[str]:
    target = root / EXAMPLE
    if target.exists():
        return []
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(EXAMPLE_MANIFEST, encoding="utf-8")
    return [f"wrote {EXAMPLE.as_posix()} (a commented example manifest)"]


def next_steps(result: InitResult) -> str:
    head = ([f"{result.root}: prepared for mnn-parity"] + [f"  {change}" for change in result.changes]
            if result.changes else [f"{result.root}: already prepared for mnn-parity; nothing changed"])
    commit = ([f"  commit what init wrote: git add .gitignore .dvc .dvcignore suites"
               f"{' ' + MARKER if result.scm == 'subdir' else ''}", ""] if result.scm != "none" and result.changes
              else [])
    return "\n".join(head + [""] + commit + [
        "Next steps:",
        "  1. keep your model and real inputs in a folder of your own here, say models/ (`dvc add models` if large)",
        "  2. mnn-parity new models/model.onnx    # writes suites/model.yaml from the model's inputs and outputs",
        f"     (or copy {EXAMPLE.as_posix()} to suites/NAME.yaml: every key is explained in it)",
        "  3. fill in every TODO, then: mnn-parity validate",
        "  4. mnn-parity run                      # writes reports/NAME.md, NAME.html and NAME.json",
        f"  5. mnn-parity bless                    # records {GOLDENS}/, tracked by {GOLDENS}.dvc",
        f"  6. git add {GOLDENS}.dvc && dvc push     # share them (a DVC remote first: dvc remote add -d NAME URL,",
        "                                         # then commit .dvc/config)",
        "  pytest suites/ runs the same suites as tests (pip install pytest; pytest-xdist for -n)",
    ])


def pins_bundled_data(root: Path) -> bool:
    """Whether `root` holds mnn-parity's own bundled data set: a data.dvc tracking data/ with exactly the files the
    bundled source table pins. A team's repository has no such data.dvc, or one of its own, which `data restore`
    must never rebuild over."""
    from mnn_parity.manifest.dvc import dvc_outs

    outs = dvc_outs(root / DVC_FILE)
    if outs is None or len(outs) != 1 or not isinstance(outs[0], dict):
        return False
    return outs[0].get("path") == DATA_DIR and outs[0].get("nfiles") == len(expected_tree(load_sources()))


EXAMPLE_MANIFEST = """\
# An example suite manifest, written by `mnn-parity init`. Files ending in .sample are not read: copy this one
# to suites/NAME.yaml and fill in every TODO, or let `mnn-parity new path/to/model.onnx` write a manifest from
# your model's own inputs and outputs. Then check it: mnn-parity validate suites/NAME.yaml
# Every path is relative to the repository root (the folder holding .git or .mnn-parity) and must stay inside it.

# The suite's name (letters, digits, _ . -): the reports are reports/NAME.md and reports/NAME.json.
suite: example
# One sentence, shown at the top of the report.
description: TODO what this suite checks, and on which data
# What MNN is compared against: ONNX Runtime on the CPU; one thread, so that results do not depend on load.
reference: {engine: onnxruntime, threads: 1}
# The MNN configurations you ship; every case runs on each. Parameters left out are set explicitly to
# CPU / precision high / 1 thread and recorded. A backend's tolerance loosens every output run on it:
# `precision: low` uses fp16 arithmetic on ARM CPUs.
backends:
  cpu-fp32: {engine: mnn, device: CPU, precision: high, threads: 1}
  cpu-low: {engine: mnn, device: CPU, precision: low, threads: 2, tolerance: {cosine_min: 0.999}}
# How close MNN must stay. An element passes when |mnn - ref| <= atol + rtol * |ref|; cosine_min is for the
# whole output; mismatch_max (default 0) is the fraction of elements allowed to fail. Tolerances cascade
# suite -> model -> output -> backend, the most specific winning.
tolerance: {atol: 1.0e-4, rtol: 1.0e-3, cosine_min: 0.9999}
# Each conversion and engine call runs in a child process under these caps: a crash fails the case, not the run.
limits: {timeout_s: 300, memory_mb: 8192}
models:
  # The model's name in the report, unique in the suite.
  - name: TODO-name-it
    # The ONNX file, in a folder of your own (say models/; `dvc add models` if it is large). Not data/: that
    # name belongs to mnn-parity's bundled data set.
    onnx: TODO/path/to/model.onnx
    # Converter flags: fp16 weights, weight quantisation (0 off, or 2-8 bits), MNN's graph optimisation level.
    convert: {fp16: false, weight_quant_bits: 0, optimize_level: 1}
    inputs:
      # One entry per model input, under the model's own input name (`mnn-parity new` lists them for you).
      TODO-input-name:
        # A glob, or a list of globs, of real inputs: one case per file.
        files: TODO/path/to/inputs/*.png
        # How a file becomes the tensor; the same tensor goes to both engines. The first step reads the file
        # (decode: images, audio: WAV, load: .npy/.npz); then match the model's training-time preprocessing.
        preprocess:
          - decode: {color: RGB}
          - resize: {height: TODO, width: TODO}
          - normalize: {scale: 0.00392156862745098, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
          - layout: NCHW
          - dtype: float32
    # Every output is compared; list one here to give it its own settings, by the model's output name.
    outputs:
      TODO-output-name:
        # This output's own tolerance, over the suite's.
        tolerance: {atol: 1.0e-3}
        # For class scores: MNN must rank the same top k classes along the class axis (1 for [N, C, ...],
        # the last for [N, T, C] sequences). Delete it for any other output.
        topk: {k: 1, axis: 1}
    # A known failure: reported as XFAIL (exit status 0), and a pass as XPASS, which is news.
    # expect: {fail: "why, and where it is tracked"}
    # Only the first N files: max_cases: 10.  Only some backends: backends: [cpu-fp32].
"""
