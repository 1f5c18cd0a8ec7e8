"""The state rules, exhaustively: every kind x every intent x every (from, to) pair of statuses,
against the table below (the behaviour the API documents), then the same rules as guarded
UPDATEs on both databases."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import insert, select, update

from crew_platform.db import utcnow
from crew_platform.engine import Intent, Kind, allows, lease, refusal
from crew_platform.engine.lease import Process
from crew_platform.engine.rules import STATUSES, move
from crew_platform.models import Execution, Task, TaskRun, Workflow

# (kind, intent) -> (from-statuses, to-status): what may happen, and nothing else.
EXPECTED: dict[tuple[Kind, Intent], tuple[set[str], str]] = {
    (Kind.EXECUTION, Intent.START): ({"pending"}, "running"),
    (Kind.EXECUTION, Intent.PAUSE): ({"running"}, "paused"),
    (Kind.EXECUTION, Intent.RESUME): ({"paused"}, "pending"),
    (Kind.EXECUTION, Intent.CANCEL): (
        {"pending", "running", "paused", "waiting_for_input"},
        "cancelled",
    ),
    (Kind.EXECUTION, Intent.RETRY): ({"failed", "cancelled"}, "pending"),
    (Kind.EXECUTION, Intent.COMPLETE): ({"running"}, "completed"),
    (Kind.EXECUTION, Intent.FAIL): ({"running"}, "failed"),
    (Kind.EXECUTION, Intent.AWAIT_INPUT): ({"running"}, "waiting_for_input"),
    (Kind.EXECUTION, Intent.APPROVE): ({"waiting_for_input"}, "pending"),
    (Kind.EXECUTION, Intent.REQUEST_CHANGES): ({"waiting_for_input"}, "pending"),
    (Kind.EXECUTION, Intent.TAKE_OVER): ({"running"}, "running"),
    (Kind.TASK_RUN, Intent.COMPLETE): ({"running"}, "completed"),
    (Kind.TASK_RUN, Intent.FAIL): ({"running"}, "failed"),
    (Kind.TASK_RUN, Intent.CANCEL): ({"pending", "running", "waiting_for_input"}, "cancelled"),
    (Kind.TASK_RUN, Intent.AWAIT_INPUT): ({"running"}, "waiting_for_input"),
    (Kind.TASK_RUN, Intent.APPROVE): ({"waiting_for_input"}, "completed"),
    (Kind.TASK_RUN, Intent.REQUEST_CHANGES): ({"waiting_for_input"}, "changes_requested"),
    (Kind.WORKFLOW, Intent.PAUSE): ({"active"}, "paused"),
    (Kind.WORKFLOW, Intent.RESUME): ({"paused"}, "active"),
}


def _expected(kind: Kind, current: str, target: str, intent: Intent) -> bool:
    sources, to = EXPECTED.get((kind, intent), (set(), ""))
    return current in sources and target == to


CASES = [
    (kind, current, target, intent)
    for kind in Kind
    for current, target in itertools.product(STATUSES[kind], repeat=2)
    for intent in Intent
]


def test_every_transition_of_every_kind_and_intent_is_as_documented() -> None:
    wrong = [case for case in CASES if allows(*case) != _expected(*case)]
    assert not wrong, f"{len(wrong)} transitions differ from the table, e.g. {wrong[:5]}"
    assert len(CASES) == sum(len(s) ** 2 for s in STATUSES.values()) * len(Intent)


def test_no_intent_leaves_a_completed_execution_and_none_moves_a_running_one_to_pending() -> None:
    for intent in Intent:
        for target in STATUSES[Kind.EXECUTION]:
            assert not allows(Kind.EXECUTION, "completed", target, intent)
            assert not allows(Kind.EXECUTION, "running", "pending", intent)


def test_a_refusal_is_a_409_naming_the_current_status_and_what_would_be_allowed() -> None:
    error = refusal(Kind.EXECUTION, 7, "running", Intent.RETRY)
    assert error.status_code == 409
    assert "Execution 7 is running" in error.message
    assert error.details == {
        "execution_id": 7,
        "status": "running",
        "intent": "retry",
        "allowed_from": ["cancelled", "failed"],
    }


async def _rows(app: FastAPI) -> dict[Kind, int]:
    async with app.state.engine.begin() as conn:
        now = utcnow()
        workflow = (
            await conn.execute(
                insert(Workflow).returning(Workflow.id),
                {"name": "rules", "workflow_type": "linear", "status": "active"},
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
                {"workflow_id": workflow, "status": "pending", "created_at": now},
            )
        ).scalar_one()
        run = (
            await conn.execute(
                insert(TaskRun).returning(TaskRun.id),
                {"execution_id": execution, "task_id": task, "status": "running"},
            )
        ).scalar_one()
    return {Kind.WORKFLOW: workflow, Kind.EXECUTION: execution, Kind.TASK_RUN: run}


_TABLES: dict[Kind, Any] = {
    Kind.WORKFLOW: Workflow,
    Kind.EXECUTION: Execution,
    Kind.TASK_RUN: TaskRun,
}


async def test_every_guarded_write_moves_exactly_when_its_rule_allows(app: FastAPI) -> None:
    ids = await _rows(app)
    for kind, intent in itertools.product(Kind, Intent):
        sources, target = EXPECTED.get((kind, intent), (set(), ""))
        if (kind, intent) not in EXPECTED:
            continue
        table = _TABLES[kind]
        for current in STATUSES[kind]:
            async with app.state.engine.begin() as conn:
                await conn.execute(
                    update(table).where(table.id == ids[kind]).values(status=current)
                )
                moved = await move(conn, kind, ids[kind], intent, owner="this-process")
                now = await conn.scalar(select(table.status).where(table.id == ids[kind]))
            assert moved == (current in sources), (kind, intent, current)
            assert now == (target if moved else current), (kind, intent, current)


async def test_a_rule_that_takes_the_lease_moves_only_when_no_other_live_process_holds_it(
    app: FastAPI,
) -> None:
    """START and TAKE_OVER hand the execution to the mover in the same guarded UPDATE, unless
    another process holds a lease that has not expired (by the database's clock)."""
    execution = (await _rows(app))[Kind.EXECUTION]
    async with app.state.engine.begin() as conn:
        await lease.register(conn, Process("live:1:a", "server", "live", 1), 600)
        await lease.register(conn, Process("expired:2:b", "server", "expired", 2), -1)
    holders = {None: True, "me:3:c": True, "expired:2:b": True, "gone:4:d": True, "live:1:a": False}
    for intent, status in ((Intent.START, "pending"), (Intent.TAKE_OVER, "running")):
        for holder, moves in holders.items():
            async with app.state.engine.begin() as conn:
                await conn.execute(
                    update(Execution)
                    .where(Execution.id == execution)
                    .values(status=status, lease_owner=holder, leased_at=None)
                )
                moved = await move(conn, Kind.EXECUTION, execution, intent, owner="me:3:c")
                row = (
                    await conn.execute(
                        select(Execution.lease_owner, Execution.leased_at).where(
                            Execution.id == execution
                        )
                    )
                ).one()
            assert moved == moves, (intent, holder)
            assert row.lease_owner == ("me:3:c" if moves else holder), (intent, holder)
            assert (row.leased_at is not None) == moves, (intent, holder)


async def test_a_rule_that_takes_the_lease_must_name_its_taker(app: FastAPI) -> None:
    execution = (await _rows(app))[Kind.EXECUTION]
    async with app.state.engine.begin() as conn:
        with pytest.raises(ValueError, match="name its owner"):
            await move(conn, Kind.EXECUTION, execution, Intent.START)
