"""Workflow rules: unique names, derived counts, deletion of the whole history at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crew_platform.auth.ownership import owned, visible
from crew_platform.auth.principal import current_creator
from crew_platform.common.persistence import commit_unique, name_taken
from crew_platform.engine import HIERARCHICAL, manager_agent_id
from crew_platform.errors import Conflict, NotFound, ValidationFailed
from crew_platform.models import Agent, Execution, ExecutionLog, Task, TaskRun, Workflow
from crew_platform.workflows.schemas import WorkflowCreate, WorkflowRead, WorkflowUpdate

_task_count = select(func.count(Task.id)).where(Task.workflow_id == Workflow.id).scalar_subquery()
_execution_count = (
    select(func.count(Execution.id)).where(Execution.workflow_id == Workflow.id).scalar_subquery()
)
_last_executed = (
    select(func.max(Execution.created_at))
    .where(Execution.workflow_id == Workflow.id)
    .scalar_subquery()
)


def _with_counts() -> Select[Any]:
    return select(
        Workflow,
        _task_count.label("task_count"),
        _execution_count.label("execution_count"),
        _last_executed.label("last_executed_at"),
    )


def _read(row: Any) -> WorkflowRead:
    workflow, task_count, execution_count, last_executed_at = row
    data = {c.key: getattr(workflow, c.key) for c in Workflow.__table__.columns}
    return WorkflowRead.model_validate(
        data
        | {
            "task_count": task_count or 0,
            "execution_count": execution_count or 0,
            # The labelled max() keeps UTCDateTime, so this is already aware UTC.
            "last_executed_at": last_executed_at,
        }
    )


async def list_workflows(
    session: AsyncSession, *, skip: int, limit: int, active_only: bool
) -> tuple[list[WorkflowRead], int]:
    query = owned(_with_counts().order_by(Workflow.id), Workflow.created_by)
    count_query = owned(select(Workflow.id), Workflow.created_by)
    if active_only:
        query = query.where(Workflow.is_active.is_(True))
        count_query = count_query.where(Workflow.is_active.is_(True))
    total = await session.scalar(select(func.count()).select_from(count_query.subquery()))
    rows = (await session.execute(query.offset(skip).limit(limit))).all()
    return [_read(r) for r in rows], int(total or 0)


async def get_workflow(session: AsyncSession, workflow_id: int) -> Workflow:
    workflow = await session.get(Workflow, workflow_id)
    if workflow is None or not visible(workflow.created_by):
        raise NotFound.resource("Workflow", workflow_id)
    return workflow


async def read_workflow(session: AsyncSession, workflow_id: int) -> WorkflowRead:
    query = owned(_with_counts().where(Workflow.id == workflow_id), Workflow.created_by)
    row = (await session.execute(query)).first()
    if row is None:
        raise NotFound.resource("Workflow", workflow_id)
    return _read(row)


def _duplicate(name: str) -> Conflict:
    return Conflict(f"A workflow named {name!r} already exists", {"field": "name", "value": name})


async def check_manager(
    session: AsyncSession, *, workflow_type: str, config: dict[str, Any] | None
) -> None:
    """A hierarchical workflow's `config.manager_agent_id` must name an active agent the caller
    may see (422): with AUTH_OWNERSHIP=on another owner's agent does not exist, so its prompts
    cannot be borrowed as a manager."""
    agent_id = manager_agent_id(config)
    if workflow_type != HIERARCHICAL or agent_id is None:
        return
    query = owned(select(Agent.is_active), Agent.created_by).where(Agent.id == agent_id)
    active = await session.scalar(query)
    if active is None or not active:
        state = "does not exist" if active is None else "is inactive"
        raise ValidationFailed.field(
            "config.manager_agent_id", f"agent {agent_id} {state}", agent_id=agent_id
        )


async def create_workflow(session: AsyncSession, *, data: WorkflowCreate) -> WorkflowRead:
    if await name_taken(session, Workflow, data.name):
        raise _duplicate(data.name)
    await check_manager(session, workflow_type=data.workflow_type, config=data.config)
    workflow = Workflow(**data.model_dump(), status="active", created_by=current_creator())
    session.add(workflow)
    dup = _duplicate(data.name)
    await commit_unique(session, unique=Workflow.name, conflict=dup)
    return await read_workflow(session, workflow.id)


async def update_workflow(
    session: AsyncSession, *, workflow_id: int, data: WorkflowUpdate
) -> WorkflowRead:
    workflow = await get_workflow(session, workflow_id)
    changes = data.model_dump(exclude_unset=True)
    renamed = "name" in changes and changes["name"] != workflow.name
    if renamed and await name_taken(session, Workflow, changes["name"], exclude_id=workflow_id):
        raise _duplicate(changes["name"])
    if "config" in changes or "workflow_type" in changes:
        await check_manager(
            session,
            workflow_type=changes.get("workflow_type", workflow.workflow_type),
            config=changes.get("config", workflow.config),
        )
    for field, value in changes.items():
        setattr(workflow, field, value)
    dup = _duplicate(workflow.name)
    await commit_unique(session, unique=Workflow.name, conflict=dup)
    return await read_workflow(session, workflow_id)


async def unfinished_execution_ids(session: AsyncSession, workflow_id: int) -> Sequence[int]:
    from crew_platform.engine import UNFINISHED

    query = select(Execution.id).where(
        Execution.workflow_id == workflow_id, Execution.status.in_(UNFINISHED)
    )
    return (await session.scalars(query)).all()


async def delete_workflow(session: AsyncSession, *, workflow_id: int) -> None:
    """Delete the workflow, its tasks and its whole execution history in one transaction."""
    await get_workflow(session, workflow_id)
    executions = select(Execution.id).where(Execution.workflow_id == workflow_id)
    await session.execute(delete(ExecutionLog).where(ExecutionLog.execution_id.in_(executions)))
    await session.execute(delete(TaskRun).where(TaskRun.execution_id.in_(executions)))
    await session.execute(delete(Execution).where(Execution.workflow_id == workflow_id))
    await session.execute(delete(Task).where(Task.workflow_id == workflow_id))
    await session.execute(delete(Workflow).where(Workflow.id == workflow_id))
    await session.commit()
