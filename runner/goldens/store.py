"""Goldens: the blessed MNN outputs of each case and backend, and how a run has moved since.

Layout (version `GOLDEN_LAYOUT`) under the goldens root, every name path-encoded by `encode_name`:

    <suite>/LAYOUT                                  the layout version, one line
    <suite>/<model>/<backend>/<case>.json           provenance, verdict, tolerance, latency, output names
    <suite>/<model>/<backend>/<case>.mnn.npz        MNN's outputs when blessed
    <suite>/<model>/<backend>/<case>.ref.npz        the reference's outputs the verdict was judged on

The reference outputs sit beside each backend's golden rather than once per case: a filtered bless (one
backend, a newer ONNX Runtime) must not rewrite the reference another backend's verdict was judged on. The
.npz files are written byte-deterministically (fixed zip timestamps), so re-blessing unchanged outputs
changes no bytes and DVC stores identical copies once.

Arrays are stored as `o0`, `o1`, ... with their names in `__names__` (a unicode array): any output name
survives, order included, and nothing needs pickle to load.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import datetime as _dt
import json
import os
import shutil
import tempfile
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import numpy as np

from mnn_parity.comparison.metrics import compare_output
from mnn_parity.records import CaseRun, Drift, DriftClass, FailureClass, OutputComparison, Verdict
from mnn_parity.manifest.tolerance import Tolerance

GOLDEN_LAYOUT = 1
LAYOUT_FILE = "LAYOUT"
_NAMES_KEY = "__names__"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
_MAX_ENCODED = 200       # leaves room for ".mnn.npz"/".part" under the usual 255-byte file-name limit
_PASSING = (Verdict.PASS.value, Verdict.XPASS.value)
_REFUSED = (Verdict.ERROR, Verdict.CRASH)


@dataclass(frozen=True)
class Golden:
    mnn_outputs: dict[str, np.ndarray]
    ref_outputs: dict[str, np.ndarray]
    provenance: dict
    path: Optional[Path] = None      # the provenance file it was read from, for error messages


class GoldenError(Exception):
    """A golden that cannot be read or written; the message names the file."""


# --- names ---------------------------------------------------------------------------------------------------

def encode_name(name: str) -> str:
    """A reversible, path-safe file name: percent-encode UTF-8 bytes outside [A-Za-z0-9._-] and a leading dot.

    A leading dot is encoded so no suite, model or case can be ".", "..", hidden, or collide with the
    store's own temporary directories (which start with a dot).
    """
    if not isinstance(name, str) or not name:
        raise GoldenError(f"cannot store an empty name: {name!r}")
    out = []
    for i, ch in enumerate(name):
        if ch in _SAFE and not (i == 0 and ch == "."):
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    encoded = "".join(out)
    if len(encoded) > _MAX_ENCODED:
        raise GoldenError(f"name too long to store as a file name ({len(encoded)} > {_MAX_ENCODED}): {name!r}")
    return encoded


def decode_name(encoded: str) -> str:
    return urllib.parse.unquote(encoded, errors="replace")


# --- the store -----------------------------------------------------------------------------------------------

class GoldenStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # reading

    def load(self, suite: str, model: str, case: str, backend: str) -> Optional[Golden]:
        suite_dir = self._readable_suite_dir(suite)
        base = suite_dir / encode_name(model) / encode_name(backend) / encode_name(case)
        meta_path = base.with_name(base.name + ".json")
        if not meta_path.exists():
            return None
        self._check_layout_file(suite_dir)
        provenance = _read_json(meta_path)
        layout = provenance.get("layout")
        if layout != GOLDEN_LAYOUT:
            raise GoldenError(f"{meta_path}: golden layout {layout!r}, this runner reads layout {GOLDEN_LAYOUT}; "
                              f"re-bless the suite")
        return Golden(mnn_outputs=_read_npz(base.with_name(base.name + ".mnn.npz")),
                      ref_outputs=_read_npz(base.with_name(base.name + ".ref.npz")),
                      provenance=provenance, path=meta_path)

    def keys(self, suite: str) -> set[tuple[str, str, str]]:
        """(model, case, backend) of every golden of the suite."""
        suite_dir = self._readable_suite_dir(suite)
        if not suite_dir.is_dir():
            return set()
        self._check_layout_file(suite_dir)
        return set(_scan(suite_dir))

    # writing

    def bless(self, suite: str, runs: list[CaseRun], replace_all: bool) -> list[tuple[str, str, str]]:
        """Record `runs` as the suite's goldens, atomically; returns the (model, case, backend) keys written.

        The new tree is built in a temporary directory beside the suite's (starting from a hard-linked copy of
        the old one unless `replace_all`), then swapped in. A bless that dies part-way leaves the previous
        goldens in place. One bless per suite at a time: the store takes no lock.
        """
        planned = _plan(suite, runs)
        self.root.mkdir(parents=True, exist_ok=True)
        encoded_suite = encode_name(suite)
        final = self.root / encoded_suite
        self._recover(encoded_suite)
        tmp = Path(tempfile.mkdtemp(prefix=f".{encoded_suite}~tmp-", dir=self.root))
        try:
            if final.is_dir() and not replace_all:
                self._check_layout_file(final)
                _link_tree(final, tmp)
            for key, run in planned:
                _write_golden(tmp, key, run)
            _write_file(tmp / LAYOUT_FILE, f"{GOLDEN_LAYOUT}\n".encode())
            _swap_in(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return sorted(key for key, _ in planned)

    # internals

    # Temporary and set-aside trees are ".<suite>~tmp-*" / ".<suite>~old-*": encoded names never start with a
    # dot nor contain "~", so these globs cannot match another suite's trees.

    def _readable_suite_dir(self, suite: str) -> Path:
        """The suite's directory; if a bless died between its two renames, the previous tree it set aside."""
        encoded = encode_name(suite)
        final = self.root / encoded
        if final.exists():
            return final
        aside = sorted(self.root.glob(f".{encoded}~old-*"))
        return aside[-1] if aside else final

    def _recover(self, encoded_suite: str) -> None:
        """Undo what a killed bless left behind: restore a set-aside tree, drop unfinished temporary trees."""
        final = self.root / encoded_suite
        aside = sorted(self.root.glob(f".{encoded_suite}~old-*"))
        if aside and not final.exists():
            os.rename(aside.pop(), final)
        for leftover in aside + list(self.root.glob(f".{encoded_suite}~tmp-*")):
            shutil.rmtree(leftover, ignore_errors=True)

    @staticmethod
    def _check_layout_file(suite_dir: Path) -> None:
        path = suite_dir / LAYOUT_FILE
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise GoldenError(f"{path}: cannot read the goldens' layout version ({exc.strerror or exc})") from exc
        if text != str(GOLDEN_LAYOUT):
            raise GoldenError(f"{path}: golden layout {text!r}, this runner reads layout {GOLDEN_LAYOUT}; "
                              f"re-bless the suite")


