"""What a runner needs to know about its execution, read once when it begins or resumes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crew_platform.engine.plan import PlannedTask, context_of, graph
from crew_platform.engine.rules import Writer
from crew_platform.engine.states import TaskRunStatus as TS
from crew_platform.engine.tool_loop import max_iter_of
from crew_platform.llm.fallback import fallback_models_of
from crew_platform.llm.prompts import AgentProfile
from crew_platform.llm.structured import as_text
from crew_platform.models import Agent, Execution, Task, TaskRun, Workflow

if TYPE_CHECKING:
    from crew_platform.engine.delegation import Crew

DEFAULT_MAX_PARALLEL = 4
EXECUTIONS: Table = Execution.__table__  # type: ignore[assignment]
WORKFLOWS: Table = Workflow.__table__  # type: ignore[assignment]
TASKS: Table = Task.__table__  # type: ignore[assignment]
AGENTS: Table = Agent.__table__  # type: ignore[assignment]
_AGENT_COLUMNS: tuple[str, ...] = (
    "id",
    "name",
    "role",
    "goal",
    "backstory",
    "model",
    "temperature",
    "top_p",
    "max_tokens",
    "tools",
    "config",
)


@dataclass
class TaskSpec:
    """A task as the execution runs it: read when the runner began, not re-read per step."""

    id: int
    name: str
    description: str
    expected_output: str | None
    input_data: dict[str, Any]
    agent: AgentProfile | None
    output_schema: dict[str, Any] | None = None
    guardrail: str | None = None
    guardrail_max_retries: int = 2
    human_input: bool = False
    """Its answer is a draft a person reviews (`engine/review.py`)."""


Output = str | dict[str, Any]
"""A task's output: its answer's text, or the parsed object of a task with an output schema."""


@dataclass
class RunState:
    execution_id: int
    workflow_id: int
    workflow_type: str
    plan: list[PlannedTask]
    input_data: dict[str, Any]
    max_parallel: int
    tasks: dict[int, TaskSpec]
    outputs: dict[int, Output] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    external_context: dict[int, Output] = field(default_factory=dict)
    """Outputs of tasks outside this execution (a single-task run's dependencies)."""
    crew: Crew | None = None
    """A hierarchical run's manager and coworkers (see `engine.manager`)."""

    def agent_of(self, task_id: int) -> AgentProfile | None:
        """Who answers the task: the manager in a hierarchical run, else the task's agent."""
        if self.crew is not None:
            return self.crew.manager
        spec = self.tasks.get(task_id)
        return spec.agent if spec else None

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
            result = "\n\n".join(as_text(self.outputs[t]) for t in sinks) if sinks else None
        return {
            "result": result,
            "tasks": {str(t): self.outputs[t] for t in order if t in self.outputs},
        }


def profile_of(agent: Any) -> AgentProfile:
    """The profile of an agent row (an ORM object or a Core row with the agent's columns)."""
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
        fallback_models=fallback_models_of(agent.config),
    )


def _max_parallel(config: dict[str, Any]) -> int:
    value = config.get("max_parallel", DEFAULT_MAX_PARALLEL)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        return DEFAULT_MAX_PARALLEL
    return value


@dataclass(frozen=True)
class ExecutionHead:
    """The execution's row and what a runner needs of its workflow's (`HEAD_COLUMNS` order)."""

    id: int
    workflow_id: int
    status: str
    last_seq: int
    mode: str
    plan: list[dict[str, Any]] | None
    input_data: dict[str, Any] | None
    config: dict[str, Any] | None
    workflow_status: str
    workflow_type: str
    workflow_config: dict[str, Any] | None

    @classmethod
    def of(cls, execution: Execution, workflow: Workflow) -> ExecutionHead:
        return cls(
            execution.id,
            execution.workflow_id,
            execution.status,
            execution.last_seq,
            execution.mode,
            execution.plan,
            execution.input_data,
            execution.config,
            workflow.status,
            workflow.workflow_type,
            workflow.config,
        )


