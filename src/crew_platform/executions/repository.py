"""Reads of executions, task runs and logs (no writes: those are the engine's)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Float, Select, case, cast, desc, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crew_platform.auth.ownership import (
    in_owned_workflows,
    of_owned_workflows,
    workflow_visible,
)
from crew_platform.common.persistence import paginate
from crew_platform.db import utcnow
from crew_platform.engine import FINISHED, UNFINISHED
from crew_platform.engine import ExecutionStatus as ES
from crew_platform.engine import TaskRunStatus as TS
from crew_platform.errors import NotFound
from crew_platform.executions.schemas import (
    DayCount,
    ErrorCount,
    ExecutionRead,
    ExecutionStats,
    ExecutionStatusRead,
    LogEntry,
    Progress,
    RunningTask,
    WaitingTask,
    WorkflowCount,
)
from crew_platform.models import Execution, ExecutionLog, Task, TaskRun, ToolCall
from crew_platform.tasks.service import get_task
from crew_platform.workflows.service import get_workflow


async def reload(session: AsyncSession, ids: Sequence[int]) -> list[ExecutionRead]:
    """The executions as stored now (after a control request changed them)."""
    if not ids:
        return []
    rows = await session.scalars(
        select(Execution)
        .where(Execution.id.in_(ids))
        .order_by(Execution.id)
        .execution_options(populate_existing=True)
    )
    return [ExecutionRead.model_validate(e) for e in rows]


async def get_execution(session: AsyncSession, execution_id: int) -> Execution:
    execution = await session.get(Execution, execution_id)
    if execution is None or not await workflow_visible(session, execution.workflow_id):
        raise NotFound.resource("Execution", execution_id)
    return execution


async def list_executions(
    session: AsyncSession, *, skip: int, limit: int, workflow_id: int | None, status: str | None
) -> tuple[list[ExecutionRead], int]:
    query: Select[Any] = of_owned_workflows(
        select(Execution).order_by(Execution.id.desc()), Execution.workflow_id
    )
    if workflow_id is not None:
        query = query.where(Execution.workflow_id == workflow_id)
    if status is not None:
        query = query.where(Execution.status == status)
    rows, total = await paginate(session, query, skip=skip, limit=limit)
    return [ExecutionRead.model_validate(e) for e in rows], total


async def workflow_executions(
    session: AsyncSession, *, workflow_id: int, skip: int, limit: int, status: str | None
) -> tuple[list[ExecutionRead], int]:
    await get_workflow(session, workflow_id)
    return await list_executions(
        session, skip=skip, limit=limit, workflow_id=workflow_id, status=status
    )


async def task_runs(
    session: AsyncSession, *, task_id: int, skip: int, limit: int
) -> tuple[Sequence[TaskRun], int]:
    await get_task(session, task_id)
    query = select(TaskRun).where(TaskRun.task_id == task_id).order_by(TaskRun.id.desc())
    return await paginate(session, query, skip=skip, limit=limit)


async def tool_calls_of(session: AsyncSession, run_ids: Sequence[int]) -> dict[int, list[ToolCall]]:
    """The tool calls of these task runs, by run, in the order the model asked for them; a
    coworker's calls inside a delegation follow that delegation call."""
    calls: dict[int, list[ToolCall]] = {}
    if run_ids:
        rows = await session.scalars(
            select(ToolCall)
            .where(ToolCall.task_run_id.in_(run_ids))
            .order_by(ToolCall.task_run_id, ToolCall.iteration, ToolCall.position)
        )
        for call in sorted(rows, key=_listed_order):
            calls.setdefault(call.task_run_id, []).append(call)
    return calls


def _listed_order(call: ToolCall) -> tuple[int, ...]:
    """A run's own calls by (iteration, position); a coworker's right after its delegation."""
    if not call.delegation_iteration:
        return (call.task_run_id, call.iteration, call.position, 0, 0, 0)
    return (
        call.task_run_id,
        call.delegation_iteration,
        call.delegation_position,
        1,
        call.iteration,
        call.position,
    )


