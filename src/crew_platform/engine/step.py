"""One step: open a task run, call the model, store the answer, each with its own commit.

Whatever the workflow type, a step is these three moves. Opening is the task boundary: the store
decides there whether the execution still runs (a pause or cancel taken by any process lands in
the store). The model is called with no database connection held. Storing is guarded by the task
run's state: a run cancelled meanwhile keeps its cancellation, and a task deleted meanwhile fails
the step with a clear error, never touching another task's stored answer. Every commit is also
guarded by this process still holding the execution's lease (the journal's `owner`).

"Its own commit" is its own as far as the step can tell: the opens and stores of other runs
that come at the same moment share it (`engine/group.py`), each still committed before its
step goes on, and a failure of one rolls back the group and runs each of them alone again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from crew_platform.engine.answer import Answer, AnswerRules, answer_task
from crew_platform.engine.answer_log import StoredAnswers, carry_answers
from crew_platform.engine.delegation import Delegations
from crew_platform.engine.group import GroupCommit
from crew_platform.engine.journal import Journal, publish
from crew_platform.engine.lane import StoreLane
from crew_platform.engine.loading import RunState
from crew_platform.engine.review import Review, Reviews
from crew_platform.engine.rules import Intent, Kind, move
from crew_platform.engine.scheduler import StepResult
from crew_platform.engine.states import TaskRunStatus as TS
from crew_platform.engine.tool_calls import StoredCallLog, carry_over, own_calls
from crew_platform.engine.tool_loop import CallRecord, ToolLoop
from crew_platform.errors import PlatformError
from crew_platform.events.bus import EventBus
from crew_platform.events.types import Event, EventType
from crew_platform.llm.fallback import Fallback
from crew_platform.llm.prompts import ContextItem, fill, messages, task_prompt
from crew_platform.llm.structured import as_text
from crew_platform.models import TaskRun
from crew_platform.tools.base import ToolError

_INSERT_RUN = insert(TaskRun).returning(TaskRun.id)

TASK_GONE = "TASK_NOT_RUNNABLE: the task was deleted after this execution was accepted"


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
    replay: list[CallRecord] = field(default_factory=list)
    """Tool calls an interrupted earlier attempt recorded (see `tool_calls.carry_over`)."""
    model: str | None = None
    """The model being called: the agent's, until a fallback replaces it."""
    review: Review | None = None
    """Set for a task whose answer a person reviews (`review.py`)."""
    answers: list[dict[str, Any]] = field(default_factory=list)
    """The answers an interrupted earlier attempt kept (see `answer_log.carry_answers`)."""


def event_of(
    state: RunState,
    kind: EventType,
    *,
    task_id: int | None = None,
    agent_id: int | None = None,
    status: str | None = None,
    seq: int | None = None,
    data: dict[str, Any] | None = None,
) -> Event:
    if agent_id is None and task_id is not None and (agent := state.agent_of(task_id)):
        agent_id = agent.agent_id
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


async def insert_run(journal: Journal, **values: Any) -> int | None:
    """Insert a task run; None when its task no longer exists (deleted since the execution
    began: the foreign key refuses the row). The caller then rolls its transaction back, which
    holds nothing but this step's own writes."""
    try:
        inserted = await journal.session.execute(_INSERT_RUN, values)
    except IntegrityError:
        return None
    return inserted.scalar_one()


T = TypeVar("T")


async def _committed(asked: asyncio.Future[T]) -> T:
    """The result of a piece of a group commit. If the caller is cancelled meanwhile, the group
    may still commit the piece: wait for it before the cancel goes on, so that whoever cleans up
    after the cancel (the runner's abandon) finds what it wrote."""
    try:
        return await asyncio.shield(asked)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asked
        raise


class _TaskGone(Exception):
    """The task of a run being opened was deleted since the execution began."""


