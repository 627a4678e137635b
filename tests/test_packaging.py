"""The wheel must carry every subpackage and the files read at run time: the package list is explicit (runner/ is
installed as mnn_parity), so a new subpackage that is not listed would be missing from a non-editable install."""
from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_of_runner_is_listed_for_the_wheel():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {"mnn_parity" + "".join(f".{part}" for part in init.parent.relative_to(ROOT / "runner").parts)
               for init in (ROOT / "runner").rglob("__init__.py")}
    assert on_disk <= set(config["packages"]), sorted(on_disk - set(config["packages"]))
    assert config["package-dir"]["mnn_parity.schemas"] == "schemas"
    assert "*.json" in config["package-data"]["mnn_parity.bundled"]
