"""Execution leases between real server processes on one database: a live process's runs are
never touched by another, a dead or stalled one's are taken over after LEASE_SECONDS."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crew_platform.devtools.llm_stub import StubServer
from tests.api import live_env
from tests.engine.test_durability import api, start, task_run_states
from tests.flows import (
    API,
    calls_for,
    execute,
    for_task,
    pipeline,
    wait_for_gate,
    wait_for_status,
)
from tests.support import LiveServer


@pytest.fixture
def server_env(database_url: str, stub: StubServer) -> dict[str, str]:
    return live_env(database_url, stub)


@pytest.fixture
def servers() -> Iterator[list[LiveServer]]:
    started: list[LiveServer] = []
    yield started
    for server in started:
        server.kill()


async def test_a_second_server_does_not_touch_a_live_servers_run(
    servers: list[LiveServer], server_env: dict[str, str], stub: StubServer, database_url: str
) -> None:
    """Two in-process servers on one database no longer both resume the same run: starting the
    second while the first's call is in flight cancels nothing and calls the model for nothing."""
    stub.script(for_task("A", content="OUT<A>"), for_task("B", gate="b"))
    first = start(servers, server_env)
    async with api(first) as http:
        _, workflow, (a, b, c) = await pipeline(http, ["A", "B", "C"])
        run = await execute(http, workflow["id"])
        await wait_for_gate(stub, "b")
    in_flight = await task_run_states(database_url, run["id"])
    assert in_flight == [(a["id"], "completed"), (b["id"], "running")]

    start(servers, server_env)  # healthy: its start-up recovery is over
    assert await task_run_states(database_url, run["id"]) == in_flight
    stub.open_gate("b")
    async with api(first) as http:
        done = await wait_for_status(http, run["id"], "completed", "failed")
        assert done["status"] == "completed", done
        events = [e["event"] for e in (await http.get(f"{API}/executions/{run['id']}/logs")).json()]
    assert "task_cancelled" not in events and "workflow_resumed" not in events
    assert {n: len(calls_for(stub, n)) for n in "ABC"} == {"A": 1, "B": 1, "C": 1}
