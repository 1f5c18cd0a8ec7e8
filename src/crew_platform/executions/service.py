"""Execution rules: what may run, control requests (pause/resume/cancel/retry), read models."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crew_platform.common.persistence import paginate
from crew_platform.db import utcnow
from crew_platform.engine.dispatch import Dispatcher
from crew_platform.engine.journal import Journal
from crew_platform.engine.plan import dag_plan, find_cycle, linear_plan
from crew_platform.engine.states import FINISHED, UNFINISHED
from crew_platform.engine.states import ExecutionStatus as ES
from crew_platform.engine.states import TaskRunStatus as TS
from crew_platform.engine.transitions import cancel_open_runs, move_execution
from crew_platform.errors import (
    Conflict,
    DependencyCycle,
    InvalidStateTransition,
    MissingInput,
    NotFound,
    ValidationFailed,
)
from crew_platform.events.bus import EventBus
from crew_platform.events.types import Event, EventType
from crew_platform.executions.schemas import (
    ControlResult,
    DayCount,
    ErrorCount,
    ExecuteRequest,
    ExecutionRead,
    ExecutionStats,
    ExecutionStatusRead,
    LogEntry,
    Progress,
    RunningTask,
    TaskRetryResult,
    WorkflowCount,
)
from crew_platform.llm.prompts import placeholders
from crew_platform.models import Agent, Execution, ExecutionLog, Task, TaskRun, Workflow
from crew_platform.tasks.service import get_task, sort_for_execution
from crew_platform.workflows.service import get_workflow

# -- starting runs ---------------------------------------------------------------------------


async def _check_runnable(
    session: AsyncSession, tasks: Sequence[Task], inputs: dict[str, Any]
) -> None:
    missing: dict[str, list[int]] = defaultdict(list)
    for task in tasks:
        available = set(inputs) | set(task.input_data or {})
        for key in sorted(placeholders(task.description, task.expected_output) - available):
            missing[key].append(task.id)
    if missing:
        keys = sorted(missing)
        raise MissingInput(
            f"input_data is missing values for: {', '.join(keys)}",
            {
                "missing": keys,
                "tasks": {k: v for k, v in missing.items()},
                "fields": {f"input_data.{k}": "required by a task placeholder" for k in keys},
            },
        )
    agent_ids = {t.agent_id for t in tasks if t.agent_id is not None}
    active = set(
        await session.scalars(
            select(Agent.id).where(Agent.id.in_(agent_ids), Agent.is_active.is_(True))
        )
    )
    unrunnable = sorted(t.id for t in tasks if t.agent_id is None or t.agent_id not in active)
    if unrunnable:
        raise ValidationFailed(
            f"Tasks {unrunnable} have no active agent assigned",
            {"task_ids": unrunnable, "fields": {"agent_id": "an active agent is required"}},
        )


async def _create_execution(
    session: AsyncSession,
    dispatcher: Dispatcher,
    *,
    workflow: Workflow,
    mode: str,
    plan: list[dict[str, Any]],
    request: ExecuteRequest,
) -> ExecutionRead:
    now = utcnow()
    execution = Execution(
        workflow_id=workflow.id,
        status=ES.PENDING.value,
        mode=mode,
        input_data=request.input_data,
        config=request.config,
        plan=plan,
        created_at=now,
        started_at=now,
    )
    session.add(execution)
    await session.commit()
    read = ExecutionRead.model_validate(execution)
    # Always hand it over: the runner checks the workflow's status under a lock and leaves the
    # execution pending if the workflow is paused. Deciding here, on a status read before the
    # commit, could miss a resume that committed in between and strand the execution.
    dispatcher.submit(execution.id)
    return read


async def start_workflow(
    session: AsyncSession, dispatcher: Dispatcher, *, workflow_id: int, request: ExecuteRequest
) -> ExecutionRead:
    workflow = await get_workflow(session, workflow_id)
    if not workflow.is_active:
        raise Conflict(
            f"Workflow {workflow_id} is inactive; activate it before executing",
            {"workflow_id": workflow_id, "reason": "inactive"},
        )
    tasks = sort_for_execution(
        (
            await session.scalars(
                select(Task).where(Task.workflow_id == workflow_id, Task.is_active.is_(True))
            )
        ).all()
    )
    if not tasks:
        raise ValidationFailed(
            f"Workflow {workflow_id} has no active tasks to run",
            {"workflow_id": workflow_id, "reason": "no_tasks"},
        )
    await _check_runnable(session, tasks, request.input_data)
    order = [t.id for t in tasks]
    if workflow.workflow_type == "parallel":
        deps = {t.id: list(t.dependencies or []) for t in tasks}
        if cycle := find_cycle(deps):
            raise DependencyCycle("task dependencies form a cycle", {"cycle": cycle})
        planned = dag_plan(order, deps)
    else:
        planned = linear_plan(order)
    return await _create_execution(
        session,
        dispatcher,
        workflow=workflow,
        mode="workflow",
        plan=[p.as_json() for p in planned],
        request=request,
    )


async def start_task(
    session: AsyncSession, dispatcher: Dispatcher, *, task_id: int, request: ExecuteRequest
) -> ExecutionRead:
    task = await get_task(session, task_id)
    workflow = await get_workflow(session, task.workflow_id)
    if not workflow.is_active:
        raise Conflict(
            f"Task {task_id} belongs to inactive workflow {workflow.id}; activate it first",
            {"task_id": task_id, "workflow_id": workflow.id, "reason": "inactive_workflow"},
        )
    if not task.is_active:
        raise Conflict(
            f"Task {task_id} is inactive; activate it before executing",
            {"task_id": task_id, "reason": "inactive"},
        )
    await _check_runnable(session, [task], request.input_data)
    return await _create_execution(
        session,
        dispatcher,
        workflow=workflow,
        mode="task",
        plan=[{"task_id": task.id, "depends_on": []}],
        request=request,
    )


# -- control ---------------------------------------------------------------------------------


def _event(execution: Execution, kind: EventType, status: str, **data: Any) -> Event:
    return Event(
        type=kind,
        workflow_id=execution.workflow_id,
        execution_id=execution.id,
        status=status,
        data=data,
    )


async def _executions_of(
    session: AsyncSession, workflow_id: int, statuses: Sequence[str]
) -> list[Execution]:
    query = (
        select(Execution)
        .where(Execution.workflow_id == workflow_id, Execution.status.in_(statuses))
        .order_by(Execution.id)
    )
    return list((await session.scalars(query)).all())


async def _reload(session: AsyncSession, ids: Sequence[int]) -> list[ExecutionRead]:
    if not ids:
        return []
    rows = await session.scalars(
        select(Execution)
        .where(Execution.id.in_(ids))
        .order_by(Execution.id)
        .execution_options(populate_existing=True)
    )
    return [ExecutionRead.model_validate(e) for e in rows]


ACTIVE, PAUSED = "active", "paused"


async def _move_workflow(
    session: AsyncSession, workflow_id: int, current: str, target: str
) -> bool:
    """Compare-and-set of the workflow's run status: of two racing requests one wins, the other
    finds the status already changed (and answers 409)."""
    result = await session.execute(
        update(Workflow)
        .where(Workflow.id == workflow_id, Workflow.status == current)
        .values(status=target)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def pause_workflow(
    session: AsyncSession, bus: EventBus, dispatcher: Dispatcher, *, workflow_id: int
) -> ControlResult:
    await get_workflow(session, workflow_id)
    if not await _move_workflow(session, workflow_id, ACTIVE, PAUSED):
        raise InvalidStateTransition(
            f"Workflow {workflow_id} is already paused",
            {"workflow_id": workflow_id, "status": PAUSED},
        )
    journal = Journal(session, bus)
    paused: list[int] = []
    for execution in await _executions_of(session, workflow_id, [ES.RUNNING]):
        if await move_execution(session, execution.id, ES.PAUSED):
            paused.append(execution.id)
            await journal.record(
                _event(execution, EventType.WORKFLOW_PAUSED, ES.PAUSED),
                f"Execution {execution.id} paused; it stops at the next task boundary",
            )
    waiting = [e.id for e in await _executions_of(session, workflow_id, [ES.PENDING])]
    await journal.commit()
    for execution_id in paused:
        dispatcher.pause(execution_id)
    return ControlResult(
        workflow_id=workflow_id,
        workflow_status=PAUSED,
        affected_executions=await _reload(session, paused + waiting),
    )


async def resume_workflow(
    session: AsyncSession, bus: EventBus, dispatcher: Dispatcher, *, workflow_id: int
) -> ControlResult:
    await get_workflow(session, workflow_id)
    if not await _move_workflow(session, workflow_id, PAUSED, ACTIVE):
        raise InvalidStateTransition(
            f"Workflow {workflow_id} is not paused", {"workflow_id": workflow_id, "status": ACTIVE}
        )
    journal = Journal(session, bus)
    resumed: list[int] = []
    for execution in await _executions_of(session, workflow_id, [ES.PAUSED]):
        if await move_execution(session, execution.id, ES.PENDING):
            resumed.append(execution.id)
            await journal.record(
                _event(execution, EventType.WORKFLOW_RESUMED, ES.PENDING),
                f"Execution {execution.id} resumed",
            )
    waiting = [e.id for e in await _executions_of(session, workflow_id, [ES.PENDING])]
    await journal.commit()
    affected = sorted(set(resumed) | set(waiting))
    for execution_id in affected:
        dispatcher.submit(execution_id)
    return ControlResult(
        workflow_id=workflow_id,
        workflow_status=ACTIVE,
        affected_executions=await _reload(session, affected),
    )


async def _cancel_in_store(journal: Journal, execution: Execution) -> bool:
    session = journal.session
    if not await move_execution(session, execution.id, ES.CANCELLED, completed_at=utcnow()):
        return False
    await cancel_open_runs(
        journal,
        execution_id=execution.id,
        workflow_id=execution.workflow_id,
        error="Cancelled by request",
        message="Task {task_id} run {run_id} cancelled",
    )
    await journal.record(
        _event(execution, EventType.WORKFLOW_CANCELLED, ES.CANCELLED),
        f"Execution {execution.id} cancelled",
    )
    return True


async def _cancel_many(
    session: AsyncSession, bus: EventBus, dispatcher: Dispatcher, executions: Sequence[Execution]
) -> list[int]:
    for execution in executions:
        dispatcher.pause(execution.id)  # stop at the next boundary even before the abort lands
    journal = Journal(session, bus)
    cancelled = [e.id for e in executions if await _cancel_in_store(journal, e)]
    await journal.commit()
    for execution_id in cancelled:
        await dispatcher.cancel(execution_id)
    return cancelled


async def cancel_workflow(
    session: AsyncSession, bus: EventBus, dispatcher: Dispatcher, *, workflow_id: int
) -> ControlResult:
    workflow = await get_workflow(session, workflow_id)
    unfinished = await _executions_of(session, workflow_id, sorted(UNFINISHED))
    if not unfinished:
        raise InvalidStateTransition(
            f"Workflow {workflow_id} has no unfinished execution to cancel",
            {"workflow_id": workflow_id},
        )
    cancelled = await _cancel_many(session, bus, dispatcher, unfinished)
    return ControlResult(
        workflow_id=workflow_id,
        workflow_status=workflow.status,
        affected_executions=await _reload(session, cancelled),
    )


async def cancel_execution(
    session: AsyncSession, bus: EventBus, dispatcher: Dispatcher, *, execution_id: int
) -> ControlResult:
    execution = await get_execution(session, execution_id)
    if execution.status in FINISHED:
        raise InvalidStateTransition(
            f"Execution {execution_id} already finished ({execution.status})",
            {"execution_id": execution_id, "status": execution.status},
        )
    workflow = await get_workflow(session, execution.workflow_id)
    cancelled = await _cancel_many(session, bus, dispatcher, [execution])
    if not cancelled:
        raise InvalidStateTransition(
            f"Execution {execution_id} finished before it was cancelled",
            {"execution_id": execution_id},
        )
    return ControlResult(
        workflow_id=workflow.id,
        workflow_status=workflow.status,
        affected_executions=await _reload(session, cancelled),
    )


async def stop_all(session: AsyncSession, dispatcher: Dispatcher, *, workflow_id: int) -> None:
    """Abort a workflow's runners (before its deletion); the store is left to the caller."""
    ids = list(
        await session.scalars(
            select(Execution.id).where(
                Execution.workflow_id == workflow_id, Execution.status.in_(sorted(UNFINISHED))
            )
        )
    )
    await session.commit()
    for execution_id in ids:
        dispatcher.pause(execution_id)
        await dispatcher.cancel(execution_id)


