"""Tool calls in the store: recorded before they run and when they return, replayed on resume.

A call is a `tool_calls` row of its task run plus a journalled event: first `running` with
`tool_call_started` (the calls of one answer in one commit), then `completed` or `failed` with
its result, in one commit with the results of the calls that returned with it. When a step
is interrupted (the process died), the next attempt of the task copies the calls that had a
result into its own run (they are never run again) and runs again those left `running`.

A coworker's calls inside a delegation of a hierarchical run are rows of the manager's task run
marked with their delegation call (`delegation_iteration`, `delegation_position`): carried over
the same way, and given back to that delegation when it runs again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Table, bindparam, insert, select, update

from crew_platform.db import utcnow
from crew_platform.engine.journal import Journal
from crew_platform.engine.lane import StoreLane
from crew_platform.engine.rules import Writer
from crew_platform.engine.states import TaskRunStatus as TS
from crew_platform.engine.tool_loop import CallRecord
from crew_platform.events.bus import EventBus
from crew_platform.events.types import Event, EventType
from crew_platform.models import TaskRun, ToolCall

INTERRUPTED = "Interrupted: the server stopped during this run"
"""The error of a task run closed because its process stopped; its next attempt replays it."""
EVENT_TEXT_LIMIT = 2000
"""Results and errors are cut to this many characters in events and the log."""

RUNNING, COMPLETED, FAILED, CANCELLED = "running", "completed", "failed", "cancelled"

_TOOL_CALLS: Table = ToolCall.__table__  # type: ignore[assignment]
_INSERT_CALLS = insert(_TOOL_CALLS)
_FINISH_CALL = (
    update(_TOOL_CALLS)
    .where(
        _TOOL_CALLS.c.task_run_id == bindparam("b_run"),
        _TOOL_CALLS.c.iteration == bindparam("b_iteration"),
        _TOOL_CALLS.c.position == bindparam("b_position"),
        _TOOL_CALLS.c.delegation_iteration == bindparam("b_d_iteration"),
        _TOOL_CALLS.c.delegation_position == bindparam("b_d_position"),
    )
    .values(
        status=bindparam("b_status"),
        result=bindparam("b_result"),
        error=bindparam("b_error"),
        completed_at=bindparam("b_completed_at"),
    )
)
"""Built once, run once per returned call (executemany for calls that return together)."""


def cut(text: str, limit: int = EVENT_TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def started_event(call: CallRecord, task_id: int, event: Callable[..., Event]) -> tuple[Event, str]:
    """The `tool_call_started` event of `call` and its log message."""
    data = {"tool": call.tool, "arguments": call.arguments, "call_id": call.call_id}
    return (
        event(EventType.TOOL_CALL_STARTED, data=data),
        f"Task {task_id} calls tool {call.tool} ({call.call_id})",
    )


def finished_event(call: CallRecord, event: Callable[..., Event]) -> tuple[Event, str]:
    """The `tool_call_completed` or `tool_call_failed` event of a returned call, and its log
    message."""
    result = call.result or ""
    if call.failed:
        kind, data = EventType.TOOL_CALL_FAILED, {"error": cut(result)}
        message = f"Tool {call.tool} ({call.call_id}) failed: {cut(result, 300)}"
    else:
        kind, data = EventType.TOOL_CALL_COMPLETED, {"result": cut(result)}
        message = f"Tool {call.tool} ({call.call_id}) returned {len(result)} characters"
    return event(kind, data={"tool": call.tool, "call_id": call.call_id} | data), message


class StoredCallLog:
    """Records the calls of one task run (the engine's `CallLog`)."""

    def __init__(
        self,
        lane: StoreLane,
        bus: EventBus,
        *,
        execution_id: int,
        task_run_id: int,
        task_id: int,
        owner: str,
        event: Callable[..., Event],
        delegation: CallRecord | None = None,
    ) -> None:
        """`event(kind, data=...)` makes an event of this task run; `owner` is the process
        that must hold the execution's lease for anything to be recorded. `delegation`: the
        manager's delegation call whose coworker makes these calls (None: the run's own)."""
        self._lane = lane
        self._bus = bus
        self._execution_id = execution_id
        self._run_id = task_run_id
        self._task_id = task_id
        self._owner = owner
        self._event = event
        self._delegation: dict[str, Any] = (
            {"delegation_iteration": 0, "delegation_position": 0, "delegation_call_id": None}
            if delegation is None
            else {
                "delegation_iteration": delegation.iteration,
                "delegation_position": delegation.position,
                "delegation_call_id": delegation.call_id,
            }
        )
        self._returned: list[CallRecord] = []
        """Calls that returned and wait for their commit."""
        self._writing = asyncio.Lock()

    async def started(self, calls: Sequence[CallRecord]) -> None:
        async with self._lane.connect() as conn:
            journal = Journal(conn, self._bus, owner=self._owner)
            now = utcnow()
            await conn.execute(
                _INSERT_CALLS,
                [
                    {
                        "execution_id": self._execution_id,
                        "task_run_id": self._run_id,
                        "task_id": self._task_id,
                        "iteration": c.iteration,
                        "position": c.position,
                        "call_id": c.call_id,
                        "tool": c.tool,
                        "arguments": c.arguments,
                        "assistant_content": c.assistant_content,
                        "status": RUNNING,
                        "started_at": now,
                    }
                    | self._delegation
                    for c in calls
                ],
            )
            await journal.record_all([started_event(c, self._task_id, self._event) for c in calls])
            await journal.commit()

    async def finished(self, call: CallRecord) -> None:
        """Store the call's result; returns once it is committed. Group commit: the calls that
        return while another's result is being written, or in the same turn of the event loop
        (the calls of one answer often do), share the next commit."""
        self._returned.append(call)
        await asyncio.sleep(0)  # the calls returning in this same turn join this commit
        async with self._writing:
            if not any(c is call for c in self._returned):
                return  # committed with a call that returned with it
            batch, self._returned = self._returned, []
            await self._write(batch)

    async def _write(self, batch: Sequence[CallRecord]) -> None:
        now = utcnow()
        async with self._lane.connect() as conn:
            journal = Journal(conn, self._bus, owner=self._owner)
            await conn.execute(
                _FINISH_CALL,
                [
                    {
                        "b_run": self._run_id,
                        "b_iteration": c.iteration,
                        "b_position": c.position,
                        "b_status": FAILED if c.failed else COMPLETED,
                        "b_result": c.result or "",
                        "b_error": (c.result or "") if c.failed else None,
                        "b_completed_at": now,
                        "b_d_iteration": self._delegation["delegation_iteration"],
                        "b_d_position": self._delegation["delegation_position"],
                    }
                    for c in batch
                ],
            )
            await journal.record_all([finished_event(c, self._event) for c in batch])
            await journal.commit()


def interrupted_before(execution_id: int, task_id: int, attempt: int) -> tuple[Any, ...]:
    """Conditions on `TaskRun` for the attempt before `attempt`, when a stop interrupted it
    (what a resume carries over; a retry after a failure starts afresh)."""
    return (
        TaskRun.execution_id == execution_id,
        TaskRun.task_id == task_id,
        TaskRun.attempt == attempt - 1,
        TaskRun.status == TS.CANCELLED.value,
        TaskRun.error == INTERRUPTED,
    )


async def carry_over(
    writer: Writer, *, execution_id: int, task_id: int, attempt: int, task_run_id: int
) -> list[CallRecord]:
    """The calls the interrupted attempt before `attempt` recorded, in order (the step's own
    first, then its coworkers' by delegation, see `own_calls`); those with a
    result are copied into run `task_run_id` (in the caller's transaction), those without are
    returned unfinished, to run again. Nothing when the previous attempt was not interrupted
    (a retry after a failure starts afresh)."""
    previous = await writer.scalar(
        select(TaskRun.id).where(*interrupted_before(execution_id, task_id, attempt))
    )
    if previous is None:
        return []
    table = _TOOL_CALLS
    rows = (
        await writer.execute(
            select(table)
            .where(table.c.task_run_id == previous)
            .order_by(
                table.c.delegation_iteration,
                table.c.delegation_position,
                table.c.iteration,
                table.c.position,
            )
        )
    ).mappings()
    records: list[CallRecord] = []
    copies: list[dict[str, Any]] = []
    for row in rows:
        finished = row["status"] in (COMPLETED, FAILED) and row["result"] is not None
        records.append(
            CallRecord(
                iteration=row["iteration"],
                position=row["position"],
                call_id=row["call_id"],
                tool=row["tool"],
                arguments=row["arguments"],
                assistant_content=row["assistant_content"],
                result=row["result"] if finished else None,
                failed=row["status"] == FAILED,
                delegation=(
                    (row["delegation_iteration"], row["delegation_position"])
                    if row["delegation_iteration"]
                    else None
                ),
            )
        )
        if finished:
            copies.append(
                {k: v for k, v in row.items() if k != "id"} | {"task_run_id": task_run_id}
            )
    if copies:
        await writer.execute(_INSERT_CALLS, copies)
    return records


def own_calls(records: Sequence[CallRecord]) -> list[CallRecord]:
    """The step's own calls among carried-over `records` (not a coworker's)."""
    return [c for c in records if c.delegation is None]


async def cancel_running_calls(writer: Writer, execution_id: int) -> None:
    """A user's cancel: calls still marked running were aborted with their run."""
    await writer.execute(
        update(ToolCall)
        .where(ToolCall.execution_id == execution_id, ToolCall.status == RUNNING)
        .values(status=CANCELLED, error="Cancelled by request", completed_at=utcnow())
    )
