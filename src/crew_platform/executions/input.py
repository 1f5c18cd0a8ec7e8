"""A person's answer to the draft an execution waits on (`human_input` tasks): find the draft
it answers, then let the engine apply it (`engine/review.py`)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crew_platform.engine import ExecutionStatus, Executor, Intent, Kind, answer_draft, refusal
from crew_platform.engine import TaskRunStatus as TS
from crew_platform.errors import ValidationFailed
from crew_platform.events.bus import EventBus
from crew_platform.executions.repository import get_execution
from crew_platform.executions.schemas import ExecutionRead, InputRequest
from crew_platform.models import TaskRun


async def give_input(
    session: AsyncSession,
    bus: EventBus,
    dispatcher: Executor,
    *,
    execution_id: int,
    data: InputRequest,
) -> ExecutionRead:
    execution = await get_execution(session, execution_id)
    intent = Intent.APPROVE if data.feedback is None else Intent.REQUEST_CHANGES
    if execution.status != ExecutionStatus.WAITING_FOR_INPUT:
        raise refusal(Kind.EXECUTION, execution_id, execution.status, intent)
    drafts = list(
        await session.scalars(
            select(TaskRun)
            .where(
                TaskRun.execution_id == execution_id,
                TaskRun.status == TS.WAITING_FOR_INPUT,
            )
            .order_by(TaskRun.id)
        )
    )
    waiting = [d.task_id for d in drafts]
    if data.task_id is not None and data.task_id not in waiting:
        raise ValidationFailed.field(
            "task_id",
            f"task {data.task_id} has no draft waiting for input in execution {execution_id}",
            waiting_task_ids=waiting,
        )
    if data.task_id is None and len(drafts) > 1:
        raise ValidationFailed.field(
            "task_id",
            f"tasks {waiting} wait for input: name the one answered",
            waiting_task_ids=waiting,
        )
    draft = next((d for d in drafts if data.task_id in (None, d.task_id)), None)
    await answer_draft(session, bus, dispatcher, execution, draft, feedback=data.feedback)
    return ExecutionRead.model_validate(execution)
