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
