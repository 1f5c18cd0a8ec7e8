"""Runners begin together: one transaction takes over every execution that asks at once.

A burst of accepted runs starts as many runners as there are runs, each of which used to begin
in a transaction of its own (read the execution and its workflow, load the tasks, move it to
`running` and take its lease, log `workflow_started`, commit): hundreds of short transactions
queued at the store ahead of the first model calls. Now runners that ask to begin in the same
turn of the event loop, or while a begin is committing, share the next commit (a group commit,
as `tool_calls.py` does for tool results): one read of their executions, one read of their
tasks and agents, one UPDATE moving every first start, one INSERT of the log rows, one commit.

Nothing else changes: each execution goes through the same rules as alone (the batch is the
same code with one execution or many), a begin is committed before its runner goes on, and a
batch that fails for any reason is rolled back and its executions begin again one by one, so
one execution's failure is its own and never another's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import bindparam, select

from crew_platform.engine.control import cancel_open_runs
from crew_platform.engine.journal import EXECUTIONS, Journal
from crew_platform.engine.lane import StoreLane
from crew_platform.engine.loading import (
    HEAD_COLUMNS,
    WORKFLOWS,
    ExecutionHead,
    RunState,
    load_states,
)
from crew_platform.engine.manager import HIERARCHICAL, load_crew
from crew_platform.engine.rules import Intent, Kind, move
from crew_platform.engine.scheduler import Control
from crew_platform.engine.states import ExecutionStatus as ES
from crew_platform.engine.states import WorkflowStatus
from crew_platform.engine.step import event_of
from crew_platform.engine.tool_calls import INTERRUPTED
from crew_platform.events.bus import EventBus
from crew_platform.events.types import EventType

log = logging.getLogger(__name__)

MAX_BATCH = 100
"""Most executions one begin takes over (bounds the statements' IN lists)."""

_HEADS = (
    select(*HEAD_COLUMNS)
    .join_from(EXECUTIONS, WORKFLOWS, WORKFLOWS.c.id == EXECUTIONS.c.workflow_id)
    .where(EXECUTIONS.c.id.in_(bindparam("b_executions", expanding=True)))
    # FOR SHARE of the workflows: serialises with a pause (an UPDATE of that row) but not with
    # the other runners of the workflow or with inserts that reference it.
    .with_for_update(read=True, of=WORKFLOWS)
)
"""The executions and their workflows, read when runners begin (built once)."""


@dataclass
class Began:
    """A committed begin: the runner holds the lease and goes on with `state`, unless
    `unrunnable` says why the run cannot start (the runner then fails it)."""

    state: RunState
    unrunnable: str | None


@dataclass
class _Ask:
    execution_id: int
    control: Control
    answer: asyncio.Future[Began | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Beginnings:
    def __init__(
        self,
        lane: StoreLane,
        bus: EventBus,
        *,
        owner: str,
        default_model: Callable[[], str],
        cannot_start: Callable[[RunState], str | None],
    ) -> None:
        self._lane = lane
        self._bus = bus
        self._owner = owner
        self._default_model = default_model
        self._cannot_start = cannot_start
        self._asked: list[_Ask] = []
        self._batching: asyncio.Task[None] | None = None

    def ask(self, execution_id: int, control: Control) -> asyncio.Future[Began | None]:
        """Begin the execution in the next batch. The future's result: the begin committed
        (`Began`), or None when there is nothing to run (no longer pending or running, its
        workflow paused, another live process holds it), nothing written for it then but a
        pause. It fails with the error of the execution's own begin."""
        ask = _Ask(execution_id, control)
        self._asked.append(ask)
        if self._batching is None:
            self._batching = asyncio.create_task(self._drain(), name="runner-begins")
        return ask.answer

    async def _drain(self) -> None:
        try:
            while self._asked:
                batch: list[_Ask] = []
                later: list[_Ask] = []
                seen: set[int] = set()
                for ask in self._asked:
                    if ask.control.shutting_down:
                        _answer(ask, None)  # its runner was stopped before it began
                    elif ask.execution_id in seen or len(batch) >= MAX_BATCH:
                        later.append(ask)
                    else:
                        seen.add(ask.execution_id)
                        batch.append(ask)
                self._asked = later
                if batch:
                    await self._begin_batch(batch)
        finally:
            self._batching = None
            for ask in self._asked:  # only if this task was cancelled (the loop is closing)
                ask.answer.cancel()
            self._asked = []

    async def _begin_batch(self, batch: list[_Ask]) -> None:
        try:
            answers = await self._begin(batch)
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch[0], exc)
                return
            log.warning(
                "%d executions began together and failed (%s: %s): each begins on its own",
                len(batch),
                type(exc).__name__,
                exc,
            )
            for ask in batch:
                await self._begin_batch([ask])
            return
        for ask in batch:
            _answer(ask, answers.get(ask.execution_id))

    async def _begin(self, batch: list[_Ask]) -> dict[int, Began | None]:
        """Take the executions over, and their leases with them, in one transaction: a first
        start moves to running; a resume (after a pause or a retry) does too and closes runs
        an earlier runner left open; a running one was interrupted by a stopped process and
        goes on from its last stored answer."""
        began: dict[int, Began | None] = {}
        async with self._lane.connect() as conn:
            journal = Journal(conn, self._bus, owner=self._owner)
            rows = await conn.execute(_HEADS, {"b_executions": [a.execution_id for a in batch]})
            heads = {row.id: ExecutionHead(*row) for row in rows}
            to_load: list[tuple[_Ask, ExecutionHead]] = []
            for ask in batch:
                head = heads.get(ask.execution_id)
                if head is None or head.status not in (ES.PENDING, ES.RUNNING):
                    continue
                if head.workflow_status == WorkflowStatus.PAUSED:
                    if head.status == ES.RUNNING:
                        await move(conn, Kind.EXECUTION, head.id, Intent.PAUSE)
                    continue
                to_load.append((ask, head))
            states = await load_states(conn, [(h, h.last_seq != 0) for _, h in to_load])
            first_starts: list[RunState] = []
            for (ask, head), state in zip(to_load, states, strict=True):
                ask.control.begun_at_seq = head.last_seq
                if head.workflow_type == HIERARCHICAL:
                    state.crew = await load_crew(
                        conn,
                        workflow_id=head.workflow_id,
                        config=head.workflow_config,
                        default_model=self._default_model(),
                    )
                if head.last_seq == 0:
                    first_starts.append(state)
                elif await self._resume(journal, head, state):
                    began[head.id] = Began(state, self._cannot_start(state))
            started = await journal.record_moves(
                [
                    (
                        event_of(state, EventType.WORKFLOW_STARTED, status=ES.RUNNING),
                        f"Execution {state.execution_id} of workflow {state.workflow_id} started",
                    )
                    for state in first_starts
                ],
                Intent.START,
            )
            moved = {event.execution_id for event in started}
            for state in first_starts:
                if state.execution_id in moved:
                    began[state.execution_id] = Began(state, self._cannot_start(state))
            await journal.commit()
        for ask in batch:
            if began.get(ask.execution_id) is not None:
                ask.control.leased = True
        return began

    async def _resume(self, journal: Journal, head: ExecutionHead, state: RunState) -> bool:
        """An execution that ran before (resumed, retried, or interrupted by a stopped
        process) is taken over and its runs left open are closed; False if the rules refuse."""
        interrupted = head.status == ES.RUNNING
        intent = Intent.TAKE_OVER if interrupted else Intent.START
        if not await move(journal.session, Kind.EXECUTION, head.id, intent, owner=self._owner):
            return False
        await cancel_open_runs(
            journal,
            execution_id=head.id,
            workflow_id=head.workflow_id,
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
                f"Execution {head.id} resumed after a restart, by process {self._owner}",
            )
        return True


def _answer(ask: _Ask, began: Began | None) -> None:
    if not ask.answer.done():
        ask.answer.set_result(began)


def _fail(ask: _Ask, exc: BaseException) -> None:
    if not ask.answer.done():
        ask.answer.set_exception(exc)
