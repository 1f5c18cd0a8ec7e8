"""Writes an execution's events to its log inside the caller's transaction, publishes after commit.

Every persisted event gets the next per-execution `seq` (an atomic UPDATE ... RETURNING), so the
SSE stream can replay from any point and nothing a client was told is missing from the log.

Publishing is best effort: the log is already committed when an event goes out, so a bus that is
down or stalls (Redis gone) costs live delivery only, never the run or the request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, insert, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from crew_platform.engine.states import ExecutionStatus, sources_of
from crew_platform.events.bus import EventBus
from crew_platform.events.types import Event, EventType
from crew_platform.models import Execution, ExecutionLog

Writer = AsyncSession | AsyncConnection
"""Where the engine writes: a session, or a bare connection on the hot path (no ORM work)."""

EXECUTIONS: Table = Execution.__table__  # type: ignore[assignment]
LOGS: Table = ExecutionLog.__table__  # type: ignore[assignment]

_LEVELS = {
    EventType.WORKFLOW_FAILED: "error",
    EventType.TASK_FAILED: "error",
    EventType.WORKFLOW_CANCELLED: "warning",
    EventType.TASK_CANCELLED: "warning",
    EventType.TASK_SKIPPED: "warning",
}
_LOGGED_DATA_KEYS = ("output", "error", "tokens_used", "execution_time", "attempt", "reason")
PUBLISH_TIMEOUT = 5.0

log = logging.getLogger(__name__)


async def publish(bus: EventBus, event: Event) -> bool:
    """Publish `event`; a failing or stalled bus is logged, not raised."""
    try:
        async with asyncio.timeout(PUBLISH_TIMEOUT):
            await bus.publish(event)
        return True
    except Exception as exc:
        log.warning(
            "event %s of execution %s not published: %s: %s",
            event.type.value,
            event.execution_id,
            type(exc).__name__,
            exc,
        )
        return False


class Journal:
    def __init__(self, session: Writer, bus: EventBus) -> None:
        self.session = session
        self._bus = bus
        self._outbox: list[Event] = []
        self._rows: list[dict[str, Any]] = []

    async def record(
        self, event: Event, message: str, *, execution_values: dict[str, Any] | None = None
    ) -> Event:
        """Number the event and queue its log row; `execution_values` ride along on the same
        UPDATE of the execution (one round trip instead of two)."""
        recorded = await self._record(event, message, execution_values)
        if recorded is None:
            raise LookupError(f"execution {event.execution_id} is gone")
        return recorded

    async def record_if_running(self, event: Event, message: str) -> Event | None:
        """Record `event` only while the execution is `running` (None otherwise).

        The task boundary: numbering the event and checking the status are one UPDATE, whose
        row lock also serialises with a pause or cancel racing it.
        """
        return await self._record(event, message, None, only_from=(ExecutionStatus.RUNNING,))

    async def record_move(
        self, event: Event, message: str, target: ExecutionStatus, **values: Any
    ) -> Event | None:
        """Move the execution to `target` (compare-and-set, as the state machine allows) and
        record `event` in the same UPDATE; None, and nothing written, if the move is refused."""
        return await self._record(
            event, message, {"status": target.value, **values}, only_from=sources_of(target)
        )

    async def _record(
        self,
        event: Event,
        message: str,
        execution_values: dict[str, Any] | None,
        *,
        only_from: Sequence[str] | None = None,
    ) -> Event | None:
        assert event.execution_id is not None
        numbering = update(EXECUTIONS).where(EXECUTIONS.c.id == event.execution_id)
        if only_from is not None:
            numbering = numbering.where(EXECUTIONS.c.status.in_(only_from))
        seq = await self.session.scalar(
            numbering.values(
                last_seq=EXECUTIONS.c.last_seq + 1, **(execution_values or {})
            ).returning(EXECUTIONS.c.last_seq)
        )
        if seq is None:
            return None
        event.seq = seq
        data: dict[str, Any] = {k: event.data[k] for k in _LOGGED_DATA_KEYS if k in event.data}
        data |= {"status": event.status, "agent_id": event.agent_id}
        self._rows.append(
            {
                "execution_id": event.execution_id,
                "seq": seq,
                "timestamp": event.timestamp,
                "level": _LEVELS.get(event.type, "info"),
                "event": event.type.value,
                "message": message,
                "task_id": event.task_id,
                "data": data,
            }
        )
        self._outbox.append(event)
        return event

    async def commit(self) -> None:
        """Write the queued log rows in one statement, commit, then publish."""
        if self._rows:
            rows, self._rows = self._rows, []
            await self.session.execute(insert(LOGS), rows)
        await self.session.commit()
        outbox, self._outbox = self._outbox, []
        for event in outbox:
            await publish(self._bus, event)
