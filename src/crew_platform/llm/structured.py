"""Structured output: a task's JSON Schema as a provider's `response_format`, and the check of
an answer against it.

A schema is checked once, when a task is written (`schema_problem`), so a run never meets one
it cannot use: Draft 2020-12, an object at the root (providers' structured output answers an
object), and `$ref`s that point inside the schema itself (a remote one would make validation
fetch a URL, or fail at run time). An `$id` is allowed at the root only: one further in moves
where the `$ref`s under it point, out of the schema, so no answer could ever be checked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match

from crew_platform.common.types import as_stored, unstorable
from crew_platform.tools.schemas import fits_strict_mode

_FENCED = re.compile(r"^```[A-Za-z]*\s*\n(?P<body>.*?)\n?```$", re.DOTALL)
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
NAME_LENGTH = 64
"""Providers take `json_schema.name` of at most 64 letters, digits, `_` and `-`."""


def _where(path: Any) -> str:
    return "/".join(str(part) for part in path)


def schema_problem(schema: object) -> str | None:
    """Why `schema` cannot be a task's output schema (None when it can)."""
    if not isinstance(schema, Mapping):
        return "must be a JSON Schema object"
    if schema.get("type") != "object":
        return 'must have "type": "object" at its root (a structured answer is a JSON object)'
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = _where(exc.path)
        return f"invalid JSON Schema at {where}: {exc.message}" if where else exc.message
    for ref in _refs(schema):
        if _pointed(schema, ref) is None:
            return f"$ref {ref!r} must point inside the schema (#/$defs/...) at something there"
    for path, item in _mappings(schema):
        if path and isinstance(item.get("$id"), str):
            return (
                f"$id is allowed at the root only (found at {_where(path)}): the $refs under "
                "it would point outside the schema"
            )
    return None


def _mappings(schema: object) -> list[tuple[tuple[str | int, ...], Mapping[str, Any]]]:
    """Every object in `schema` with its path from the root (nesting is bounded by the API)."""
    found: list[tuple[tuple[str | int, ...], Mapping[str, Any]]] = []
    stack: list[tuple[tuple[str | int, ...], object]] = [((), schema)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, Mapping):
            found.append((path, item))
            stack.extend(((*path, key), value) for key, value in item.items())
        elif isinstance(item, list):
            stack.extend(((*path, i), value) for i, value in enumerate(item))
    return found


def _refs(schema: object) -> list[str]:
    """Every `$ref` and `$dynamicRef` text in `schema`."""
    return [
        item[k]
        for _, item in _mappings(schema)
        for k in ("$ref", "$dynamicRef")
        if isinstance(item.get(k), str)
    ]


def _pointed(schema: Mapping[str, Any], ref: str) -> object | None:
    """What the local JSON Pointer `ref` (`#`, `#/$defs/x`) names in `schema`, else None."""
    if ref == "#":
        return schema
    if not ref.startswith("#/"):
        return None
    target: object = schema
    for raw in ref[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(target, Mapping) and part in target:
            target = target[part]
        elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        else:
            return None
    return target


def format_name(label: str) -> str:
    """A `json_schema.name` providers accept, made from a task's name."""
    name = _NAME_UNSAFE.sub("_", label).strip("_")[:NAME_LENGTH]
    return name or "task_output"


def response_format(name: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """`response_format` for `schema`; `strict` only where the schema suits strict mode (a
    provider refuses a strict schema with an open object or an optional property)."""
    spec: dict[str, Any] = {"name": format_name(name), "schema": dict(schema)}
    if fits_strict_mode(schema):
        spec["strict"] = True
    return {"type": "json_schema", "json_schema": spec}


@dataclass(frozen=True)
class Parsed:
    value: dict[str, Any] | None = None
    problem: str | None = None


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_answer(text: str, schema: Mapping[str, Any]) -> Parsed:
    """The answer as the object `schema` describes, or what is wrong with it (worded for the
    model, which is told it and may answer again). A Markdown code fence around the JSON is
    accepted: models that were not held to the schema often add one."""
    body = text.strip()
    if fenced := _FENCED.match(body):
        body = fenced.group("body").strip()
    try:
        value = json.loads(body, parse_constant=_no_constant)
    except ValueError as exc:
        return Parsed(problem=f"the answer is not valid JSON ({exc})")
    if not isinstance(value, dict):
        return Parsed(problem=f"the answer must be a JSON object, not {_json_kind(value)}")
    if (problem := unstorable(value)) is not None:
        return Parsed(problem=f"the answer {problem}")
    try:
        error = best_match(Draft202012Validator(schema).iter_errors(value))
    except Exception as exc:  # a schema the write-time check let through but cannot be used
        return Parsed(problem=f"the answer could not be checked ({type(exc).__name__})")
    if error is not None:
        where = _where(error.path)
        return Parsed(problem=f"at {where}: {error.message}" if where else error.message)
    return Parsed(value=as_stored(value))


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    return "a string" if isinstance(value, str) else "null"


def as_text(output: str | Mapping[str, Any]) -> str:
    """A task's output as prompts and joined results show it: text as it is, an object as its
    JSON text."""
    if isinstance(output, str):
        return output
    return json.dumps(output, ensure_ascii=False)
