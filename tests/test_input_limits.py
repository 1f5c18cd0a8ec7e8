"""Input that cannot break the store: bounded JSON nesting, string limits that fit their
columns, unknown fields refused, and 404s that name the resource, on both backends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import String, inspect

from crew_platform.agents.schemas import AgentCreate, AgentTestRequest, AgentUpdate
from crew_platform.app import create_app
from crew_platform.common.limits import MAX_JSON_DEPTH
from crew_platform.common.schemas import RequestModel
from crew_platform.db import Base
from crew_platform.executions.schemas import ExecuteRequest, InputRequest
from crew_platform.tasks.schemas import TaskCreate, TaskUpdate
from crew_platform.toolbox.schemas import McpServerCreate, ToolCreate, ToolUpdate
from crew_platform.workflows.schemas import WorkflowCreate, WorkflowUpdate
from tests.api import assert_error, make_agent, make_task, make_workflow

API = "/api/v1"


def nested(depth: int) -> dict[str, Any]:
    """An object `depth` levels deep (objects and arrays alternating), built without recursion."""
    value: Any = "leaf"
    for level in range(depth - 1):
        value = {"k": value} if level % 2 else [value]
    return {"k": value}


def depth_message(response: httpx.Response, field: str) -> str:
    body = assert_error(response, 422, "VALIDATION_ERROR", fields=[field])
    message: str = body["details"]["fields"][field]
    assert str(MAX_JSON_DEPTH) in message, message
    return message


# -- JSON nesting ------------------------------------------------------------------------------


async def test_a_config_nested_300_deep_is_refused_and_the_list_still_answers(
    client: httpx.AsyncClient,
) -> None:
    body = {"name": "Deep", "role": "r", "goal": "g", "config": nested(300)}
    depth_message(await client.post(f"{API}/agents/", json=body), "config")
    listed = await client.get(f"{API}/agents/")
    assert listed.status_code == 200, listed.text
    assert listed.json() == []


async def test_nesting_is_bounded_in_every_free_form_field(client: httpx.AsyncClient) -> None:
    agent = await make_agent(client)
    workflow = await make_workflow(client)
    task = await make_task(client, workflow["id"], agent_id=agent["id"])
    too_deep = nested(MAX_JSON_DEPTH + 1)
    cases = [
        ("POST", "/agents/", {"name": "A2", "role": "r", "goal": "g", "config": too_deep}),
        ("PUT", f"/agents/{agent['id']}", {"config": too_deep}),
        ("POST", f"/agents/{agent['id']}/test", {"input": "hi", "context": too_deep}),
        ("POST", "/workflows/", {"name": "W2", "config": too_deep}),
        ("PUT", f"/workflows/{workflow['id']}", {"config": too_deep}),
        ("POST", "/tasks/", {"workflow_id": workflow["id"], "name": "T", "input_data": too_deep}),
        ("POST", "/tasks/", {"workflow_id": workflow["id"], "name": "T", "config": too_deep}),
        ("PUT", f"/tasks/{task['id']}", {"input_data": too_deep}),
        ("PUT", f"/tasks/{task['id']}", {"config": too_deep}),
        ("POST", f"/workflows/{workflow['id']}/execute", {"input_data": too_deep}),
        ("POST", f"/workflows/{workflow['id']}/execute", {"config": too_deep}),
        ("POST", f"/tasks/{task['id']}/execute", {"input_data": too_deep}),
        ("POST", f"/tasks/{task['id']}/execute", {"config": too_deep}),
    ]
    for method, path, body in cases:
        response = await client.request(method, API + path, json=body)
        field = next(k for k, v in body.items() if v is too_deep)
        depth_message(response, field)
    for path in ("/agents/", "/workflows/", f"/tasks/?workflow_id={workflow['id']}"):
        assert (await client.get(API + path)).status_code == 200
    assert (await client.get(f"{API}/executions/")).json() == []


async def test_nesting_up_to_the_limit_is_stored_and_read_back(client: httpx.AsyncClient) -> None:
    deepest = nested(MAX_JSON_DEPTH)
    agent = await make_agent(client, config=deepest)
    got = await client.get(f"{API}/agents/{agent['id']}")
    assert got.status_code == 200
    assert got.json()["config"] == deepest
    workflow = await make_workflow(client, config=deepest)
    task = await make_task(client, workflow["id"], input_data=deepest, config=deepest)
    listed = await client.get(f"{API}/tasks/", params={"workflow_id": workflow["id"]})
    assert listed.status_code == 200
    assert listed.json()[0]["input_data"] == deepest == task["config"]


async def test_a_body_too_deep_to_parse_is_a_clean_400(client: httpx.AsyncClient) -> None:
    """Python's JSON parser recurses once per level; 100,000 levels fit in well under 1 MiB."""
    for body in ("[" * 100_000, '{"name": "x", "config": ' + '{"a": ' * 100_000):
        response = await client.post(
            f"{API}/agents/", content=body, headers={"content-type": "application/json"}
        )
        details = assert_error(response, 400, "INVALID_JSON")["details"]
        assert details["max_depth"] == MAX_JSON_DEPTH
    assert (await client.get(f"{API}/agents/")).status_code == 200


