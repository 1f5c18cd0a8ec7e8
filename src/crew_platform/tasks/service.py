"""Task rules: references must exist, dependencies stay inside the workflow and acyclic."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crew_platform.auth.ownership import of_owned_workflows, owned, workflow_visible
from crew_platform.auth.principal import current_creator
from crew_platform.engine import execution_key, find_cycle
from crew_platform.errors import Conflict, DependencyCycle, NotFound, ValidationFailed
from crew_platform.models import Agent, Task, TaskRun, Workflow
from crew_platform.tasks.context import check_context, context_readers
from crew_platform.tasks.schemas import TaskCreate, TaskRead, TaskUpdate

latest_status = func.coalesce(
    select(TaskRun.status)
    .where(TaskRun.task_id == Task.id)
    .order_by(TaskRun.id.desc())
    .limit(1)
    .scalar_subquery(),
    "pending",
)


def _with_status() -> Select[Task, str]:
    return select(Task, latest_status.label("status"))


def _read(row: Any) -> TaskRead:
    task, status = row
    data = {attr: getattr(task, attr) for attr in Task.__mapper__.attrs.keys()}  # noqa: SIM118
    return TaskRead.model_validate(data | {"status": status})


def ordered(query: Select[Task, str]) -> Select[Task, str]:
    return query.order_by(Task.order, Task.priority.desc(), Task.id)


async def list_tasks(
    session: AsyncSession,
    *,
    skip: int,
    limit: int,
    workflow_id: int | None,
    agent_id: int | None,
    status: str | None,
) -> tuple[list[TaskRead], int]:
    query = of_owned_workflows(_with_status(), Task.workflow_id)
    if workflow_id is not None:
        query = query.where(Task.workflow_id == workflow_id)
    if agent_id is not None:
        query = query.where(Task.agent_id == agent_id)
    if status is not None:
        query = query.where(latest_status == status)
    total = await session.scalar(
        select(func.count()).select_from(query.with_only_columns(Task.id).subquery())
    )
    rows = (await session.execute(query.order_by(Task.id).offset(skip).limit(limit))).all()
    return [_read(r) for r in rows], int(total or 0)


async def get_task(session: AsyncSession, task_id: int) -> Task:
    task = await session.get(Task, task_id)
    if task is None or not await workflow_visible(session, task.workflow_id):
        raise NotFound.resource("Task", task_id)
    return task


async def read_task(session: AsyncSession, task_id: int) -> TaskRead:
    query = of_owned_workflows(_with_status().where(Task.id == task_id), Task.workflow_id)
    row = (await session.execute(query)).first()
    if row is None:
        raise NotFound.resource("Task", task_id)
    return _read(row)


async def workflow_tasks(session: AsyncSession, workflow_id: int) -> list[TaskRead]:
    exists = owned(select(Workflow.id), Workflow.created_by).where(Workflow.id == workflow_id)
    if await session.scalar(exists) is None:
        raise NotFound.resource("Workflow", workflow_id)
    rows = await session.execute(ordered(_with_status().where(Task.workflow_id == workflow_id)))
    return [_read(r) for r in rows.all()]


async def _lock_workflows(session: AsyncSession, *workflow_ids: int) -> set[int]:
    """Lock these workflows' rows until the transaction ends (PostgreSQL; SQLite has a single
    writer anyway), in id order. Every check of a workflow's dependency graph and the write
    after it happen under this lock, so two requests never interleave: no cycle closed from
    two sides, no dependency added on a task being deleted. Returns the ids that exist (for
    the caller: another owner's workflow does not)."""
    query = (
        owned(select(Workflow.id), Workflow.created_by)
        .where(Workflow.id.in_(sorted(set(workflow_ids))))
        .order_by(Workflow.id)
        .with_for_update()
    )
    return set(await session.scalars(query))


async def _check_references(
    session: AsyncSession, *, workflow_id: int, agent_id: int | None, also_lock: int | None = None
) -> None:
    locked = await _lock_workflows(session, workflow_id, *([also_lock] if also_lock else []))
    if workflow_id not in locked:
        raise ValidationFailed.field("workflow_id", f"workflow {workflow_id} does not exist")
    # FOR SHARE: an agent being deleted right now is waited for, then seen gone (422).
    shared = (
        owned(select(Agent.id), Agent.created_by)
        .where(Agent.id == agent_id)
        .with_for_update(read=True)
    )
    if agent_id is not None and await session.scalar(shared) is None:
        raise ValidationFailed.field("agent_id", f"agent {agent_id} does not exist")


async def _check_dependencies(
    session: AsyncSession, *, task_id: int | None, workflow_id: int, dependencies: Sequence[int]
) -> list[int]:
    deps = list(dict.fromkeys(dependencies))
    if task_id is not None and task_id in deps:
        raise ValidationFailed.field(
            "dependencies", "a task cannot depend on itself", task_id=task_id
        )
    siblings = {
        t.id: list(t.dependencies or [])
        for t in await session.scalars(select(Task).where(Task.workflow_id == workflow_id))
    }
    foreign = [d for d in deps if d not in siblings or d == task_id]
    if foreign:
        raise ValidationFailed.field(
            "dependencies",
            f"tasks {foreign} are not tasks of workflow {workflow_id}",
            invalid_task_ids=foreign,
        )
    if task_id is not None:
        siblings[task_id] = deps
        cycle = find_cycle(siblings)
        if cycle:
            raise DependencyCycle(
                "dependencies would form a cycle: " + " -> ".join(map(str, cycle)),
                {"fields": {"dependencies": "dependencies form a cycle"}, "cycle": cycle},
            )
    return deps


async def create_task(session: AsyncSession, *, data: TaskCreate) -> TaskRead:
    await _check_references(session, workflow_id=data.workflow_id, agent_id=data.agent_id)
    values = data.model_dump()
    values["dependencies"] = await _check_dependencies(
        session, task_id=None, workflow_id=data.workflow_id, dependencies=data.dependencies
    )
    values["context"] = await check_context(
        session,
        task_id=None,
        workflow_id=data.workflow_id,
        order=data.order,
        priority=data.priority,
        dependencies=values["dependencies"],
        context=data.context,
    )
    task = Task(**values, created_by=current_creator())
    session.add(task)
    await session.commit()
    return await read_task(session, task.id)


async def _dependents(session: AsyncSession, task: Task) -> list[int]:
    others = await session.scalars(
        select(Task).where(Task.workflow_id == task.workflow_id, Task.id != task.id)
    )
    return sorted(t.id for t in others if task.id in (t.dependencies or []))


async def update_task(session: AsyncSession, *, task_id: int, data: TaskUpdate) -> TaskRead:
    task = await get_task(session, task_id)
    changes = data.model_dump(exclude_unset=True)
    workflow_id = changes.get("workflow_id", task.workflow_id)
    agent_id = changes.get("agent_id", task.agent_id)
    await _check_references(
        session, workflow_id=workflow_id, agent_id=agent_id, also_lock=task.workflow_id
    )
    await session.refresh(task)  # as it is now, under the lock (not as first read)
    if workflow_id != task.workflow_id:
        dependents = await _dependents(session, task)
        if dependents:
            raise ValidationFailed.field(
                "workflow_id",
                f"tasks {dependents} of workflow {task.workflow_id} depend on this task",
                dependent_task_ids=dependents,
            )
        readers = await context_readers(session, task)
        if readers:
            raise ValidationFailed.field(
                "workflow_id",
                f"tasks {readers} of workflow {task.workflow_id} take this task's output as "
                "context",
                context_task_ids=readers,
            )
    dependencies = changes.get("dependencies", task.dependencies or [])
    changes["dependencies"] = await _check_dependencies(
        session, task_id=task_id, workflow_id=workflow_id, dependencies=dependencies
    )
    changes["context"] = await check_context(
        session,
        task_id=task_id,
        workflow_id=workflow_id,
        order=changes.get("order", task.order),
        priority=changes.get("priority", task.priority),
        dependencies=changes["dependencies"],
        context=changes.get("context", task.context),
    )
    for field, value in changes.items():
        setattr(task, field, value)
    await session.commit()
    return await read_task(session, task_id)


async def delete_task(session: AsyncSession, *, task_id: int) -> None:
    task = await get_task(session, task_id)
    await _lock_workflows(session, task.workflow_id)
    dependents = await _dependents(session, task)
    if dependents:
        raise Conflict(
            f"Tasks {dependents} depend on task {task_id}; remove the dependency first",
            {"dependent_task_ids": dependents},
        )
    readers = await context_readers(session, task)
    if readers:
        raise Conflict(
            f"Tasks {readers} take task {task_id}'s output as context; remove it from their "
            "context first",
            {"context_task_ids": readers},
        )
    await session.delete(task)
    await session.commit()


def sort_for_execution(tasks: Sequence[Task]) -> list[Task]:
    return sorted(tasks, key=lambda t: execution_key(t.order, t.priority, t.id))