async def retry_task(
    session: AsyncSession, bus: EventBus, dispatcher: Dispatcher, *, task_id: int
) -> TaskRetryResult:
    await get_task(session, task_id)
    run = await session.scalar(
        select(TaskRun).where(TaskRun.task_id == task_id).order_by(TaskRun.id.desc()).limit(1)
    )
    if run is None or run.status not in (TS.FAILED, TS.CANCELLED):
        raise InvalidStateTransition(
            f"Task {task_id} has no failed run to retry",
            {"task_id": task_id, "latest_status": run.status if run else None},
        )
    execution = await get_execution(session, run.execution_id)
    if execution.status not in (ES.FAILED, ES.CANCELLED):
        raise InvalidStateTransition(
            f"Execution {execution.id} of that run is still {execution.status}",
            {"task_id": task_id, "execution_id": execution.id, "status": execution.status},
        )
    journal = Journal(session, bus)
    if not await move_execution(
        session, execution.id, ES.PENDING, completed_at=None, error_message=None
    ):
        raise InvalidStateTransition(
            f"Execution {execution.id} changed state; try again", {"execution_id": execution.id}
        )
    await journal.record(
        _event(execution, EventType.WORKFLOW_RESUMED, ES.PENDING, reason="retry", task_id=task_id),
        f"Execution {execution.id} resumes from task {task_id} (retry)",
    )
    await journal.commit()
    dispatcher.submit(execution.id)  # stays pending if the workflow is paused (see above)
    (read,) = await _reload(session, [execution.id])
    return TaskRetryResult(
        task_id=task_id,
        execution_id=execution.id,
        retried_run_id=run.id,
        attempt=run.attempt + 1,
        execution=read,
    )


