"""The one atomic-write helper: old content or new, never half, and the mode the user's umask asks for."""
from __future__ import annotations

import os
import stat

import pytest

from mnn_parity.fsutil import atomic_write, atomic_write_text, make_staging_dir


@pytest.fixture()
def umask_027():
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def test_files_and_staging_folders_follow_the_umask_not_mkstemps_0600(tmp_path, umask_027):
    path = atomic_write_text(tmp_path / "reports" / "s.md", "hello")
    assert path.read_text() == "hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE(make_staging_dir(tmp_path, "x-").stat().st_mode) == 0o750


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = atomic_write_text(tmp_path / "r.json", "old")

    def dies(handle):
        handle.write(b"half")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
