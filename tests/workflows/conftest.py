"""Fixtures for the workflows tests: direct row counts in the real database, and a database
trigger that makes one statement fail (to see a request's transaction roll back whole)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crew_platform.models import Execution, ExecutionLog, Task, TaskRun
from tests.api import refusing_trigger

RowCounts = Callable[[int], Awaitable[dict[str, int]]]
FailingDeletes = Callable[[str], AbstractAsyncContextManager[None]]


@pytest.fixture
def row_counts(app: Any) -> RowCounts:
    """Rows of a workflow's tasks and execution history, counted in the database itself."""
    sessions: async_sessionmaker[AsyncSession] = app.state.sessionmaker

    async def count(workflow_id: int) -> dict[str, int]:
        executions = select(Execution.id).where(Execution.workflow_id == workflow_id)
        queries = {
            "tasks": select(func.count()).where(Task.workflow_id == workflow_id),
            "executions": select(func.count()).where(Execution.workflow_id == workflow_id),
            "task_runs": select(func.count()).where(TaskRun.execution_id.in_(executions)),
            "execution_logs": select(func.count()).where(ExecutionLog.execution_id.in_(executions)),
        }
        async with sessions() as session:
            return {name: int(await session.scalar(q) or 0) for name, q in queries.items()}

    return count


@pytest.fixture
def failing_deletes(app: Any, backend: str) -> FailingDeletes:
    """`async with failing_deletes("workflows"):` every DELETE on that table fails in the
    database, as a crash or constraint would mid-transaction."""

    def install(table: str) -> AbstractAsyncContextManager[None]:
        return refusing_trigger(app.state.engine, backend, table, "DELETE")

    return install
