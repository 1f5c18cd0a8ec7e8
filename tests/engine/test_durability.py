"""A real `crew-platform serve` process killed with SIGKILL mid-run, restarted on the same
database: nothing a client was told is lost, finished work is not redone."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from crew_platform.devtools.llm_stub import StubServer
from crew_platform.models import TaskRun
from tests.api import live_env
from tests.conftest import make_settings
from tests.flows import (
    API,
    calls_for,
    eventually,
    execute,
    for_task,
    make_task,
    pipeline,
    running_app,
    user_prompt,
    wait_for_gate,
    wait_for_status,
)
from tests.support import LiveServer


@pytest.fixture
def server_env(database_url: str, stub: StubServer) -> dict[str, str]:
    return live_env(database_url, stub)


@pytest.fixture
def servers(server_env: dict[str, str]) -> Iterator[list[LiveServer]]:
    """Start servers with `started.append(LiveServer(env).start())`; all are stopped after."""
    started: list[LiveServer] = []
    yield started
    for server in started:
        server.kill()


@contextlib.asynccontextmanager
async def api(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        yield http


def start(servers: list[LiveServer], env: dict[str, str]) -> LiveServer:
    server = LiveServer(env).start()
    servers.append(server)
    return server


async def task_run_states(database_url: str, execution_id: int) -> list[tuple[int, str]]:
    """What the database holds, read directly (while no server runs)."""
    engine = create_async_engine(make_settings(database_url).database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                select(TaskRun.task_id, TaskRun.status)
                .where(TaskRun.execution_id == execution_id)
                .order_by(TaskRun.id)
            )
            return [(r.task_id, r.status) for r in rows]
    finally:
        await engine.dispose()


async def runs_of(http: httpx.AsyncClient, task_id: int) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = (await http.get(f"{API}/tasks/{task_id}/executions")).json()
    return runs[::-1]  # oldest first


async def test_killed_mid_run_resumes_without_redoing_finished_tasks(
    servers: list[LiveServer], server_env: dict[str, str], stub: StubServer, database_url: str
) -> None:
    """A linear run (LA -> LB -> LC) and a parallel one (PA, PB -> PC), both killed while
    their second task's call is in flight."""
    stub.script(
        for_task("LA", content="OUT<LA>"),
        for_task("LB", gate="lb"),
        for_task("LB", content="OUT<LB>"),
        for_task("LC", content="OUT<LC>"),
        for_task("PA", content="OUT<PA>"),
        for_task("PB", gate="pb"),
        for_task("PB", content="OUT<PB>"),
    )
    first = start(servers, server_env)
    async with api(first) as http:
        _, linear, (la, lb, lc) = await pipeline(http, ["LA", "LB", "LC"])
        agent, parallel, (pa, pb) = await pipeline(http, ["PA", "PB"], "parallel")
        pc = await make_task(
            http, parallel["id"], agent["id"], "PC", dependencies=[pa["id"], pb["id"]]
        )
        line = await execute(http, linear["id"], {"topic": "durability"})
        dag = await execute(http, parallel["id"])
        await wait_for_gate(stub, "lb")
        await wait_for_gate(stub, "pb")
        await eventually(lambda: _completed(http, pa["id"]), what="PA stored as completed")
    first.kill()
    await eventually(lambda: stub.disconnects == 2, what="the killed server's calls to drop")
    # Written before each call: LA finished, LB was in flight.
    assert await task_run_states(database_url, line["id"]) == [
        (la["id"], "completed"),
        (lb["id"], "running"),
    ]

    second = start(servers, server_env)
    async with api(second) as http:
        done = await wait_for_status(http, line["id"], "completed", "failed")
        assert done["status"] == "completed", done
        assert done["input_data"] == {"topic": "durability"}
        assert done["output_data"]["tasks"] == {
            str(la["id"]): "OUT<LA>",
            str(lb["id"]): "OUT<LB>",
            str(lc["id"]): "OUT<LC>",
        }
        assert [r["status"] for r in await runs_of(http, la["id"])] == ["completed"]
        lb_runs = await runs_of(http, lb["id"])
        assert [(r["status"], r["attempt"]) for r in lb_runs] == [
            ("cancelled", 1),
            ("completed", 2),
        ]
        assert "Interrupted" in lb_runs[0]["error"]
        logs = (await http.get(f"{API}/executions/{line['id']}/logs")).json()
        assert [e["event"] for e in logs].count("workflow_started") == 1
        assert any(e["event"] == "workflow_resumed" and "restart" in e["message"] for e in logs)
        assert [e["seq"] for e in logs] == list(range(1, len(logs) + 1))

        dag_done = await wait_for_status(http, dag["id"], "completed", "failed")
        assert dag_done["status"] == "completed", dag_done
        assert set(dag_done["output_data"]["tasks"]) == {
            str(pa["id"]),
            str(pb["id"]),
            str(pc["id"]),
        }
    counts = {name: len(calls_for(stub, name)) for name in ("LA", "LB", "LC", "PA", "PB", "PC")}
    assert counts == {"LA": 1, "LB": 2, "LC": 1, "PA": 1, "PB": 2, "PC": 1}
    assert "OUT<LA>" in user_prompt(calls_for(stub, "LB")[1])
    assert "OUT<PA>" in user_prompt(calls_for(stub, "PC")[0])


