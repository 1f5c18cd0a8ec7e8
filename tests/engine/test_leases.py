"""Execution leases between real server processes on one database (LEASE_SECONDS=3): a live
process's run is never touched by another; a killed or frozen one's is taken over once its lease
expired, from the last checkpoint; a frozen one that wakes writes nothing more; and of two
processes racing to take an execution exactly one wins."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import create_async_engine

from crew_platform.devtools.llm_stub import StubServer
from crew_platform.engine.lease import Process, register
from crew_platform.models import Execution, ExecutionLog, TaskRun, ToolCall, Workflow
from tests.api import live_env
from tests.conftest import make_settings
from tests.engine.test_durability import api, runs_of, start, task_run_states
from tests.flows import (
    API,
    calls_for,
    eventually,
    execute,
    for_task,
    pipeline,
    wait_for_gate,
    wait_for_status,
)
from tests.support import LiveServer


@pytest.fixture
def server_env(database_url: str, stub: StubServer) -> dict[str, str]:
    """A little longer than `live_env`'s: a live server's heartbeat delayed by a busy machine
    must not look like a dead server here."""
    return live_env(database_url, stub) | {"LEASE_SECONDS": "3"}


@pytest.fixture
def servers() -> Iterator[list[LiveServer]]:
    started: list[LiveServer] = []
    yield started
    for server in started:
        if server.process and server.process.poll() is None:
            server.process.send_signal(signal.SIGCONT)  # a frozen one cannot die otherwise
        server.kill()


def pid_of(server: LiveServer) -> int:
    assert server.process is not None
    return server.process.pid


async def workers(server: LiveServer) -> dict[int, dict[str, Any]]:
    """GET /api/v1/workers on `server`, by pid."""
    async with api(server) as http:
        return {w["pid"]: w for w in (await http.get(f"{API}/workers")).json()}


async def beats_twice(server: LiveServer) -> None:
    """Until `server` renewed its lease twice more: each heartbeat also looked for runs to take
    over, so one whole look happened in between."""
    seen: set[str] = set()

    async def third_value() -> bool:
        seen.add((await workers(server))[pid_of(server)]["last_heartbeat_at"])
        return len(seen) >= 3

    await eventually(third_value, what="two heartbeats")


async def stored(database_url: str, execution_id: int) -> dict[str, Any]:
    """Everything written for the execution, read from the store directly."""
    engine = create_async_engine(make_settings(database_url).database_url)
    try:
        async with engine.connect() as conn:
            execution = (
                await conn.execute(select(Execution).where(Execution.id == execution_id))
            ).one()
            runs = (
                await conn.execute(
                    select(TaskRun).where(TaskRun.execution_id == execution_id).order_by(TaskRun.id)
                )
            ).all()
            logs = (
                await conn.execute(
                    select(func.count(), func.max(ExecutionLog.seq)).where(
                        ExecutionLog.execution_id == execution_id
                    )
                )
            ).one()
            calls = await conn.scalar(
                select(func.count()).where(ToolCall.execution_id == execution_id)
            )
    finally:
        await engine.dispose()
    return {
        "execution": tuple(execution),
        "runs": [tuple(r) for r in runs],
        "logs": tuple(logs),
        "tool_calls": calls,
    }


async def test_a_second_server_does_not_touch_a_live_servers_run(
    servers: list[LiveServer], server_env: dict[str, str], stub: StubServer, database_url: str
) -> None:
    """Two in-process servers on one database no longer both resume the same run: starting the
    second while the first's call is in flight cancels nothing and calls the model for nothing,
    neither at its start-up nor at its later looks for runs to take over."""
    stub.script(for_task("A", content="OUT<A>"), for_task("B", gate="b"))
    first = start(servers, server_env)
    async with api(first) as http:
        _, workflow, (a, b, _c) = await pipeline(http, ["A", "B", "C"])
        run = await execute(http, workflow["id"])
        await wait_for_gate(stub, "b")
    in_flight = await task_run_states(database_url, run["id"])
    assert in_flight == [(a["id"], "completed"), (b["id"], "running")]

    second = start(servers, server_env)  # healthy: its start-up recovery is over
    assert await task_run_states(database_url, run["id"]) == in_flight
    await beats_twice(second)
    assert await task_run_states(database_url, run["id"]) == in_flight
    seen = await workers(second)
    assert set(seen) == {pid_of(first), pid_of(second)}
    assert [e["execution_id"] for e in seen[pid_of(first)]["executions"]] == [run["id"]]
    assert seen[pid_of(second)]["executions"] == []
    assert {w["kind"] for w in seen.values()} == {"server"}

    stub.open_gate("b")
    async with api(first) as http:
        done = await wait_for_status(http, run["id"], "completed", "failed")
        assert done["status"] == "completed", done
        events = [e["event"] for e in (await http.get(f"{API}/executions/{run['id']}/logs")).json()]
    assert "task_cancelled" not in events and "workflow_resumed" not in events
    assert {n: len(calls_for(stub, n)) for n in "ABC"} == {"A": 1, "B": 1, "C": 1}


async def test_a_killed_servers_run_is_taken_over_once_its_lease_expired(
    servers: list[LiveServer], server_env: dict[str, str], stub: StubServer
) -> None:
    """The second server is live before the first dies: its periodic look, not a start-up,
    finds the run; only the step in flight runs again."""
    stub.script(
        for_task("A", content="OUT<A>"),
        for_task("B", gate="b"),
        for_task("B", content="OUT<B>"),
        for_task("C", content="OUT<C>"),
    )
    first = start(servers, server_env)
    second = start(servers, server_env)
    async with api(first) as http:
        _, workflow, (a, b, c) = await pipeline(http, ["A", "B", "C"])
        run = await execute(http, workflow["id"])
        await wait_for_gate(stub, "b")
    first.kill()
    async with api(second) as http:
        done = await wait_for_status(http, run["id"], "completed", "failed")
        assert done["status"] == "completed", done
        assert done["output_data"]["tasks"] == {
            str(a["id"]): "OUT<A>",
            str(b["id"]): "OUT<B>",
            str(c["id"]): "OUT<C>",
        }
        b_runs = await runs_of(http, b["id"])
        assert [(r["status"], r["attempt"]) for r in b_runs] == [("cancelled", 1), ("completed", 2)]
        assert "Interrupted" in b_runs[0]["error"]
        logs = (await http.get(f"{API}/executions/{run['id']}/logs")).json()
    assert [e["seq"] for e in logs] == list(range(1, len(logs) + 1))
    events = [e["event"] for e in logs]
    assert events.count("workflow_started") == 1 and events.count("workflow_resumed") == 1
    assert {n: len(calls_for(stub, n)) for n in "ABC"} == {"A": 1, "B": 2, "C": 1}
    seen = await eventually(
        lambda: _only(second), what="the killed server to drop out of GET /workers"
    )
    assert seen["executions"] == []


async def _only(server: LiveServer) -> dict[str, Any] | None:
    seen = await workers(server)
    return seen[pid_of(server)] if set(seen) == {pid_of(server)} else None


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_frozen_server_loses_its_run_and_writes_nothing_to_it_when_it_wakes(
    servers: list[LiveServer],
    server_env: dict[str, str],
    stub: StubServer,
    database_url: str,
    tmp_path: Path,
) -> None:
    """SIGSTOP past the lease, then SIGCONT. PostgreSQL only: a process frozen on SQLite may
    hold the file's single write lock (a heartbeat being written), which stops every other
    process's writes until it wakes; one frozen on PostgreSQL holds nothing the others need."""
    stub.script(for_task("A", content="OUT<A>"), for_task("B", gate="b"))
    log_path = tmp_path / "first.log"
    first = LiveServer(server_env, log_path=log_path).start()
    servers.append(first)
    second = start(servers, server_env)
    async with api(first) as http:
        _, workflow, _ = await pipeline(http, ["A", "B", "C"])
        run = await execute(http, workflow["id"])
        await wait_for_gate(stub, "b")
    assert first.process is not None
    first.process.send_signal(signal.SIGSTOP)
    async with api(second) as http:
        done = await wait_for_status(http, run["id"], "completed", "failed")
        assert done["status"] == "completed", done
    taken_over = await stored(database_url, run["id"])

    first.process.send_signal(signal.SIGCONT)
    stub.open_gate("b")  # its model call answers, if it did not hang up first
    lost = f"lost the lease of execution {run['id']}"
    await eventually(lambda: lost in log_path.read_text(), what="the woken server to give up")
    await eventually(
        lambda: _live_again(second, first), what="the woken server's heartbeat to resume"
    )
    assert await stored(database_url, run["id"]) == taken_over
    assert {n: len(calls_for(stub, n)) for n in "ABC"} == {"A": 1, "B": 2, "C": 1}


