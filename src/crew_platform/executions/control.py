"""Control requests of the API: find what they act on, let the engine apply its state rules,
answer with what changed."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crew_platform.engine import ExecutionStatus as ES
from crew_platform.engine import (
    Executor,
    Intent,
    Kind,
    WorkflowStatus,
    abort_runners,
    cancel_executions,
    pause_workflow,
    refusal,
    resume_workflow,
    retry_execution,
    unfinished_executions,
)
from crew_platform.engine import TaskRunStatus as TS
from crew_platform.errors import InvalidStateTransition
from crew_platform.events.bus import EventBus
from crew_platform.executions.repository import get_execution, reload
from crew_platform.executions.schemas import ControlResult, TaskRetryResult
from crew_platform.models import TaskRun
from crew_platform.tasks.service import get_task
from crew_platform.workflows.service import get_workflow


async def pause(
    session: AsyncSession, bus: EventBus, dispatcher: Executor, *, workflow_id: int
) -> ControlResult:
    workflow = await get_workflow(session, workflow_id)
    affected = await pause_workflow(session, bus, dispatcher, workflow)
    return await _result(session, workflow_id, WorkflowStatus.PAUSED, affected)


async def resume(
    session: AsyncSession, bus: EventBus, dispatcher: Executor, *, workflow_id: int
) -> ControlResult:
    workflow = await get_workflow(session, workflow_id)
    affected = await resume_workflow(session, bus, dispatcher, workflow)
    return await _result(session, workflow_id, WorkflowStatus.ACTIVE, affected)


async def _result(
    session: AsyncSession, workflow_id: int, status: str, affected: list[int]
) -> ControlResult:
    return ControlResult(
        workflow_id=workflow_id,
        workflow_status=status,
        affected_executions=await reload(session, affected),
    )


async def cancel_workflow(
    session: AsyncSession, bus: EventBus, dispatcher: Executor, *, workflow_id: int
) -> ControlResult:
    workflow = await get_workflow(session, workflow_id)
    unfinished = await unfinished_executions(session, workflow_id)
    if not unfinished:
        raise InvalidStateTransition(
            f"Workflow {workflow_id} has no unfinished execution to cancel",
            {"workflow_id": workflow_id},
        )
    cancelled = await cancel_executions(session, bus, dispatcher, workflow, unfinished)
    return await _result(session, workflow_id, workflow.status, cancelled)


async def cancel_execution(
    session: AsyncSession, bus: EventBus, dispatcher: Executor, *, execution_id: int
) -> ControlResult:
    execution = await get_execution(session, execution_id)
    workflow = await get_workflow(session, execution.workflow_id)
    cancelled = await cancel_executions(session, bus, dispatcher, workflow, [execution])
    if not cancelled:
        await session.refresh(execution, ["status"])
        raise refusal(Kind.EXECUTION, execution_id, execution.status, Intent.CANCEL)
    return await _result(session, workflow.id, workflow.status, cancelled)


async def stop_all(session: AsyncSession, dispatcher: Executor, *, workflow_id: int) -> None:
    """Abort a workflow's runners (before its deletion); the store is left to the caller."""
    await abort_runners(session, dispatcher, workflow_id)


async def retry_task(
    session: AsyncSession, bus: EventBus, dispatcher: Executor, *, task_id: int
) -> TaskRetryResult:
    await get_task(session, task_id)
    run = await session.scalar(
        select(TaskRun).where(TaskRun.task_id == task_id).order_by(TaskRun.id.desc()).limit(1)
    )
    if run is None or run.status not in (TS.FAILED, TS.CANCELLED):
        latest = f" (its latest run is {run.status})" if run else ""
        raise InvalidStateTransition(
            f"Task {task_id} has no failed run to retry{latest}",
            {"task_id": task_id, "latest_status": run.status if run else None},
        )
    execution = await get_execution(session, run.execution_id)
    if execution.status not in (ES.FAILED, ES.CANCELLED):
        raise refusal(Kind.EXECUTION, execution.id, execution.status, Intent.RETRY)
    await retry_execution(session, bus, dispatcher, execution, task_id=task_id)
    (read,) = await reload(session, [execution.id])
    return TaskRetryResult(
        task_id=task_id,
        execution_id=execution.id,
        retried_run_id=run.id,
        attempt=run.attempt + 1,
        execution=read,
    )
