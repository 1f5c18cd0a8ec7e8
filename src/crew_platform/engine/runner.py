"""Runs one execution: plan -> steps -> a checkpoint before and after every model call.

The runner never holds a database session while a model answers. Every write it makes is
guarded by the state machine (compare-and-set), so a cancel or pause that lands while a call is
in flight wins cleanly; control requests are honoured at task boundaries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from crew_platform.db import utcnow
from crew_platform.engine.journal import Journal, publish
from crew_platform.engine.plan import PlannedTask
from crew_platform.engine.states import ExecutionStatus as ES
from crew_platform.engine.states import TaskRunStatus as TS
from crew_platform.engine.transitions import (
    TASK_RUNS,
    cancel_open_runs,
    move_execution,
    move_task_run,
)
from crew_platform.errors import PlatformError
from crew_platform.events.bus import EventBus
from crew_platform.events.types import Event, EventType
from crew_platform.llm.gateway import Completion, LLMGateway
from crew_platform.llm.prompts import AgentProfile, ContextItem, fill, messages, task_prompt
from crew_platform.models import Agent, Execution, Task, TaskRun, Workflow

log = logging.getLogger(__name__)

DEFAULT_MAX_PARALLEL = 4
_INSERT_RUN = insert(TASK_RUNS).returning(TASK_RUNS.c.id)


@dataclass
class Control:
    """In-memory requests for one running execution.

    The store holds the durable ones (an execution no longer `running` there must stop at the
    next task boundary, whoever asked); these flags are the fast path of this process.
    """

    pause_requested: bool = False
    cancel_requested: bool = False
    shutting_down: bool = False
    begun_at_seq: int | None = None
    """The execution's log position when this runner took it over: control events at or
    before it were meant for an earlier runner."""

    @property
    def should_stop(self) -> bool:
        return self.pause_requested or self.cancel_requested or self.shutting_down


class Outcome(Enum):
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass
class TaskSpec:
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
    failure: str | None = None
    unstored: Answered | None = None
    """A linear run's last answer, stored with whatever the run writes next (one commit)."""


@dataclass
class OpenRun:
    """The task run a step recorded before calling the model."""

    id: int
    task_id: int
    agent_id: int | None
    attempt: int
    started_seq: int | None = None
    values: dict[str, Any] = field(default_factory=dict)
    context_ids: list[int] = field(default_factory=list)


@dataclass
class Answered:
    """A model call that returned; its task run is not stored as completed yet."""

    run: OpenRun
    completion: Completion
    elapsed: float


@dataclass
class StepResult:
    task_id: int
    output: str | None = None
    error: str | None = None
    stopped: bool = False


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
    )