# -- numbers in JSON fields -------------------------------------------------------------------

SENT_NUMBERS = {
    "huge": -1.199629142654866e259,
    "inexact": 1e23,
    "exact": 1e16,
    "negative_zero": -0.0,
    "tiny": 1.5e-7,
    "plain": 1e15,
    "integer": 10**30,
}
STORED_NUMBERS = {
    "huge": -1199629142654866 * 10**244,
    "inexact": 10**23,
    "exact": 10**16,
    "negative_zero": 0.0,
    "tiny": 1.5e-7,
    "plain": 1e15,
    "integer": 10**30,
}


def as_json(value: Any) -> str:
    """Tells 1e16 from 10**16 and -0.0 from 0.0, which compare equal in Python."""
    return json.dumps(value, sort_keys=True)


async def test_numbers_in_json_fields_are_answered_as_they_read_back(
    client: httpx.AsyncClient,
) -> None:
    """Found by the read-back property: PostgreSQL's JSONB hands `-1.2e+259` back as an integer
    and `-0.0` as `0.0`, so the answer to the POST differed from a later GET."""
    expected = as_json({"n": STORED_NUMBERS})
    workflow = await make_workflow(client, config={"n": SENT_NUMBERS})
    task = await make_task(client, workflow["id"], input_data={"n": [SENT_NUMBERS]})
    put = await client.put(f"{API}/tasks/{task['id']}", json={"config": {"n": SENT_NUMBERS}})
    assert put.status_code == 200, put.text
    read_workflow = (await client.get(f"{API}/workflows/{workflow['id']}")).json()
    read_task = (await client.get(f"{API}/tasks/{task['id']}")).json()
    for answered in (workflow["config"], read_workflow["config"], put.json()["config"]):
        assert as_json(answered) == expected
    for answered in (task["input_data"], read_task["input_data"]):
        assert as_json(answered) == as_json({"n": [STORED_NUMBERS]})
    assert as_json(read_task["config"]) == expected


# -- string limits -----------------------------------------------------------------------------

STORED_BY = {
    "agents": (AgentCreate, AgentUpdate),
    "workflows": (WorkflowCreate, WorkflowUpdate),
    "tasks": (TaskCreate, TaskUpdate),
    "executions": (ExecuteRequest,),
    "task_runs": (InputRequest,),
    "tools": (ToolCreate, ToolUpdate),
    "mcp_servers": (McpServerCreate,),
}
STORES_NO_COLUMN = (AgentTestRequest,)


def _request_models() -> Iterator[type[RequestModel]]:
    create_app()  # every router, so every request model, is imported
    pending = list(RequestModel.__subclasses__())
    while pending:
        model = pending.pop()
        pending.extend(model.__subclasses__())
        if model.model_fields and not model.__name__.endswith("Base"):
            yield model