class Step:
    def __init__(self, lane: StoreLane, bus: EventBus, loop: ToolLoop, *, owner: str) -> None:
        self._lane = lane
        self._bus = bus
        self._loop = loop
        self._owner = owner
        self._reviews = Reviews(lane, bus, owner=owner)
        self._commits = GroupCommit(lane, bus, owner=owner, what="task-run opens and closes")

    async def run(self, state: RunState, task_id: int) -> StepResult:
        review = None
        if (spec := state.tasks.get(task_id)) is not None and spec.human_input:
            review = await self._reviews.load(state, task_id)
            if review.waiting is not None:
                await self._reviews.ask_again(state, task_id, review.waiting)
                return StepResult(task_id, stopped=True)
        opened = await self._open(state, task_id)
        if isinstance(opened, StepResult):
            return opened
        opened.review = review
        began = time.perf_counter()
        called = await self._call(state, opened)
        elapsed = time.perf_counter() - began
        if isinstance(called, str):
            return await self._fail(state, opened, called, elapsed)
        if called.error is not None:
            return await self._fail(state, opened, called.error, elapsed, called.tokens_used)
        if review is not None:
            return await self._await_input(state, opened, called, elapsed)
        return await self._store(state, opened, called, elapsed)

    async def _open(self, state: RunState, task_id: int) -> OpenRun | StepResult:
        """Record the task run, in one commit with the opens of other runs that open at the
        same time (`engine/group.py`)."""
        spec = state.tasks.get(task_id)
        attempt = state.attempts.get(task_id, 0) + 1
        agent = state.agent_of(task_id)
        agent_id = agent.agent_id if agent else None
        model = agent.model if agent else None

        async def open_run(journal: Journal) -> OpenRun | None:
            started = await journal.record_if_running(
                event_of(
                    state,
                    EventType.TASK_STARTED,
                    task_id=task_id,
                    agent_id=agent_id,
                    status=TS.RUNNING,
                    data={"attempt": attempt},
                ),
                f"Task {task_id} ({spec.name if spec else '?'}) started, attempt {attempt}",
            )
            if started is None:
                return None
            values = (spec.input_data if spec else {}) | state.input_data
            context_ids = state.context_ids(task_id)
            run_id = None
            replay: list[CallRecord] = []
            answers: list[dict[str, Any]] = []
            if spec is not None:
                run_id = await insert_run(
                    journal,
                    execution_id=state.execution_id,
                    task_id=task_id,
                    agent_id=agent_id,
                    status=TS.RUNNING.value,
                    attempt=attempt,
                    model=model,
                    input={"input_data": values, "context_task_ids": context_ids},
                    started_at=started.timestamp,
                )
            if run_id is None:
                raise _TaskGone(task_id)
            if attempt > 1:  # a first attempt has nothing to carry
                replay = await carry_over(
                    journal.session,
                    execution_id=state.execution_id,
                    task_id=task_id,
                    attempt=attempt,
                    task_run_id=run_id,
                )
                answers = await carry_answers(
                    journal.session,
                    execution_id=state.execution_id,
                    task_id=task_id,
                    attempt=attempt,
                    task_run_id=run_id,
                )
            return OpenRun(
                run_id,
                task_id,
                agent_id,
                attempt,
                started.seq,
                values,
                context_ids,
                replay,
                model,
                answers=answers,
            )

        try:
            opened = await _committed(self._commits.run(open_run, execution_id=state.execution_id))
        except _TaskGone:
            return await self._task_gone(state, task_id)
        if opened is None:
            return StepResult(task_id, stopped=True)
        state.attempts[task_id] = attempt
        return opened

    async def _call(self, state: RunState, run: OpenRun) -> Answer | str:
        """The model calls (and tool calls) of an open run, with no connection held between
        its commits; a failure is returned as its error text."""
        spec = state.tasks[run.task_id]
        agent = state.agent_of(run.task_id)
        if agent is None:
            return (state.crew and state.crew.problem) or "TASK_NOT_RUNNABLE: the task has no agent"
        context = [
            ContextItem(f"Output of task {tid} ({state.tasks[tid].name})", as_text(output))
            for tid in run.context_ids
            if tid in state.tasks
            and (output := state.outputs.get(tid, state.external_context.get(tid))) is not None
        ] + [
            ContextItem(f"Output of task {tid}", as_text(out))
            for tid, out in state.external_context.items()
            if tid not in state.tasks
        ]
        description = fill(spec.description, run.values)
        prompt = task_prompt(
            description=description,
            expected_output=fill(spec.expected_output, run.values) or None,
            input_data=run.values,
            context=context,
            output_schema=spec.output_schema,
        )
        chunk_index = 0

        async def publish_chunk(text: str, call_attempt: int) -> None:
            nonlocal chunk_index
            chunk_index += 1
            await publish(
                self._bus,
                event_of(
                    state,
                    EventType.TASK_OUTPUT_CHUNK,
                    task_id=run.task_id,
                    agent_id=agent.agent_id,
                    status=TS.RUNNING,
                    seq=run.started_seq,
                    data={"chunk": text, "index": chunk_index, "call_attempt": call_attempt},
                ),
            )

        def run_event(kind: EventType, data: dict[str, Any]) -> Event:
            return event_of(
                state,
                kind,
                task_id=run.task_id,
                agent_id=agent.agent_id,
                status=TS.RUNNING,
                data=data,
            )

        calls = StoredCallLog(
            self._lane,
            self._bus,
            execution_id=state.execution_id,
            task_run_id=run.id,
            task_id=run.task_id,
            owner=self._owner,
            event=run_event,
        )

        async def record_fallback(change: Fallback) -> None:
            run.model = change.to_model
            await self._record_fallback(state, run, change)

        rules = AnswerRules(
            name=spec.name,
            description=description,
            output_schema=spec.output_schema,
            guardrail=spec.guardrail,
            guardrail_max_retries=spec.guardrail_max_retries,
        )
        delegations = self._delegations(state, run) if state.crew is not None else None
        try:
            answer = await answer_task(
                self._loop,
                agent,
                messages(agent, prompt) + (run.review.conversation() if run.review else []),
                rules,
                specs=delegations.specs if delegations else await self._loop.tools_of(agent),
                calls=calls,
                replay=own_calls(run.replay),
                on_chunk=publish_chunk,
                on_fallback=record_fallback,
                log=StoredAnswers(
                    self._lane,
                    self._bus,
                    task_run_id=run.id,
                    owner=self._owner,
                    kept=run.answers,
                    event=run_event,
                    where=f"Task {run.task_id} ({spec.name})",
                ),
                local=delegations.handlers if delegations else None,
            )
        except PlatformError as exc:
            return f"{exc.code}: {exc.message}"
        except ToolError as exc:
            return f"TOOL_ERROR: {exc}"
        if delegations is not None:
            answer.prompt_tokens += delegations.prompt_tokens
            answer.completion_tokens += delegations.completion_tokens
        return answer

    def _delegations(self, state: RunState, run: OpenRun) -> Delegations:
        """The manager's delegation tools for this run of a hierarchical workflow's task."""
        assert state.crew is not None
        return Delegations(
            self._loop,
            self._lane,
            self._bus,
            state.crew,
            execution_id=state.execution_id,
            task_run_id=run.id,
            task_id=run.task_id,
            owner=self._owner,
            chunk_seq=run.started_seq,
            event=lambda kind, agent_id, data, seq=None: event_of(
                state,
                kind,
                task_id=run.task_id,
                agent_id=agent_id,
                status=TS.RUNNING,
                seq=seq,
                data=data,
            ),
            replay=run.replay,
        )

    async def _record_fallback(self, state: RunState, run: OpenRun, change: Fallback) -> None:
        """The run goes on with another model: its `model_fallback` event, and the model in
        its row, in one commit."""
        async with self._lane.connect() as conn:
            journal = Journal(conn, self._bus)
            await conn.execute(
                update(TaskRun).where(TaskRun.id == run.id).values(model=change.to_model)
            )
            await journal.record(
                event_of(
                    state,
                    EventType.MODEL_FALLBACK,
                    task_id=run.task_id,
                    agent_id=run.agent_id,
                    status=TS.RUNNING,
                    data=change.data(),
                ),
                f"Task {run.task_id}: model {change.from_model} is not served, "
                f"going on with {change.to_model}",
            )
            await journal.commit()

    async def _store(
        self, state: RunState, run: OpenRun, answer: Answer, elapsed: float
    ) -> StepResult:
        spec = state.tasks[run.task_id]
        model = answer.model or run.model
        output = answer.text if answer.data is None else answer.data
        event = event_of(
            state,
            EventType.TASK_COMPLETED,
            task_id=run.task_id,
            agent_id=run.agent_id,
            status=TS.COMPLETED,
            data={
                "output": output,
                "tokens_used": answer.tokens_used,
                "execution_time": round(elapsed, 6),
                "attempt": run.attempt,
                "model": model,
            },
        )
        message = (
            f"Task {run.task_id} ({spec.name}) completed in {elapsed:.3f}s, "
            f"{answer.tokens_used} tokens"
        )
        values = {
            "output": as_text(output),
            "output_json": answer.data,
            "tokens_used": answer.tokens_used,
            "execution_time": elapsed,
            "model": model,
        }
        if not await self._close_run(run, Intent.COMPLETE, event, message, values):
            return await self._run_closed(state, run)
        state.outputs[run.task_id] = output
        return StepResult(run.task_id)

    async def _await_input(
        self, state: RunState, run: OpenRun, answer: Answer, elapsed: float
    ) -> StepResult:
        """The answer is a draft: stored, and the schedule stops until a person answers."""
        output = answer.text if answer.data is None else answer.data
        parked = await self._reviews.park(
            state,
            run_id=run.id,
            task_id=run.task_id,
            agent_id=run.agent_id,
            attempt=run.attempt,
            draft=as_text(output),
            data=answer.data,
            model=answer.model or run.model,
            tokens_used=answer.tokens_used,
            elapsed=elapsed,
        )
        if not parked:
            return await self._run_closed(state, run)
        return StepResult(run.task_id, stopped=True)

    async def _fail(
        self, state: RunState, run: OpenRun, error: str, elapsed: float, tokens_used: int = 0
    ) -> StepResult:
        spec = state.tasks.get(run.task_id)
        name = spec.name if spec else "?"
        event = event_of(
            state,
            EventType.TASK_FAILED,
            task_id=run.task_id,
            agent_id=run.agent_id,
            status=TS.FAILED,
            data={"error": error, "attempt": run.attempt, "model": run.model},
        )
        values: dict[str, Any] = {"error": error, "execution_time": elapsed}
        if tokens_used:
            values["tokens_used"] = tokens_used
        message = f"Task {run.task_id} ({name}) failed: {error}"
        if not await self._close_run(run, Intent.FAIL, event, message, values):
            return await self._run_closed(state, run)
        return StepResult(run.task_id, error=f"Task {run.task_id} ({name}) failed: {error}")

    async def _close_run(
        self, run: OpenRun, intent: Intent, event: Event, message: str, values: dict[str, Any]
    ) -> bool:
        """Move the open run by `intent` and record its event, in one commit; False (nothing
        written) when the run was closed meanwhile. In one commit with the other opens and
        closes of the moment (`engine/group.py`)."""

        async def close_run(journal: Journal) -> bool:
            if not await move(journal.session, Kind.TASK_RUN, run.id, intent, **values):
                return False  # nothing written
            await journal.record(event, message, add_tokens=int(values.get("tokens_used", 0)))
            return True

        assert event.execution_id is not None
        return await _committed(self._commits.run(close_run, execution_id=event.execution_id))

    async def _run_closed(self, state: RunState, run: OpenRun) -> StepResult:
        """The open run was closed by someone else while the model answered: a cancel (the
        execution stops), or its task was deleted (the run's row went with it)."""
        async with self._lane.connect() as conn:
            still_there = await conn.scalar(select(TaskRun.id).where(TaskRun.id == run.id))
        if still_there is None:
            return await self._task_gone(state, run.task_id)
        return StepResult(run.task_id, stopped=True)

    async def _task_gone(self, state: RunState, task_id: int) -> StepResult:
        """The task was deleted during the run: the step fails saying so, in its own commit."""
        async with self._lane.connect() as conn:
            journal = Journal(conn, self._bus, owner=self._owner)
            recorded = await journal.record_if_running(
                event_of(
                    state,
                    EventType.TASK_FAILED,
                    task_id=task_id,
                    status=TS.FAILED,
                    data={"error": TASK_GONE},
                ),
                f"Task {task_id} failed: {TASK_GONE}",
            )
            await journal.commit()
        if recorded is None:
            return StepResult(task_id, stopped=True)
        return StepResult(task_id, error=f"Task {task_id} failed: {TASK_GONE}")