async def _live_again(asked: LiveServer, woken: LiveServer) -> bool:
    seen = await workers(asked)
    return pid_of(woken) in seen and seen[pid_of(woken)]["executions"] == []


RACED = 200


async def test_of_two_processes_racing_to_take_an_execution_exactly_one_wins(
    database_url: str, tmp_path: Path
) -> None:
    """Two processes try to take the same executions at the same moment, in the same order
    (half accepted ones, by START, half whose holder died, by TAKE_OVER), one transaction
    each: every execution is won exactly once, by the process its row names."""
    engine = create_async_engine(make_settings(database_url).database_url)
    try:
        async with engine.begin() as conn:
            await register(conn, Process("dead:1:0", "server", "dead", 1), -1)
            workflow = (
                await conn.execute(
                    insert(Workflow).returning(Workflow.id),
                    {"name": "race", "workflow_type": "linear", "status": "active"},
                )
            ).scalar_one()
            ids = (
                await conn.execute(
                    insert(Execution).returning(Execution.id),
                    [{"workflow_id": workflow, "status": "pending"} for _ in range(RACED)],
                )
            ).scalars()
            todo = [(i, "start" if n % 2 else "take_over") for n, i in enumerate(sorted(ids))]
            await conn.execute(
                update(Execution)
                .where(Execution.id.in_([i for i, intent in todo if intent == "take_over"]))
                .values(status="running", lease_owner="dead:1:0")
            )
        todo_file = tmp_path / "todo.json"
        todo_file.write_text(json.dumps(todo))
        racers = {
            owner: _racer(database_url, owner, todo_file) for owner in ("racer:1:0", "racer:2:0")
        }
        for racer in racers.values():
            assert racer.stdout is not None
            assert racer.stdout.readline().strip() == "ready", racer.stderr
        for racer in racers.values():
            assert racer.stdin is not None
            racer.stdin.write("go\n")
            racer.stdin.flush()
        won: dict[str, list[int]] = {}
        for owner, racer in racers.items():
            out, err = racer.communicate(timeout=120)
            assert racer.returncode == 0, err[-3000:]
            won[owner] = json.loads(out)
        async with engine.connect() as conn:
            holders = dict(
                (await conn.execute(select(Execution.id, Execution.lease_owner))).tuples().all()
            )
    finally:
        await engine.dispose()
    first, second = won.values()
    assert not set(first) & set(second), "an execution was won by both processes"
    assert sorted(first + second) == sorted(i for i, _ in todo), (len(first), len(second))
    assert all(holders[i] == owner for owner, ids in won.items() for i in ids)


def _racer(database_url: str, owner: str, todo: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.engine.lease_racer", database_url, owner, str(todo)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
