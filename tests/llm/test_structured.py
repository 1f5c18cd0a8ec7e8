"""Structured output in the LLM layer: the gateway sends `response_format` as given, the stub
scripts JSON answers and verdicts by schema name and answers an unscripted structured request
with an instance of its schema; and the answer check's wording for the model."""

from __future__ import annotations

import json
from typing import Any

import pytest

from crew_platform.devtools.llm_stub import StubServer
from crew_platform.llm.gateway import LLMGateway
from crew_platform.llm.structured import (
    format_name,
    parse_answer,
    response_format,
    schema_problem,
)
from crew_platform.settings import Settings

SCHEMA = {
    "type": "object",
    "properties": {
        "kind": {"enum": ["memo", "note"]},
        "pages": {"type": "integer"},
        "author": {"$ref": "#/$defs/person"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["kind", "pages", "author", "tags"],
    "additionalProperties": False,
    "$defs": {
        "person": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "ok": {"type": "boolean"}},
            "required": ["name", "ok"],
            "additionalProperties": False,
        }
    },
}


async def ask(settings: Settings, fmt: dict[str, Any] | None) -> str:
    gateway = LLMGateway(settings)
    try:
        completion = await gateway.complete(
            model="llama3.1-8b",
            messages=[{"role": "user", "content": "Describe it."}],
            temperature=0.0,
            top_p=1.0,
            max_tokens=100,
            response_format=fmt,
        )
    finally:
        await gateway.aclose()
    return completion.text


async def test_the_gateway_sends_response_format_and_the_stub_answers_in_the_schema(
    settings: Settings, stub: StubServer
) -> None:
    fmt = response_format("Memo: v2", SCHEMA)
    text = await ask(settings, fmt)
    (request,) = stub.requests
    assert request["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Memo_v2", "schema": SCHEMA, "strict": True},
    }
    assert json.loads(text) == {
        "kind": "memo",
        "pages": 0,
        "author": {"name": "", "ok": True},
        "tags": [],
    }
    assert parse_answer(text, SCHEMA).value == json.loads(text)


async def test_scripted_replies_aim_at_a_schema_name(settings: Settings, stub: StubServer) -> None:
    stub.script(
        {"format": "verdict", "json": {"pass": False}},
        {"content": "plain"},
    )
    assert await ask(settings, None) == "plain"  # the targeted reply waits for its format
    verdict = response_format("verdict", {"type": "object"})
    assert json.loads(await ask(settings, verdict)) == {"pass": False}
    assert "response_format" not in stub.requests[0]


def test_answers_that_do_not_fit_say_why() -> None:
    assert (
        parse_answer("[1, 2]", SCHEMA).problem == "the answer must be a JSON object, not an array"
    )
    assert parse_answer('"x"', SCHEMA).problem == "the answer must be a JSON object, not a string"
    assert parse_answer('{"a": Infinity}', SCHEMA).problem == (
        "the answer is not valid JSON (Infinity is not JSON)"
    )
    assert parse_answer('{"a": "\\u0000"}', {"type": "object"}).problem == (
        "the answer must not contain NUL (\\u0000) characters"
    )
    wrong = {"kind": "memo", "pages": "2", "author": {"name": "A", "ok": True}, "tags": []}
    assert (
        parse_answer(json.dumps(wrong), SCHEMA).problem == "at pages: '2' is not of type 'integer'"
    )
    fenced = "```json\n" + json.dumps(wrong | {"pages": 2}) + "\n```"
    assert parse_answer(fenced, SCHEMA).value == wrong | {"pages": 2}


@pytest.mark.parametrize(
    "schema",
    [
        SCHEMA,
        {"type": "object", "$id": "https://example.com/root", "properties": {"a": {"$ref": "#"}}},
        {"type": "object", "properties": {"a": {"$ref": "#/$defs/b"}}, "$defs": {"b": {}}},
        {"type": "object", "properties": {"$id": {"type": "string"}, "$ref": {"type": "string"}}},
        {
            "type": "object",
            "properties": {"a": {"$id": "https://example.com/a", "$ref": "#/$defs/b"}},
            "$defs": {"b": {"type": "string"}},
        },
        {
            "type": "object",
            "$defs": {"b": {"$id": "urn:b", "properties": {"c": {"$ref": "#/$defs/b"}}}},
            "properties": {"a": {"$ref": "#/$defs/b"}},
        },
    ],
)
def test_a_schema_let_through_can_check_every_answer(schema: dict[str, Any]) -> None:
    """What `schema_problem` accepts never turns into "could not be checked" at run time (a
    task whose every answer fails); what it refuses, it refuses with a reason."""
    answers = [{}, {"a": {"a": "x", "c": {}}}, {"a": 1, "$id": "x", "$ref": "y"}, {"kind": "memo"}]
    problem = schema_problem(schema)
    checked = [parse_answer(json.dumps(a), schema).problem or "" for a in answers]
    if problem is None:
        assert not [c for c in checked if "could not be checked" in c], checked
    else:
        assert "$id is allowed at the root only" in problem
        assert [c for c in checked if "could not be checked" in c]


def test_schema_names_are_what_providers_accept() -> None:
    assert format_name("Write Article (v2)") == "Write_Article_v2"
    assert format_name("¿¿") == "task_output"
    assert len(format_name("x" * 300)) == 64
    loose = response_format("t", {"type": "object", "properties": {"a": {"type": "string"}}})
    assert "strict" not in loose["json_schema"]
