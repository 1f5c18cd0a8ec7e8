"""Starting runs: what may run, the execution row, then the hand-over to the dispatcher."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, Table, and_, bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from crew_platform.auth.ownership import visible
from crew_platform.auth.principal import current_creator
from crew_platform.db import utcnow
from crew_platform.engine import (
    HIERARCHICAL,
    Executor,
    crew_agents,
    dag_plan,
    find_cycle,
    linear_plan,
    manager_agent_id,
    role_key,
)
from crew_platform.engine import ExecutionStatus as ES
from crew_platform.errors import Conflict, DependencyCycle, MissingInput, NotFound, ValidationFailed
from crew_platform.executions.schemas import ExecuteRequest, ExecutionRead
from crew_platform.llm.prompts import placeholders
from crew_platform.models import Agent, Execution, Task, Workflow
from crew_platform.tasks.context import linear_context_problems, waits_for
from crew_platform.tasks.service import get_task, sort_for_execution
from crew_platform.toolbox.service import check_tools_named
from crew_platform.tools.base import Toolbox
from crew_platform.workflows.service import check_manager, get_workflow

EXECUTIONS: Table = Execution.__table__  # type: ignore[assignment]
_INSERT_EXECUTION = insert(EXECUTIONS).returning(*EXECUTIONS.c)
"""Built once; a Core INSERT ... RETURNING, not an ORM flush and refresh of the new row."""


@dataclass(frozen=True)
class Runnable:
    """A task to run with what the checks need of its agent, read in the same query."""

    task: Task
    agent_active: bool
    agent_name: str | None
    agent_tools: list[str]


_RUNNABLE = select(Task, Agent.is_active, Agent.name, Agent.tools).outerjoin(
    Agent, Agent.id == Task.agent_id
)
_RUNNABLE_TASK = _RUNNABLE.where(Task.id == bindparam("b_task"))
_WORKFLOW_AND_RUNNABLE = (
    select(Workflow, Task, Agent.is_active, Agent.name, Agent.tools)
    .outerjoin(Task, and_(Task.workflow_id == Workflow.id, Task.is_active.is_(True)))
    .outerjoin(Agent, Agent.id == Task.agent_id)
    .where(Workflow.id == bindparam("b_workflow"))
)
"""The workflow with its runnable tasks (one row with no task when it has none)."""


async def _runnable(
    session: AsyncSession, statement: Select[Task, bool, str, list[str]], params: dict[str, int]
) -> list[Runnable]:
    """The tasks `statement` selects with their agents' active flag, name and tools, in one
    query (the accept path runs under the load it creates: each round trip waits behind the
    runners' work)."""
    rows = await session.execute(statement, params)
    return [
        Runnable(task, bool(active), name, list(tools or []))
        for task, active, name, tools in rows.tuples()
    ]


async def _workflow_and_runnable(
    session: AsyncSession, workflow_id: int
) -> tuple[Workflow, list[Runnable]]:
    """The workflow (404 when it is not there for the caller) and its runnable tasks, in one
    query: one round trip less for every accepted run."""
    rows = (await session.execute(_WORKFLOW_AND_RUNNABLE, {"b_workflow": workflow_id})).all()
    workflow = rows[0][0] if rows else None
    if workflow is None or not visible(workflow.created_by):
        raise NotFound.resource("Workflow", workflow_id)
    runnable = [
        Runnable(task, bool(active), name, list(tools or []))
        for _, task, active, name, tools in rows
        if task is not None
    ]
    return workflow, runnable


async def _check_runnable(
    session: AsyncSession,
    toolbox: Toolbox,
    tasks: Sequence[Runnable],
    inputs: dict[str, Any],
    crew: Sequence[Any] | None = None,
) -> None:
    """Every placeholder has a value, and every agent that will run exists, is active and
    names only known tools. `crew`: a hierarchical run's coworkers (agent rows); its tasks
    then need no agent of their own (the manager answers them)."""
    missing: dict[str, list[int]] = defaultdict(list)
    for task in (r.task for r in tasks):
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
    if crew is not None:
        agents = {a.id: (a.name, list(a.tools or [])) for a in crew}
        await check_tools_named(session, toolbox, agents)
        return
    unrunnable = sorted(r.task.id for r in tasks if not r.agent_active)
    if unrunnable:
        raise ValidationFailed(
            f"Tasks {unrunnable} have no active agent assigned",
            {"task_ids": unrunnable, "fields": {"agent_id": "an active agent is required"}},
        )
    agents = {
        r.task.agent_id: (r.agent_name or "", r.agent_tools)
        for r in tasks
        if r.task.agent_id is not None
    }
    await check_tools_named(session, toolbox, agents)


async def _crew_of(session: AsyncSession, workflow: Workflow) -> list[Any] | None:
    """A hierarchical workflow's coworkers (agent rows), after checking its manager agent and
    that no two coworkers share a role (the manager names them by role); None for the other
    workflow types."""
    if workflow.workflow_type != HIERARCHICAL:
        return None
    await check_manager(session, workflow_type=workflow.workflow_type, config=workflow.config)
    manager = manager_agent_id(workflow.config)
    crew = [a for a in (await session.execute(crew_agents(workflow.id))).all() if a.id != manager]
    by_role: dict[str, list[int]] = defaultdict(list)
    for agent in crew:
        by_role[role_key(agent.role)].append(agent.id)
    shared = {role: ids for role, ids in by_role.items() if len(ids) > 1}
    if shared:
        raise ValidationFailed(
            "Agents of a hierarchical workflow are named by role, and these share one: "
            + "; ".join(f"{role!r}: agents {ids}" for role, ids in sorted(shared.items())),
            {"shared_roles": shared, "fields": {"role": "coworkers need distinct roles"}},
        )
    return crew


async def _create_execution(
    session: AsyncSession,
    dispatcher: Executor,
    *,
    workflow: Workflow,
    mode: str,
    plan: list[dict[str, Any]],
    request: ExecuteRequest,
) -> ExecutionRead:
    now = utcnow()
    row = (
        await session.execute(
            _INSERT_EXECUTION,
            {
                "workflow_id": workflow.id,
                "status": ES.PENDING.value,
                "mode": mode,
                "input_data": request.input_data,
                "config": request.config,
                "plan": plan,
                "created_at": now,
                "started_at": now,
                "created_by": current_creator(),
            },
        )
    ).one()
    await session.commit()
    read = ExecutionRead.model_validate(row)
    # Always hand it over: the runner checks the workflow's status under a lock and leaves the
    # execution pending if the workflow is paused. Deciding here, on a status read before the
    # commit, could miss a resume that committed in between and strand the execution.
    dispatcher.submit(read.id)
    return read


async def start_workflow(
    session: AsyncSession,
    dispatcher: Executor,
    toolbox: Toolbox,
    *,
    workflow_id: int,
    request: ExecuteRequest,
) -> ExecutionRead:
    workflow, runnable = await _workflow_and_runnable(session, workflow_id)
    if not workflow.is_active:
        raise Conflict(
            f"Workflow {workflow_id} is inactive; activate it before executing",
            {"workflow_id": workflow_id, "reason": "inactive"},
        )
    tasks = sort_for_execution([r.task for r in runnable])
    if not tasks:
        raise ValidationFailed(
            f"Workflow {workflow_id} has no active tasks to run",
            {"workflow_id": workflow_id, "reason": "no_tasks"},
        )
    crew = await _crew_of(session, workflow)
    await _check_runnable(session, toolbox, runnable, request.input_data, crew)
    order = [t.id for t in tasks]
    contexts = {t.id: t.context for t in tasks}
    if workflow.workflow_type == "parallel":
        deps = {t.id: list(t.dependencies or []) for t in tasks}
        if cycle := find_cycle({t: waits_for(deps[t], contexts[t]) for t in order}):
            raise DependencyCycle("task dependencies and context form a cycle", {"cycle": cycle})
        planned = dag_plan(order, deps, contexts)
    else:
        if later := linear_context_problems(order, contexts):
            raise ValidationFailed(
                "The context of tasks "
                + "; ".join(f"{t} names tasks {ids}" for t, ids in later.items())
                + " that run after them in the linear order",
                {
                    "later_task_ids": {str(t): ids for t, ids in later.items()},
                    "fields": {"context": "context tasks must run earlier"},
                },
            )
        planned = linear_plan(order, contexts)
    return await _create_execution(
        session,
        dispatcher,
        workflow=workflow,
        mode="workflow",
        plan=[p.as_json() for p in planned],
        request=request,
    )


async def start_task(
    session: AsyncSession,
    dispatcher: Executor,
    toolbox: Toolbox,
    *,
    task_id: int,
    request: ExecuteRequest,
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
    crew = await _crew_of(session, workflow)
    await _check_runnable(
        session,
        toolbox,
        await _runnable(session, _RUNNABLE_TASK, {"b_task": task.id}),
        request.input_data,
        crew,
    )
    return await _create_execution(
        session,
        dispatcher,
        workflow=workflow,
        mode="task",
        plan=[{"task_id": task.id, "depends_on": []}],
        request=request,
    )
