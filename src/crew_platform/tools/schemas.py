"""JSON Schemas of tool parameters: checking a schema, and arguments against it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match


def _where(path: Any) -> str:
    return "/".join(str(part) for part in path)


def schema_problem(schema: object) -> str | None:
    """Why `schema` is not a valid object schema for tool parameters (None when it is)."""
    if not isinstance(schema, Mapping):
        return "must be a JSON Schema object"
    if schema.get("type") != "object":
        return 'must have "type": "object" (tool arguments are an object)'
    if "properties" in schema and not isinstance(schema["properties"], Mapping):
        return '"properties" must be an object'
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = _where(exc.path)
        return f"invalid JSON Schema at {where}: {exc.message}" if where else exc.message
    return None


def arguments_problem(schema: Mapping[str, Any], arguments: object) -> str | None:
    """Why `arguments` do not match `schema` (None when they do)."""
    error = best_match(Draft202012Validator(schema).iter_errors(arguments))
    if error is None:
        return None
    where = _where(error.path)
    return f"{where}: {error.message}" if where else error.message


_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "$defs", "definitions")


def fits_strict_mode(schema: object) -> bool:
    """Whether an OpenAI-compatible provider takes `schema` with `strict: true`: every object
    in it closed (`additionalProperties: false`) and naming each of its properties in
    `required`. A provider answers 400 to a strict tool whose schema is anything else."""
    if isinstance(schema, list):
        return all(fits_strict_mode(item) for item in schema)
    if not isinstance(schema, Mapping):
        return True
    kinds = schema.get("type")
    if "object" in (kinds if isinstance(kinds, list) else [kinds]) or "properties" in schema:
        properties = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False:
            return False
        if not set(properties) <= set(schema.get("required") or ()):
            return False
    children: list[object] = [schema.get("items")]
    children += [schema.get(key) or [] for key in _SCHEMA_LISTS]
    children += [list((schema.get(key) or {}).values()) for key in _SCHEMA_MAPS]
    return all(fits_strict_mode(child) for child in children)
