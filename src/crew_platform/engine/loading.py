"""What a runner needs to know about its execution, read once when it begins or resumes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crew_platform.engine.plan import PlannedTask, context_of, graph
from crew_platform.engine.states import TaskRunStatus as TS
from crew_platform.engine.tool_loop import max_iter_of
from crew_platform.llm.prompts import AgentProfile
from crew_platform.models import Agent, Execution, Task, TaskRun, Workflow

DEFAULT_MAX_PARALLEL = 4


@dataclass
class TaskSpec:
    """A task as the execution runs it: read when the runner began, not re-read per step."""

    id: int
    name: str
    description: str
    expected_output: str | None
    input_data: dict[str, Any]
    agent: AgentProfile | None


@dataclass
class RunState:
    execution_id: int
    workflow_id: int
    workflow_type: str
    plan: list[PlannedTask]
    input_data: dict[str, Any]
    max_parallel: int
    tasks: dict[int, TaskSpec]
    outputs: dict[int, str] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    external_context: dict[int, str] = field(default_factory=dict)
    """Outputs of tasks outside this execution (a single-task run's dependencies)."""

    @property
    def chain(self) -> bool:
        return self.workflow_type != "parallel"

    def graph(self) -> dict[int, tuple[int, ...]]:
        return graph(self.plan, chain=self.chain)

    @cached_property
    def _contexts(self) -> dict[int, list[int]]:
        return context_of(self.plan, chain=self.chain)

    def context_ids(self, task_id: int) -> list[int]:
        return self._contexts.get(task_id, [])

    def output(self) -> dict[str, Any]:
        """`output_data`: the final result and every finished task's output, also when the
        execution failed or was cancelled part-way."""
        order = [p.task_id for p in self.plan]
        if self.chain:
            finished = [t for t in order if t in self.outputs]
            result = self.outputs[finished[-1]] if finished else None
        else:
            needed = {d for p in self.plan for d in p.depends_on}
            sinks = [t for t in order if t not in needed and t in self.outputs]
            result = "\n\n".join(self.outputs[t] for t in sinks) if sinks else None
        return {
            "result": result,
            "tasks": {str(t): self.outputs[t] for t in order if t in self.outputs},
        }


def profile_of(agent: Agent) -> AgentProfile:
    return AgentProfile(
        agent_id=agent.id,
        name=agent.name,
        role=agent.role,
        goal=agent.goal,
        backstory=agent.backstory,
        model=agent.model,
        temperature=agent.temperature,
        top_p=agent.top_p,
        max_tokens=agent.max_tokens,
        tools=tuple(agent.tools or ()),
        max_iter=max_iter_of(agent.config),
    )


def _max_parallel(config: dict[str, Any]) -> int:
    value = config.get("max_parallel", DEFAULT_MAX_PARALLEL)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        return DEFAULT_MAX_PARALLEL
    return value


async def load_state(
    session: AsyncSession, execution: Execution, workflow: Workflow, *, with_runs: bool
) -> RunState:
    """The run's plan, tasks and agents; with `with_runs`, what earlier attempts finished (a
    first start has no task runs to read: none was ever recorded)."""
    plan = [PlannedTask.from_json(p) for p in execution.plan or []]
    rows = (
        await session.execute(
            select(Task, Agent)
            .outerjoin(Agent, Agent.id == Task.agent_id)
            .where(Task.id.in_([p.task_id for p in plan]))
        )
    ).tuples()
    tasks = {task.id: (task, agent) for task, agent in rows}
    state = RunState(
        execution_id=execution.id,
        workflow_id=workflow.id,
        workflow_type="linear" if execution.mode == "task" else workflow.workflow_type,
        plan=plan,
        input_data=dict(execution.input_data or {}),
        max_parallel=_max_parallel((workflow.config or {}) | (execution.config or {})),
        tasks={
            tid: TaskSpec(
                id=tid,
                name=t.name,
                description=t.description or t.name,
                expected_output=t.expected_output,
                input_data=dict(t.input_data or {}),
                agent=profile_of(agent) if agent is not None else None,
            )
            for tid, (t, agent) in tasks.items()
        },
    )
    if with_runs:
        await load_finished_runs(session, state)
    if execution.mode == "task":
        state.external_context = await _latest_outputs(
            session, [d for t, _ in tasks.values() for d in (t.dependencies or [])]
        )
    return state


async def load_finished_runs(session: AsyncSession, state: RunState) -> None:
    runs = await session.execute(
        select(TaskRun.task_id, TaskRun.attempt, TaskRun.status, TaskRun.output)
        .where(TaskRun.execution_id == state.execution_id)
        .order_by(TaskRun.id)
    )
    for task_id, attempt, status, output in runs:
        state.attempts[task_id] = max(state.attempts.get(task_id, 0), attempt)
        if status == TS.COMPLETED and output is not None:
            state.outputs[task_id] = output


async def _latest_outputs(session: AsyncSession, task_ids: Sequence[int]) -> dict[int, str]:
    if not task_ids:
        return {}
    latest = (
        select(func.max(TaskRun.id))
        .where(TaskRun.task_id.in_(task_ids), TaskRun.status == TS.COMPLETED)
        .group_by(TaskRun.task_id)
    )
    rows = await session.scalars(select(TaskRun).where(TaskRun.id.in_(latest)))
    return {r.task_id: r.output or "" for r in rows}


async def partial_output(
    session: AsyncSession, execution: Execution, workflow: Workflow
) -> dict[str, Any]:
    """`output_data` of an execution stopped from outside (a cancel): what its tasks finished."""
    state = await load_state(session, execution, workflow, with_runs=True)
    return state.output()
