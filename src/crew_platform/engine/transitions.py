"""Compare-and-set status changes: the state machine enforced by the database itself.

A transition succeeds only from a status the machine allows, so two writers racing (the engine
finishing a run while a user cancels it) can never both win.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from crew_platform.engine.states import (
    ExecutionStatus,
    TaskRunStatus,
    sources_of,
    task_run_sources_of,
)
from crew_platform.models import Execution, TaskRun


async def move_execution(
    session: AsyncSession, execution_id: int, target: ExecutionStatus, **values: Any
) -> bool:
    result = await session.execute(
        update(Execution)
        .where(Execution.id == execution_id, Execution.status.in_(sources_of(target)))
        .values(status=target.value, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def move_task_run(
    session: AsyncSession, run_id: int, target: TaskRunStatus, **values: Any
) -> bool:
    result = await session.execute(
        update(TaskRun)
        .where(TaskRun.id == run_id, TaskRun.status.in_(task_run_sources_of(target)))
        .values(status=target.value, **values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
