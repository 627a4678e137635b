#!/usr/bin/env python3
"""Mutation testing of comparison, the tolerance cascade and drift, on a copy of the code.

    .venv/bin/python scripts/mutation.py [--jobs N] [--keep]

What it does, never touching the working tree (others run their tests in it while this runs):
1. copies runner/ to <tmp>/src/mnn_parity/ (schemas/ to <tmp>/src/mnn_parity/schemas/, as the installed package
   has them) and tests/ to <tmp>/tests/, and checks that `import mnn_parity` there resolves to the copy and not to
   the editable install;
2. runs the focused fast tests once on the unmutated copy (they must pass);
3. runs mutmut 3.x on the copy (it writes its mutants into <tmp>/mutants/, runs only the tests that reach each
   mutated function, in forked workers), restricted to the functions listed in scripts/mutation.toml;
4. runs the `[[extra]]` mutants of scripts/mutation.toml (arguments swapped, clauses and statements dropped: what
   mutmut's operators do not generate), each in its own copy, with
   `python -m pytest -x -q -p no:cacheprovider <tests>` and PYTHONPATH pointing at that copy;
5. prints mutants, killed, survived, timeouts and the score, and every survivor as `file:line: original → mutant`.
   Survivors listed as `[[equivalent]]` (matched by file and line text) are excluded from the score.

Exit status: 0 when the score reaches `fail_under`, 1 below it, 2 when the setup fails (tests failing on the
unmutated copy, an `[[extra]]` whose original text is gone, the copy not being what is imported).
Needs mutmut 3.x in the same environment: `.venv/bin/python -m pip install 'mutmut>=3.8,<4'`.
"""
from __future__ import annotations

import argparse
import ast
import concurrent.futures
import fnmatch
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIG = Path(__file__).resolve().with_suffix(".toml")
PACKAGE = "mnn_parity"
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")


@dataclass
class Outcome:
    name: str              # mutmut's mutant name, or "extra:<id>"
    status: str            # killed, survived, timeout, no tests, suspicious, segfault, ...
    file: str = ""         # relative to runner/
    line: int = 0
    original: str = ""
    mutant: str = ""
    note: str = ""         # an equivalent's reason, an extra's why

    @property
    def detected(self) -> bool:
        return self.status in ("killed", "timeout", "segfault", "caught by type check")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel test runs (default: cores)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder, for `mutmut show` there")
    parser.add_argument("--config", type=Path, default=CONFIG)
    args = parser.parse_args()
    config = tomllib.loads(args.config.read_text(encoding="utf-8"))

    try:
        version = importlib.metadata.version("mutmut")
    except importlib.metadata.PackageNotFoundError:
        version = ""
    if not version.startswith("3."):
        print(f"needs mutmut 3.x (found {version or 'none'}): .venv/bin/python -m pip install 'mutmut>=3.8,<4'",
              file=sys.stderr)
        return 2
    print(f"mutmut {version}, {args.jobs} jobs")

    start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="mnn-parity-mutation-"))
    try:
        return run(config, work, args.jobs, start)
    finally:
        if args.keep:
            print(f"\nkept {work} (cd there and run `{sys.executable} -m mutmut show <name>`)")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(config: dict, work: Path, jobs: int, start: float) -> int:
    src = work / "src"
    package = src / PACKAGE
    shutil.copytree(REPO / "runner", package, ignore=IGNORE)
    shutil.copytree(REPO / "schemas", package / "schemas", ignore=IGNORE)
    shutil.copytree(REPO / "tests", work / "tests", ignore=IGNORE)
    write_mutmut_config(work, config)

    print(f"copy: {work}")
    if not imports_copy(src, work):
        return 2

    tests = list(config["tests"])
    began = time.monotonic()
    clean = pytest_run(src, work, tests, timeout=300)
    baseline = time.monotonic() - began
    if clean.returncode != 0:
        print("the focused tests fail on the unmutated copy:\n" + clean.stdout[-4000:] + clean.stderr[-2000:])
        return 2
    print(f"baseline: {' '.join(tests)} pass on the copy in {baseline:.1f}s")

    mutated = run_mutmut(work, config, jobs)
    if mutated is None:
        return 2
    outcomes, not_scored = mutated
    if not imports_copy(work / "mutants" / "src", work):
        return 2
    extras = run_extras(work, config, tests, jobs, timeout=max(30.0, 10 * baseline))
    if extras is None:
        return 2
    return report(outcomes + extras, not_scored, config, time.monotonic() - start)


# --- the copy ---------------------------------------------------------------------------------------------------

def write_mutmut_config(work: Path, config: dict) -> None:
    """mutmut reads `[mutmut]` from setup.cfg in its working directory; the copy has no pyproject.toml."""
    lines = ["[mutmut]", f"source_paths = src/{PACKAGE}", "only_mutate ="]
    lines += [f"    src/{PACKAGE}/{f}" for f in config["files"]]
    lines += ["pytest_add_cli_args = -p no:cacheprovider", "pytest_add_cli_args_test_selection ="]
    lines += [f"    {t}" for t in config["tests"]]
    lines += ["use_git_change_detection = false", ""]
    (work / "setup.cfg").write_text("\n".join(lines), encoding="utf-8")