class ExecutionRunner:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        bus: EventBus,
        gateway: LLMGateway,
    ) -> None:
        self._sessions = sessionmaker
        self._engine: AsyncEngine = sessionmaker.kw["bind"]
        self._bus = bus
        self._gateway = gateway

    @property
    def bus(self) -> EventBus:
        return self._bus

    async def run(self, execution_id: int, control: Control) -> None:
        state = await self._begin(execution_id, control)
        if state is None:
            return
        try:
            if state.workflow_type == "parallel":
                outcome = await self._run_dag(state, control)
            else:
                outcome = await self._run_linear(state, control)
            if outcome is Outcome.STOPPED or (outcome is Outcome.COMPLETED and control.should_stop):
                if state.unstored is not None:
                    async with self._engine.connect() as conn:
                        journal = Journal(conn, self._bus)
                        await self._store_answer(journal, state)
                        await journal.commit()
                return
            await self._finish(state, outcome)
        except asyncio.CancelledError:
            if control.cancel_requested:
                await asyncio.shield(self._abandon_runs(state))
            raise
        except Exception as exc:
            log.exception("execution %s crashed", execution_id)
            state.failure = f"INTERNAL_ERROR: {_first_line(exc)} (details in the server log)"
            await self._finish(state, Outcome.FAILED)

    # -- start -----------------------------------------------------------------------------

    async def _begin(self, execution_id: int, control: Control) -> RunState | None:
        async with self._sessions() as session:
            journal = Journal(session, self._bus)
            found = (
                await session.execute(
                    # FOR SHARE of the workflow: serialises with a pause (an UPDATE of that
                    # row) but not with the other runners of the workflow or with inserts
                    # that reference it.
                    select(Execution, Workflow)
                    .join(Workflow, Workflow.id == Execution.workflow_id)
                    .where(Execution.id == execution_id)
                    .with_for_update(read=True, of=Workflow)
                )
            ).first()
            if found is None:
                return None
            execution, workflow = found.tuple()
            if execution.status not in (ES.PENDING, ES.RUNNING):
                return None
            if workflow.status == "paused":
                if execution.status == ES.RUNNING:
                    await move_execution(session, execution_id, ES.PAUSED)
                await session.commit()
                return None
            resumed_after_crash = execution.status == ES.RUNNING
            first_start = execution.last_seq == 0
            control.begun_at_seq = execution.last_seq
            state = await self._load_state(session, execution, workflow, first_start)
            if first_start:
                started = await journal.record_move(
                    self._event(state, EventType.WORKFLOW_STARTED, status=ES.RUNNING),
                    f"Execution {execution_id} of workflow {workflow.id} started",
                    ES.RUNNING,
                )
                if started is None:
                    await session.commit()
                    return None
            else:
                if not resumed_after_crash and not await move_execution(
                    session, execution_id, ES.RUNNING
                ):
                    await session.commit()
                    return None
                await self._close_interrupted_runs(journal, state)
                if resumed_after_crash:
                    await journal.record(
                        self._event(
                            state,
                            EventType.WORKFLOW_RESUMED,
                            status=ES.RUNNING,
                            data={"reason": "recovered after restart"},
                        ),
                        f"Execution {execution_id} resumed after a restart",
                    )
            unconfigured = self._unconfigured_provider(state)
            await journal.commit()
        if unconfigured:
            state.failure = unconfigured
            await self._finish(state, Outcome.FAILED)
            return None
        return state

    async def _load_state(
        self, session: AsyncSession, execution: Execution, workflow: Workflow, first_start: bool
    ) -> RunState:
        """What the run needs, read once. A first start has no task runs to read yet (every
        run is recorded with a numbered event, and none was ever numbered)."""
        plan = [
            PlannedTask(int(p["task_id"]), tuple(int(d) for d in p.get("depends_on", ())))
            for p in execution.plan or []
        ]
        rows = (
            await session.execute(
                select(Task, Agent)
                .outerjoin(Agent, Agent.id == Task.agent_id)
                .where(Task.id.in_([p.task_id for p in plan]))
            )
        ).tuples()
        tasks = {task.id: (task, agent) for task, agent in rows}
        config = (workflow.config or {}) | (execution.config or {})
        max_parallel = config.get("max_parallel", DEFAULT_MAX_PARALLEL)
        if not isinstance(max_parallel, int) or isinstance(max_parallel, bool) or max_parallel < 1:
            max_parallel = DEFAULT_MAX_PARALLEL
        state = RunState(
            execution_id=execution.id,
            workflow_id=workflow.id,
            workflow_type="linear" if execution.mode == "task" else workflow.workflow_type,
            plan=plan,
            input_data=dict(execution.input_data or {}),
            max_parallel=max_parallel,
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
        if not first_start:
            runs = await session.execute(
                select(TaskRun.task_id, TaskRun.attempt, TaskRun.status, TaskRun.output)
                .where(TaskRun.execution_id == execution.id)
                .order_by(TaskRun.id)
            )
            for task_id, attempt, status, output in runs:
                state.attempts[task_id] = max(state.attempts.get(task_id, 0), attempt)
                if status == TS.COMPLETED and output is not None:
                    state.outputs[task_id] = output
        if execution.mode == "task":
            state.external_context = await self._latest_outputs(
                session, [d for t, _ in tasks.values() for d in (t.dependencies or [])]
            )
        return state

    async def _latest_outputs(
        self, session: AsyncSession, task_ids: Sequence[int]
    ) -> dict[int, str]:
        if not task_ids:
            return {}
        latest = (
            select(func.max(TaskRun.id))
            .where(TaskRun.task_id.in_(task_ids), TaskRun.status == TS.COMPLETED)
            .group_by(TaskRun.task_id)
        )
        rows = await session.scalars(select(TaskRun).where(TaskRun.id.in_(latest)))
        return {r.task_id: r.output or "" for r in rows}

    async def _close_interrupted_runs(self, journal: Journal, state: RunState) -> None:
        """Runs left `running` by a killed process: close them; their task runs again."""
        await cancel_open_runs(
            journal,
            execution_id=state.execution_id,
            workflow_id=state.workflow_id,
            error="Interrupted: the server stopped during this run",
            message="Task {task_id} run {run_id} was interrupted and will run again",
            reason="interrupted",
        )

    def _unconfigured_provider(self, state: RunState) -> str | None:
        from crew_platform.llm.errors import LLMNotConfigured

        for task_id in (p.task_id for p in state.plan if p.task_id not in state.outputs):
            spec = state.tasks.get(task_id)
            if spec is None or spec.agent is None:
                continue
            try:
                self._gateway.check_configured(spec.agent.model)
            except LLMNotConfigured as exc:
                return f"{exc.code}: {exc.message}"
        return None

    # -- scheduling ------------------------------------------------------------------------

    async def _run_linear(self, state: RunState, control: Control) -> Outcome:
        """Runs the chain; each task's answer is stored in the transaction that starts the next
        task (or, for the last one, in the one that finishes the execution)."""
        done_before: list[int] = []
        for position, step in enumerate(state.plan):
            if step.task_id in state.outputs:
                done_before.append(step.task_id)
                continue
            async with self._engine.connect() as conn:
                journal = Journal(conn, self._bus)
                if state.unstored is not None:
                    stored = await self._store_answer(journal, state)
                    if stored is None:
                        await journal.commit()
                        return Outcome.STOPPED
                    done_before.append(stored)
                if control.should_stop:
                    await journal.commit()
                    return Outcome.STOPPED
                opened = await self._open_step(journal, state, step, list(done_before))
                await journal.commit()
            answered = opened if isinstance(opened, StepResult) else await self._call(state, opened)
            if isinstance(answered, Answered):
                state.unstored = answered
                continue
            if answered.stopped:
                return Outcome.STOPPED
            state.failure = answered.error
            await self._skip(state, [p.task_id for p in state.plan[position + 1 :]])
            return Outcome.FAILED
        return Outcome.COMPLETED

    async def _run_dag(self, state: RunState, control: Control) -> Outcome:
        waiting = [p for p in state.plan if p.task_id not in state.outputs]
        in_flight: dict[asyncio.Task[StepResult], int] = {}
        stopped = False
        try:
            while waiting or in_flight:
                if state.failure is None and not control.should_stop and not stopped:
                    ready = [p for p in waiting if all(d in state.outputs for d in p.depends_on)]
                    for step in ready[: max(0, state.max_parallel - len(in_flight))]:
                        waiting.remove(step)
                        job = asyncio.create_task(
                            self._run_step(state, step, context_ids=list(step.depends_on))
                        )
                        in_flight[job] = step.task_id
                if not in_flight:
                    break
                finished, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for job in finished:
                    in_flight.pop(job)
                    result = job.result()
                    if result.stopped:
                        stopped = True
                    elif result.error is not None and state.failure is None:
                        state.failure = result.error
        finally:
            for job in in_flight:
                job.cancel()
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
        if stopped:
            return Outcome.STOPPED
        if state.failure is not None:
            await self._skip(state, [p.task_id for p in waiting])
            return Outcome.FAILED
        if waiting:
            return Outcome.STOPPED
        return Outcome.COMPLETED

    # -- one step --------------------------------------------------------------------------

    async def _run_step(
        self, state: RunState, step: PlannedTask, context_ids: list[int]
    ) -> StepResult:
        """One task on its own: open, call, store (the parallel scheduler's unit)."""
        async with self._engine.connect() as conn:
            journal = Journal(conn, self._bus)
            opened = await self._open_step(journal, state, step, context_ids)
            await journal.commit()
        if isinstance(opened, StepResult):
            return opened
        answered = await self._call(state, opened)
        if isinstance(answered, StepResult):
            return answered
        async with self._engine.connect() as conn:
            journal = Journal(conn, self._bus)
            task_id = await self._store_answer(journal, state, answered)
            await journal.commit()
        if task_id is None:
            return StepResult(step.task_id, stopped=True)
        return StepResult(step.task_id, output=answered.completion.text)

    async def _open_step(
        self, journal: Journal, state: RunState, step: PlannedTask, context_ids: list[int]
    ) -> OpenRun | StepResult:
        """The task boundary, inside the caller's transaction.

        The store decides whether the execution still runs (a pause or a cancel taken by any
        server process lands there). The check, the event's number and the task run's record
        are one transaction under the execution's row lock, so a racing cancel either sees the
        run or stops it.
        """
        spec = state.tasks.get(step.task_id)
        if spec is None:
            return await self._task_gone(journal, state, step.task_id)
        attempt = state.attempts.get(step.task_id, 0) + 1
        agent = spec.agent
        started = await journal.record_if_running(
            self._event(
                state,
                EventType.TASK_STARTED,
                task_id=step.task_id,
                agent_id=agent.agent_id if agent else None,
                status=TS.RUNNING,
                data={"attempt": attempt},
            ),
            f"Task {step.task_id} ({spec.name}) started, attempt {attempt}",
        )
        if started is None:
            return StepResult(step.task_id, stopped=True)
        state.attempts[step.task_id] = attempt
        agent_id = agent.agent_id if agent else None
        values = spec.input_data | state.input_data
        inserted = await journal.session.execute(
            _INSERT_RUN,
            {
                "execution_id": state.execution_id,
                "task_id": step.task_id,
                "agent_id": agent_id,
                "status": TS.RUNNING.value,
                "attempt": attempt,
                "input": {"input_data": values, "context_task_ids": context_ids},
                "started_at": started.timestamp,
            },
        )
        return OpenRun(
            id=inserted.scalar_one(),
            task_id=step.task_id,
            agent_id=agent_id,
            attempt=attempt,
            started_seq=started.seq,
            values=values,
            context_ids=context_ids,
        )

    async def _call(self, state: RunState, run: OpenRun) -> Answered | StepResult:
        """The model call of an open run; a failure is stored at once."""
        spec = state.tasks[run.task_id]
        agent = spec.agent
        if agent is None:
            return await self._fail_step(
                state, run, "TASK_NOT_RUNNABLE: the task has no agent", 0.0
            )
        context = [
            ContextItem(f"Output of task {tid} ({state.tasks[tid].name})", output)
            for tid in run.context_ids
            if (output := state.outputs.get(tid, state.external_context.get(tid))) is not None
            and tid in state.tasks
        ] + [
            ContextItem(f"Output of task {tid}", out)
            for tid, out in state.external_context.items()
            if tid not in state.tasks
        ]
        prompt = task_prompt(
            description=fill(spec.description, run.values),
            expected_output=fill(spec.expected_output, run.values) or None,
            input_data=run.values,
            context=context,
        )
        chunk_index = 0

        async def publish_chunk(text: str, call_attempt: int) -> None:
            nonlocal chunk_index
            chunk_index += 1
            await publish(
                self._bus,
                self._event(
                    state,
                    EventType.TASK_OUTPUT_CHUNK,
                    task_id=run.task_id,
                    agent_id=agent.agent_id,
                    status=TS.RUNNING,
                    seq=run.started_seq,
                    data={"chunk": text, "index": chunk_index, "call_attempt": call_attempt},
                ),
            )

        began = time.perf_counter()
        try:
            completion = await self._gateway.complete(
                model=agent.model,
                messages=messages(agent, prompt),
                temperature=agent.temperature,
                top_p=agent.top_p,
                max_tokens=agent.max_tokens,
                on_chunk=publish_chunk,
            )
        except PlatformError as exc:
            return await self._fail_step(
                state, run, f"{exc.code}: {exc.message}", time.perf_counter() - began
            )
        return Answered(run, completion, time.perf_counter() - began)

    async def _store_answer(
        self, journal: Journal, state: RunState, answered: Answered | None = None
    ) -> int | None:
        """Store an answer (by default the run's unstored one) as its task's completion, in the
        caller's transaction. Returns the task id, or None when the run was closed meanwhile
        (a cancel): then nothing is stored and the execution must stop."""
        if answered is None:
            answered, state.unstored = state.unstored, None
        assert answered is not None
        run, completion, elapsed = answered.run, answered.completion, answered.elapsed
        spec = state.tasks[run.task_id]
        if not await move_task_run(
            journal.session,
            run.id,
            TS.COMPLETED,
            output=completion.text,
            tokens_used=completion.tokens_used,
            execution_time=elapsed,
            completed_at=utcnow(),
        ):
            return None
        await journal.record(
            self._event(
                state,
                EventType.TASK_COMPLETED,
                task_id=run.task_id,
                agent_id=run.agent_id,
                status=TS.COMPLETED,
                data={
                    "output": completion.text,
                    "tokens_used": completion.tokens_used,
                    "execution_time": round(elapsed, 6),
                    "attempt": run.attempt,
                },
            ),
            f"Task {run.task_id} ({spec.name}) completed in {elapsed:.3f}s, "
            f"{completion.tokens_used} tokens",
            add_tokens=completion.tokens_used,
        )
        state.outputs[run.task_id] = completion.text
        return run.task_id

    async def _task_gone(self, journal: Journal, state: RunState, task_id: int) -> StepResult:
        """The task was deleted after the execution was accepted: there is nothing to run (and
        no task run can be recorded for it); the execution fails saying so."""
        error = "TASK_NOT_RUNNABLE: the task was deleted after this execution was accepted"
        recorded = await journal.record_if_running(
            self._event(
                state,
                EventType.TASK_FAILED,
                task_id=task_id,
                status=TS.FAILED,
                data={"error": error},
            ),
            f"Task {task_id} failed: {error}",
        )
        if recorded is None:
            return StepResult(task_id, stopped=True)
        return StepResult(task_id, error=f"Task {task_id} failed: {error}")

    async def _fail_step(
        self, state: RunState, run: OpenRun, error: str, elapsed: float
    ) -> StepResult:
        spec = state.tasks.get(run.task_id)
        async with self._engine.connect() as conn:
            journal = Journal(conn, self._bus)
            if await move_task_run(
                conn,
                run.id,
                TS.FAILED,
                error=error,
                execution_time=elapsed,
                completed_at=utcnow(),
            ):
                await journal.record(
                    self._event(
                        state,
                        EventType.TASK_FAILED,
                        task_id=run.task_id,
                        agent_id=run.agent_id,
                        status=TS.FAILED,
                        data={"error": error, "attempt": run.attempt},
                    ),
                    f"Task {run.task_id} ({spec.name if spec else '?'}) failed: {error}",
                )
            await journal.commit()
        name = spec.name if spec else "?"
        return StepResult(run.task_id, error=f"Task {run.task_id} ({name}) failed: {error}")

    async def _skip(self, state: RunState, task_ids: Sequence[int]) -> None:
        # Deleted tasks have nothing to skip (and no row may point at them).
        todo = [t for t in task_ids if t not in state.outputs and t in state.tasks]
        if not todo:
            return
        async with self._sessions() as session:
            journal = Journal(session, self._bus)
            for task_id in todo:
                attempt = state.attempts.get(task_id, 0) + 1
                state.attempts[task_id] = attempt
                session.add(
                    TaskRun(
                        execution_id=state.execution_id,
                        task_id=task_id,
                        status=TS.SKIPPED,
                        attempt=attempt,
                        error="Skipped: an earlier task failed",
                        completed_at=utcnow(),
                    )
                )
                await journal.record(
                    self._event(state, EventType.TASK_SKIPPED, task_id=task_id, status=TS.SKIPPED),
                    f"Task {task_id} skipped because an earlier task failed",
                )
            await journal.commit()

    # -- end -------------------------------------------------------------------------------

    async def _finish(self, state: RunState, outcome: Outcome) -> None:
        async with self._engine.connect() as conn:
            journal = Journal(conn, self._bus)
            if state.unstored is not None and await self._store_answer(journal, state) is None:
                await journal.commit()  # the last run was cancelled meanwhile: nothing to finish
                return
            output = self._output(state)
            if outcome is Outcome.COMPLETED:
                await journal.record_move(
                    self._event(
                        state,
                        EventType.WORKFLOW_COMPLETED,
                        status=ES.COMPLETED,
                        data={"output": output["result"]},
                    ),
                    f"Execution {state.execution_id} completed",
                    ES.COMPLETED,
                    output_data=output,
                    completed_at=utcnow(),
                    error_message=None,
                )
            else:
                error = state.failure or "failed"
                await journal.record_move(
                    self._event(
                        state, EventType.WORKFLOW_FAILED, status=ES.FAILED, data={"error": error}
                    ),
                    f"Execution {state.execution_id} failed: {error}",
                    ES.FAILED,
                    output_data=output,
                    completed_at=utcnow(),
                    error_message=error,
                )
            await journal.commit()

    def _output(self, state: RunState) -> dict[str, Any]:
        order = [p.task_id for p in state.plan]
        if state.workflow_type == "parallel":
            needed = {d for p in state.plan for d in p.depends_on}
            sinks = [t for t in order if t not in needed and t in state.outputs]
            result = "\n\n".join(state.outputs[t] for t in sinks) if sinks else None
        else:
            finished = [t for t in order if t in state.outputs]
            result = state.outputs[finished[-1]] if finished else None
        return {
            "result": result,
            "tasks": {str(t): state.outputs[t] for t in order if t in state.outputs},
        }

    async def _abandon_runs(self, state: RunState) -> None:
        """After a user cancel: whatever was still running is cancelled, not left dangling."""
        async with self._sessions() as session:
            journal = Journal(session, self._bus)
            await cancel_open_runs(
                journal,
                execution_id=state.execution_id,
                workflow_id=state.workflow_id,
                error="Cancelled by request",
                message="Task {task_id} run {run_id} cancelled",
            )
            await journal.commit()

    def _event(
        self,
        state: RunState,
        kind: EventType,
        *,
        task_id: int | None = None,
        agent_id: int | None = None,
        status: str | None = None,
        seq: int | None = None,
        data: dict[str, Any] | None = None,
    ) -> Event:
        if agent_id is None and task_id is not None and (spec := state.tasks.get(task_id)):
            agent_id = spec.agent.agent_id if spec.agent else None
        return Event(
            type=kind,
            workflow_id=state.workflow_id,
            execution_id=state.execution_id,
            task_id=task_id,
            agent_id=agent_id,
            status=str(status) if status is not None else None,
            seq=seq,
            data=data or {},
        )


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """A crash as clients may see it: type and first line, never SQL or its parameters."""
    orig = getattr(exc, "orig", None)  # a DBAPI error wrapped by SQLAlchemy
    text = str(orig if orig is not None else exc).strip().splitlines()
    line = f"{type(orig if orig is not None else exc).__name__}: {text[0] if text else ''}"
    return line if len(line) <= limit else line[:limit] + "…"