_EXECUTION_COLUMNS = (
    "id",
    "workflow_id",
    "status",
    "last_seq",
    "mode",
    "plan",
    "input_data",
    "config",
)
HEAD_COLUMNS = (
    *(EXECUTIONS.c[c] for c in _EXECUTION_COLUMNS),
    WORKFLOWS.c.status,
    WORKFLOWS.c.workflow_type,
    WORKFLOWS.c.config,
)
_TASKS_WITH_AGENTS = (
    select(
        TASKS.c.id,
        TASKS.c.name,
        TASKS.c.description,
        TASKS.c.expected_output,
        TASKS.c.input_data,
        TASKS.c.dependencies,
        TASKS.c.context,
        TASKS.c.output_schema,
        TASKS.c.guardrail,
        TASKS.c.guardrail_max_retries,
        TASKS.c.human_input,
        *(AGENTS.c[c].label(f"agent_{c}") for c in _AGENT_COLUMNS),
    )
    .select_from(TASKS.outerjoin(AGENTS, AGENTS.c.id == TASKS.c.agent_id))
    .where(TASKS.c.id.in_(bindparam("b_ids", expanding=True)))
)
"""Built once: the per-run cost is binding the plan's task ids."""


def _agent_of(row: Any) -> AgentProfile | None:
    if row.agent_id is None:
        return None
    return profile_of(SimpleNamespace(**{c: row._mapping[f"agent_{c}"] for c in _AGENT_COLUMNS}))


async def load_state(reader: Writer, head: ExecutionHead, *, with_runs: bool) -> RunState:
    """The run's plan, tasks and agents; with `with_runs`, what earlier attempts finished (a
    first start has no task runs to read: none was ever recorded)."""
    (state,) = await load_states(reader, [(head, with_runs)])
    return state


async def load_states(
    reader: Writer, heads: Sequence[tuple[ExecutionHead, bool]]
) -> list[RunState]:
    """`load_state` for several executions (each with its `with_runs`), their tasks and agents
    read in one query: runners that begin together read them once."""
    plans = [[PlannedTask.from_json(p) for p in head.plan or []] for head, _ in heads]
    wanted = sorted({p.task_id for plan in plans for p in plan})
    rows = {
        row.id: row for row in (await reader.execute(_TASKS_WITH_AGENTS, {"b_ids": wanted})).all()
    }
    states = []
    for (head, with_runs), plan in zip(heads, plans, strict=True):
        own = [rows[p.task_id] for p in plan if p.task_id in rows]
        state = RunState(
            execution_id=head.id,
            workflow_id=head.workflow_id,
            workflow_type="linear" if head.mode == "task" else head.workflow_type,
            plan=plan,
            input_data=dict(head.input_data or {}),
            max_parallel=_max_parallel((head.workflow_config or {}) | (head.config or {})),
            tasks={row.id: _spec_of(row) for row in own},
        )
        if with_runs:
            await load_finished_runs(reader, state)
        if head.mode == "task":
            state.external_context = await _latest_outputs(
                reader,
                [
                    d
                    for row in own
                    for d in (row.context if row.context is not None else row.dependencies or [])
                ],
            )
        states.append(state)
    return states


def _spec_of(row: Any) -> TaskSpec:
    return TaskSpec(
        id=row.id,
        name=row.name,
        description=row.description or row.name,
        expected_output=row.expected_output,
        input_data=dict(row.input_data or {}),
        agent=_agent_of(row),
        output_schema=row.output_schema,
        guardrail=row.guardrail,
        guardrail_max_retries=row.guardrail_max_retries,
        human_input=bool(row.human_input),
    )


async def load_finished_runs(reader: Writer, state: RunState) -> None:
    runs = await reader.execute(
        select(
            TaskRun.task_id, TaskRun.attempt, TaskRun.status, TaskRun.output, TaskRun.output_json
        )
        .where(TaskRun.execution_id == state.execution_id)
        .order_by(TaskRun.id)
    )
    for task_id, attempt, status, output, parsed in runs:
        state.attempts[task_id] = max(state.attempts.get(task_id, 0), attempt)
        if status == TS.COMPLETED and output is not None:
            state.outputs[task_id] = output if parsed is None else parsed


async def _latest_outputs(reader: Writer, task_ids: Sequence[int]) -> dict[int, Output]:
    if not task_ids:
        return {}
    latest = (
        select(func.max(TaskRun.id))
        .where(TaskRun.task_id.in_(task_ids), TaskRun.status == TS.COMPLETED)
        .group_by(TaskRun.task_id)
    )
    rows = await reader.execute(
        select(TaskRun.task_id, TaskRun.output, TaskRun.output_json).where(TaskRun.id.in_(latest))
    )
    return {
        task_id: (output or "") if parsed is None else parsed for task_id, output, parsed in rows
    }


async def partial_output(
    session: AsyncSession, execution: Execution, workflow: Workflow
) -> dict[str, Any]:
    """`output_data` of an execution stopped from outside (a cancel): what its tasks finished."""
    state = await load_state(session, ExecutionHead.of(execution, workflow), with_runs=True)
    return state.output()
