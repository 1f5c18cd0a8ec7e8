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

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crew_platform.db import utcnow
from crew_platform.engine.beginning import Began, Beginnings
from crew_platform.engine.control import cancel_runs_by_request
from crew_platform.engine.journal import Journal
from crew_platform.engine.lane import StoreLane
from crew_platform.engine.lease import LeaseLost, release
from crew_platform.engine.loading import (
    RunState,
)
from crew_platform.engine.rules import Intent
from crew_platform.engine.scheduler import Control, Outcome, run_graph
from crew_platform.engine.states import ExecutionStatus as ES
from crew_platform.engine.states import TaskRunStatus as TS
from crew_platform.engine.step import Step, event_of
from crew_platform.engine.tool_loop import ToolLoop
from crew_platform.events.bus import EventBus
from crew_platform.events.types import EventType
from crew_platform.llm.errors import LLMNotConfigured
from crew_platform.llm.gateway import LLMGateway
from crew_platform.models import Task, TaskRun
from crew_platform.tools.base import Toolbox

log = logging.getLogger(__name__)


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
        self._beginnings = Beginnings(
            self._lane,
            bus,
            owner=owner,
            default_model=lambda: gateway.default_model,
            cannot_start=self._cannot_start,
        )

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
        """Take the execution over (with the runners that begin at the same time, see
        `engine/beginning.py`); None when there is nothing to run here, or the run could not
        start and was failed."""
        asked = self._beginnings.ask(execution_id, control)
        try:
            began = await asyncio.shield(asked)
        except asyncio.CancelledError:
            await self._stopped_while_beginning(asked, control)
            raise
        if began is None:
            return None
        if began.unrunnable:
            await self._end(began.state, control, Outcome.FAILED, began.unrunnable)
            return None
        return began.state

    async def _stopped_while_beginning(
        self, asked: asyncio.Future[Began | None], control: Control
    ) -> None:
        """The runner was stopped while its begin was on its way: the batch may still commit
        it. After a user's cancel the lease is then let go, as after any cancel; a shutdown
        leaves the execution as a stopped process would (the next start takes it over)."""
        try:
            began = await asked
        except Exception:
            return
        if began is not None and control.cancel_requested:
            await asyncio.shield(self._abandon_runs(began.state, control))

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
