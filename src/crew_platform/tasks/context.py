"""Context rules: a task's `context` names tasks of its own workflow whose outputs it can have.

In a linear workflow those run before it (a later one has no output yet); in a parallel one the
task waits for them as for its dependencies, so dependencies and context together must not form
a cycle. Both are checked when a task is written, and again when a run is planned (a workflow's
type or its tasks' order may have changed since).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crew_platform.common.limits import MAX_ID
from crew_platform.engine import execution_key, find_cycle
from crew_platform.errors import DependencyCycle, ValidationFailed
from crew_platform.models import Task, Workflow


async def check_context(
    session: AsyncSession,
    *,
    task_id: int | None,
    workflow_id: int,
    order: int,
    priority: int,
    dependencies: Sequence[int],
    context: Sequence[int] | None,
) -> list[int] | None:
    """The task's context as stored (ids once each, in the order given); a 422 naming the ids
    that cannot be its context, or the tasks whose context it would break."""
    siblings = list(await session.scalars(select(Task).where(Task.workflow_id == workflow_id)))
    others = {t.id: t for t in siblings if t.id != task_id}
    ids = None if context is None else list(dict.fromkeys(context))
    if ids is not None:
        if task_id is not None and task_id in ids:
            raise ValidationFailed.field(
                "context", "a task cannot take its own output as context", task_id=task_id
            )
        foreign = [c for c in ids if c not in others]
        if foreign:
            raise ValidationFailed.field(
                "context",
                f"tasks {foreign} are not tasks of workflow {workflow_id}",
                invalid_task_ids=foreign,
            )
    workflow_type = await session.scalar(
        select(Workflow.workflow_type).where(Workflow.id == workflow_id)
    )
    if workflow_type == "parallel":
        if task_id is not None:
            graph = {t.id: waits_for(t.dependencies, t.context) for t in others.values()}
            graph[task_id] = waits_for(dependencies, ids)
            if cycle := find_cycle(graph):
                raise DependencyCycle(
                    "dependencies and context would form a cycle: " + " -> ".join(map(str, cycle)),
                    {
                        "fields": {
                            "dependencies": "with the context, they would form a cycle",
                            "context": "a task waits for its context tasks: a cycle",
                        },
                        "cycle": cycle,
                    },
                )
        return ids
    own = execution_key(order, priority, task_id or MAX_ID + 1)
    keys = {t.id: execution_key(t.order, t.priority, t.id) for t in others.values()}
    later = [c for c in ids or () if keys[c] > own]
    if later:
        raise ValidationFailed.field(
            "context",
            f"tasks {later} run after this task in the linear order, so have no output yet",
            later_task_ids=later,
        )
    if task_id is not None:
        readers = sorted(t.id for t in others.values() if uses(t, task_id) and keys[t.id] < own)
        if readers:
            raise ValidationFailed.field(
                "order",
                f"tasks {readers} take this task's output as context and would run before it",
                context_task_ids=readers,
            )
    return ids


def waits_for(dependencies: Sequence[int] | None, context: Sequence[int] | None) -> list[int]:
    """What a task of a parallel workflow waits for: its dependencies and its context."""
    return list(dict.fromkeys([*(dependencies or ()), *(context or ())]))


def uses(task: Task, task_id: int) -> bool:
    return task_id in (task.context or ())


async def context_readers(session: AsyncSession, task: Task) -> list[int]:
    """The other tasks of the task's workflow that name it in their context."""
    others = await session.scalars(
        select(Task).where(Task.workflow_id == task.workflow_id, Task.id != task.id)
    )
    return sorted(t.id for t in others if uses(t, task.id))


def linear_context_problems(
    order: Sequence[int], context: Mapping[int, Sequence[int] | None]
) -> dict[int, list[int]]:
    """Task -> the ids of its context that do not run before it in `order` (a run's linear
    order; ids outside the run are left out of its context, not refused)."""
    position = {task_id: i for i, task_id in enumerate(order)}
    problems = {
        task_id: [c for c in context.get(task_id) or () if position.get(c, -1) > i]
        for i, task_id in enumerate(order)
    }
    return {task_id: later for task_id, later in problems.items() if later}
