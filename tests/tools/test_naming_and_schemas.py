"""Model-facing tool names and the parameter schema check."""

from __future__ import annotations

import re
from typing import Any

import pytest

from crew_platform.tools.naming import from_model_name, to_model_name
from crew_platform.tools.schemas import arguments_problem, fits_strict_mode, schema_problem

PROVIDER_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@pytest.mark.parametrize(
    ("name", "model_name"),
    [
        ("calculator", "calculator"),
        ("github.search_issues", "github__search_issues"),
        ("my server.do it!", "my_server__do_it_"),
    ],
)
def test_model_names_are_valid_for_providers(name: str, model_name: str) -> None:
    assert to_model_name(name) == model_name
    assert from_model_name(model_name, ["other", name]) == name


def test_long_names_stay_valid_and_distinct() -> None:
    first, second = "s." + "a" * 80, "s." + "a" * 79 + "b"
    assert PROVIDER_NAME.match(to_model_name(first))
    assert to_model_name(first) != to_model_name(second)
    assert from_model_name(to_model_name(second), [first, second]) == second
    assert from_model_name("unknown", [first]) is None


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ([], "must be a JSON Schema object"),
        ({"type": "string"}, '"type": "object"'),
        ({"type": "object", "properties": []}, '"properties" must be an object'),
        ({"type": "object", "properties": {"a": {"type": "nope"}}}, "properties/a/type"),
        ({"type": "object", "required": "a"}, "'a' is not of type 'array'"),
    ],
)
def test_schema_problems(schema: Any, problem: str) -> None:
    found = schema_problem(schema)
    assert found is not None and problem in found


def test_a_valid_schema_and_arguments() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    assert schema_problem(schema) is None
    assert arguments_problem(schema, {"n": 1}) is None
    assert arguments_problem(schema, {"n": "1"}) == "n: '1' is not of type 'integer'"


def _closed(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": sorted(properties) if required is None else required,
        "additionalProperties": False,
    }


@pytest.mark.parametrize(
    ("schema", "fits"),
    [
        (_closed({"x": {"type": "string"}}), True),
        (_closed({}), True),
        ({"type": "object"}, False),  # additionalProperties left open
        ({"type": "object", "properties": {"x": {}}, "required": ["x"]}, False),
        (_closed({"x": {"type": "string"}, "y": {"type": "string"}}, ["x"]), False),
        (_closed({"inner": _closed({"z": {"type": "number"}})}), True),
        (_closed({"inner": {"type": "object", "properties": {}}}), False),
        (_closed({"list": {"type": "array", "items": {"type": "object"}}}), False),
        (_closed({"any": {"anyOf": [{"type": "string"}, _closed({"z": {}}, [])]}}), False),
        ({**_closed({"r": {"$ref": "#/$defs/R"}}), "$defs": {"R": {"type": "object"}}}, False),
    ],
)
def test_strict_mode_wants_every_object_closed_and_fully_required(
    schema: dict[str, Any], fits: bool
) -> None:
    assert fits_strict_mode(schema) is fits
