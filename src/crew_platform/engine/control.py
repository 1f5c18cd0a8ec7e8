"""Control requests (pause, resume, cancel, retry), written through the state rules.

The API's services call these inside their session; each writes the statuses and the log in the
caller's transaction, commits, and only then tells this process's dispatcher (which stops or
starts its runner sooner). The store is the truth: a runner in another process sees the new
status at its next task boundary, and the bus wakes it sooner.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crew_platform.engine.journal import Journal
from crew_platform.engine.loading import partial_output
from crew_platform.engine.rules import RULES, Intent, Kind, move, refusal
from crew_platform.engine.states import UNFINISHED
from crew_platform.engine.states import ExecutionStatus as ES
from crew_platform.engine.states import TaskRunStatus as TS
from crew_platform.engine.tool_calls import cancel_running_calls
from crew_platform.events.bus import EventBus
from crew_platform.events.types import Event, EventType
from crew_platform.models import Execution, TaskRun, Workflow

if TYPE_CHECKING:
    from crew_platform.engine.executor import Executor


async def cancel_open_runs(
    journal: Journal,
    *,
    execution_id: int,
    workflow_id: int,
    error: str,
    message: str,
    reason: str | None = None,
    statuses: Sequence[str] = (TS.RUNNING, TS.PENDING),
) -> int:
    """Cancel the execution's task runs in `statuses`, journalling `task_cancelled` for each.

    `message` is a template with `{task_id}` and `{run_id}`. Returns how many were cancelled.
    """
    writer = journal.session
    runs = (
        await writer.execute(
            select(TaskRun.id, TaskRun.task_id, TaskRun.agent_id).where(
                TaskRun.execution_id == execution_id,
                TaskRun.status.in_(list(statuses)),
            )
        )
    ).all()
    cancelled = 0
    for run_id, task_id, agent_id in runs:
        if not await move(writer, Kind.TASK_RUN, run_id, Intent.CANCEL, error=error):
            continue
        cancelled += 1
        await journal.record(
            Event(
                type=EventType.TASK_CANCELLED,
                workflow_id=workflow_id,
                execution_id=execution_id,
                task_id=task_id,
                agent_id=agent_id,
                status=TS.CANCELLED,
                data={"reason": reason} if reason else {},
            ),
            message.format(task_id=task_id, run_id=run_id),
        )
    return cancelled


async def cancel_runs_by_request(journal: Journal, *, execution_id: int, workflow_id: int) -> int:
    """A user's cancel: the execution's open task runs (and tool calls) are cancelled, not
    left dangling; so is a draft that waited for input."""
    await cancel_running_calls(journal.session, execution_id)
    return await cancel_open_runs(
        journal,
        execution_id=execution_id,
        workflow_id=workflow_id,
        error="Cancelled by request",
        message="Task {task_id} run {run_id} cancelled",
        statuses=(TS.RUNNING, TS.PENDING, TS.WAITING_FOR_INPUT),
    )


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


async def _move_workflow(session: AsyncSession, workflow: Workflow, intent: Intent) -> None:
    if not await move(session, Kind.WORKFLOW, workflow.id, intent):
        await session.refresh(workflow, ["status"])
        raise refusal(Kind.WORKFLOW, workflow.id, workflow.status, intent)


async def _switch_workflow(
    session: AsyncSession,
    bus: EventBus,
    workflow: Workflow,
    intent: Intent,
    *,
    moves: ES,
    event: EventType,
    message: str,
) -> tuple[list[int], list[int]]:
    """Move the workflow by `intent`, then each of its executions that are `moves` by the same
    intent (journalling `event`); returns those moved and those left pending."""
    await _move_workflow(session, workflow, intent)
    journal = Journal(session, bus)
    moved: list[int] = []
    for execution in await _executions_of(session, workflow.id, [moves]):
        target = RULES[Kind.EXECUTION, intent].target
        if await journal.record_move(
            _event(execution, event, target), message.format(id=execution.id), intent
        ):
            moved.append(execution.id)
    waiting = [e.id for e in await _executions_of(session, workflow.id, [ES.PENDING])]
    await journal.commit()
    return moved, waiting


async def pause_workflow(
    session: AsyncSession, bus: EventBus, dispatcher: Executor, workflow: Workflow
) -> list[int]:
    """Pause the workflow: its running executions stop at their next task boundary, its
    pending ones wait. Returns the ids of both."""
    paused, waiting = await _switch_workflow(
        session,
        bus,
        workflow,
        Intent.PAUSE,
        moves=ES.RUNNING,
        event=EventType.WORKFLOW_PAUSED,
        message="Execution {id} paused; it stops at the next task boundary",
    )
    for execution_id in paused:
        dispatcher.pause(execution_id)
    return paused + waiting


async def resume_workflow(
    session: AsyncSession, bus: EventBus, dispatcher: Executor, workflow: Workflow
) -> list[int]:
    """Resume the workflow: its paused and pending executions are handed to the dispatcher."""
    resumed, waiting = await _switch_workflow(
        session,
        bus,
        workflow,
        Intent.RESUME,
        moves=ES.PAUSED,
        event=EventType.WORKFLOW_RESUMED,
        message="Execution {id} resumed",
    )
    affected = sorted(set(resumed) | set(waiting))
    for execution_id in affected:
        dispatcher.submit(execution_id)
    return affected


async def unfinished_executions(session: AsyncSession, workflow_id: int) -> list[Execution]:
    return await _executions_of(session, workflow_id, sorted(UNFINISHED))


async def cancel_executions(
    session: AsyncSession,
    bus: EventBus,
    dispatcher: Executor,
    workflow: Workflow,
    executions: Sequence[Execution],
) -> list[int]:
    """Cancel executions of `workflow`: each keeps the outputs its tasks finished
    (`output_data`), its open task runs are cancelled, and this process's runner is aborted.
    Returns the ids that were cancelled (one that finished meanwhile is not)."""
    for execution in executions:
        dispatcher.pause(execution.id)  # stop at the next boundary even before the abort lands
    journal = Journal(session, bus)
    cancelled: list[int] = []
    for execution in executions:
        output = await partial_output(session, execution, workflow)
        if not await move(session, Kind.EXECUTION, execution.id, Intent.CANCEL, output_data=output):
            continue
        await cancel_runs_by_request(
            journal, execution_id=execution.id, workflow_id=execution.workflow_id
        )
        await journal.record(
            _event(execution, EventType.WORKFLOW_CANCELLED, ES.CANCELLED),
            f"Execution {execution.id} cancelled",
        )
        cancelled.append(execution.id)
    await journal.commit()
    for execution_id in cancelled:
        await dispatcher.cancel(execution_id)
    return cancelled


async def retry_execution(
    session: AsyncSession,
    bus: EventBus,
    dispatcher: Executor,
    execution: Execution,
    *,
    task_id: int,
) -> None:
    """Re-open a failed or cancelled execution from its first unfinished task (409 from any
    other status, naming it)."""
    journal = Journal(session, bus)
    recorded = await journal.record_move(
        _event(execution, EventType.WORKFLOW_RESUMED, ES.PENDING, reason="retry", task_id=task_id),
        f"Execution {execution.id} resumes from task {task_id} (retry)",
        Intent.RETRY,
    )
    if recorded is None:
        await session.refresh(execution, ["status"])
        raise refusal(Kind.EXECUTION, execution.id, execution.status, Intent.RETRY)
    await journal.commit()
    dispatcher.submit(execution.id)  # it stays pending if its workflow is paused


async def abort_runners(session: AsyncSession, dispatcher: Executor, workflow_id: int) -> None:
    """Abort this process's runners of a workflow (before its deletion); the store is left to
    the caller."""
    ids = [e.id for e in await unfinished_executions(session, workflow_id)]
    await session.commit()
    for execution_id in ids:
        dispatcher.pause(execution_id)
        await dispatcher.cancel(execution_id)