def _string_bounds(prop: dict[str, Any]) -> Iterator[int | None]:
    """The longest string each alternative of a property's schema admits (None: unbounded)."""
    options = prop.get("anyOf", [prop])
    for option in options:
        if "enum" in option:
            yield max(len(str(v)) for v in option["enum"])
        elif "const" in option:
            yield len(str(option["const"]))
        elif option.get("type") == "string":
            yield option.get("maxLength")


def test_every_request_model_is_checked_against_its_table() -> None:
    covered = {m for models in STORED_BY.values() for m in models} | set(STORES_NO_COLUMN)
    assert set(_request_models()) <= covered


def test_no_schema_admits_a_longer_string_than_its_column_holds() -> None:
    problems = []
    checked = 0
    for mapper in Base.registry.mappers:
        models = STORED_BY.get(mapper.local_table.name, ())
        for attr in inspect(mapper.class_).column_attrs:
            column = attr.columns[0]
            if not isinstance(column.type, String) or column.type.length is None:
                continue
            for model in models:
                prop = model.model_json_schema()["properties"].get(attr.key)
                if prop is None or prop.get("readOnly"):
                    continue
                checked += 1
                for bound in _string_bounds(prop):
                    if bound is None or bound > column.type.length:
                        problems.append(
                            f"{model.__name__}.{attr.key}: {bound} > {column}"
                            f" String({column.type.length})"
                        )
    # names, model, task_type, workflow_type of both create and update; the names of tools
    # (create and update) and MCP servers, and a server's url
    assert checked >= 16
    assert problems == []


async def test_a_task_type_as_long_as_its_column_is_stored_and_one_more_is_refused(
    client: httpx.AsyncClient,
) -> None:
    workflow = await make_workflow(client)
    task = await make_task(client, workflow["id"], task_type="t" * 64)
    assert task["task_type"] == "t" * 64
    too_long = "t" * 65
    body = {"workflow_id": workflow["id"], "name": "Too long", "task_type": too_long}
    assert_error(await client.post(f"{API}/tasks/", json=body), 422, fields=["task_type"])
    put = await client.put(f"{API}/tasks/{task['id']}", json={"task_type": too_long})
    assert_error(put, 422, fields=["task_type"])


# -- unknown and read-only fields --------------------------------------------------------------


async def test_unknown_fields_are_refused_by_every_request_body(
    client: httpx.AsyncClient,
) -> None:
    agent = await make_agent(client)
    workflow = await make_workflow(client)
    task = await make_task(client, workflow["id"], agent_id=agent["id"])
    cases = [
        ("POST", "/agents/", {"name": "A2", "role": "r", "goal": "g"}),
        ("PUT", f"/agents/{agent['id']}", {}),
        ("POST", f"/agents/{agent['id']}/test", {"input": "hi"}),
        ("POST", "/workflows/", {"name": "W2"}),
        ("PUT", f"/workflows/{workflow['id']}", {}),
        ("POST", "/tasks/", {"workflow_id": workflow["id"], "name": "T2"}),
        ("PUT", f"/tasks/{task['id']}", {}),
        ("POST", f"/workflows/{workflow['id']}/execute", {}),
        ("POST", f"/tasks/{task['id']}/execute", {}),
    ]
    for method, path, body in cases:
        response = await client.request(method, API + path, json=body | {"temprature": 0.1})
        fields = assert_error(response, 422, "VALIDATION_ERROR", fields=["temprature"])
        assert fields["details"]["fields"] == {"temprature": "unknown field"}, (method, path)
    assert (await client.get(f"{API}/executions/")).json() == []


