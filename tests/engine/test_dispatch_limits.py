"""The dispatcher bounds how many executions run at once; the rest wait as `pending`."""

from __future__ import annotations

from crew_platform.devtools.llm_stub import StubServer
from tests.conftest import make_settings
from tests.flows import execute, pipeline, running_app, wait_for_status


async def test_at_most_execution_max_concurrency_run_at_once(
    database_url: str, stub: StubServer
) -> None:
    settings = make_settings(
        database_url, stub, execution_max_concurrency=2, llm_timeout_seconds=120
    )
    stub.state.latency = 0.2
    async with running_app(settings) as (_, client):
        _, workflow, _ = await pipeline(client, ["only step"], "linear")
        runs = [await execute(client, workflow["id"]) for _ in range(5)]
        statuses = [
            (await client.get(f"/api/v1/executions/{run['id']}")).json()["status"] for run in runs
        ]
        done = [await wait_for_status(client, run["id"], "completed", "failed") for run in runs]
    assert all(d["status"] == "completed" for d in done), done
    assert statuses.count("pending") >= 3, statuses
    assert len(stub.requests) == 5
    assert stub.max_active == 2


async def test_waiting_executions_can_be_cancelled_before_they_start(
    database_url: str, stub: StubServer
) -> None:
    settings = make_settings(
        database_url, stub, execution_max_concurrency=1, llm_timeout_seconds=120
    )
    stub.state.latency = 0.3
    async with running_app(settings) as (_, client):
        _, workflow, _ = await pipeline(client, ["only step"], "linear")
        first = await execute(client, workflow["id"])
        second = await execute(client, workflow["id"])
        cancelled = await client.post(f"/api/v1/executions/{second['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        done = await wait_for_status(client, first["id"], "completed", "failed")
        again = await wait_for_status(client, second["id"], "cancelled")
    assert done["status"] == "completed"
    assert again["status"] == "cancelled"
    assert len(stub.requests) == 1