async def _completed(http: httpx.AsyncClient, task_id: int) -> bool:
    return [r["status"] for r in await runs_of(http, task_id)] == ["completed"]


async def test_paused_and_accepted_executions_survive_a_restart(
    servers: list[LiveServer], server_env: dict[str, str], stub: StubServer
) -> None:
    stub.script(for_task("A", gate="a"))
    first = start(servers, server_env)
    async with api(first) as http:
        # Paused while A's call is in flight.
        _, paused_wf, (a, _b) = await pipeline(http, ["A", "B"])
        paused_run = await execute(http, paused_wf["id"])
        await wait_for_gate(stub, "a")
        assert (await http.post(f"{API}/workflows/{paused_wf['id']}/pause")).status_code == 200
        # Accepted (202) on a paused workflow: not started yet.
        _, waiting_wf, _ = await pipeline(http, ["X"])
        assert (await http.post(f"{API}/workflows/{waiting_wf['id']}/pause")).status_code == 200
        accepted = await execute(http, waiting_wf["id"])
        assert accepted["status"] == "pending"
    first.kill()  # A's call never returned

    second = start(servers, server_env)
    async with api(second) as http:
        # A run of another workflow goes through the restarted dispatcher; the paused and the
        # waiting executions would have been picked up by then if recovery had taken them.
        _, other, _ = await pipeline(http, ["Other"])
        await wait_for_status(http, (await execute(http, other["id"]))["id"], "completed")
        assert (await http.get(f"{API}/executions/{paused_run['id']}")).json()["status"] == (
            "paused"
        )
        assert (await http.get(f"{API}/executions/{accepted['id']}")).json()["status"] == (
            "pending"
        )
        assert (await http.get(f"{API}/workflows/{paused_wf['id']}")).json()["status"] == "paused"
        assert len(calls_for(stub, "A")) == 1
        assert calls_for(stub, "B") == [] and calls_for(stub, "X") == []

        assert (await http.post(f"{API}/workflows/{paused_wf['id']}/resume")).status_code == 200
        done = await wait_for_status(http, paused_run["id"], "completed", "failed")
        assert done["status"] == "completed", done
        # A's output never came back, so A runs again; the interrupted run is closed.
        assert [r["status"] for r in await runs_of(http, a["id"])] == ["cancelled", "completed"]

        resumed = await http.post(f"{API}/workflows/{waiting_wf['id']}/resume")
        assert [e["id"] for e in resumed.json()["affected_executions"]] == [accepted["id"]]
        done = await wait_for_status(http, accepted["id"], "completed", "failed")
        assert done["status"] == "completed"
    counts = {name: len(calls_for(stub, name)) for name in ("A", "B", "X", "Other")}
    assert counts == {"A": 2, "B": 1, "X": 1, "Other": 1}


async def test_execution_accepted_while_the_server_stopped_runs_on_the_next_start(
    database_url: str, stub: StubServer
) -> None:
    """Accepted (202) but never started by this process: the next process starts it."""
    settings = make_settings(database_url, stub)
    async with running_app(settings) as (app, http):
        _, workflow, _ = await pipeline(http, ["A"])
        await app.state.dispatcher.shutdown()  # as during shutdown: nothing new starts here
        accepted = await execute(http, workflow["id"])
        assert (await http.get(f"{API}/executions/{accepted['id']}")).json()["status"] == "pending"
    assert stub.requests == []
    async with running_app(settings) as (_, http):
        done = await wait_for_status(http, accepted["id"], "completed", "failed")
        assert done["status"] == "completed"
    assert len(stub.requests) == 1