def stale_keys(store: GoldenStore, suite: str, current_keys: Iterable[tuple[str, str, str]]
               ) -> list[tuple[str, str, str]]:
    """Goldens whose (model, case, backend) the current run no longer has."""
    return sorted(store.keys(suite) - set(current_keys))


# --- drift ---------------------------------------------------------------------------------------------------

def classify_drift(run: CaseRun, golden: Optional[Golden], tolerance: Tolerance,
                   topk: Optional[Mapping[str, Any]] = None) -> Drift:
    """How the run's MNN outputs moved since the golden.

    Each output is judged with the tolerance the run itself judged it with (`run.result.outputs`), falling back
    to `tolerance` for outputs the result does not list. `topk` maps output names to `compare.TopK`.
    """
    if golden is None:
        return Drift(DriftClass.NEW, note="no golden")

    prov = golden.provenance
    where = golden.path or "golden"
    if prov.get("layout") != GOLDEN_LAYOUT:
        raise GoldenError(f"{where}: golden layout {prov.get('layout')!r}, this runner reads layout "
                          f"{GOLDEN_LAYOUT}; re-bless the suite")
    golden_verdict = prov.get("verdict")
    now_verdict = run.result.verdict.value
    notes = _provenance_notes(prov, run.provenance)
    known = golden_verdict in {v.value for v in Verdict}
    common = dict(golden_verdict=Verdict(golden_verdict) if known else None, golden_mnn_version=prov.get("mnn_version"),
                  latency_ms_golden=dict(prov.get("latency_ms") or {}))

    now, old = run.mnn_outputs, golden.mnn_outputs
    per_output_tol = {c.name: c.tolerance for c in run.result.outputs}
    topk = topk or {}
    comparisons = tuple(
        _compare(name, old[name], now[name], per_output_tol.get(name, tolerance), topk.get(name))
        for name in now if name in old)
    notes += _output_notes(old, now, run.result.verdict)

    def drift(cls: DriftClass) -> Drift:
        return Drift(cls, outputs=comparisons, note="; ".join(notes), **common)

    ran = run.result.verdict not in _REFUSED
    if ran and set(now) == set(old) and all(_bit_exact(old[n], now[n]) for n in now):
        if (golden_verdict in _PASSING) != (now_verdict in _PASSING):
            notes.append(f"verdict {golden_verdict} → {now_verdict} with bit-identical MNN outputs: "
                         f"the reference or the tolerance changed")
        return drift(DriftClass.IDENTICAL)
    if golden_verdict in _PASSING and now_verdict not in _PASSING:
        return drift(DriftClass.REGRESSED)
    if golden_verdict not in _PASSING and now_verdict in _PASSING:
        return drift(DriftClass.FIXED)
    if set(now) != set(old) or not all(c.passed for c in comparisons):
        return drift(DriftClass.CHANGED)
    return drift(DriftClass.DRIFTED)


