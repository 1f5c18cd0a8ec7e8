"""`Dispatcher.run_to_end`, what a queue worker acknowledges a message by: True once the
execution's runner ended here (whatever the outcome) or had nothing to do; False when the process
stopped first, leaving the execution as it was for another process."""

from __future__ import annotations

import asyncio

from crew_platform.devtools.llm_stub import StubServer
from tests.conftest import make_settings
from tests.flows import API, execute, for_task, pipeline, running_app, wait_for_gate


async def test_true_once_the_runner_ended_and_at_once_for_a_finished_execution(
    database_url: str, stub: StubServer
) -> None:
    stub.script(for_task("A", gate="a"))
    async with running_app(make_settings(database_url, stub)) as (app, client):
        dispatcher = app.state.dispatcher
        _, workflow, _ = await pipeline(client, ["A"])
        run = await execute(client, workflow["id"])
        await wait_for_gate(stub, "a")
        ending = asyncio.create_task(dispatcher.run_to_end(run["id"]))
        await asyncio.sleep(0)
        assert not ending.done()
        stub.open_gate("a")
        assert await ending is True
        assert (await client.get(f"{API}/executions/{run['id']}")).json()["status"] == "completed"
        assert await dispatcher.run_to_end(run["id"]) is True  # a second delivery: nothing to do
    assert len(stub.requests) == 1


async def test_true_when_the_run_ends_paused(database_url: str, stub: StubServer) -> None:
    stub.script(for_task("A", gate="a"))
    async with running_app(make_settings(database_url, stub)) as (app, client):
        _, workflow, _ = await pipeline(client, ["A", "B"])
        run = await execute(client, workflow["id"])
        await wait_for_gate(stub, "a")
        ending = asyncio.create_task(app.state.dispatcher.run_to_end(run["id"]))
        assert (await client.post(f"{API}/workflows/{workflow['id']}/pause")).status_code == 200
        stub.open_gate("a")
        assert await ending is True
        assert (await client.get(f"{API}/executions/{run['id']}")).json()["status"] == "paused"


async def test_false_when_the_process_stops_first_and_the_execution_is_left_as_it_was(
    database_url: str, stub: StubServer
) -> None:
    stub.script(for_task("A", gate="a"))
    async with running_app(make_settings(database_url, stub)) as (app, client):
        dispatcher = app.state.dispatcher
        _, workflow, _ = await pipeline(client, ["A"])
        run = await execute(client, workflow["id"])
        await wait_for_gate(stub, "a")
        ending = asyncio.create_task(dispatcher.run_to_end(run["id"]))
        await dispatcher.shutdown()
        assert await ending is False
        assert await dispatcher.run_to_end(run["id"]) is False
        assert (await client.get(f"{API}/executions/{run['id']}")).json()["status"] == "running"
