"""One step path: every step's answer is stored in its own commit, so a task deleted or a request
refused mid-run never costs another task's stored answer. Model calls are held by the stub
(gates), so "during a call" is a fact, not a timing guess."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from crew_platform.devtools.llm_stub import StubServer
from tests.flows import (
    API,
    execute,
    for_task,
    idle,
    make_task,
    pipeline,
    wait_for_gate,
)


async def runs_of(client: httpx.AsyncClient, execution_id: int) -> list[dict[str, Any]]:
    logs = (await client.get(f"{API}/executions/{execution_id}/logs")).json()
    return [entry for entry in logs if entry["event"].startswith("task_")]


async def events(client: httpx.AsyncClient, execution_id: int) -> list[tuple[str, int | None]]:
    logs = (await client.get(f"{API}/executions/{execution_id}/logs")).json()
    return [(entry["event"], entry["task_id"]) for entry in logs]


async def test_deleting_the_next_task_during_a_call_keeps_the_answer_and_fails_clearly(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("A", gate="a", content="OUT<A>"))
    _, workflow, (a, b) = await pipeline(client, ["A", "B"])
    run = await execute(client, workflow["id"])
    await wait_for_gate(stub, "a")
    assert (await client.delete(f"{API}/tasks/{b['id']}")).status_code == 200
    stub.open_gate("a")
    await idle(app)

    final = (await client.get(f"{API}/executions/{run['id']}")).json()
    assert final["status"] == "failed"
    assert "TASK_NOT_RUNNABLE" in final["error_message"]
    assert "INTERNAL_ERROR" not in final["error_message"]
    assert final["output_data"]["tasks"] == {str(a["id"]): "OUT<A>"}
    (run_a,) = (await client.get(f"{API}/tasks/{a['id']}/executions")).json()
    assert (run_a["status"], run_a["output"]) == ("completed", "OUT<A>")
    assert await events(client, run["id"]) == [
        ("workflow_started", None),
        ("task_started", a["id"]),
        ("task_completed", a["id"]),
        ("task_failed", b["id"]),
        ("workflow_failed", None),
    ]
    status = (await client.get(f"{API}/executions/{run['id']}/status")).json()
    assert status["running_tasks"] == []


async def test_deleting_the_task_whose_call_is_in_flight_fails_the_run_and_leaves_none_running(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("A", content="OUT<A>"), for_task("B", gate="b"))
    _, workflow, (a, b, c) = await pipeline(client, ["A", "B", "C"])
    run = await execute(client, workflow["id"])
    await wait_for_gate(stub, "b")
    assert (await client.delete(f"{API}/tasks/{b['id']}")).status_code == 200
    stub.open_gate("b")
    await idle(app)

    final = (await client.get(f"{API}/executions/{run['id']}")).json()
    assert final["status"] == "failed"
    assert "TASK_NOT_RUNNABLE" in final["error_message"]
    assert final["output_data"]["tasks"] == {str(a["id"]): "OUT<A>"}
    assert ("task_failed", b["id"]) in await events(client, run["id"])
    (skipped,) = (await client.get(f"{API}/tasks/{c['id']}/executions")).json()
    assert skipped["status"] == "skipped"
    status = (await client.get(f"{API}/executions/{run['id']}/status")).json()
    assert status["running_tasks"] == []


async def test_in_a_parallel_run_a_deleted_task_fails_it_and_the_siblings_answers_stay(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        for_task("Left", gate="left", content="OUT<L>"),
        for_task("Right", gate="right", content="OUT<R>"),
    )
    agent, workflow, (left, right) = await pipeline(
        client, ["Left", "Right"], workflow_type="parallel"
    )
    sink = await make_task(
        client, workflow["id"], agent["id"], "Sink", dependencies=[left["id"], right["id"]]
    )
    run = await execute(client, workflow["id"])
    await wait_for_gate(stub, "left")
    await wait_for_gate(stub, "right")
    # The sink depends on both; removing it is allowed (nothing depends on it).
    assert (await client.delete(f"{API}/tasks/{sink['id']}")).status_code == 200
    stub.open_gate("left")
    stub.open_gate("right")
    await idle(app)

    final = (await client.get(f"{API}/executions/{run['id']}")).json()
    assert final["status"] == "failed"
    assert "TASK_NOT_RUNNABLE" in final["error_message"]
    assert final["output_data"]["tasks"] == {str(left["id"]): "OUT<L>", str(right["id"]): "OUT<R>"}


async def test_retry_of_a_running_execution_is_409_naming_its_state(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("A", status=400), for_task("A", gate="again"))
    _, workflow, (a,) = await pipeline(client, ["A"])
    run = await execute(client, workflow["id"])
    await idle(app)
    assert (await client.get(f"{API}/executions/{run['id']}")).json()["status"] == "failed"

    first = await client.post(f"{API}/tasks/{a['id']}/retry")
    assert first.status_code == 202, first.text
    await wait_for_gate(stub, "again")
    second = await client.post(f"{API}/tasks/{a['id']}/retry")
    assert second.status_code == 409, second.text
    assert second.json()["error"] == "INVALID_STATE"
    assert second.json()["details"]["latest_status"] == "running"
    assert "running" in second.json()["message"]
    stub.open_gate("again")
    await idle(app)
    assert (await client.get(f"{API}/executions/{run['id']}")).json()["status"] == "completed"


async def test_resume_of_an_active_workflow_is_409_and_touches_no_running_execution(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("A", gate="a"))
    _, workflow, _ = await pipeline(client, ["A"])
    run = await execute(client, workflow["id"])
    await wait_for_gate(stub, "a")
    refused = await client.post(f"{API}/workflows/{workflow['id']}/resume")
    assert refused.status_code == 409
    assert refused.json()["details"]["status"] == "active"
    assert "active" in refused.json()["message"]
    assert (await client.get(f"{API}/executions/{run['id']}")).json()["status"] == "running"
    stub.open_gate("a")
    await idle(app)
    assert (await client.get(f"{API}/executions/{run['id']}")).json()["status"] == "completed"


async def test_a_cancelled_execution_keeps_the_outputs_of_the_tasks_that_finished(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("A", content="OUT<A>"), for_task("B", gate="b"))
    _, workflow, (a, _, _) = await pipeline(client, ["A", "B", "C"])
    run = await execute(client, workflow["id"])
    await wait_for_gate(stub, "b")
    cancelled = await client.post(f"{API}/executions/{run['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    (listed,) = cancelled.json()["affected_executions"]
    assert listed["output_data"] == {"result": "OUT<A>", "tasks": {str(a["id"]): "OUT<A>"}}
    await idle(app)
    final = (await client.get(f"{API}/executions/{run['id']}")).json()
    assert final["status"] == "cancelled"
    assert final["output_data"] == {"result": "OUT<A>", "tasks": {str(a["id"]): "OUT<A>"}}


async def test_a_failed_execution_keeps_the_outputs_of_the_tasks_that_finished(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("A", content="OUT<A>"), for_task("B", status=400))
    _, workflow, (a, _, _) = await pipeline(client, ["A", "B", "C"])
    run = await execute(client, workflow["id"])
    await idle(app)
    final = (await client.get(f"{API}/executions/{run['id']}")).json()
    assert final["status"] == "failed"
    assert final["output_data"]["tasks"] == {str(a["id"]): "OUT<A>"}