def child_env(pythonpath: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(pythonpath)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("MUTANT_UNDER_TEST", None)
    return env


def imports_copy(pythonpath: Path, work: Path) -> bool:
    """The copy must win over the editable install (whose finder maps mnn_parity to the working tree)."""
    code = ("import importlib.resources, mnn_parity; print(mnn_parity.__file__); "
            "print(importlib.resources.files('mnn_parity.schemas'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=work, env=child_env(pythonpath),
                            capture_output=True, text=True)
    found = result.stdout.split()
    ok = result.returncode == 0 and len(found) == 2 and all(Path(p).resolve().is_relative_to(pythonpath.resolve())
                                                            for p in found)
    print(f"import mnn_parity → {found[0] if found else result.stderr.strip()[-300:]}"
          f" ({'the copy' if ok else 'NOT THE COPY'})")
    return ok


def pytest_run(pythonpath: Path, work: Path, tests: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                          cwd=work, env=child_env(pythonpath), capture_output=True, text=True, timeout=timeout)


# --- mutmut -----------------------------------------------------------------------------------------------------

def run_mutmut(work: Path, config: dict, jobs: int) -> tuple[list[Outcome], int] | None:
    patterns = list(config["mutants"])
    log = work / "mutmut.log"
    began = time.monotonic()
    with open(log, "w", encoding="utf-8") as out:
        # No PYTHONPATH here: mutmut puts <tmp>/mutants/src first on sys.path itself, once it exists; naming it before
        # it exists would make Python cache "no importer" for it and import the editable install instead. mutmut's
        # forced-fail run (a deliberately failing mutant must fail the tests) checks the mutated copy is imported.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MUTANT_UNDER_TEST")}
        result = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs), *patterns],
                                cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
    tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
    if result.returncode != 0:
        print(f"mutmut run failed (exit {result.returncode}):\n{tail}")
        return None
    print(f"mutmut: done in {time.monotonic() - began:.0f}s")

    from mutmut.stats import status_by_exit_code

    excluded = list(config.get("not_scored", []))
    outcomes, not_scored = [], 0
    for meta in sorted((work / "mutants" / "src").rglob("*.py.meta")):
        source = meta.relative_to(work / "mutants").with_suffix("")          # src/mnn_parity/.../x.py
        codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        for name, code in codes.items():
            if not any(fnmatch.fnmatchcase(name, p) for p in patterns):
                continue
            if any(fnmatch.fnmatchcase(name, p) for p in excluded):
                not_scored += 1
                continue
            outcomes.append(Outcome(name, status_by_exit_code[code], file=str(source.relative_to(f"src/{PACKAGE}"))))
    if not outcomes:
        print("mutmut generated no mutant matching scripts/mutation.toml `mutants`")
        return None
    cwd = os.getcwd()
    os.chdir(work)            # mutmut's helpers read setup.cfg and mutants/ relative to the working directory
    try:
        for o in outcomes:
            if not o.detected:
                locate(o, work)
    finally:
        os.chdir(cwd)
    return outcomes, not_scored


def locate(o: Outcome, work: Path) -> None:
    """file:line and the changed lines of a mutmut mutant, from the diff `mutmut show` prints."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    source = Path("src") / PACKAGE / o.file
    diff = get_diff_for_mutant(o.name, path=source).splitlines()
    orig_lines, removed, added, first_removed = [], [], [], None
    for line in diff:
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("@@"):
            m = re.match(r"@@ -(\d+)", line)
            index = int(m.group(1)) - 1 if m else 0
            continue
        if line.startswith("-"):
            removed.append(line[1:].strip())
            if first_removed is None:
                first_removed = (index, line[1:])
            index += 1
        elif line.startswith("+"):
            added.append(line[1:].strip())
        else:
            index += 1
    o.original = " ".join(removed)
    o.mutant = " ".join(added) if added else "(removed)"
    if first_removed is None:
        return
    o.line = file_line(work / source, o.name, *first_removed)


def file_line(path: Path, name: str, index_in_function: int, text: str) -> int:
    """Map a line of mutmut's function-level diff to the line of the original file."""
    func = name.rpartition(".")[2].partition("__mutmut_")[0]          # x_name or xǁClassǁname
    cls, meth = (func.split("ǁ")[1:3] if func.startswith("xǁ") else (None, func[2:]))
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)
    body = tree.body if cls is None else next(
        (n.body for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls), [])
    def_line = next((n.lineno for n in body
                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == meth), None)
    if def_line is None:
        return 0
    # The diff's function text may start with comments above the def: count from its `def` line. We only know
    # the index of the changed line, so look for the same text nearest to where that index points.
    guess = def_line + index_in_function
    candidates = [i + 1 for i, line in enumerate(lines) if line.strip() == text.strip()]
    return min(candidates, key=lambda n: abs(n - guess)) if candidates else guess


