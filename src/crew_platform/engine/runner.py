"""Runs one execution: begin (or resume), schedule its steps, finish.

The runner never holds a database connection while a model answers. Every status it writes goes
through the state rules (`engine/rules.py`), so a cancel or pause that lands while a call is in
flight wins cleanly; control requests are honoured at task boundaries.

A runner holds the execution's lease for its process from its begin to its end (`engine/lease.py`)
and writes nothing once another process has taken it over.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crew_platform.db import utcnow
from crew_platform.engine.control import cancel_open_runs, cancel_runs_by_request
from crew_platform.engine.journal import EXECUTIONS, Journal
from crew_platform.engine.lane import StoreLane
from crew_platform.engine.lease import LeaseLost, release
from crew_platform.engine.loading import (
    HEAD_COLUMNS,
    WORKFLOWS,
    ExecutionHead,
    RunState,
    load_state,
)
from crew_platform.engine.manager import HIERARCHICAL, load_crew
from crew_platform.engine.rules import Intent, Kind, move
from crew_platform.engine.scheduler import Control, Outcome, run_graph
from crew_platform.engine.states import ExecutionStatus as ES
from crew_platform.engine.states import TaskRunStatus as TS
from crew_platform.engine.states import WorkflowStatus
from crew_platform.engine.step import Step, event_of
from crew_platform.engine.tool_calls import INTERRUPTED
from crew_platform.engine.tool_loop import ToolLoop
from crew_platform.events.bus import EventBus
from crew_platform.events.types import EventType
from crew_platform.llm.errors import LLMNotConfigured
from crew_platform.llm.gateway import LLMGateway
from crew_platform.models import Task, TaskRun
from crew_platform.tools.base import Toolbox

log = logging.getLogger(__name__)

_BEGIN = (
    select(*HEAD_COLUMNS)
    .join_from(EXECUTIONS, WORKFLOWS, WORKFLOWS.c.id == EXECUTIONS.c.workflow_id)
    .where(EXECUTIONS.c.id == bindparam("b_execution"))
    # FOR SHARE of the workflow: serialises with a pause (an UPDATE of that row) but not with
    # the other runners of the workflow or with inserts that reference it.
    .with_for_update(read=True, of=WORKFLOWS)
)
"""The execution and its workflow, read when a runner begins (built once, bound per run)."""


class ExecutionRunner:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        bus: EventBus,
        gateway: LLMGateway,
        toolbox: Toolbox | None = None,
        *,
        owner: str,
        tool_timeout: float = 30.0,
    ) -> None:
        """`owner`: the id of this process, which holds the leases of what it runs."""
        self._lane = StoreLane(sessionmaker)
        self._bus = bus
        self._gateway = gateway
        self.owner = owner
        loop = ToolLoop(gateway, toolbox, timeout=tool_timeout)
        self._step = Step(self._lane, bus, loop, owner=owner)

    @property
    def bus(self) -> EventBus:
        return self._bus

    async def run(self, execution_id: int, control: Control) -> None:
        state = await self._begin(execution_id, control)
        if state is None:
            return
        try:
            schedule = await run_graph(
                state.graph(),
                done=set(state.outputs),
                max_parallel=1 if state.chain else state.max_parallel,
                step=lambda task_id: self._step.run(state, task_id),
                control=control,
            )
            if schedule.outcome is Outcome.FAILED:
                await self._skip(state, schedule.not_run)
            await self._end(state, control, schedule.outcome, schedule.failure)
        except LeaseLost:
            self._lost(execution_id)
        except asyncio.CancelledError:
            if control.cancel_requested:
                await asyncio.shield(self._abandon_runs(state, control))
            raise
        except Exception as exc:
            log.exception("execution %s crashed", execution_id)
            failure = f"INTERNAL_ERROR: {_first_line(exc)} (details in the server log)"
            await self._end(state, control, Outcome.FAILED, failure)

    async def _begin(self, execution_id: int, control: Control) -> RunState | None:
        """Take the execution over, and its lease with it: a first start moves it to running; a
        resume (after a pause or a retry) does too and closes runs an earlier runner left open;
        a running one was interrupted by a stopped process and goes on from its last stored
        answer. None (nothing written) when another live process holds it."""
        async with self._lane.connect() as conn:
            journal = Journal(conn, self._bus, owner=self.owner)
            found = (await conn.execute(_BEGIN, {"b_execution": execution_id})).first()
            if found is None:
                return None
            execution = ExecutionHead(*found)
            if execution.status not in (ES.PENDING, ES.RUNNING):
                return None
            if execution.workflow_status == WorkflowStatus.PAUSED:
                if execution.status == ES.RUNNING:
                    await move(conn, Kind.EXECUTION, execution_id, Intent.PAUSE)
                await conn.commit()
                return None
            interrupted = execution.status == ES.RUNNING
            first_start = execution.last_seq == 0
            control.begun_at_seq = execution.last_seq
            state = await load_state(conn, execution, with_runs=not first_start)
            if execution.workflow_type == HIERARCHICAL:
                state.crew = await load_crew(
                    conn,
                    workflow_id=execution.workflow_id,
                    config=execution.workflow_config,
                    default_model=self._gateway.default_model,
                )
            if first_start:
                started = await journal.record_move(
                    event_of(state, EventType.WORKFLOW_STARTED, status=ES.RUNNING),
                    f"Execution {execution_id} of workflow {execution.workflow_id} started",
                    Intent.START,
                )
                if started is None:
                    await conn.commit()
                    return None
            else:
                intent = Intent.TAKE_OVER if interrupted else Intent.START
                if not await move(conn, Kind.EXECUTION, execution_id, intent, owner=self.owner):
                    await conn.commit()
                    return None
                await cancel_open_runs(
                    journal,
                    execution_id=execution_id,
                    workflow_id=execution.workflow_id,
                    error=INTERRUPTED,
                    message="Task {task_id} run {run_id} was interrupted and will run again",
                    reason="interrupted",
                )
                if interrupted:
                    await journal.record(
                        event_of(
                            state,
                            EventType.WORKFLOW_RESUMED,
                            status=ES.RUNNING,
                            data={"reason": "recovered after restart"},
                        ),
                        f"Execution {execution_id} resumed after a restart, by process "
                        f"{self.owner}",
                    )
            unrunnable = self._cannot_start(state)
            await journal.commit()
        control.leased = True
        if unrunnable:
            await self._end(state, control, Outcome.FAILED, unrunnable)
            return None
        return state

    def _cannot_start(self, state: RunState) -> str | None:
        """Why the run cannot start: a model whose provider has no key, or a hierarchical
        run's manager agent deleted since it was accepted."""
        if state.crew is not None and state.crew.problem:
            return state.crew.problem
        agents = [state.agent_of(p.task_id) for p in state.plan if p.task_id not in state.outputs]
        if state.crew is not None and any(agents):
            agents += state.crew.coworkers
        for agent in agents:
            if agent is None:
                continue
            try:
                self._gateway.check_configured(agent.model)
            except LLMNotConfigured as exc:
                return f"{exc.code}: {exc.message}"
        return None

    async def _skip(self, state: RunState, task_ids: list[int]) -> None:
        """Record the tasks a failure kept from starting as skipped (one commit); tasks deleted
        meanwhile have nothing to skip."""
        todo = [t for t in task_ids if t not in state.outputs and t in state.tasks]
        for _ in range(2):  # once more if a task is deleted between the check and the insert
            async with self._lane.session() as session:
                existing = set(await session.scalars(select(Task.id).where(Task.id.in_(todo))))
                journal = Journal(session, self._bus, owner=self.owner)
                for task_id in (t for t in todo if t in existing):
                    session.add(
                        TaskRun(
                            execution_id=state.execution_id,
                            task_id=task_id,
                            status=TS.SKIPPED,
                            attempt=state.attempts.get(task_id, 0) + 1,
                            error="Skipped: an earlier task failed",
                            completed_at=utcnow(),
                        )
                    )
                    await journal.record(
                        event_of(state, EventType.TASK_SKIPPED, task_id=task_id, status=TS.SKIPPED),
                        f"Task {task_id} skipped because an earlier task failed",
                    )
                try:
                    await journal.commit()
                except IntegrityError:
                    await journal.rollback()
                    continue
            for task_id in existing:
                state.attempts[task_id] = state.attempts.get(task_id, 0) + 1
            return

    async def _end(
        self, state: RunState, control: Control, outcome: Outcome, failure: str | None
    ) -> None:
        """Finish the execution, letting its lease go in the same write; when it is no longer
        running (paused, cancelled) or no longer ours, only let the lease go."""
        if outcome is Outcome.STOPPED or not await self._finish(state, outcome, failure):
            await self._let_go(state, control)

    async def _finish(self, state: RunState, outcome: Outcome, failure: str | None) -> bool:
        output = state.output()
        async with self._lane.connect() as conn:
            journal = Journal(conn, self._bus, owner=self.owner)
            if outcome is Outcome.COMPLETED:
                recorded = await journal.record_move(
                    event_of(
                        state,
                        EventType.WORKFLOW_COMPLETED,
                        status=ES.COMPLETED,
                        data={"output": output["result"]},
                    ),
                    f"Execution {state.execution_id} completed",
                    Intent.COMPLETE,
                    output_data=output,
                    error_message=None,
                    lease_owner=None,
                )
            else:
                error = failure or "failed"
                recorded = await journal.record_move(
                    event_of(
                        state, EventType.WORKFLOW_FAILED, status=ES.FAILED, data={"error": error}
                    ),
                    f"Execution {state.execution_id} failed: {error}",
                    Intent.FAIL,
                    output_data=output,
                    error_message=error,
                    lease_owner=None,
                )
            await journal.commit()
        return recorded is not None

    async def _let_go(self, state: RunState, control: Control) -> None:
        async with self._lane.connect() as conn:
            status = await release(conn, state.execution_id, self.owner)
            await conn.commit()
        self._after_release(state.execution_id, status, control)

    def _after_release(self, execution_id: int, status: str | None, control: Control) -> None:
        if status is None:
            self._lost(execution_id)
        elif status == ES.PENDING:
            control.run_again = True

    def _lost(self, execution_id: int) -> None:
        log.warning(
            "process %s lost the lease of execution %s (another process took it over, or the "
            "execution was deleted): it stops running it here",
            self.owner,
            execution_id,
        )

    async def _abandon_runs(self, state: RunState, control: Control) -> None:
        """After a user cancel: whatever was still running is cancelled, not left dangling,
        and the lease is let go."""
        async with self._lane.session() as session:
            journal = Journal(session, self._bus)
            await cancel_runs_by_request(
                journal, execution_id=state.execution_id, workflow_id=state.workflow_id
            )
            status = await release(session, state.execution_id, self.owner)
            await journal.commit()
        self._after_release(state.execution_id, status, control)


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """A crash as clients may see it: type and first line, never SQL or its parameters."""
    orig = getattr(exc, "orig", None)  # a DBAPI error wrapped by SQLAlchemy
    text = str(orig if orig is not None else exc).strip().splitlines()
    line = f"{type(orig if orig is not None else exc).__name__}: {text[0] if text else ''}"
    return line if len(line) <= limit else line[:limit] + "…"