# -- reading ---------------------------------------------------------------------------------


async def get_execution(session: AsyncSession, execution_id: int) -> Execution:
    execution = await session.get(Execution, execution_id)
    if execution is None:
        raise NotFound.resource("Execution", execution_id)
    return execution


async def list_executions(
    session: AsyncSession, *, skip: int, limit: int, workflow_id: int | None, status: str | None
) -> tuple[list[ExecutionRead], int]:
    query: Select[Any] = select(Execution).order_by(Execution.id.desc())
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
    counts = Counter(latest[t].status if t in latest else TS.PENDING.value for t in planned)
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
            percent=round(100.0 * counts[TS.COMPLETED.value] / total, 2) if total else 0.0,
        ),
        running_tasks=running,
        elapsed_seconds=round(elapsed, 6) if elapsed is not None else None,
        started_at=execution.started_at,
        completed_at=execution.completed_at,
        error_message=execution.error_message,
    )


async def execution_stats(
    session: AsyncSession, *, workflow_id: int | None, days: int
) -> ExecutionStats:
    today = datetime.now(UTC).date()
    first_day = today - timedelta(days=days - 1)
    window_start = datetime.combine(first_day, datetime.min.time(), tzinfo=UTC)
    query = select(
        Execution.workflow_id,
        Execution.status,
        Execution.created_at,
        Execution.started_at,
        Execution.completed_at,
        Execution.tokens_used,
        Execution.error_message,
    ).where(Execution.created_at >= window_start)
    if workflow_id is not None:
        query = query.where(Execution.workflow_id == workflow_id)
    rows = (await session.execute(query)).all()

    by_day = {first_day + timedelta(days=i): [0, 0, 0] for i in range(days)}
    by_workflow: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    errors: Counter[str] = Counter()
    durations: list[float] = []
    status_counts: Counter[str] = Counter()
    tokens = 0
    for row in rows:
        ok, bad = row.status == ES.COMPLETED, row.status == ES.FAILED
        status_counts[row.status] += 1
        tokens += row.tokens_used or 0
        day = by_day.get(row.created_at.date())
        if day is not None:
            day[0] += 1
            day[1] += ok
            day[2] += bad
        wf = by_workflow[row.workflow_id]
        wf[0] += 1
        wf[1] += ok
        wf[2] += bad
        if bad:
            errors[row.error_message or "Unknown error"] += 1
        if row.status in FINISHED and row.started_at and row.completed_at:
            durations.append((row.completed_at - row.started_at).total_seconds())
    total = len(rows)
    successful = status_counts[ES.COMPLETED.value]
    top = sorted(by_workflow.items(), key=lambda kv: (-kv[1][0], kv[0]))[:10]
    return ExecutionStats(
        total_executions=total,
        successful_executions=successful,
        failed_executions=status_counts[ES.FAILED.value],
        running_executions=status_counts[ES.RUNNING.value],
        success_rate=round(100.0 * successful / total, 2) if total else 0.0,
        average_execution_time=round(sum(durations) / len(durations), 3) if durations else 0.0,
        total_tokens_used=tokens,
        executions_by_day=[
            DayCount(date=d, count=c[0], successful=c[1], failed=c[2]) for d, c in by_day.items()
        ],
        top_workflows=[
            WorkflowCount(workflow_id=w, count=c[0], successful=c[1], failed=c[2]) for w, c in top
        ],
        error_breakdown=[
            ErrorCount(error=e, count=n)
            for e, n in sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
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
