"""Leases inside one process, on both databases: a runner holds its execution's lease from begin to
end, and once another process holds it, nothing the runner would still write (a stored answer,
an opened task, a tool call) reaches the store. The lease is handed to another process here by
writing what a takeover writes, so the guard is tested alone (a real takeover also closes the
open task run, which would refuse the write by itself)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, insert, select, update

from crew_platform.devtools.llm_stub import StubServer
from crew_platform.engine import lease
from crew_platform.engine.journal import Journal
from crew_platform.engine.lane import StoreLane
from crew_platform.engine.lease import LeaseLost, Process
from crew_platform.engine.tool_calls import StoredCallLog
from crew_platform.engine.tool_loop import CallRecord
from crew_platform.events.bus import InMemoryBus
from crew_platform.events.types import Event, EventType
from crew_platform.models import Execution, ExecutionLog, Task, TaskRun, ToolCall, Workflow
from crew_platform.settings import Settings
from tests.conftest import make_settings
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

LOST = "lost the lease of execution"


@pytest.fixture
def settings(database_url: str, stub: StubServer) -> Settings:
    """A lease far longer than any test: no heartbeat beats unless the test asks for one."""
    return make_settings(database_url, stub, llm_timeout_seconds=120, lease_seconds=600)


async def hand_to_another_process(app: FastAPI, execution_id: int) -> str:
    """What another live process's takeover writes to the execution's lease."""
    other = Process("elsewhere:1:0000", "server", "elsewhere", 1)
    async with app.state.engine.begin() as conn:
        await lease.register(conn, other, 600)
        await conn.execute(
            update(Execution).where(Execution.id == execution_id).values(lease_owner=other.id)
        )
    return other.id


async def stored(app: FastAPI, execution_id: int) -> dict[str, Any]:
    """Everything a runner writes for the execution, read from the store."""
    async with app.state.engine.connect() as conn:
        execution = (
            await conn.execute(
                select(
                    Execution.status,
                    Execution.last_seq,
                    Execution.tokens_used,
                    Execution.lease_owner,
                ).where(Execution.id == execution_id)
            )
        ).one()
        runs = (
            await conn.execute(
                select(TaskRun.task_id, TaskRun.status, TaskRun.output)
                .where(TaskRun.execution_id == execution_id)
                .order_by(TaskRun.id)
            )
        ).all()
        logs = await conn.scalar(
            select(func.count()).where(ExecutionLog.execution_id == execution_id)
        )
    return {"execution": tuple(execution), "runs": [tuple(r) for r in runs], "logs": logs}


async def test_a_run_holds_its_lease_while_it_runs_and_lets_it_go_at_the_end(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("A", gate="a"))
    _, workflow, _ = await pipeline(client, ["A", "B"])
    run = await execute(client, workflow["id"])
    await wait_for_gate(stub, "a")
    workers = (await client.get(f"{API}/workers/")).json()
    assert [(w["id"], w["kind"], w["pid"]) for w in workers] == [
        (app.state.heartbeat.process.id, "server", os.getpid())
    ]
    (held,) = workers[0]["executions"]
    assert (held["execution_id"], held["workflow_id"], held["status"]) == (
        run["id"],
        workflow["id"],
        "running",
    )
    assert held["lease_age_seconds"] >= 0
    assert workers[0]["last_heartbeat_at"] < workers[0]["lease_expires_at"]
    stub.open_gate("a")
    assert (await wait_for_status(client, run["id"], "completed", "failed"))["status"] == (
        "completed"
    )
    await idle(app)
    assert (await client.get(f"{API}/workers")).json()[0]["executions"] == []
    assert (await stored(app, run["id"]))["execution"][3] is None


async def test_a_runner_whose_lease_was_taken_stores_nothing_of_its_answer(
    app: FastAPI,
    client: httpx.AsyncClient,
    stub: StubServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stub.script(for_task("A", gate="a"))
    _, workflow, (a, _b) = await pipeline(client, ["A", "B"])
    run = await execute(client, workflow["id"])
    await wait_for_gate(stub, "a")
    other = await hand_to_another_process(app, run["id"])
    before = await stored(app, run["id"])
    assert before["runs"] == [(a["id"], "running", None)]
    stub.open_gate("a")
    await eventually(lambda: f"{LOST} {run['id']}" in caplog.text, what="the runner to give up")
    await idle(app)
    assert await stored(app, run["id"]) == before
    assert before["execution"][3] == other
    assert calls_for(stub, "B") == []


async def test_the_heartbeat_stops_a_runner_whose_lease_was_taken_without_writing(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    stub.script(for_task("A", gate="a"))
    _, workflow, _ = await pipeline(client, ["A", "B"])
    run = await execute(client, workflow["id"])
    await wait_for_gate(stub, "a")
    await hand_to_another_process(app, run["id"])
    before = await stored(app, run["id"])
    await app.state.heartbeat.beat(app.state.dispatcher)
    # The gate is never opened: only the runner hanging up ends the call.
    await eventually(lambda: stub.disconnects == 1, what="the call to be aborted")
    await idle(app)
    assert f"{LOST} {run['id']}" in caplog.text
    assert await stored(app, run["id"]) == before
    assert len(stub.requests) == 1


async def test_a_clean_shutdown_lets_its_runs_go_to_the_next_process_at_once(
    settings: Settings, stub: StubServer
) -> None:
    """With LEASE_SECONDS=600 the next process could not wait for the lease to expire: the
    run completes only because the stopping process retired its lease."""
    stub.script(for_task("A", gate="a"))
    async with running_app(settings) as (_, http):
        _, workflow, _ = await pipeline(http, ["A", "B"])
        run = await execute(http, workflow["id"])
        await wait_for_gate(stub, "a")
    async with running_app(settings) as (app, http):
        done = await wait_for_status(http, run["id"], "completed", "failed")
        assert done["status"] == "completed", done
        workers = (await http.get(f"{API}/workers")).json()
        assert [w["id"] for w in workers] == [app.state.heartbeat.process.id]
    assert len(calls_for(stub, "A")) == 2 and len(calls_for(stub, "B")) == 1


# -- the journal's guard, on the rows themselves ---------------------------------------------


@pytest.fixture
async def held_elsewhere(app: FastAPI) -> AsyncIterator[dict[str, int]]:
    """A running execution with an open task run, held by another live process."""
    async with app.state.engine.begin() as conn:
        workflow = (
            await conn.execute(
                insert(Workflow).returning(Workflow.id),
                {"name": "leased", "workflow_type": "linear", "status": "active"},
            )
        ).scalar_one()
        task = (
            await conn.execute(
                insert(Task).returning(Task.id),
                {"workflow_id": workflow, "name": "t", "task_type": "ai_task"},
            )
        ).scalar_one()
        execution = (
            await conn.execute(
                insert(Execution).returning(Execution.id),
                {"workflow_id": workflow, "status": "running"},
            )
        ).scalar_one()
        run = (
            await conn.execute(
                insert(TaskRun).returning(TaskRun.id),
                {"execution_id": execution, "task_id": task, "status": "running"},
            )
        ).scalar_one()
    await hand_to_another_process(app, execution)
    yield {"workflow": workflow, "task": task, "execution": execution, "run": run}


def _event(ids: dict[str, int], kind: EventType = EventType.TASK_STARTED) -> Event:
    return Event(
        type=kind, workflow_id=ids["workflow"], execution_id=ids["execution"], task_id=ids["task"]
    )


async def test_a_journal_records_nothing_on_an_execution_another_process_holds(
    app: FastAPI, held_elsewhere: dict[str, int]
) -> None:
    ids, bus = held_elsewhere, InMemoryBus()
    before = await stored(app, ids["execution"])
    async with app.state.engine.connect() as conn:
        journal = Journal(conn, bus, owner=app.state.heartbeat.process.id)
        assert await journal.record_if_running(_event(ids), "opened") is None  # a task's open
        with pytest.raises(LeaseLost):
            await journal.record(_event(ids, EventType.TASK_COMPLETED), "stored")
        await journal.commit()
        # The holder itself, and a user's request (no owner), still write.
        holder = Journal(conn, bus, owner="elsewhere:1:0000")
        assert await holder.record_if_running(_event(ids), "opened") is not None
        await holder.commit()
        by_request = Journal(conn, bus)
        assert await by_request.record(_event(ids), "by request") is not None
        await by_request.commit()
    after = await stored(app, ids["execution"])
    assert after["execution"][1] == before["execution"][1] + 2
    assert after["logs"] == before["logs"] + 2


async def test_tool_call_records_need_the_lease(
    app: FastAPI, held_elsewhere: dict[str, int]
) -> None:
    ids = held_elsewhere
    calls = StoredCallLog(
        StoreLane(app.state.sessionmaker),
        InMemoryBus(),
        execution_id=ids["execution"],
        task_run_id=ids["run"],
        task_id=ids["task"],
        owner=app.state.heartbeat.process.id,
        event=lambda kind, data: _event(ids, kind),
    )
    call = CallRecord(
        iteration=0,
        position=0,
        call_id="c1",
        tool="echo",
        arguments="{}",
        assistant_content=None,
    )
    before = await stored(app, ids["execution"])
    with pytest.raises(LeaseLost):
        await calls.started([call])
    async with app.state.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(ToolCall)) == 0
    assert await stored(app, ids["execution"]) == before


# -- what the heartbeat adopts ---------------------------------------------------------------


async def dead_process(app: FastAPI) -> str:
    gone = Process("gone:2:0000", "server", "gone", 2)
    async with app.state.engine.begin() as conn:
        await lease.register(conn, gone, -1)  # its lease expired a second ago
    return gone.id


@pytest.mark.parametrize("status", ["running", "pending"])
async def test_the_heartbeat_adopts_the_runs_of_a_process_that_died(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer, status: str
) -> None:
    """A running execution whose holder's lease lapsed is taken over; so is a pending one (its
    holder died between a resume and letting it go). Neither starts before the beat: the
    execution is written as the dead process left it while this process already runs."""
    _, workflow, _ = await pipeline(client, ["A", "B"])
    assert (await client.post(f"{API}/workflows/{workflow['id']}/pause")).status_code == 200
    run = await execute(client, workflow["id"])  # accepted, not started: the workflow is paused
    gone = await dead_process(app)
    async with app.state.engine.begin() as conn:
        await conn.execute(update(Workflow).values(status="active"))
        await conn.execute(
            update(Execution)
            .where(Execution.id == run["id"])
            # A running one has numbered its `workflow_started` at least.
            .values(status=status, lease_owner=gone, last_seq=int(status == "running"))
        )
    assert stub.requests == []
    await app.state.heartbeat.beat(app.state.dispatcher)
    done = await wait_for_status(client, run["id"], "completed", "failed")
    assert done["status"] == "completed", done
    assert len(calls_for(stub, "A")) == 1 and len(calls_for(stub, "B")) == 1


async def test_the_heartbeat_leaves_a_live_processs_runs_alone(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    _, workflow, _ = await pipeline(client, ["A"])
    assert (await client.post(f"{API}/workflows/{workflow['id']}/pause")).status_code == 200
    run = await execute(client, workflow["id"])
    async with app.state.engine.begin() as conn:
        await conn.execute(update(Workflow).values(status="active"))
        await conn.execute(
            update(Execution).where(Execution.id == run["id"]).values(status="running")
        )
    await hand_to_another_process(app, run["id"])
    before = await stored(app, run["id"])
    await app.state.heartbeat.beat(app.state.dispatcher)
    await idle(app)
    assert await stored(app, run["id"]) == before
    assert stub.requests == []


# -- a resume that lands on another process while the holder still finishes its step ---------


@pytest.fixture
async def pair(settings: Settings) -> AsyncIterator[tuple[Any, Any]]:
    async with running_app(settings) as one, running_app(settings) as other:
        yield one, other


async def test_a_resume_elsewhere_while_the_holder_finishes_its_step_runs_once_in_the_holder(
    pair: tuple[Any, Any], stub: StubServer
) -> None:
    """Paused and resumed through another process while the first still waits for its model:
    the other may not start it (the first holds the lease), so the first, on letting it go
    and finding it pending, runs it on. No step runs twice."""
    (runner_app, here), (other_app, there) = pair
    stub.script(for_task("A", gate="a", content="OUT<A>"))
    _, workflow, (a, _b) = await pipeline(here, ["A", "B"])
    run = await execute(here, workflow["id"])
    await wait_for_gate(stub, "a")
    assert (await there.post(f"{API}/workflows/{workflow['id']}/pause")).status_code == 200
    assert (await there.post(f"{API}/workflows/{workflow['id']}/resume")).status_code == 200
    await idle(other_app)  # its runner found the lease held and left the execution pending
    assert (await there.get(f"{API}/executions/{run['id']}")).json()["status"] == "pending"
    stub.open_gate("a")
    done = await wait_for_status(here, run["id"], "completed", "failed")
    assert done["status"] == "completed", done
    assert done["output_data"]["tasks"][str(a["id"])] == "OUT<A>"
    assert len(calls_for(stub, "A")) == 1 and len(calls_for(stub, "B")) == 1
    logs = (await here.get(f"{API}/executions/{run['id']}/logs")).json()
    assert [e["event"] for e in logs].count("task_cancelled") == 0
    del runner_app


# -- the price -------------------------------------------------------------------------------


async def test_lease_checks_add_no_statement_to_a_step(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """A step is opened (event number, task run, log row) and stored (task run, event number,
    log row): six statements, the lease checked inside two of them. Measured as a 3-task run
    minus a 1-task run, with nothing polling the API meanwhile."""
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    counts = {}
    event.listen(app.state.engine.sync_engine, "before_cursor_execute", seen)
    try:
        for n in (1, 3):
            _, workflow, _ = await pipeline(client, [f"T{n}.{i}" for i in range(n)])
            statements.clear()
            await execute(client, workflow["id"])
            await idle(app)
            counts[n] = len(statements)
    finally:
        event.remove(app.state.engine.sync_engine, "before_cursor_execute", seen)
    assert (counts[3] - counts[1]) / 2 <= 6, counts