def _compare(name, golden_value, value, tolerance, topk) -> OutputComparison:
    try:
        return compare_output(name, golden_value, value, tolerance, topk)
    except TypeError as exc:   # e.g. string outputs: no numbers to measure, only equality
        same = _bit_exact(golden_value, value)
        return OutputComparison(name=name, ref_shape=tuple(np.shape(golden_value)), mnn_shape=tuple(np.shape(value)),
                                ref_dtype=str(np.asarray(golden_value).dtype), mnn_dtype=str(np.asarray(value).dtype),
                                tolerance=tolerance,
                                failure_class=None if same else FailureClass.OUT_OF_TOLERANCE,
                                reason="" if same else f"differs, and not comparable numerically ({exc})")


def _bit_exact(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _output_notes(old: Mapping[str, np.ndarray], now: Mapping[str, np.ndarray], verdict: Verdict) -> list[str]:
    notes = []
    if verdict in _REFUSED and not now:
        notes.append(f"no MNN outputs now ({verdict.value})")
    added = [n for n in now if n not in old]
    removed = [n for n in old if n not in now]
    if removed:
        notes.append("outputs missing since the golden: " + ", ".join(removed))
    if added:
        notes.append("outputs new since the golden: " + ", ".join(added))
    shared_now = [n for n in now if n in old]
    shared_old = [n for n in old if n in now]
    if shared_now != shared_old:
        notes.append(f"output order changed: [{', '.join(shared_old)}] → [{', '.join(shared_now)}]")
    for n in shared_now:
        a, b = np.asarray(old[n]), np.asarray(now[n])
        if a.shape != b.shape:
            notes.append(f"{n}: shape {a.shape} → {b.shape}")
        elif a.dtype != b.dtype:
            notes.append(f"{n}: dtype {a.dtype} → {b.dtype}")
    return notes


def _provenance_notes(golden: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What differs between the golden's provenance and the run's: the likely cause of any drift."""
    def differs(key: str) -> bool:
        return key in golden and key in now and golden[key] != now[key]

    notes = []
    if differs("onnx_sha256"):
        notes.append("golden onnx hash differs: model changed")
    elif differs("mnn_model_sha256"):
        notes.append("golden MNN model hash differs: reconverted")
    if differs("convert_flags"):
        notes.append("converter flags changed: " + _changed_keys(golden["convert_flags"], now["convert_flags"]))
    if differs("mnn_version"):
        notes.append(f"MNN {golden['mnn_version']} → {now['mnn_version']}")
    if differs("onnxruntime_version"):
        notes.append(f"onnxruntime {golden['onnxruntime_version']} → {now['onnxruntime_version']}")
    if differs("input_sha256"):
        notes.append("inputs changed: " + _changed_keys(golden["input_sha256"], now["input_sha256"]))
    if differs("preprocess"):
        notes.append("preprocessing changed: " + _changed_keys(golden["preprocess"], now["preprocess"]))
    if differs("runtime"):
        notes.append("runtime config changed: " + _changed_keys(golden["runtime"], now["runtime"]))
    if differs("reference_runtime"):
        notes.append("reference runtime config changed: "
                     + _changed_keys(golden["reference_runtime"], now["reference_runtime"]))
    return notes


def _changed_keys(a: Any, b: Any) -> str:
    if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
        return f"{a!r} → {b!r}"
    parts = []
    for k in sorted(set(a) | set(b), key=str):
        if a.get(k) != b.get(k):
            parts.append(f"{k} {a.get(k, '(unset)')!r} → {b.get(k, '(unset)')!r}")
    return ", ".join(parts)


# --- writing -------------------------------------------------------------------------------------------------

def _plan(suite: str, runs: list[CaseRun]) -> list[tuple[tuple[str, str, str], CaseRun]]:
    """Check every run before anything is written: a bless is all or nothing."""
    refused, foreign, seen, dupes = [], [], set(), []
    planned = []
    for run in runs:
        r = run.result
        key = (r.model, r.case, r.backend)
        label = "/".join(key)
        if r.verdict in _REFUSED:
            refused.append(f"{label}: {r.verdict.value}" + (f" ({r.reason})" if r.reason else ""))
        if r.suite != suite:
            foreign.append(f"{label}: suite {r.suite!r}")
        if key in seen:
            dupes.append(label)
        seen.add(key)
        for part in (suite, *key):
            encode_name(part)   # raises on names that cannot become files
        planned.append((key, run))
    problems = []
    if refused:
        problems.append("cannot bless runs that did not produce a verdict: " + "; ".join(refused))
    if foreign:
        problems.append(f"runs from another suite than {suite!r}: " + "; ".join(foreign))
    if dupes:
        problems.append("runs blessed twice: " + "; ".join(dupes))
    if problems:
        raise GoldenError("\n".join(problems))
    return planned


def _write_golden(tree: Path, key: tuple[str, str, str], run: CaseRun) -> None:
    model, case, backend = key
    directory = tree / encode_name(model) / encode_name(backend)
    directory.mkdir(parents=True, exist_ok=True)
    base = encode_name(case)
    r = run.result
    meta = dict(run.provenance)
    meta.update({
        "layout": GOLDEN_LAYOUT,
        "suite": r.suite, "model": r.model, "case": r.case, "backend": r.backend,
        "verdict": r.verdict.value,
        "failure_class": r.failure_class.value if r.failure_class is not None else None,
        "reason": r.reason,
        "latency_ms": dict(r.latency_ms),
        "tolerance": {c.name: c.tolerance.as_dict() for c in r.outputs},
        "outputs": list(run.mnn_outputs),
        "blessed": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    })
    _write_npz(directory / f"{base}.mnn.npz", run.mnn_outputs)
    _write_npz(directory / f"{base}.ref.npz", run.ref_outputs)
    try:
        text = json.dumps(meta, indent=2, sort_keys=True, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise GoldenError(f"{directory / base}.json: provenance of {'/'.join(key)} is not plain JSON ({exc})") from exc
    _write_file(directory / f"{base}.json", (text + "\n").encode())


def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """An .npz np.load reads without pickle, byte-identical for identical arrays (np.savez stamps the time)."""
    names = list(arrays)
    part = path.with_name(path.name + ".part")
    try:
        with zipfile.ZipFile(part, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            entries = [(_NAMES_KEY, np.array(names, dtype=str))]
            entries += [(f"o{i}", np.asarray(arrays[n])) for i, n in enumerate(names)]
            for key, value in entries:
                info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                with zf.open(info, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, value, allow_pickle=False)
    except ValueError as exc:    # object arrays: they would need pickle to come back
        part.unlink(missing_ok=True)
        raise GoldenError(f"{path}: cannot store without pickle ({exc})") from exc
    _fsync_and_replace(part, path)


def _write_file(path: Path, data: bytes) -> None:
    part = path.with_name(path.name + ".part")
    with open(part, "wb") as fh:
        fh.write(data)
    _fsync_and_replace(part, path)


def _fsync_and_replace(part: Path, path: Path) -> None:
    # Replace, never write in place: the tree's other files are hard links shared with the previous goldens.
    with open(part, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(part, path)


def _link_tree(src: Path, dst: Path) -> None:
    def link_or_copy(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)
    shutil.copytree(src, dst, copy_function=link_or_copy, dirs_exist_ok=True)


def _swap_in(new: Path, final: Path) -> None:
    """Make `new` the suite's tree. Atomic where the kernel can exchange two paths (Linux renameat2)."""
    if not final.exists():
        os.rename(new, final)
        return
    if _exchange(new, final):
        shutil.rmtree(new, ignore_errors=True)   # `new` now holds the previous tree
        return
    # Two renames; a death between them leaves the old tree set aside, which readers and the next bless find.
    aside = Path(tempfile.mkdtemp(prefix=f".{final.name}~old-", dir=final.parent))
    os.rmdir(aside)
    os.rename(final, aside)
    os.rename(new, final)
    shutil.rmtree(aside, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    return renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


# --- reading -------------------------------------------------------------------------------------------------

def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise GoldenError(f"{path}: unreadable golden provenance ({exc})") from exc
    if not isinstance(data, dict):
        raise GoldenError(f"{path}: golden provenance is not a JSON object")
    return data


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = [str(n) for n in npz[_NAMES_KEY]]
            arrays = {name: npz[f"o{i}"] for i, name in enumerate(names)}
    except FileNotFoundError as exc:
        raise GoldenError(f"{path}: golden outputs missing") from exc
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise GoldenError(f"{path}: unreadable golden outputs ({type(exc).__name__}: {exc})") from exc
    return arrays


def _scan(suite_dir: Path) -> Iterable[tuple[str, str, str]]:
    for model_dir in suite_dir.iterdir():
        if not model_dir.is_dir() or model_dir.name.startswith("."):
            continue
        for backend_dir in model_dir.iterdir():
            if not backend_dir.is_dir() or backend_dir.name.startswith("."):
                continue
            for meta in backend_dir.glob("*.json"):
                yield (decode_name(model_dir.name), decode_name(meta.name[:-len(".json")]),
                       decode_name(backend_dir.name))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"not JSON-serialisable in golden provenance: {type(value).__name__}")


def attach_drift(suite, runs: list[CaseRun], store: GoldenStore
                 ) -> tuple[list[CaseRun], Optional[str], list[str]]:
    """Every run of `suite` (a manifest Suite) classified against its golden, as new records.

    Returns the runs with drift attached, the MNN version the goldens were blessed under, and the goldens that
    could not be compared: such a case says so in its warnings, and the caller ends the run with exit status 2,
    so that nobody mistakes "no comparison" for "no change".
    """
    baseline, errors, judged = None, [], []
    models = {model.name: model for model in suite.models}
    for run in runs:
        result = run.result
        try:
            golden = store.load(suite.name, result.model, result.case, result.backend)
            if golden is not None:
                baseline = baseline or golden.provenance.get("mnn_version")
            if run.mnn_outputs or golden is not None:
                model = models[result.model]
                topk = {name: spec.topk for name, spec in model.outputs.items() if spec.topk}
                result = result.with_drift(
                    classify_drift(run, golden, suite.tolerance_for(model, "", result.backend), topk))
        except GoldenError as error:
            result = result.with_warning(f"golden not compared: {error}")
            errors.append(f"{result.model}/{result.case} [{result.backend}]: {error}")
        judged.append(run.with_result(result))
    return judged, baseline, errors