async def test_read_only_fields_of_another_resource_are_still_unknown(
    client: httpx.AsyncClient,
) -> None:
    """Only the read model's own fields are ignored: `task_count` is a workflow's, not an
    agent's, and `status` is no field of an execution request."""
    body = {"name": "A", "role": "r", "goal": "g", "task_count": 1}
    assert_error(await client.post(f"{API}/agents/", json=body), 422, fields=["task_count"])
    workflow = await make_workflow(client)
    execute = await client.post(f"{API}/workflows/{workflow['id']}/execute", json={"id": 1})
    assert_error(execute, 422, fields=["id"])


@pytest.mark.parametrize("resource", ["agents", "workflows", "tasks"])
async def test_a_get_body_sent_back_as_a_put_is_accepted(
    client: httpx.AsyncClient, resource: str
) -> None:
    agent = await make_agent(client, config={"style": "terse"}, capabilities=["search"])
    workflow = await make_workflow(client, description="d", config={"max_parallel": 2})
    task = await make_task(
        client, workflow["id"], agent_id=agent["id"], input_data={"q": [1, {"r": None}]}
    )
    ident = {"agents": agent, "workflows": workflow, "tasks": task}[resource]["id"]
    before = (await client.get(f"{API}/{resource}/{ident}")).json()
    put = await client.put(f"{API}/{resource}/{ident}", json=before)
    assert put.status_code == 200, put.text
    after = (await client.get(f"{API}/{resource}/{ident}")).json()
    assert {k: v for k, v in after.items() if k != "updated_at"} == {
        k: v for k, v in before.items() if k != "updated_at"
    }


# -- 404 wording -------------------------------------------------------------------------------

NOT_FOUND_PATHS = [
    ("GET", "/agents/{id}", "Agent"),
    ("PUT", "/agents/{id}", "Agent"),
    ("DELETE", "/agents/{id}", "Agent"),
    ("POST", "/agents/{id}/test", "Agent"),
    ("GET", "/workflows/{id}", "Workflow"),
    ("PUT", "/workflows/{id}", "Workflow"),
    ("POST", "/workflows/{id}/execute", "Workflow"),
    ("GET", "/workflows/{id}/executions", "Workflow"),
    ("POST", "/workflows/{id}/pause", "Workflow"),
    ("GET", "/tasks/{id}", "Task"),
    ("GET", "/tasks/workflow/{id}", "Workflow"),
    ("GET", "/tasks/{id}/executions", "Task"),
    ("POST", "/tasks/{id}/retry", "Task"),
    ("GET", "/executions/{id}", "Execution"),
    ("GET", "/executions/{id}/status", "Execution"),
    ("GET", "/executions/{id}/logs", "Execution"),
    ("GET", "/executions/{id}/events", "Execution"),
]
BODIES = {"/agents/{id}/test": {"input": "hi"}, "/agents/{id}": {}, "/workflows/{id}": {}}


async def test_404s_name_the_resource_whatever_the_id(client: httpx.AsyncClient) -> None:
    """An id no row could have (0, negative, past 32 bits) reads as any other unknown id."""
    problems = []
    for method, template, kind in NOT_FOUND_PATHS:
        for ident in (0, -1, 2**31, 10**20, 999):
            body = BODIES.get(template) if method in ("PUT", "POST") else None
            path = API + template.format(id=ident)
            response = await client.request(method, path, json=body)
            expected = (f"{kind} {ident} not found", {"resource": kind.lower(), "id": ident})
            got = response.json()
            if response.status_code != 404 or (got["message"], got["details"]) != expected:
                problems.append(f"{method} {path}: {response.status_code} {got}")
    assert problems == []


async def test_id_filters_out_of_range_are_422_naming_the_parameter(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/tasks/", "/executions/", "/executions/stats"):
        for value in (0, 2**31):
            response = await client.get(API + path, params={"workflow_id": value})
            assert_error(response, 422, "VALIDATION_ERROR", fields=["workflow_id"])
    listed = await client.get(f"{API}/tasks/", params={"agent_id": 999})
    assert listed.status_code == 200 and listed.json() == []
