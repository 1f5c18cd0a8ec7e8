"""Compare-and-set status changes: the state machine enforced by the database itself.

A transition succeeds only from a status the machine allows, so two writers racing (the engine
finishing a run while a user cancels it) can never both win.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crew_platform.db import utcnow
from crew_platform.engine.journal import EXECUTIONS, Journal, Writer
from crew_platform.engine.states import (
    ExecutionStatus,
    TaskRunStatus,
    sources_of,
    task_run_sources_of,
)
from crew_platform.events.types import Event, EventType
from crew_platform.models import TaskRun

TASK_RUNS: Table = TaskRun.__table__  # type: ignore[assignment]

# Built once; the values to set are bound per call (their column names become the SET list).
_MOVE_EXECUTION = update(EXECUTIONS).where(
    EXECUTIONS.c.id == bindparam("b_id"),
    EXECUTIONS.c.status.in_(bindparam("b_from", expanding=True)),
)
_MOVE_TASK_RUN = update(TASK_RUNS).where(
    TASK_RUNS.c.id == bindparam("b_id"), TASK_RUNS.c.status.in_(bindparam("b_from", expanding=True))
)


async def move_execution(
    session: Writer, execution_id: int, target: ExecutionStatus, **values: Any
) -> bool:
    result = await session.execute(
        _MOVE_EXECUTION,
        {
            "b_id": execution_id,
            "b_from": list(sources_of(target)),
            "status": target.value,
            **values,
        },
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def move_task_run(session: Writer, run_id: int, target: TaskRunStatus, **values: Any) -> bool:
    result = await session.execute(
        _MOVE_TASK_RUN,
        {
            "b_id": run_id,
            "b_from": list(task_run_sources_of(target)),
            "status": target.value,
            **values,
        },
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def cancel_open_runs(
    journal: Journal,
    *,
    execution_id: int,
    workflow_id: int,
    error: str,
    message: str,
    reason: str | None = None,
) -> int:
    """Cancel the execution's unfinished task runs, journalling `task_cancelled` for each.

    `message` is a template with `{task_id}` and `{run_id}`. Returns how many were cancelled.
    """
    session = journal.session
    assert isinstance(session, AsyncSession), "cancel_open_runs reads ORM rows"
    runs = await session.scalars(
        select(TaskRun).where(
            TaskRun.execution_id == execution_id,
            TaskRun.status.in_([TaskRunStatus.RUNNING, TaskRunStatus.PENDING]),
        )
    )
    cancelled = 0
    for run in runs.all():
        if not await move_task_run(
            session, run.id, TaskRunStatus.CANCELLED, error=error, completed_at=utcnow()
        ):
            continue
        cancelled += 1
        await journal.record(
            Event(
                type=EventType.TASK_CANCELLED,
                workflow_id=workflow_id,
                execution_id=execution_id,
                task_id=run.task_id,
                agent_id=run.agent_id,
                status=TaskRunStatus.CANCELLED,
                data={"reason": reason} if reason else {},
            ),
            message.format(task_id=run.task_id, run_id=run.id),
        )
    return cancelled
