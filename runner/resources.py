"""Files shipped inside the package: the JSON Schemas (`schemas/` in the repository, `mnn_parity.schemas` once
installed). Read through importlib.resources so that an installed wheel works as well as a clone."""
from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files


@lru_cache(maxsize=None)
def schema(name: str) -> dict:
    return json.loads(files("mnn_parity.schemas").joinpath(name).read_text(encoding="utf-8"))


def schema_names() -> list[str]:
    return sorted(entry.name for entry in files("mnn_parity.schemas").iterdir()
                  if entry.name.endswith(".schema.json"))
