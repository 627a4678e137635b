"""The schema pass: the JSON Schemas in `schemas/` are the single source of truth for keys and types.

Plus the one type rule JSON Schema cannot say: YAML's `.nan` and `.inf` are numbers to it, and pass every
`minimum` and `maximum` (a comparison with NaN is always false).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

from mnn_parity.manifest.issues import Issues, did_you_mean, shorten
from mnn_parity.resources import schema, schema_names


@lru_cache(maxsize=None)
def schema_validator(name: str = "manifest.schema.json"):
    import jsonschema
    from referencing import Registry, Resource

    resources = []
    for schema_name in schema_names():
        contents = schema(schema_name)
        resource = Resource.from_contents(contents)
        resources.append((contents["$id"], resource))
        resources.append((schema_name, resource))
    registry = Registry().with_resources(resources)
    return jsonschema.Draft202012Validator(schema(name), registry=registry)


def _leaf_errors(error) -> list:
    """For oneOf/anyOf failures, the most specific sub-errors say more than "is not valid under any schema"."""
    if error.context and error.validator in ("oneOf", "anyOf"):
        by_branch: dict[int, list] = {}
        for sub in error.context:
            by_branch.setdefault(sub.relative_schema_path[0], []).append(sub)
        # a branch that fails at its own top level (its step name missing, another key present) is not the one
        # the user meant; the meant one fails deeper, on an option
        meant = [errs for errs in by_branch.values()
                 if not any(e.validator in ("required", "additionalProperties") and not e.relative_path
                            for e in errs)]
        if len(meant) == 1:
            return [leaf for sub in meant[0] for leaf in _leaf_errors(sub)]
    return [error]


def schema_issues(data: Any, issues: Issues) -> None:
    found = Issues(issues.label, issues.lines)
    for error in schema_validator().iter_errors(data):
        for leaf in _leaf_errors(error):
            _add_error(leaf, found)
    nonfinite_issues(data, found)
    issues.found += sorted(found.found, key=lambda i: (i.line or 0, i.path))


def _add_error(error, issues: Issues) -> None:
    path = list(error.absolute_path)
    if "propertyNames" in error.absolute_schema_path:
        path.append(error.instance)     # the bad name is a key: say it on the key's own line
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = list(error.schema.get("properties", {}))
        for key in (k for k in error.instance if k not in allowed):
            issues.add(path + [key], f"unknown key {key!r}{did_you_mean(str(key), allowed)}")
        return
    if error.validator == "oneOf" and isinstance(error.instance, dict) and len(error.instance) == 1:
        key = next(iter(error.instance))
        # each branch requires its own step name: the "required" complaints list every name there is
        names = [n for sub in error.context if sub.validator == "required" for n in sub.validator_value]
        if key not in names:
            issues.add(path, f"unknown step {key!r}{did_you_mean(str(key), names)}")
            return
    issues.add(path, _message(error))


def _message(error) -> str:
    instance = shorten(repr(error.instance), 80)
    if error.validator == "enum":
        return f"{instance} is not one of {error.validator_value}"
    if error.validator == "maxLength":
        return f"{len(error.instance)} characters, over the {error.validator_value} allowed"
    if error.validator == "pattern" and "description" in error.schema:
        return f"{instance} is not {error.schema['description']}"
    return error.message


def nonfinite_issues(data: Any, issues: Issues) -> None:
    """Every NaN or infinity, wherever a number is written: no tolerance, limit or constant means one."""
    stack: list[tuple[tuple, Any]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            issues.add(path, f"{value} is not a finite number")
        elif isinstance(value, dict):
            stack.extend((path + (key,), item) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((path + (index,), item) for index, item in enumerate(value))
