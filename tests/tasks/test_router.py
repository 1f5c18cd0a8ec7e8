"""Tasks API: every endpoint, field, default and rule of the spec: references that must exist,
dependencies inside one workflow and without cycles, status of the latest run, and order."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from crew_platform.devtools.llm_stub import StubServer
from tests.api import (
    assert_error,
    assert_utc,
    check_each,
    make_agent,
    make_task,
    make_workflow,
)
from tests.support import wait_for_execution

SPEC_CREATE_BODY = {
    "workflow_id": 1,
    "agent_id": 1,
    "name": "Task Name",
    "description": "Task description",
    "task_type": "ai_task",
    "priority": 0,
    "order": 0,
    "input_data": {},
    "config": {},
    "dependencies": [],
    "is_active": True,
}
READ_FIELDS = {
    "id", "workflow_id", "agent_id", "name", "description", "expected_output", "task_type",
    "priority", "order", "input_data", "config", "dependencies", "is_active", "status",
    "created_at", "updated_at", "created_by", "context", "output_schema", "guardrail",
    "guardrail_max_retries", "human_input",
}  # fmt: skip


async def run_workflow(client: httpx.AsyncClient, workflow_id: int) -> dict[str, Any]:
    started = await client.post(f"/api/v1/workflows/{workflow_id}/execute", json={})
    assert started.status_code == 202, started.text
    return await wait_for_execution(client, started.json()["id"])


# -- create ----------------------------------------------------------------------------------


async def test_create_with_required_fields_only_applies_the_defaults(
    client: httpx.AsyncClient, workflow: Any
) -> None:
    response = await client.post(
        "/api/v1/tasks/", json={"workflow_id": workflow["id"], "name": "Bare"}
    )
    assert response.status_code == 201, response.text
    task = response.json()
    assert set(task) == READ_FIELDS
    assert isinstance(task["id"], int)
    assert task["workflow_id"] == workflow["id"]
    assert task["agent_id"] is None
    assert task["task_type"] == "ai_task"
    assert (task["priority"], task["order"]) == (0, 0)
    assert task["dependencies"] == []
    assert task["is_active"] is True
    assert task["human_input"] is False
    assert task["status"] == "pending"
    assert task["description"] is None
    assert task["expected_output"] is None
    assert task["input_data"] is None
    assert task["config"] is None
    assert task["context"] is None and task["output_schema"] is None
    assert task["guardrail"] is None and task["guardrail_max_retries"] == 2
    assert task["created_by"] is None
    assert_utc(task["created_at"])
    assert_utc(task["updated_at"])


async def test_create_accepts_the_spec_request_body_verbatim(
    client: httpx.AsyncClient, agent: Any, workflow: Any
) -> None:
    assert (agent["id"], workflow["id"]) == (1, 1)
    response = await client.post("/api/v1/tasks/", json=SPEC_CREATE_BODY)
    assert response.status_code == 201, response.text
    task = response.json()
    for field, value in SPEC_CREATE_BODY.items():
        assert task[field] == value, field
    assert task["status"] == "pending"
    assert (await client.get(f"/api/v1/tasks/{task['id']}")).json() == task


@pytest.mark.parametrize("path", ["/api/v1/tasks/", "/api/v1/tasks"])
async def test_create_answers_with_and_without_trailing_slash(
    client: httpx.AsyncClient, workflow: Any, path: str
) -> None:
    response = await client.post(path, json={"workflow_id": workflow["id"], "name": "T"})
    assert response.status_code == 201, response.text


async def test_expected_output_and_free_form_fields_round_trip(
    client: httpx.AsyncClient, agent: Any, workflow: Any
) -> None:
    task = await make_task(
        client,
        workflow["id"],
        agent_id=agent["id"],
        description="Summarise {topic}",
        expected_output="Three bullet points",
        task_type="review",
        priority=-3,
        order=7,
        input_data={"topic": "AI", "n": [1, 2]},
        config={"retries": 2},
        is_active=False,
    )
    fetched = (await client.get(f"/api/v1/tasks/{task['id']}")).json()
    assert fetched == task
    assert fetched["expected_output"] == "Three bullet points"
    assert (fetched["priority"], fetched["order"]) == (-3, 7)
    assert fetched["input_data"] == {"topic": "AI", "n": [1, 2]}
    assert fetched["is_active"] is False


async def test_a_task_needs_an_existing_workflow(client: httpx.AsyncClient, agent: Any) -> None:
    response = await client.post(
        "/api/v1/tasks/", json={"workflow_id": 99, "agent_id": agent["id"], "name": "T"}
    )
    body = assert_error(response, 422, "VALIDATION_ERROR", fields=["workflow_id"])
    assert "99" in body["details"]["fields"]["workflow_id"]
    assert_error(
        await client.post("/api/v1/tasks/", json={"name": "T"}), 422, fields=["workflow_id"]
    )


async def test_a_task_needs_an_existing_agent_if_it_names_one(
    client: httpx.AsyncClient, workflow: Any
) -> None:
    response = await client.post(
        "/api/v1/tasks/", json={"workflow_id": workflow["id"], "agent_id": 42, "name": "T"}
    )
    body = assert_error(response, 422, "VALIDATION_ERROR", fields=["agent_id"])
    assert "42" in body["details"]["fields"]["agent_id"]
    assert (await client.get("/api/v1/tasks/")).headers["X-Total-Count"] == "0"


INVALID_FIELDS: list[tuple[str, Any]] = [
    ("workflow_id", "1"),
    ("workflow_id", True),
    ("workflow_id", 0),
    ("workflow_id", 2**31),
    ("workflow_id", None),
    ("agent_id", "1"),
    ("agent_id", 1.0),
    ("agent_id", -1),
    ("name", ""),
    ("name", "  "),
    ("name", "t" * 201),
    ("name", None),
    ("task_type", ""),
    ("task_type", None),
    ("priority", "1"),
    ("priority", True),
    ("priority", 1.5),
    ("priority", 1_000_001),
    ("priority", None),
    ("order", "0"),
    ("order", False),
    ("order", -1_000_001),
    ("order", [1]),
    ("description", 3),
    ("expected_output", {"a": 1}),
    ("input_data", []),
    ("input_data", "text"),
    ("config", 1),
    ("config", {"k": "nul\x00"}),
    ("dependencies", "1"),
    ("dependencies", 1),
    ("dependencies", [True]),
    ("dependencies", ["1"]),
    ("dependencies", [0]),
    ("dependencies", None),
    ("is_active", "false"),
    ("is_active", 0),
    ("is_active", None),
    ("human_input", "true"),
    ("human_input", 1),
    ("human_input", None),
]


async def test_create_rejects_each_invalid_field_with_422_naming_it(
    client: httpx.AsyncClient, agent: Any, workflow: Any
) -> None:
    async def check(field: str, value: Any) -> None:
        body = {"workflow_id": workflow["id"], "agent_id": agent["id"], "name": "T", field: value}
        response = await client.post("/api/v1/tasks/", json=body)
        assert_error(response, 422, "VALIDATION_ERROR", fields=[field])

    await check_each(INVALID_FIELDS, check)
    assert (await client.get("/api/v1/tasks/")).json() == []


# -- dependencies ----------------------------------------------------------------------------


async def test_dependencies_name_tasks_of_the_same_workflow(
    client: httpx.AsyncClient, workflow: Any
) -> None:
    first = await make_task(client, workflow["id"], "First")
    second = await make_task(client, workflow["id"], "Second", dependencies=[first["id"]])
    third = await make_task(
        client, workflow["id"], "Third", dependencies=[first["id"], second["id"], first["id"]]
    )
    assert second["dependencies"] == [first["id"]]
    assert third["dependencies"] == [first["id"], second["id"]]  # duplicates dropped


async def test_dependencies_on_another_workflows_or_missing_tasks_are_422(
    client: httpx.AsyncClient, workflow: Any
) -> None:
    other = await make_workflow(client, "Other")
    foreign = await make_task(client, other["id"], "Foreign")
    own = await make_task(client, workflow["id"], "Own")
    for dependencies in ([foreign["id"]], [own["id"], 999]):
        response = await client.post(
            "/api/v1/tasks/",
            json={"workflow_id": workflow["id"], "name": "New", "dependencies": dependencies},
        )
        assert_error(response, 422, "VALIDATION_ERROR", fields=["dependencies"])
    response = await client.put(
        f"/api/v1/tasks/{own['id']}", json={"dependencies": [foreign["id"]]}
    )
    assert_error(response, 422, "VALIDATION_ERROR", fields=["dependencies"])
    assert (await client.get("/api/v1/tasks/")).headers["X-Total-Count"] == "2"


async def test_a_task_cannot_depend_on_itself(client: httpx.AsyncClient, workflow: Any) -> None:
    task = await make_task(client, workflow["id"])
    response = await client.put(f"/api/v1/tasks/{task['id']}", json={"dependencies": [task["id"]]})
    assert_error(response, 422, "VALIDATION_ERROR", fields=["dependencies"])
    assert (await client.get(f"/api/v1/tasks/{task['id']}")).json()["dependencies"] == []


async def test_a_dependency_cycle_is_422_with_the_cycle_in_details(
    client: httpx.AsyncClient, workflow: Any
) -> None:
    a = await make_task(client, workflow["id"], "A")
    b = await make_task(client, workflow["id"], "B", dependencies=[a["id"]])
    c = await make_task(client, workflow["id"], "C", dependencies=[b["id"]])
    response = await client.put(
        f"/api/v1/tasks/{a['id']}", json={"dependencies": [c["id"]], "name": "A renamed"}
    )
    body = assert_error(response, 422, "DEPENDENCY_CYCLE", fields=["dependencies"])
    cycle = body["details"]["cycle"]
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {a["id"], b["id"], c["id"]}
    assert len(cycle) == 4
    # Nothing of the refused update was written.
    assert (await client.get(f"/api/v1/tasks/{a['id']}")).json() == a
    # A two-task cycle is refused too, from either end.
    response = await client.put(f"/api/v1/tasks/{a['id']}", json={"dependencies": [b["id"]]})
    assert assert_error(response, 422, "DEPENDENCY_CYCLE")["details"]["cycle"] in (
        [a["id"], b["id"], a["id"]],
        [b["id"], a["id"], b["id"]],
    )


async def test_concurrent_updates_cannot_close_a_cycle_between_them(
    client: httpx.AsyncClient, workflow: Any
) -> None:
    """A -> B and B -> A sent at once: each alone is fine, together a cycle; one must lose."""
    for _ in range(5):
        a = await make_task(client, workflow["id"], "A")
        b = await make_task(client, workflow["id"], "B")
        first, second = await asyncio.gather(
            client.put(f"/api/v1/tasks/{a['id']}", json={"dependencies": [b["id"]]}),
            client.put(f"/api/v1/tasks/{b['id']}", json={"dependencies": [a["id"]]}),
        )
        assert sorted([first.status_code, second.status_code]) == [200, 422]
        loser = first if first.status_code == 422 else second
        assert_error(loser, 422, "DEPENDENCY_CYCLE")
        graph = {t["id"]: t["dependencies"] for t in (await client.get("/api/v1/tasks/")).json()}
        assert graph[a["id"]] == [] or graph[b["id"]] == []
        for task in (a, b):
            await client.put(f"/api/v1/tasks/{task['id']}", json={"dependencies": []})
        for task in (a, b):
            assert (await client.delete(f"/api/v1/tasks/{task['id']}")).status_code == 200


async def test_a_delete_racing_a_new_dependency_on_the_task_leaves_none_dangling(
    client: httpx.AsyncClient, workflow: Any
) -> None:
    for _ in range(5):
        a = await make_task(client, workflow["id"], "A")
        b = await make_task(client, workflow["id"], "B")
        deleted, updated = await asyncio.gather(
            client.delete(f"/api/v1/tasks/{a['id']}"),
            client.put(f"/api/v1/tasks/{b['id']}", json={"dependencies": [a["id"]]}),
        )
        outcome = (deleted.status_code, updated.status_code)
        assert outcome in ((200, 422), (409, 200)), outcome
        ids = {t["id"] for t in (await client.get("/api/v1/tasks/")).json()}
        for task in (await client.get("/api/v1/tasks/")).json():
            assert set(task["dependencies"]) <= ids, task
        await client.put(f"/api/v1/tasks/{b['id']}", json={"dependencies": []})
        for task in (a, b):
            await client.delete(f"/api/v1/tasks/{task['id']}")


async def test_concurrent_updates_of_different_fields_of_a_task_both_stick(
    client: httpx.AsyncClient, workflow: Any
) -> None:
    base = await make_task(client, workflow["id"], "Base")
    for round_ in range(5):
        task = await make_task(client, workflow["id"], f"Task {round_}")
        renamed, linked = await asyncio.gather(
            client.put(f"/api/v1/tasks/{task['id']}", json={"name": f"Renamed {round_}"}),
            client.put(f"/api/v1/tasks/{task['id']}", json={"dependencies": [base["id"]]}),
        )
        assert (renamed.status_code, linked.status_code) == (200, 200)
        final = (await client.get(f"/api/v1/tasks/{task['id']}")).json()
        assert (final["name"], final["dependencies"]) == (f"Renamed {round_}", [base["id"]])


async def test_moving_a_task_others_depend_on_to_another_workflow_is_422(
    client: httpx.AsyncClient, workflow: Any
) -> None:
    other = await make_workflow(client, "Other")
    base = await make_task(client, workflow["id"], "Base")
    dependent = await make_task(client, workflow["id"], "Dependent", dependencies=[base["id"]])
    response = await client.put(f"/api/v1/tasks/{base['id']}", json={"workflow_id": other["id"]})
    body = assert_error(response, 422, "VALIDATION_ERROR", fields=["workflow_id"])
    assert body["details"]["dependent_task_ids"] == [dependent["id"]]
    # A task moves with its own dependencies cleared in the same update.
    moved = await client.put(
        f"/api/v1/tasks/{dependent['id']}",
        json={"workflow_id": other["id"], "dependencies": []},
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["workflow_id"] == other["id"]


async def test_deleting_a_task_others_depend_on_is_409(
    client: httpx.AsyncClient, workflow: Any
) -> None:
    base = await make_task(client, workflow["id"], "Base")
    dependent = await make_task(client, workflow["id"], "Dependent", dependencies=[base["id"]])
    body = assert_error(await client.delete(f"/api/v1/tasks/{base['id']}"), 409, "CONFLICT")
    assert body["details"]["dependent_task_ids"] == [dependent["id"]]
    assert (await client.delete(f"/api/v1/tasks/{dependent['id']}")).status_code == 200
    assert (await client.delete(f"/api/v1/tasks/{base['id']}")).status_code == 200


# -- get and list ----------------------------------------------------------------------------


async def test_get_and_delete_of_unknown_tasks_are_404(client: httpx.AsyncClient) -> None:
    body = assert_error(await client.get("/api/v1/tasks/3"), 404, "NOT_FOUND")
    assert body["details"] == {"resource": "task", "id": 3}
    assert_error(await client.delete("/api/v1/tasks/3"), 404, "NOT_FOUND")
    assert_error(await client.put("/api/v1/tasks/3", json={"name": "x"}), 404, "NOT_FOUND")


@pytest.mark.parametrize("path", ["/api/v1/tasks/", "/api/v1/tasks"])
async def test_list_answers_with_and_without_trailing_slash_and_counts(
    client: httpx.AsyncClient, workflow: Any, path: str
) -> None:
    for name in ("A", "B", "C"):
        await make_task(client, workflow["id"], name)
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["X-Total-Count"] == "3"
    assert [t["name"] for t in response.json()] == ["A", "B", "C"]
    page = await client.get(path, params={"skip": 2, "limit": 5})
    assert [t["name"] for t in page.json()] == ["C"]
    assert page.headers["X-Total-Count"] == "3"


async def test_list_filters_by_workflow_agent_and_status(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    writer = await make_agent(client, "Writer")
    editor = await make_agent(client, "Editor")
    draft = await make_workflow(client, "Draft")
    review = await make_workflow(client, "Review")
    w1 = await make_task(client, draft["id"], "Write", agent_id=writer["id"])
    e1 = await make_task(client, draft["id"], "Edit", agent_id=editor["id"])
    e2 = await make_task(client, review["id"], "Proofread", agent_id=editor["id"])

    async def names(**params: Any) -> list[str]:
        response = await client.get("/api/v1/tasks/", params=params)
        assert response.status_code == 200, response.text
        assert response.headers["X-Total-Count"] == str(len(response.json()))
        return [t["name"] for t in response.json()]

    assert await names(workflow_id=draft["id"]) == ["Write", "Edit"]
    assert await names(agent_id=editor["id"]) == ["Edit", "Proofread"]
    assert await names(workflow_id=draft["id"], agent_id=editor["id"]) == ["Edit"]
    assert await names(workflow_id=999) == []
    assert await names(status="pending") == ["Write", "Edit", "Proofread"]

    done = await run_workflow(client, review["id"])
    assert done["status"] == "completed", done
    assert await names(status="completed") == ["Proofread"]
    assert await names(status="pending") == ["Write", "Edit"]
    assert (await client.get(f"/api/v1/tasks/{e2['id']}")).json()["status"] == "completed"

    stub.script({"match": "Edit", "status": 400})
    failed = await run_workflow(client, draft["id"])
    assert failed["status"] == "failed", failed
    statuses = {t["id"]: t["status"] for t in (await client.get("/api/v1/tasks/")).json()}
    assert statuses[w1["id"]] == "completed"
    assert statuses[e1["id"]] == "failed"
    assert await names(status="failed") == ["Edit"]
    assert await names(status="failed", agent_id=writer["id"]) == []


async def test_list_rejects_bad_query_parameters(client: httpx.AsyncClient) -> None:
    async def check(params: dict[str, Any], field: str) -> None:
        response = await client.get("/api/v1/tasks/", params=params)
        assert_error(response, 422, "VALIDATION_ERROR", fields=[field])

    await check_each(
        [
            ({"status": "done"}, "status"),
            ({"status": ""}, "status"),
            ({"status": "\x00"}, "status"),
            ({"workflow_id": "one"}, "workflow_id"),
            ({"workflow_id": 0}, "workflow_id"),
            ({"agent_id": 2**31}, "agent_id"),
            ({"limit": 1001}, "limit"),
            ({"skip": -1}, "skip"),
        ],
        check,
    )


# -- a workflow's tasks in execution order ---------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/"])
async def test_workflow_tasks_come_in_execution_order(
    client: httpx.AsyncClient, workflow: Any, suffix: str
) -> None:
    other = await make_workflow(client, "Other")
    specs = [("d", 2, 0), ("a", 1, 0), ("c", 1, 5), ("b", 1, 5), ("e", 0, -1), ("f", 2, 9)]
    created = {
        name: await make_task(client, workflow["id"], name, order=order, priority=priority)
        for name, order, priority in specs
    }
    await make_task(client, other["id"], "elsewhere", order=-5)
    response = await client.get(f"/api/v1/tasks/workflow/{workflow['id']}{suffix}")
    assert response.status_code == 200
    # order ascending, then priority descending, then id ascending (c before b: created first)
    assert [t["name"] for t in response.json()] == ["e", "c", "b", "a", "f", "d"]
    assert response.headers["X-Total-Count"] == "6"
    assert response.json()[1] == created["c"]


async def test_workflow_tasks_of_an_unknown_workflow_are_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/api/v1/tasks/workflow/77"), 404, "NOT_FOUND")
    assert_error(await client.get("/api/v1/tasks/workflow/0"), 404, "NOT_FOUND")


async def test_workflow_tasks_of_a_workflow_without_tasks_are_empty(
    client: httpx.AsyncClient, workflow: Any
) -> None:
    response = await client.get(f"/api/v1/tasks/workflow/{workflow['id']}")
    assert response.json() == []
    assert response.headers["X-Total-Count"] == "0"


# -- update and delete -----------------------------------------------------------------------


async def test_update_changes_only_the_fields_sent(
    client: httpx.AsyncClient, agent: Any, workflow: Any
) -> None:
    task = await make_task(
        client, workflow["id"], agent_id=agent["id"], description="D", input_data={"x": 1}
    )
    response = await client.put(f"/api/v1/tasks/{task['id']}", json={"priority": 5})
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["priority"] == 5
    rest = {k: v for k, v in updated.items() if k not in ("priority", "updated_at")}
    assert rest == {k: v for k, v in task.items() if k not in ("priority", "updated_at")}
    assert updated["updated_at"] >= task["updated_at"]


async def test_update_can_reassign_and_unassign_the_agent(
    client: httpx.AsyncClient, agent: Any, workflow: Any
) -> None:
    other = await make_agent(client, "Other")
    task = await make_task(client, workflow["id"], agent_id=agent["id"])
    moved = await client.put(f"/api/v1/tasks/{task['id']}", json={"agent_id": other["id"]})
    assert moved.json()["agent_id"] == other["id"]
    cleared = await client.put(f"/api/v1/tasks/{task['id']}", json={"agent_id": None})
    assert cleared.status_code == 200
    assert cleared.json()["agent_id"] is None
    missing = await client.put(f"/api/v1/tasks/{task['id']}", json={"agent_id": 404})
    assert_error(missing, 422, "VALIDATION_ERROR", fields=["agent_id"])
    gone = await client.put(f"/api/v1/tasks/{task['id']}", json={"workflow_id": 404})
    assert_error(gone, 422, "VALIDATION_ERROR", fields=["workflow_id"])


async def test_update_rejects_explicit_null_on_each_required_field(
    client: httpx.AsyncClient, workflow: Any
) -> None:
    task = await make_task(client, workflow["id"])

    async def check(field: str) -> None:
        response = await client.put(f"/api/v1/tasks/{task['id']}", json={field: None})
        assert_error(response, 422, "VALIDATION_ERROR", fields=[field])

    required = ["workflow_id", "name", "task_type", "priority", "order", "dependencies"]
    await check_each([*required, "is_active", "human_input"], check)
    assert (await client.get(f"/api/v1/tasks/{task['id']}")).json() == task


async def test_human_input_is_stored_and_changed_by_update(
    client: httpx.AsyncClient, workflow: Any
) -> None:
    task = await make_task(client, workflow["id"], human_input=True)
    assert task["human_input"] is True
    assert (await client.get(f"/api/v1/tasks/{task['id']}")).json()["human_input"] is True
    response = await client.put(f"/api/v1/tasks/{task['id']}", json={"human_input": False})
    assert response.status_code == 200, response.text
    assert response.json()["human_input"] is False
    unchanged = await client.put(f"/api/v1/tasks/{task['id']}", json={"name": "Renamed"})
    assert unchanged.json()["human_input"] is False


async def test_update_accepts_null_on_the_nullable_fields(
    client: httpx.AsyncClient, agent: Any, workflow: Any
) -> None:
    task = await make_task(
        client, workflow["id"], agent_id=agent["id"], description="d", expected_output="e",
        input_data={"a": 1}, config={"b": 2},
    )  # fmt: skip
    nullable = ["agent_id", "description", "expected_output", "input_data", "config"]
    response = await client.put(f"/api/v1/tasks/{task['id']}", json=dict.fromkeys(nullable))
    assert response.status_code == 200, response.text
    assert all(response.json()[field] is None for field in nullable)


async def test_update_rejects_each_invalid_field_and_changes_nothing(
    client: httpx.AsyncClient, workflow: Any
) -> None:
    task = await make_task(client, workflow["id"])

    async def check(field: str, value: Any) -> None:
        response = await client.put(
            f"/api/v1/tasks/{task['id']}", json={"description": "Changed", field: value}
        )
        assert_error(response, 422, "VALIDATION_ERROR", fields=[field])

    await check_each(INVALID_FIELDS, check)
    assert (await client.get(f"/api/v1/tasks/{task['id']}")).json() == task


async def test_delete_removes_the_task_and_updates_the_workflow_count(
    client: httpx.AsyncClient, workflow: Any
) -> None:
    task = await make_task(client, workflow["id"])
    assert (await client.get(f"/api/v1/workflows/{workflow['id']}")).json()["task_count"] == 1
    response = await client.delete(f"/api/v1/tasks/{task['id']}")
    assert response.status_code == 200
    assert response.json() == {
        "id": task["id"],
        "deleted": True,
        "message": f"Task {task['id']} deleted",
    }
    assert_error(await client.get(f"/api/v1/tasks/{task['id']}"), 404, "NOT_FOUND")
    assert (await client.get(f"/api/v1/workflows/{workflow['id']}")).json()["task_count"] == 0