# --- extra mutants ----------------------------------------------------------------------------------------------

def run_extras(work: Path, config: dict, tests: list[str], jobs: int, timeout: float) -> list[Outcome] | None:
    extras = config.get("extra", [])
    prepared = []
    for extra in extras:
        path = work / "src" / PACKAGE / extra["file"]
        text = path.read_text(encoding="utf-8")
        count = text.count(extra["original"])
        if count != 1:
            print(f"extra mutant {extra['id']}: its original text occurs {count} times in runner/{extra['file']} "
                  f"(expected once): update scripts/mutation.toml")
            return None
        root = work / "extra" / extra["id"]
        shutil.copytree(work / "src" / PACKAGE, root / PACKAGE)
        (root / PACKAGE / extra["file"]).write_text(text.replace(extra["original"], extra["mutant"]),
                                                    encoding="utf-8")
        line = text[:text.index(extra["original"])].count("\n") + 1
        prepared.append((extra, root, line))
    if prepared and not imports_copy(prepared[0][1], work):
        return None

    def judge(item) -> Outcome:
        extra, root, line = item
        o = Outcome(f"extra:{extra['id']}", "survived", file=extra["file"], line=line,
                    original=" ".join(s.strip() for s in extra["original"].splitlines()),
                    mutant=" ".join(s.strip() for s in extra["mutant"].splitlines()), note=extra.get("why", ""))
        try:
            result = pytest_run(root, work, tests, timeout)
        except subprocess.TimeoutExpired:
            o.status = "timeout"
            return o
        # 1: a test failed; 2: collection failed (the mutant broke an import): both only with the mutant in place,
        # since the unmutated copy passed.
        o.status = {0: "survived", 1: "killed", 2: "killed"}.get(result.returncode, "suspicious")
        if o.status == "suspicious":
            o.note += f" (pytest exit {result.returncode}: {result.stdout[-300:]})"
        return o

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(judge, prepared))


# --- the report ---------------------------------------------------------------------------------------------------

def report(outcomes: list[Outcome], not_scored: int, config: dict, elapsed: float) -> int:
    allowed = config.get("equivalent", [])
    used = [0] * len(allowed)
    equivalent, survivors = [], []
    for o in outcomes:
        if o.detected:
            continue
        match = next((i for i, e in enumerate(allowed) if e["file"] == o.file and e["original"] == o.original
                      and e["mutant"] == o.mutant), None)
        if match is not None and o.status == "survived":
            used[match] += 1
            o.note = allowed[match]["reason"]
            equivalent.append(o)
        else:
            survivors.append(o)

    def count(status: str) -> int:
        return sum(o.status == status for o in outcomes)

    total = len(outcomes)
    detected = sum(o.detected for o in outcomes)
    scored = total - len(equivalent)
    score = 100.0 * detected / scored if scored else 100.0
    extras = [o for o in outcomes if o.name.startswith("extra:")]
    print()
    print(f"mutants:    {total} ({total - len(extras)} from mutmut, {len(extras)} extra; {not_scored} more left out "
          f"by `not_scored`)")
    print(f"killed:     {count('killed') + count('segfault') + count('caught by type check')}")
    print(f"timeouts:   {count('timeout')}")
    print(f"survived:   {count('survived')} ({len(equivalent)} of them allow-listed as equivalent)")
    if count("no tests"):
        print(f"no tests:   {count('no tests')} (no focused test reaches the function: counted as survived)")
    if count("suspicious"):
        print(f"suspicious: {count('suspicious')} (counted as survived)")
    print(f"score:      {score:.1f}% = (killed + timeouts) {detected} / (mutants - equivalent) {scored}"
          f"   [fail under {config['fail_under']}%]   in {elapsed:.0f}s")
    if survivors:
        print("\nsurvivors:")
        for o in sorted(survivors, key=lambda o: (o.file, o.line)):
            tag = "" if o.status == "survived" else f" [{o.status}]"
            print(f"  runner/{o.file}:{o.line}: {o.original} → {o.mutant}{tag}   ({o.name})")
    if equivalent:
        print(f"\nequivalent (allow-listed in {CONFIG.relative_to(REPO)}, not scored):")
        for o in sorted(equivalent, key=lambda o: (o.file, o.line)):
            print(f"  runner/{o.file}:{o.line}: {o.original} → {o.mutant}\n      because {o.note}")
    stale = [allowed[i] for i, n in enumerate(used) if not n]
    if stale:
        print("\nallow-list entries that matched no survivor (killed now, or the code changed: remove them):")
        for e in stale:
            print(f"  runner/{e['file']}: {e['original']} → {e['mutant']}")
    return 0 if score >= float(config["fail_under"]) else 1


if __name__ == "__main__":
    sys.exit(main())
