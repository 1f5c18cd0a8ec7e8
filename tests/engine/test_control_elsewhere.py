"""Pause and cancel requested through another server instance than the one running the
execution (several processes on one database): the request is written to the store, and the
runner honours it at the next task boundary; with a shared Redis bus a cancel also aborts the
call in flight at once."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from crew_platform.devtools.llm_stub import StubServer
from crew_platform.settings import Settings
from tests.conftest import make_settings, require_service, run_coroutine
from tests.flows import (
    API,
    calls_for,
    eventually,
    execute,
    for_task,
    idle,
    pipeline,
    running_app,
    wait_for_gate,
    wait_for_status,
)

Pair = tuple[tuple[FastAPI, httpx.AsyncClient], tuple[FastAPI, httpx.AsyncClient]]
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


async def _two(settings: Settings) -> AsyncIterator[Pair]:
    async with running_app(settings) as one, running_app(settings) as other:
        yield one, other


@pytest.fixture
async def pair(database_url: str, stub: StubServer) -> AsyncIterator[Pair]:
    """Two app instances (own dispatcher, own in-memory bus) on the same database."""
    async for both in _two(make_settings(database_url, stub, llm_timeout_seconds=120)):
        yield both


async def _redis_problem() -> str | None:
    import redis.asyncio as redis

    client = redis.from_url(REDIS_URL)
    try:
        await client.ping()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await client.aclose()


@pytest.fixture
async def redis_pair(database_url: str, stub: StubServer) -> AsyncIterator[Pair]:
    """Two app instances on the same database and the same Redis event bus."""
    require_service("Redis", run_coroutine(_redis_problem))
    settings = make_settings(database_url, stub, redis_url=REDIS_URL, llm_timeout_seconds=120)
    async for both in _two(settings):
        yield both


async def runs_of(client: httpx.AsyncClient, task_id: int) -> list[str]:
    runs: list[dict[str, Any]] = (await client.get(f"{API}/tasks/{task_id}/executions")).json()
    return [r["status"] for r in runs[::-1]]


async def test_pause_through_another_instance_stops_the_run_at_the_next_boundary(
    pair: Pair, stub: StubServer
) -> None:
    (runner_app, here), (_, there) = pair
    stub.script(for_task("A", gate="a", content="OUT<A>"))
    _, workflow, (a, b) = await pipeline(here, ["A", "B"])
    run = await execute(here, workflow["id"])
    await wait_for_gate(stub, "a")
    response = await there.post(f"{API}/workflows/{workflow['id']}/pause")
    assert response.status_code == 200
    assert [e["status"] for e in response.json()["affected_executions"]] == ["paused"]
    stub.open_gate("a")
    await idle(runner_app)
    assert (await here.get(f"{API}/executions/{run['id']}")).json()["status"] == "paused"
    assert await runs_of(here, a["id"]) == ["completed"]
    assert await runs_of(here, b["id"]) == []
    assert calls_for(stub, "B") == []
    assert (await there.post(f"{API}/workflows/{workflow['id']}/resume")).status_code == 200
    done = await wait_for_status(there, run["id"], "completed", "failed")
    assert done["status"] == "completed"
    assert done["output_data"]["tasks"][str(a["id"])] == "OUT<A>"
    assert len(calls_for(stub, "A")) == 1


async def test_cancel_through_another_instance_drops_the_late_answer_and_stops(
    pair: Pair, stub: StubServer
) -> None:
    (runner_app, here), (_, there) = pair
    stub.script(for_task("A", gate="a"))
    _, workflow, (a, b) = await pipeline(here, ["A", "B"])
    run = await execute(here, workflow["id"])
    await wait_for_gate(stub, "a")
    response = await there.post(f"{API}/executions/{run['id']}/cancel")
    assert response.status_code == 200
    stub.open_gate("a")  # without a shared bus the call runs out; its answer is not kept
    await idle(runner_app)
    final = (await here.get(f"{API}/executions/{run['id']}")).json()
    assert final["status"] == "cancelled"
    assert final["output_data"] == {"result": None, "tasks": {}}  # the late answer is not kept
    assert await runs_of(here, a["id"]) == ["cancelled"]
    assert await runs_of(here, b["id"]) == []
    assert calls_for(stub, "B") == []


async def test_cancel_through_another_instance_aborts_the_call_at_once_over_redis(
    redis_pair: Pair, stub: StubServer
) -> None:
    (runner_app, here), (_, there) = redis_pair
    stub.script(for_task("A", gate="a"))
    _, workflow, (a, _b) = await pipeline(here, ["A", "B"])
    run = await execute(here, workflow["id"])
    await wait_for_gate(stub, "a")
    assert (await there.post(f"{API}/executions/{run['id']}/cancel")).status_code == 200
    # The gate is never opened: only the platform hanging up ends the call.
    await eventually(lambda: stub.disconnects == 1, what="the call to be aborted")
    await idle(runner_app)
    assert len(stub.requests) == 1  # aborted, not timed out and retried
    assert (await here.get(f"{API}/executions/{run['id']}")).json()["status"] == "cancelled"
    assert await runs_of(here, a["id"]) == ["cancelled"]


async def test_pause_through_another_instance_reaches_the_runner_over_redis_before_the_boundary(
    redis_pair: Pair, stub: StubServer
) -> None:
    """The pause's `workflow_paused` event tells the runner at once (a queue worker learns of a
    pause this way); the store stays the truth at the boundary, as without Redis."""
    (runner_app, here), (_, there) = redis_pair
    stub.script(for_task("A", gate="a", content="OUT<A>"))
    _, workflow, (a, b) = await pipeline(here, ["A", "B"])
    run = await execute(here, workflow["id"])
    await wait_for_gate(stub, "a")
    control = runner_app.state.dispatcher.leased()[run["id"]]
    assert not control.pause_requested
    assert (await there.post(f"{API}/workflows/{workflow['id']}/pause")).status_code == 200
    await eventually(lambda: control.pause_requested, what="the pause to reach the runner")
    stub.open_gate("a")
    await idle(runner_app)
    assert (await here.get(f"{API}/executions/{run['id']}")).json()["status"] == "paused"
    assert await runs_of(here, a["id"]) == ["completed"]
    assert await runs_of(here, b["id"]) == []
