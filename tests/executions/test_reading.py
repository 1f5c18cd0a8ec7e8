"""Reading executions: list, get, logs, status."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
from fastapi import FastAPI

from crew_platform.devtools.llm_stub import StubServer
from tests.flows import (
    API,
    execute,
    for_task,
    idle,
    pipeline,
    wait_for_gate,
)
from tests.support import wait_for_execution


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_list_filters_and_pages_executions(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("B", status=400))
    _, first, _ = await pipeline(client, ["A"])
    _, second, _ = await pipeline(client, ["B"])
    ok1 = await execute(client, first["id"])
    await wait_for_execution(client, ok1["id"])
    bad = await execute(client, second["id"])
    await wait_for_execution(client, bad["id"])
    ok2 = await execute(client, first["id"])
    await wait_for_execution(client, ok2["id"])

    everything = await client.get(f"{API}/executions/")
    assert everything.status_code == 200
    assert everything.headers["X-Total-Count"] == "3"
    assert [e["id"] for e in everything.json()] == [ok2["id"], bad["id"], ok1["id"]]

    of_first = await client.get(f"{API}/executions/", params={"workflow_id": first["id"]})
    assert [e["id"] for e in of_first.json()] == [ok2["id"], ok1["id"]]
    failed = await client.get(f"{API}/executions", params={"status": "failed"})
    assert [e["id"] for e in failed.json()] == [bad["id"]]
    both = await client.get(
        f"{API}/executions/", params={"status": "completed", "workflow_id": second["id"]}
    )
    assert both.json() == [] and both.headers["X-Total-Count"] == "0"
    page = await client.get(f"{API}/executions/", params={"skip": 1, "limit": 1})
    assert [e["id"] for e in page.json()] == [bad["id"]]
    assert page.headers["X-Total-Count"] == "3"
    by_workflow = await client.get(f"{API}/workflows/{first['id']}/executions")
    assert [e["id"] for e in by_workflow.json()] == [ok2["id"], ok1["id"]]

    assert (await client.get(f"{API}/executions/", params={"limit": 0})).status_code == 422
    assert (await client.get(f"{API}/executions/", params={"skip": -1})).status_code == 422


async def test_get_execution(client: httpx.AsyncClient, stub: StubServer) -> None:
    _, workflow, (_a,) = await pipeline(client, ["A"])
    run = await execute(client, workflow["id"], {"k": "v"}, {"max_parallel": 2})
    done = await wait_for_execution(client, run["id"])
    got = (await client.get(f"{API}/executions/{run['id']}")).json()
    assert got == done
    assert got["input_data"] == {"k": "v"}
    assert got["config"] == {"max_parallel": 2}
    assert got["mode"] == "workflow"
    assert got["execution_log"] is None
    assert ts(got["completed_at"]) >= ts(got["started_at"])
    assert got["tokens_used"] > 0
    missing = await client.get(f"{API}/executions/999")
    assert missing.status_code == 404
    assert missing.json()["error"] == "NOT_FOUND"


async def test_logs_are_timestamped_ordered_and_paginated(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("B", status=400, body={"error": {"message": "broken"}}))
    _, workflow, (a, b, c) = await pipeline(client, ["A", "B", "C"])
    run = await execute(client, workflow["id"])
    await wait_for_execution(client, run["id"])

    response = await client.get(f"{API}/executions/{run['id']}/logs")
    assert response.status_code == 200
    logs: list[dict[str, Any]] = response.json()
    assert response.headers["X-Total-Count"] == str(len(logs))
    assert [(e["event"], e["task_id"], e["level"]) for e in logs] == [
        ("workflow_started", None, "info"),
        ("task_started", a["id"], "info"),
        ("task_completed", a["id"], "info"),
        ("task_started", b["id"], "info"),
        ("task_failed", b["id"], "error"),
        ("task_skipped", c["id"], "warning"),
        ("workflow_failed", None, "error"),
    ]
    assert [e["seq"] for e in logs] == list(range(1, len(logs) + 1))
    stamps = [ts(e["timestamp"]) for e in logs]
    assert stamps == sorted(stamps)
    assert all(e["message"] for e in logs)
    assert "broken" in logs[4]["message"]
    assert "broken" in logs[4]["data"]["error"]
    assert logs[2]["data"]["output"]

    page = await client.get(f"{API}/executions/{run['id']}/logs", params={"skip": 2, "limit": 3})
    assert [e["seq"] for e in page.json()] == [3, 4, 5]
    assert page.headers["X-Total-Count"] == str(len(logs))
    errors = await client.get(f"{API}/executions/{run['id']}/logs", params={"level": "error"})
    assert [e["event"] for e in errors.json()] == ["task_failed", "workflow_failed"]
    assert (await client.get(f"{API}/executions/999/logs")).status_code == 404


async def test_logs_record_control_requests(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("A", gate="a"))
    _, workflow, _ = await pipeline(client, ["A", "B"])
    run = await execute(client, workflow["id"])
    await wait_for_gate(stub, "a")
    await client.post(f"{API}/workflows/{workflow['id']}/pause")
    stub.open_gate("a")
    await idle(app)
    await client.post(f"{API}/workflows/{workflow['id']}/resume")
    await wait_for_execution(client, run["id"])
    events = [e["event"] for e in (await client.get(f"{API}/executions/{run['id']}/logs")).json()]
    assert events == [
        "workflow_started",
        "task_started",
        "workflow_paused",
        "task_completed",
        "workflow_resumed",
        "task_started",
        "task_completed",
        "workflow_completed",
    ]


async def test_status_reports_progress_running_tasks_and_elapsed_time(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("B", gate="b"))
    _, workflow, (_a, b, _c) = await pipeline(client, ["A", "B", "C"])
    run = await execute(client, workflow["id"])
    await wait_for_gate(stub, "b")

    response = await client.get(f"{API}/executions/{run['id']}/status")
    assert response.status_code == 200
    status = response.json()
    assert status["execution_id"] == run["id"]
    assert status["workflow_id"] == workflow["id"]
    assert status["status"] == "running"
    assert status["progress"] == {
        "total": 3,
        "completed": 1,
        "failed": 0,
        "running": 1,
        "pending": 1,
        "skipped": 0,
        "cancelled": 0,
        "waiting_for_input": 0,
        "percent": 33.33,
    }
    (running,) = status["running_tasks"]
    assert (running["task_id"], running["name"], running["attempt"]) == (b["id"], "B", 1)
    assert running["started_at"] is not None
    assert status["elapsed_seconds"] >= 0
    assert status["completed_at"] is None

    stub.open_gate("b")
    await wait_for_execution(client, run["id"])
    final = (await client.get(f"{API}/executions/{run['id']}/status")).json()
    assert final["status"] == "completed"
    assert final["progress"]["completed"] == 3 and final["progress"]["percent"] == 100.0
    assert final["running_tasks"] == []
    elapsed = (ts(final["completed_at"]) - ts(final["started_at"])).total_seconds()
    assert abs(final["elapsed_seconds"] - elapsed) < 1e-5
    assert (await client.get(f"{API}/executions/999/status")).status_code == 404


async def test_status_of_a_failed_run_counts_failed_and_skipped(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("B", status=400))
    _, workflow, _ = await pipeline(client, ["A", "B", "C", "D"])
    run = await execute(client, workflow["id"])
    await wait_for_execution(client, run["id"])
    status = (await client.get(f"{API}/executions/{run['id']}/status")).json()
    assert status["status"] == "failed"
    assert status["progress"] == {
        "total": 4,
        "completed": 1,
        "failed": 1,
        "running": 0,
        "pending": 0,
        "skipped": 2,
        "cancelled": 0,
        "waiting_for_input": 0,
        "percent": 25.0,
    }
    assert "400" in status["error_message"]


async def test_status_of_a_pending_execution(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    _, workflow, _ = await pipeline(client, ["A", "B"])
    await client.post(f"{API}/workflows/{workflow['id']}/pause")
    run = await execute(client, workflow["id"])
    await idle(app)
    status = (await client.get(f"{API}/executions/{run['id']}/status")).json()
    assert status["status"] == "pending"
    assert status["progress"]["pending"] == 2 and status["progress"]["percent"] == 0.0
    assert status["running_tasks"] == []
