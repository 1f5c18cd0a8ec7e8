"""GET /executions/stats in the spec's shape, with its arithmetic checked exactly.

Runs made today are real (through the engine and the stub). History on earlier days cannot be
made by running things now, so it is written as rows into the real database, as an earlier
month of use would have left them.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from crew_platform.devtools.llm_stub import StubServer
from crew_platform.models import Execution
from tests.flows import (
    API,
    execute,
    for_task,
    make_workflow,
    pipeline,
    wait_for_gate,
    wait_for_status,
)
from tests.support import wait_for_execution

SPEC_KEYS = {
    "total_executions",
    "successful_executions",
    "failed_executions",
    "running_executions",
    "success_rate",
    "average_execution_time",
    "total_tokens_used",
    "total_tool_calls",
    "tool_errors",
    "executions_by_day",
    "top_workflows",
    "error_breakdown",
}


async def seed(
    app: FastAPI,
    workflow_id: int,
    days_ago: int,
    status: str,
    seconds: float,
    tokens: int = 0,
    error: str | None = None,
) -> None:
    created = datetime.combine(
        datetime.now(UTC).date() - timedelta(days=days_ago), datetime.min.time(), tzinfo=UTC
    ) + timedelta(hours=12)
    async with app.state.sessionmaker() as session:
        session.add(
            Execution(
                workflow_id=workflow_id,
                status=status,
                mode="workflow",
                plan=[],
                input_data={},
                created_at=created,
                started_at=created,
                completed_at=created + timedelta(seconds=seconds),
                tokens_used=tokens,
                error_message=error,
                last_seq=0,
            )
        )
        await session.commit()


async def stats(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get(f"{API}/executions/stats", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == SPEC_KEYS
    return body


def day(body: dict[str, Any], days_ago: int) -> dict[str, Any]:
    today = date.fromisoformat(body["executions_by_day"][-1]["date"])
    wanted = (today - timedelta(days=days_ago)).isoformat()
    entry: dict[str, Any] = next(d for d in body["executions_by_day"] if d["date"] == wanted)
    return entry


def duration(execution: dict[str, Any]) -> float:
    start = datetime.fromisoformat(execution["started_at"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(execution["completed_at"].replace("Z", "+00:00"))
    return (end - start).total_seconds()


async def test_stats_of_seeded_history_exactly(app: FastAPI, client: httpx.AsyncClient) -> None:
    workflow = await make_workflow(client)
    wid = workflow["id"]
    await seed(app, wid, 3, "completed", 10, tokens=100)
    await seed(app, wid, 3, "failed", 20, error="Connection timeout")
    await seed(app, wid, 10, "failed", 45, error="Connection timeout")
    await seed(app, wid, 10, "cancelled", 5)
    await seed(app, wid, 12, "failed", 1, error="Rate limited")
    await seed(app, wid, 40, "completed", 99, tokens=1000)

    month = await stats(client, workflow_id=wid)
    assert month["total_executions"] == 5
    assert month["successful_executions"] == 1
    assert month["failed_executions"] == 3
    assert month["running_executions"] == 0
    assert month["success_rate"] == 20.0
    assert month["average_execution_time"] == 16.2  # (10 + 20 + 45 + 5 + 1) / 5
    assert month["total_tokens_used"] == 100
    by_day = month["executions_by_day"]
    assert len(by_day) == 30
    dates = [date.fromisoformat(d["date"]) for d in by_day]
    assert dates == [dates[0] + timedelta(days=i) for i in range(30)]
    assert dates[-1] == datetime.now(UTC).date()
    assert day(month, 3) == {
        "date": day(month, 3)["date"],
        "count": 2,
        "successful": 1,
        "failed": 1,
    }
    assert (day(month, 10)["count"], day(month, 10)["successful"], day(month, 10)["failed"]) == (
        2,
        0,
        1,
    )
    assert (day(month, 12)["count"], day(month, 12)["failed"]) == (1, 1)
    busy = {3, 10, 12}
    assert all(
        d["count"] == d["successful"] == d["failed"] == 0
        for i, d in enumerate(reversed(by_day))
        if i not in busy
    )
    assert month["top_workflows"] == [
        {"workflow_id": wid, "count": 5, "successful": 1, "failed": 3}
    ]
    assert month["error_breakdown"] == [
        {"error": "Connection timeout", "count": 2},
        {"error": "Rate limited", "count": 1},
    ]

    two_months = await stats(client, workflow_id=wid, days=60)
    assert two_months["total_executions"] == 6
    assert two_months["successful_executions"] == 2
    assert two_months["success_rate"] == 33.33
    assert two_months["average_execution_time"] == 30.0  # (10 + 20 + 45 + 5 + 1 + 99) / 6
    assert two_months["total_tokens_used"] == 1100
    assert len(two_months["executions_by_day"]) == 60
    assert day(two_months, 40)["successful"] == 1

    week = await stats(client, workflow_id=wid, days=7)
    assert week["total_executions"] == 2
    assert week["average_execution_time"] == 15.0
    assert week["error_breakdown"] == [{"error": "Connection timeout", "count": 1}]
    assert len(week["executions_by_day"]) == 7

    today_only = await stats(client, workflow_id=wid, days=1)
    assert today_only == {
        "total_executions": 0,
        "successful_executions": 0,
        "failed_executions": 0,
        "running_executions": 0,
        "success_rate": 0.0,
        "average_execution_time": 0.0,
        "total_tokens_used": 0,
        "total_tool_calls": 0,
        "tool_errors": 0,
        "executions_by_day": [
            {"date": datetime.now(UTC).date().isoformat(), "count": 0, "successful": 0, "failed": 0}
        ],
        "top_workflows": [],
        "error_breakdown": [],
    }


async def test_stats_of_real_runs_today(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        for_task("Ok", content="fine", usage={"prompt_tokens": 10, "completion_tokens": 5}),
        for_task("Ok", content="fine", usage={"prompt_tokens": 20, "completion_tokens": 7}),
        for_task("Ok", status=400, body={"error": {"message": "quota exceeded"}}),
        for_task("Ok", status=400, body={"error": {"message": "quota exceeded"}}),
        for_task("Other", status=400, body={"error": {"message": "bad input"}}),
        for_task("Other", gate="held"),
    )
    _, first, _ = await pipeline(client, ["Ok"])
    _, second, _ = await pipeline(client, ["Other"])
    finished = []
    for _ in range(4):
        finished.append(
            await wait_for_execution(client, (await execute(client, first["id"]))["id"])
        )
    finished.append(await wait_for_execution(client, (await execute(client, second["id"]))["id"]))
    held = await execute(client, second["id"])
    await wait_for_gate(stub, "held")
    await wait_for_status(client, held["id"], "running")
    history = await make_workflow(client)
    await seed(app, history["id"], 2, "completed", 8, tokens=50)
    await seed(app, history["id"], 2, "failed", 2, error="Connection timeout")
    await seed(app, history["id"], 2, "failed", 2, error="Connection timeout")

    body = await stats(client)
    assert [e["status"] for e in finished] == [
        "completed",
        "completed",
        "failed",
        "failed",
        "failed",
    ]
    assert body["total_executions"] == 9
    assert body["successful_executions"] == 3
    assert body["failed_executions"] == 5
    assert body["running_executions"] == 1
    assert body["success_rate"] == 33.33
    assert body["total_tokens_used"] == 15 + 27 + 50
    durations = [duration(e) for e in finished] + [8, 2, 2]
    assert body["average_execution_time"] == pytest.approx(
        sum(durations) / len(durations), abs=0.0005
    )
    assert day(body, 0) == {"date": day(body, 0)["date"], "count": 6, "successful": 2, "failed": 3}
    assert day(body, 2)["count"] == 3
    assert body["top_workflows"] == [
        {"workflow_id": first["id"], "count": 4, "successful": 2, "failed": 2},
        {"workflow_id": history["id"], "count": 3, "successful": 1, "failed": 2},
        {"workflow_id": second["id"], "count": 2, "successful": 0, "failed": 1},
    ]
    quota_error = finished[2]["error_message"]
    assert finished[3]["error_message"] == quota_error
    assert body["error_breakdown"] == sorted(
        [
            {"error": quota_error, "count": 2},
            {"error": "Connection timeout", "count": 2},
            {"error": finished[4]["error_message"], "count": 1},
        ],
        key=lambda e: (-e["count"], e["error"]),
    )
    stub.open_gate("held")
    await wait_for_execution(client, held["id"])


@pytest.mark.parametrize("days", [0, 366, -1])
async def test_stats_days_must_be_1_to_365(client: httpx.AsyncClient, days: int) -> None:
    response = await client.get(f"{API}/executions/stats", params={"days": days})
    assert response.status_code == 422
    assert response.json()["error"] == "VALIDATION_ERROR"


async def test_stats_window_lengths(client: httpx.AsyncClient) -> None:
    assert len((await stats(client))["executions_by_day"]) == 30
    assert len((await stats(client, days=365))["executions_by_day"]) == 365
    empty = await stats(client, workflow_id=999)
    assert empty["total_executions"] == 0 and empty["success_rate"] == 0.0
