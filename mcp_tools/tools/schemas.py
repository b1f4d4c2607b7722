"""Smaller JSON schemas for `tools/list`: the same constraints, without pydantic's repetition.

Every tool's schemas are read by the model on every turn, so their size is a budget (the messaging
profile's whole `tools/list` stays under 12,000 characters, measured by a test). pydantic adds a
`title` to every schema and spells an optional field as `anyOf: [X, {"type": "null"}]` with
`default: null`. For input, "left out" is how a caller says null; for output, results are dumped
without nulls. So both are dropped here, and a `$defs` entry (pydantic's spelling of a nested
model) is written in place where it is used; the rest of the schema is kept as is.
"""

from typing import Any

_SCHEMA_MAPS = ("properties", "$defs", "patternProperties")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_VALUES = ("items", "additionalProperties", "not")
_DEFS = "#/$defs/"


def compact_schema(schema: dict[str, Any]) -> dict[str, Any]:
    definitions = schema.get("$defs", {})
    if definitions and not any(_refers(definition, definitions) for definition in definitions.values()):
        schema = _inline({k: v for k, v in schema.items() if k != "$defs"}, definitions)
    return _compact(schema)


def _refers(schema: Any, definitions: dict[str, Any]) -> bool:
    """Whether a definition refers to another one (then `$defs` stay as they are: no recursion to unroll)."""
    if isinstance(schema, dict):
        return "$ref" in schema or any(_refers(v, definitions) for v in schema.values())
    if isinstance(schema, list):
        return any(_refers(v, definitions) for v in schema)
    return False


def _inline(schema: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEFS):
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            return {**definitions[ref.removeprefix(_DEFS)], **rest}
        return {k: _inline(v, definitions) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_inline(v, definitions) for v in schema]
    return schema


def _compact(schema: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" or (key == "default" and value is None):
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _compact(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_compact(sub) for sub in value]
        elif key in _SCHEMA_VALUES and isinstance(value, dict):
            out[key] = _compact(value)
        else:
            out[key] = value
    return _drop_null_branch(out)


def _drop_null_branch(schema: dict[str, Any]) -> dict[str, Any]:
    branches = schema.get("anyOf")
    if not isinstance(branches, list):
        return schema
    kept = [b for b in branches if b != {"type": "null"}]
    if len(kept) == len(branches):
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    if len(kept) == 1:
        return {**kept[0], **rest}
    return {**rest, "anyOf": kept}
