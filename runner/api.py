"""Running suites from Python: the same session the command line and the pytest plugin use.

    from mnn_parity.api import run
    result = run(["suites/ocr.yaml"])          # paths relative to the repository root
    for outcome in result.outcomes:
        print(outcome.suite.name, outcome.summary.results)
    assert result.exit_status == 0

The root is found as the command line finds it: `root` if given, else $MNN_PARITY_ROOT, else the nearest folder
holding .git or .mnn-parity above the working directory, so code run from a subfolder of the repository works.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Union

from mnn_parity.session import Events, Session, SessionConfig, SessionResult

PathLike = Union[str, Path]


def _session(root: Optional[PathLike], events: Optional[Events], **options) -> Session:
    from mnn_parity.rootdir import find_root

    options = {k: (Path(v).resolve() if k.endswith(("_dir", "junit")) and v is not None else v)
               for k, v in options.items()}
    return Session(SessionConfig(root=find_root(None, Path(root) if root is not None else None), **options), events)


def run(paths: Iterable[PathLike] = ("suites",), root: Optional[PathLike] = None, events: Optional[Events] = None,
        **options) -> SessionResult:
    """Run suites and write their reports; `options` are `SessionConfig` fields (mnn, jobs, backends, models,
    goldens_dir, report_dir, cache_dir, fail_on, junit, executor: "threads", "dask" or "dask://HOST:PORT")."""
    session = _session(root, events, **options)
    return session.run([session.config.root / p for p in paths])


def bless(paths: Iterable[PathLike] = ("suites",), root: Optional[PathLike] = None, events: Optional[Events] = None,
          **options) -> SessionResult:
    session = _session(root, events, **options)
    return session.bless([session.config.root / p for p in paths])


def validate(paths: Iterable[PathLike] = ("suites",), root: Optional[PathLike] = None) -> SessionResult:
    session = _session(root, None)
    return session.validate([session.config.root / p for p in paths])