async def execution_logs(
    session: AsyncSession,
    *,
    execution_id: int,
    skip: int,
    limit: int,
    level: str | None,
    after_seq: int | None = None,
) -> tuple[list[LogEntry], int]:
    await get_execution(session, execution_id)
    query = select(ExecutionLog).where(ExecutionLog.execution_id == execution_id)
    if level is not None:
        query = query.where(ExecutionLog.level == level)
    if after_seq is not None:
        query = query.where(ExecutionLog.seq > after_seq)
    rows, total = await paginate(session, query.order_by(ExecutionLog.seq), skip=skip, limit=limit)
    return [LogEntry.model_validate(r) for r in rows], total


async def execution_status(session: AsyncSession, *, execution_id: int) -> ExecutionStatusRead:
    execution = await get_execution(session, execution_id)
    planned = [int(p["task_id"]) for p in execution.plan or []]
    runs = (
        await session.scalars(
            select(TaskRun).where(TaskRun.execution_id == execution_id).order_by(TaskRun.id)
        )
    ).all()
    latest: dict[int, TaskRun] = {run.task_id: run for run in runs}
    statuses = [latest[t].status if t in latest else TS.PENDING.value for t in planned]
    # A draft returned with feedback waits for a runner to revise it: pending again.
    counts = Counter(TS.PENDING.value if s == TS.CHANGES_REQUESTED else s for s in statuses)
    names = dict(
        (await session.execute(select(Task.id, Task.name).where(Task.id.in_(planned))))
        .tuples()
        .all()
    )
    running = [
        RunningTask(
            task_id=r.task_id,
            name=names.get(r.task_id),
            run_id=r.id,
            attempt=r.attempt,
            started_at=r.started_at,
        )
        for r in latest.values()
        if r.status == TS.RUNNING
    ]
    waiting = [
        WaitingTask(
            task_id=r.task_id,
            name=names.get(r.task_id),
            run_id=r.id,
            attempt=r.attempt,
            draft=r.output,
        )
        for r in latest.values()
        if r.status == TS.WAITING_FOR_INPUT
    ]
    total = len(planned)
    finished_at = execution.completed_at or utcnow()
    elapsed = (finished_at - execution.started_at).total_seconds() if execution.started_at else None
    return ExecutionStatusRead(
        execution_id=execution.id,
        workflow_id=execution.workflow_id,
        status=execution.status,
        progress=Progress(
            total=total,
            completed=counts[TS.COMPLETED.value],
            failed=counts[TS.FAILED.value],
            running=counts[TS.RUNNING.value],
            pending=counts[TS.PENDING.value],
            skipped=counts[TS.SKIPPED.value],
            cancelled=counts[TS.CANCELLED.value],
            waiting_for_input=counts[TS.WAITING_FOR_INPUT.value],
            percent=round(100.0 * counts[TS.COMPLETED.value] / total, 2) if total else 0.0,
        ),
        running_tasks=running,
        waiting_tasks=waiting,
        elapsed_seconds=round(elapsed, 6) if elapsed is not None else None,
        started_at=execution.started_at,
        completed_at=execution.completed_at,
        error_message=execution.error_message,
    )


def _day(column: Any, dialect: str) -> Any:
    """The UTC calendar day of a (naive UTC) timestamp, as text `YYYY-MM-DD` on both backends."""
    if dialect == "postgresql":
        return func.to_char(column, "YYYY-MM-DD")
    return func.date(column)


def _seconds_between(start: Any, end: Any, dialect: str) -> Any:
    """Seconds from `start` to `end` to the microsecond. SQLite's date functions keep only
    milliseconds, so there the whole seconds come from `julianday` and the fraction from the
    stored text (`YYYY-MM-DD HH:MM:SS.ffffff`)."""
    if dialect == "postgresql":
        return func.extract("epoch", end - start)

    def whole(column: Any) -> Any:
        return func.julianday(func.substr(column, 1, 19))

    def fraction(column: Any) -> Any:
        return cast(func.substr(column, 20), Float)

    return func.round((whole(end) - whole(start)) * 86400.0) + fraction(end) - fraction(start)


