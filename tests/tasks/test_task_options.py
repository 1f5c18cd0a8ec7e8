"""Tasks API, the options of a task's answer: `context`, `output_schema`, `guardrail` and
`guardrail_max_retries`: written, read back, updated, and every bad value a 422 naming the field
(and the ids at fault), on both backends."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api import assert_error, make_task, make_workflow

API = "/api/v1/tasks"
SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}},
    },
    "required": ["title", "tags"],
    "additionalProperties": False,
    "$defs": {"tag": {"type": "string", "enum": ["a", "b"]}},
}


async def create(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post(f"{API}/", json=body)


async def update(client: httpx.AsyncClient, task_id: int, **body: Any) -> httpx.Response:
    return await client.put(f"{API}/{task_id}", json=body)


async def test_options_are_stored_read_back_and_updated(
    client: httpx.AsyncClient, workflow: Any
) -> None:
    first = await make_task(client, workflow["id"], "First")
    task = await make_task(
        client,
        workflow["id"],
        "Second",
        order=1,
        context=[first["id"], first["id"]],
        output_schema=SCHEMA,
        guardrail="Mention a date.",
        guardrail_max_retries=0,
    )
    assert task["context"] == [first["id"]]  # each id once
    assert task["output_schema"] == SCHEMA
    assert list(task["output_schema"]["properties"]) == ["title", "tags"]  # as written
    assert (task["guardrail"], task["guardrail_max_retries"]) == ("Mention a date.", 0)
    read = (await client.get(f"{API}/{task['id']}")).json()
    assert read == task
    assert list(read["output_schema"]["properties"]) == ["title", "tags"]
    # A GET body sent back as a PUT changes nothing.
    assert (await update(client, task["id"], **read)).json()["context"] == [first["id"]]
    cleared = await update(
        client,
        task["id"],
        context=None,
        output_schema=None,
        guardrail=None,
        guardrail_max_retries=10,
    )
    assert cleared.status_code == 200, cleared.text
    body = cleared.json()
    assert (body["context"], body["output_schema"], body["guardrail"]) == (None, None, None)
    assert body["guardrail_max_retries"] == 10
    emptied = await update(client, task["id"], context=[])
    assert emptied.json()["context"] == []


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        ("not a schema", "dictionary"),
        ([{"type": "object"}], "dictionary"),
        ({"type": "string"}, '"type": "object"'),
        ({"properties": {"a": {"type": "string"}}}, '"type": "object"'),
        ({"type": "object", "properties": {"a": {"type": "text"}}}, "properties/a/type"),
        ({"type": "object", "required": "a"}, "required"),
        ({"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}}, "pattern"),
        ({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}, "$ref"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "$ref"),
        (  # the $ref would be resolved against the inner $id: no answer could be checked
            {
                "type": "object",
                "properties": {"a": {"$id": "https://example.com/a", "$ref": "#/$defs/b"}},
                "$defs": {"b": {"type": "string"}},
            },
            "$id is allowed at the root only (found at properties/a)",
        ),
    ],
)
async def test_a_bad_output_schema_is_422(
    client: httpx.AsyncClient, workflow: Any, schema: Any, problem: str
) -> None:
    response = await create(client, workflow_id=workflow["id"], name="T", output_schema=schema)
    body = assert_error(response, 422, "VALIDATION_ERROR", ["output_schema"])
    assert problem in body["details"]["fields"]["output_schema"], body
    task = await make_task(client, workflow["id"], "T")
    response = await update(client, task["id"], output_schema=schema)
    assert_error(response, 422, "VALIDATION_ERROR", ["output_schema"])
    assert (await client.get(f"{API}/{task['id']}")).json()["output_schema"] is None


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"guardrail_max_retries": 11}, "guardrail_max_retries"),
        ({"guardrail_max_retries": -1}, "guardrail_max_retries"),
        ({"guardrail_max_retries": "2"}, "guardrail_max_retries"),
        ({"guardrail_max_retries": True}, "guardrail_max_retries"),
        ({"guardrail_max_retries": 1.0}, "guardrail_max_retries"),
        ({"guardrail": ""}, "guardrail"),
        ({"guardrail": "   "}, "guardrail"),
        ({"guardrail": 5}, "guardrail"),
        ({"context": "1"}, "context"),
        ({"context": [True]}, "context"),
        ({"context": [0]}, "context"),
        ({"context": ["x"]}, "context"),
        ({"context": {"1": 1}}, "context"),
    ],
)
async def test_wrong_types_and_ranges_are_422(
    client: httpx.AsyncClient, workflow: Any, fields: dict[str, Any], field: str
) -> None:
    assert_error(
        await create(client, workflow_id=workflow["id"], name="T", **fields),
        422,
        "VALIDATION_ERROR",
        [field],
    )


async def test_guardrail_max_retries_may_not_be_set_to_null(
    client: httpx.AsyncClient, workflow: Any
) -> None:
    task = await make_task(client, workflow["id"], "T")
    response = await update(client, task["id"], guardrail_max_retries=None)
    assert_error(response, 422, "VALIDATION_ERROR", ["guardrail_max_retries"])


async def test_context_ids_must_be_other_tasks_of_the_same_workflow(
    client: httpx.AsyncClient, workflow: Any
) -> None:
    other = await make_workflow(client, "Other")
    foreign = await make_task(client, other["id"], "Foreign")
    own = await make_task(client, workflow["id"], "Own")
    response = await create(
        client,
        workflow_id=workflow["id"],
        name="T",
        order=1,
        context=[own["id"], foreign["id"], 999],
    )
    body = assert_error(response, 422, "VALIDATION_ERROR", ["context"])
    assert body["details"]["invalid_task_ids"] == [foreign["id"], 999]
    response = await update(client, own["id"], context=[own["id"]])
    body = assert_error(response, 422, "VALIDATION_ERROR", ["context"])
    assert body["details"]["task_id"] == own["id"]


async def test_a_linear_context_must_run_earlier(client: httpx.AsyncClient, workflow: Any) -> None:
    first = await make_task(client, workflow["id"], "First", order=0)
    later = await make_task(client, workflow["id"], "Later", order=5)
    response = await create(
        client, workflow_id=workflow["id"], name="T", order=1, context=[first["id"], later["id"]]
    )
    body = assert_error(response, 422, "VALIDATION_ERROR", ["context"])
    assert body["details"]["later_task_ids"] == [later["id"]]
    # Same order: the higher priority runs first, then the lower id.
    tied = await make_task(
        client, workflow["id"], "Tied", order=5, priority=9, context=[first["id"]]
    )
    response = await update(client, tied["id"], context=[later["id"]])
    assert_error(response, 422, "VALIDATION_ERROR", ["context"])
    reader = await make_task(client, workflow["id"], "Reader", order=6, context=[later["id"]])
    # Moving a task its readers rely on after them is refused, naming them.
    response = await update(client, later["id"], order=7)
    body = assert_error(response, 422, "VALIDATION_ERROR", ["order"])
    assert body["details"]["context_task_ids"] == [reader["id"]]
    response = await update(client, reader["id"], order=0)
    assert_error(response, 422, "VALIDATION_ERROR", ["context"])


async def test_a_parallel_context_may_name_any_task_but_not_close_a_cycle(
    client: httpx.AsyncClient,
) -> None:
    workflow = await make_workflow(client, "DAG", workflow_type="parallel")
    a = await make_task(client, workflow["id"], "A")
    b = await make_task(client, workflow["id"], "B", order=-1, context=[a["id"]])
    assert b["context"] == [a["id"]]  # earlier in the order: fine, B waits for A
    response = await update(client, a["id"], context=[b["id"]])
    body = assert_error(response, 422, "DEPENDENCY_CYCLE", ["context"])
    assert body["details"]["cycle"] in ([a["id"], b["id"], a["id"]], [b["id"], a["id"], b["id"]])
    response = await update(client, a["id"], dependencies=[b["id"]])
    assert_error(response, 422, "DEPENDENCY_CYCLE")


async def test_a_task_others_take_context_from_cannot_be_deleted_or_moved(
    client: httpx.AsyncClient, workflow: Any
) -> None:
    other = await make_workflow(client, "Other")
    base = await make_task(client, workflow["id"], "Base")
    reader = await make_task(client, workflow["id"], "Reader", order=1, context=[base["id"]])
    body = assert_error(await client.delete(f"{API}/{base['id']}"), 409, "CONFLICT")
    assert body["details"]["context_task_ids"] == [reader["id"]]
    response = await update(client, base["id"], workflow_id=other["id"])
    body = assert_error(response, 422, "VALIDATION_ERROR", ["workflow_id"])
    assert body["details"]["context_task_ids"] == [reader["id"]]
    # The reader itself moves only with a context that fits its new workflow.
    response = await update(client, reader["id"], workflow_id=other["id"])
    assert_error(response, 422, "VALIDATION_ERROR", ["context"])
    moved = await update(client, reader["id"], workflow_id=other["id"], context=None)
    assert moved.status_code == 200, moved.text
    assert (await client.delete(f"{API}/{base['id']}")).status_code == 200
