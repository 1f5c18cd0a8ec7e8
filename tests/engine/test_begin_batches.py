"""Runners that begin at the same time share one transaction (`engine/beginning.py`), and so do
the opens and stores of task runs (`engine/group.py`): a burst of runs is accepted and each runs
exactly once, and one whose begin or write fails costs the others of its group nothing."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from crew_platform.devtools.llm_stub import StubServer
from crew_platform.engine.group import GroupCommit
from crew_platform.engine.journal import Journal
from crew_platform.engine.lane import StoreLane
from crew_platform.models import Execution, Workflow
from tests.conftest import make_settings
from tests.flows import API, execute, make_workflow, pipeline, running_app, wait_for_status

TASKS = ["one", "two", "three"]


async def _events(client: httpx.AsyncClient, execution_id: int) -> list[tuple[int, str]]:
    response = await client.get(f"{API}/executions/{execution_id}/logs")
    assert response.status_code == 200, response.text
    return [(entry["seq"], entry["event"]) for entry in response.json()]


def _ran_once(events: list[tuple[int, str]]) -> bool:
    """The log of one clean run of the three tasks: numbered 1..8 without a gap, one start,
    each task started and completed once, one completion."""
    kinds = [kind for _, kind in events]
    return (
        [seq for seq, _ in events] == list(range(1, 9))
        and kinds[0] == "workflow_started"
        and kinds.count("workflow_started") == 1
        and kinds.count("task_started") == 3
        and kinds.count("task_completed") == 3
        and kinds[-1] == "workflow_completed"
    )


async def test_a_burst_of_posts_is_accepted_and_each_run_runs_once(
    database_url: str, stub: StubServer
) -> None:
    # A small pool: the POSTs wait for a connection rather than open 40 (PostgreSQL's
    # connections are shared with other test runs).
    settings = make_settings(database_url, stub, database_pool_size=8, llm_timeout_seconds=120)
    stub.state.latency = 0.05
    burst = 40
    async with running_app(settings) as (_, client):
        _, workflow, _ = await pipeline(client, TASKS)
        body: dict[str, Any] = {"input_data": {}}
        answers = await asyncio.gather(
            *(
                client.post(f"{API}/workflows/{workflow['id']}/execute", json=body)
                for _ in range(burst)
            )
        )
        assert [a.status_code for a in answers] == [202] * burst, [a.text for a in answers]
        ids = [a.json()["id"] for a in answers]
        assert len(set(ids)) == burst
        done = [await wait_for_status(client, i, "completed", "failed") for i in ids]
        assert [d["status"] for d in done] == ["completed"] * burst, done
        logs = {i: await _events(client, i) for i in ids}
    assert [i for i, events in logs.items() if not _ran_once(events)] == [], logs
    assert len(stub.requests) == burst * len(TASKS)


async def test_a_begin_that_fails_in_a_batch_fails_none_of_the_others(
    app: FastAPI,
    client: httpx.AsyncClient,
    stub: StubServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Executions accepted while their workflow is paused wait as `pending`; the resume hands
    them all to the dispatcher at once, so their runners begin in one batch. One of them has a
    plan its begin cannot read: the batch is rolled back, each execution begins on its own, and
    only the broken one does not start."""
    _, workflow, _ = await pipeline(client, TASKS)
    paused = await client.post(f"{API}/workflows/{workflow['id']}/pause")
    assert paused.status_code == 200, paused.text
    runs = [await execute(client, workflow["id"]) for _ in range(4)]
    assert {r["status"] for r in runs} == {"pending"}
    broken = runs[1]["id"]
    async with app.state.sessionmaker() as session:
        await session.execute(
            update(Execution).where(Execution.id == broken).values(plan=[{"task_id": "nope"}])
        )
        await session.commit()
    with caplog.at_level(logging.WARNING, logger="crew_platform.engine.beginning"):
        resumed = await client.post(f"{API}/workflows/{workflow['id']}/resume")
        assert resumed.status_code == 200, resumed.text
        good = [r["id"] for r in runs if r["id"] != broken]
        done = [await wait_for_status(client, i, "completed", "failed") for i in good]
    assert [d["status"] for d in done] == ["completed"] * 3, done
    assert any("began together and failed" in r.getMessage() for r in caplog.records)
    for execution_id in good:
        assert _ran_once(await _events(client, execution_id))
    left = (await client.get(f"{API}/executions/{broken}")).json()
    assert left["status"] == "pending"  # nothing of its begin was written
    assert await _events(client, broken) == []
    await app.state.dispatcher.cancel(broken, wait=5)


async def test_a_piece_that_fails_in_a_group_commit_fails_only_itself(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Three pieces asked at once share one transaction; the second breaks a unique name, so
    the group is rolled back and each runs again alone: the other two are committed and only the
    second's caller sees its error."""
    await make_workflow(client, "linear", name="taken")
    group = GroupCommit(
        StoreLane(app.state.sessionmaker), app.state.bus, owner="test", what="workflows"
    )
    runs: dict[str, int] = {}

    def named(name: str) -> Any:
        async def piece(journal: Journal) -> str:
            runs[name] = runs.get(name, 0) + 1
            await journal.session.execute(
                insert(Workflow).values(name=name, workflow_type="linear", status="active")
            )
            return name

        return piece

    asked = [group.run(named(n), execution_id=0) for n in ("first", "taken", "third")]
    results = await asyncio.gather(*asked, return_exceptions=True)
    assert results[0] == "first" and results[2] == "third", results
    assert isinstance(results[1], IntegrityError), results
    # The group stopped at the failure: the first piece ran twice (rolled back, then alone).
    assert runs == {"first": 2, "taken": 2, "third": 1}
    async with app.state.sessionmaker() as session:
        names = set(await session.scalars(select(Workflow.name)))
    assert {"first", "taken", "third"} <= names