async def execution_stats(
    session: AsyncSession, *, workflow_id: int | None, days: int
) -> ExecutionStats:
    """Counts over the last `days` days, aggregated by the database (GROUP BY), not in Python."""
    dialect = session.get_bind().dialect.name
    today = datetime.now(UTC).date()
    first_day = today - timedelta(days=days - 1)
    window = [Execution.created_at >= datetime.combine(first_day, datetime.min.time(), UTC)]
    if workflow_id is not None:
        window.append(Execution.workflow_id == workflow_id)
    if (owned := in_owned_workflows(Execution.workflow_id)) is not None:
        window.append(owned)
    ok = func.sum(case((Execution.status == ES.COMPLETED.value, 1), else_=0))
    bad = func.sum(case((Execution.status == ES.FAILED.value, 1), else_=0))

    by_status = {
        status: (count, tokens or 0)
        for status, count, tokens in await session.execute(
            select(Execution.status, func.count(), func.sum(Execution.tokens_used))
            .where(*window)
            .group_by(Execution.status)
        )
    }
    day = _day(Execution.created_at, dialect).label("day")
    by_day = {
        str(d): (c, s or 0, f or 0)
        for d, c, s, f in await session.execute(
            select(day, func.count(), ok, bad).where(*window).group_by(day)
        )
    }
    top = (
        await session.execute(
            select(Execution.workflow_id, func.count().label("n"), ok, bad)
            .where(*window)
            .group_by(Execution.workflow_id)
            .order_by(desc("n"), Execution.workflow_id)
            .limit(10)
        )
    ).all()
    message = func.coalesce(Execution.error_message, "Unknown error").label("message")
    errors = (
        await session.execute(
            select(message, func.count().label("n"))
            .where(*window, Execution.status == ES.FAILED.value)
            .group_by(message)
            .order_by(desc("n"), message)
        )
    ).all()
    average = await session.scalar(
        select(
            func.avg(_seconds_between(Execution.started_at, Execution.completed_at, dialect))
        ).where(
            *window,
            Execution.status.in_(sorted(FINISHED)),
            Execution.started_at.is_not(None),
            Execution.completed_at.is_not(None),
        )
    )
    tool_calls, tool_errors = (
        await session.execute(
            select(func.count(), func.sum(case((ToolCall.status == "failed", 1), else_=0)))
            .select_from(ToolCall)
            .join(Execution, Execution.id == ToolCall.execution_id)
            .where(*window)
        )
    ).one()
    total = sum(count for count, _ in by_status.values())
    successful = by_status.get(ES.COMPLETED.value, (0, 0))[0]
    calendar = [first_day + timedelta(days=i) for i in range(days)]
    return ExecutionStats(
        total_executions=total,
        successful_executions=successful,
        failed_executions=by_status.get(ES.FAILED.value, (0, 0))[0],
        running_executions=by_status.get(ES.RUNNING.value, (0, 0))[0],
        success_rate=round(100.0 * successful / total, 2) if total else 0.0,
        average_execution_time=round(float(average), 3) if average is not None else 0.0,
        total_tokens_used=int(sum(tokens for _, tokens in by_status.values())),
        total_tool_calls=int(tool_calls or 0),
        tool_errors=int(tool_errors or 0),
        executions_by_day=[
            DayCount(date=d, count=c, successful=s, failed=f)
            for d in calendar
            for c, s, f in [by_day.get(d.isoformat(), (0, 0, 0))]
        ],
        top_workflows=[
            WorkflowCount(workflow_id=w, count=c, successful=s or 0, failed=f or 0)
            for w, c, s, f in top
        ],
        error_breakdown=[ErrorCount(error=e, count=n) for e, n in errors],
    )


async def count_unfinished(session: AsyncSession) -> int:
    return int(
        await session.scalar(
            select(func.count())
            .select_from(Execution)
            .where(Execution.status.in_(sorted(UNFINISHED)))
        )
        or 0
    )
