"""Workflows API: every endpoint, field, default and rule of the spec, and deletion of a
workflow with its tasks and execution history in one transaction."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.api import assert_error, assert_utc, check_each, make_agent, make_task, make_workflow
from tests.support import wait_for_execution
from tests.workflows.conftest import FailingDeletes, RowCounts

SPEC_CREATE_BODY = {
    "name": "New Workflow",
    "description": "Workflow description",
    "workflow_type": "linear",
    "config": {},
    "is_active": True,
}
READ_FIELDS = {
    "id", "name", "description", "workflow_type", "config", "is_active", "status", "task_count",
    "execution_count", "last_executed_at", "created_at", "updated_at", "created_by",
}  # fmt: skip


async def run_once(client: httpx.AsyncClient, workflow_id: int) -> dict[str, Any]:
    started = await client.post(f"/api/v1/workflows/{workflow_id}/execute", json={})
    assert started.status_code == 202, started.text
    done = await wait_for_execution(client, started.json()["id"])
    assert done["status"] == "completed", done
    return done


# -- create ----------------------------------------------------------------------------------


async def test_create_with_a_name_only_applies_the_defaults(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/workflows/", json={"name": "Minimal"})
    assert response.status_code == 201, response.text
    workflow = response.json()
    assert set(workflow) == READ_FIELDS
    assert isinstance(workflow["id"], int)
    assert workflow["workflow_type"] == "linear"
    assert workflow["is_active"] is True
    assert workflow["description"] is None
    assert workflow["config"] is None
    assert workflow["status"] == "active"
    assert workflow["task_count"] == 0
    assert workflow["execution_count"] == 0
    assert workflow["last_executed_at"] is None
    assert workflow["created_by"] is None
    assert_utc(workflow["created_at"])
    assert_utc(workflow["updated_at"])


async def test_create_accepts_the_spec_request_body_verbatim(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/workflows/", json=SPEC_CREATE_BODY)
    assert response.status_code == 201, response.text
    workflow = response.json()
    for field, value in SPEC_CREATE_BODY.items():
        assert workflow[field] == value, field
    assert (await client.get(f"/api/v1/workflows/{workflow['id']}")).json() == workflow


@pytest.mark.parametrize("path", ["/api/v1/workflows/", "/api/v1/workflows"])
async def test_create_answers_with_and_without_trailing_slash(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.post(path, json={"name": "Slash"})
    assert response.status_code == 201, response.text


async def test_parallel_workflows_are_accepted(client: httpx.AsyncClient) -> None:
    workflow = await make_workflow(client, workflow_type="parallel", config={"max_parallel": 2})
    assert workflow["workflow_type"] == "parallel"
    assert workflow["config"] == {"max_parallel": 2}


async def test_other_workflow_types_are_422_listing_the_accepted_ones(
    client: httpx.AsyncClient,
) -> None:
    async def check(workflow_type: Any) -> None:
        response = await client.post(
            "/api/v1/workflows/", json={"name": "Typed", "workflow_type": workflow_type}
        )
        body = assert_error(response, 422, "VALIDATION_ERROR", fields=["workflow_type"])
        explanation = body["details"]["fields"]["workflow_type"]
        assert "'linear'" in explanation and "'parallel'" in explanation, explanation

    await check_each(["dag", "Linear", "", "sequential", 1, None], check)


async def test_read_only_fields_are_ignored_on_create_and_update(
    client: httpx.AsyncClient,
) -> None:
    read_only = {"status": "paused", "task_count": 9, "execution_count": 9,
                 "last_executed_at": "2024-01-15T10:30:00Z", "created_by": "x"}  # fmt: skip
    workflow = await make_workflow(client, **read_only)
    assert workflow["status"] == "active"
    assert (workflow["task_count"], workflow["execution_count"]) == (0, 0)
    assert workflow["last_executed_at"] is None
    updated = await client.put(f"/api/v1/workflows/{workflow['id']}", json=read_only)
    assert updated.status_code == 200
    assert updated.json()["status"] == "active"
    assert updated.json()["task_count"] == 0


INVALID_FIELDS: list[tuple[str, Any]] = [
    ("name", ""),
    ("name", "   "),
    ("name", "n" * 201),
    ("name", None),
    ("name", 12),
    ("description", 5),
    ("description", "d" * 100_001),
    ("config", []),
    ("config", "x"),
    ("config", {"max_parallel": 0}),
    ("config", {"max_parallel": "4"}),
    ("config", {"max_parallel": True}),
    ("config", {"max_parallel": 257}),
    ("is_active", "true"),
    ("is_active", 0),
    ("is_active", None),
]


async def test_create_rejects_each_invalid_field_with_422_naming_it(
    client: httpx.AsyncClient,
) -> None:
    async def check(field: str, value: Any) -> None:
        response = await client.post("/api/v1/workflows/", json={"name": "Valid", field: value})
        assert_error(response, 422, "VALIDATION_ERROR", fields=[field])

    await check_each(INVALID_FIELDS, check)
    listed = await client.get("/api/v1/workflows/", params={"active_only": False})
    assert listed.json() == []


async def test_a_missing_name_is_422(client: httpx.AsyncClient) -> None:
    assert_error(await client.post("/api/v1/workflows/", json={}), 422, fields=["name"])


# -- derived fields --------------------------------------------------------------------------


async def test_task_count_execution_count_and_last_executed_at_follow_the_store(
    client: httpx.AsyncClient, stub: Any
) -> None:
    agent = await make_agent(client)
    workflow = await make_workflow(client)
    other = await make_workflow(client, "Other")
    await make_task(client, workflow["id"], "One", agent_id=agent["id"])
    await make_task(client, workflow["id"], "Two", agent_id=agent["id"])
    await make_task(client, other["id"], "Elsewhere", agent_id=agent["id"])
    fetched = (await client.get(f"/api/v1/workflows/{workflow['id']}")).json()
    assert (fetched["task_count"], fetched["execution_count"]) == (2, 0)
    assert fetched["last_executed_at"] is None

    first = await run_once(client, workflow["id"])
    second = await run_once(client, workflow["id"])
    fetched = (await client.get(f"/api/v1/workflows/{workflow['id']}")).json()
    assert (fetched["task_count"], fetched["execution_count"]) == (2, 2)
    assert_utc(fetched["last_executed_at"])
    assert fetched["last_executed_at"] >= first["created_at"]
    assert fetched["last_executed_at"] == second["created_at"]
    listed = (await client.get("/api/v1/workflows/")).json()
    assert [w["execution_count"] for w in listed] == [2, 0]
    assert [w["task_count"] for w in listed] == [2, 1]


# -- get and list ----------------------------------------------------------------------------


async def test_get_unknown_workflow_is_404(client: httpx.AsyncClient) -> None:
    body = assert_error(await client.get("/api/v1/workflows/5"), 404, "NOT_FOUND")
    assert body["details"] == {"resource": "workflow", "id": 5}


@pytest.mark.parametrize("path", ["/api/v1/workflows/", "/api/v1/workflows"])
async def test_list_answers_with_and_without_trailing_slash_and_counts(
    client: httpx.AsyncClient, path: str
) -> None:
    for name in ("A", "B"):
        await make_workflow(client, name)
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["X-Total-Count"] == "2"
    assert [w["name"] for w in response.json()] == ["A", "B"]


async def test_list_pages_and_filters_active_ones(client: httpx.AsyncClient) -> None:
    for index in range(4):
        await make_workflow(client, f"W{index}", is_active=index != 1)
    default = await client.get("/api/v1/workflows/")
    assert [w["name"] for w in default.json()] == ["W0", "W2", "W3"]
    assert default.headers["X-Total-Count"] == "3"
    page = await client.get(
        "/api/v1/workflows/", params={"active_only": False, "skip": 1, "limit": 2}
    )
    assert [w["name"] for w in page.json()] == ["W1", "W2"]
    assert page.headers["X-Total-Count"] == "4"


async def test_list_rejects_bad_query_parameters(client: httpx.AsyncClient) -> None:
    async def check(params: dict[str, Any]) -> None:
        response = await client.get("/api/v1/workflows/", params=params)
        assert_error(response, 422, "VALIDATION_ERROR", fields=list(params))

    await check_each(
        [{"limit": 0}, {"limit": 1001}, {"skip": -1}, {"active_only": "sometimes"}], check
    )


# -- update ----------------------------------------------------------------------------------


async def test_update_changes_only_the_fields_sent(client: httpx.AsyncClient) -> None:
    workflow = await make_workflow(client, description="Before", config={"k": 1})
    response = await client.put(
        f"/api/v1/workflows/{workflow['id']}", json={"workflow_type": "parallel"}
    )
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["workflow_type"] == "parallel"
    assert updated["description"] == "Before"
    assert updated["config"] == {"k": 1}
    assert updated["name"] == workflow["name"]
    assert updated["updated_at"] >= workflow["updated_at"]


async def test_update_rejects_explicit_null_on_each_required_field(
    client: httpx.AsyncClient,
) -> None:
    workflow = await make_workflow(client)

    async def check(field: str) -> None:
        response = await client.put(f"/api/v1/workflows/{workflow['id']}", json={field: None})
        assert_error(response, 422, "VALIDATION_ERROR", fields=[field])

    await check_each(["name", "workflow_type", "is_active"], check)
    assert (await client.get(f"/api/v1/workflows/{workflow['id']}")).json() == workflow


async def test_update_accepts_null_on_the_nullable_fields(client: httpx.AsyncClient) -> None:
    workflow = await make_workflow(client, description="Text", config={"a": 1})
    response = await client.put(
        f"/api/v1/workflows/{workflow['id']}", json={"description": None, "config": None}
    )
    assert response.status_code == 200
    assert (response.json()["description"], response.json()["config"]) == (None, None)


async def test_update_rejects_each_invalid_field_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    workflow = await make_workflow(client)

    async def check(field: str, value: Any) -> None:
        response = await client.put(
            f"/api/v1/workflows/{workflow['id']}", json={"description": "Changed", field: value}
        )
        assert_error(response, 422, "VALIDATION_ERROR", fields=[field])

    await check_each([*INVALID_FIELDS, ("workflow_type", "dag"), ("workflow_type", 3)], check)
    assert (await client.get(f"/api/v1/workflows/{workflow['id']}")).json() == workflow


async def test_update_unknown_workflow_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.put("/api/v1/workflows/3", json={"name": "x"}), 404, "NOT_FOUND")


# -- unique names ----------------------------------------------------------------------------


async def test_duplicate_names_are_409_on_create_and_update(client: httpx.AsyncClient) -> None:
    await make_workflow(client, "Taken")
    other = await make_workflow(client, "Free")
    created = await client.post("/api/v1/workflows/", json={"name": "Taken"})
    assert assert_error(created, 409, "CONFLICT")["details"]["field"] == "name"
    renamed = await client.put(
        f"/api/v1/workflows/{other['id']}", json={"name": "Taken", "description": "x"}
    )
    assert_error(renamed, 409, "CONFLICT")
    assert (await client.get(f"/api/v1/workflows/{other['id']}")).json() == other
    same = await client.put(f"/api/v1/workflows/{other['id']}", json={"name": "Free"})
    assert same.status_code == 200


async def test_concurrent_creates_of_one_name_let_exactly_one_win(
    client: httpx.AsyncClient,
) -> None:
    responses = await asyncio.gather(
        *(client.post("/api/v1/workflows/", json={"name": "Race"}) for _ in range(20))
    )
    assert sorted(r.status_code for r in responses) == [201] + [409] * 19
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "CONFLICT")
    listed = await client.get("/api/v1/workflows/")
    assert listed.headers["X-Total-Count"] == "1"


# -- delete ----------------------------------------------------------------------------------


async def test_delete_removes_the_workflow_its_tasks_and_its_execution_history(
    client: httpx.AsyncClient, stub: Any, row_counts: RowCounts
) -> None:
    agent = await make_agent(client)
    doomed = await make_workflow(client, "Doomed")
    kept = await make_workflow(client, "Kept")
    for workflow in (doomed, kept):
        first = await make_task(client, workflow["id"], "First", agent_id=agent["id"])
        await make_task(
            client, workflow["id"], "Second", agent_id=agent["id"], dependencies=[first["id"]]
        )
        await run_once(client, workflow["id"])
    before = await row_counts(doomed["id"])
    assert before["tasks"] == 2 and before["executions"] == 1
    assert before["task_runs"] >= 2 and before["execution_logs"] >= 1
    kept_before = await row_counts(kept["id"])

    response = await client.delete(f"/api/v1/workflows/{doomed['id']}")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": doomed["id"],
        "deleted": True,
        "message": f"Workflow {doomed['id']} deleted",
    }
    assert await row_counts(doomed["id"]) == {
        "tasks": 0, "executions": 0, "task_runs": 0, "execution_logs": 0,
    }  # fmt: skip
    assert await row_counts(kept["id"]) == kept_before
    assert_error(await client.get(f"/api/v1/workflows/{doomed['id']}"), 404, "NOT_FOUND")
    tasks = await client.get("/api/v1/tasks/", params={"workflow_id": doomed["id"]})
    assert tasks.json() == []
    executions = await client.get("/api/v1/executions/", params={"workflow_id": doomed["id"]})
    assert executions.json() == []
    assert_error(await client.delete(f"/api/v1/workflows/{doomed['id']}"), 404, "NOT_FOUND")
    # The agent those tasks used may go now.
    kept_tasks = (await client.get(f"/api/v1/tasks/workflow/{kept['id']}")).json()
    for task in reversed(kept_tasks):
        assert (await client.delete(f"/api/v1/tasks/{task['id']}")).status_code == 200
    assert (await client.delete(f"/api/v1/agents/{agent['id']}")).status_code == 200


async def test_a_delete_that_fails_midway_leaves_everything_in_place(
    client: httpx.AsyncClient, stub: Any, row_counts: RowCounts, failing_deletes: FailingDeletes
) -> None:
    """The workflow row is deleted last; when that statement fails, the tasks and history
    deleted before it in the same request must come back (one transaction)."""
    agent = await make_agent(client)
    workflow = await make_workflow(client)
    await make_task(client, workflow["id"], "Only", agent_id=agent["id"])
    await run_once(client, workflow["id"])
    before = await row_counts(workflow["id"])

    async with failing_deletes("workflows"):
        response = await client.delete(f"/api/v1/workflows/{workflow['id']}")
    body = assert_error(response, 500, "INTERNAL_ERROR")
    assert "refused by test trigger" not in response.text
    assert body["details"] == {}

    assert await row_counts(workflow["id"]) == before
    fetched = await client.get(f"/api/v1/workflows/{workflow['id']}")
    assert fetched.status_code == 200
    assert fetched.json()["task_count"] == 1
    assert fetched.json()["execution_count"] == 1
    # Nothing is stuck: the same delete succeeds once the database lets it.
    assert (await client.delete(f"/api/v1/workflows/{workflow['id']}")).status_code == 200
    assert await row_counts(workflow["id"]) == {
        "tasks": 0, "executions": 0, "task_runs": 0, "execution_logs": 0,
    }  # fmt: skip
