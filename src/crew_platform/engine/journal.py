"""Writes an execution's events to its log inside the caller's transaction, publishes after commit.

Every persisted event gets the next per-execution `seq` (an atomic UPDATE ... RETURNING), so the
SSE stream can replay from any point and nothing a client was told is missing from the log.

Publishing is best effort: the log is already committed when an event goes out, so a bus that is
down or stalls (Redis gone) costs live delivery only, never the run or the request.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from crew_platform.events.bus import EventBus
from crew_platform.events.types import Event, EventType
from crew_platform.models import Execution, ExecutionLog

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
    def __init__(self, session: AsyncSession, bus: EventBus) -> None:
        self.session = session
        self._bus = bus
        self._outbox: list[Event] = []
        self._rows: list[dict[str, Any]] = []

    async def record(
        self, event: Event, message: str, *, execution_values: dict[str, Any] | None = None
    ) -> Event:
        """Number the event and queue its log row; `execution_values` ride along on the same
        UPDATE of the execution (one round trip instead of two)."""
        assert event.execution_id is not None
        event.seq = await self.session.scalar(
            update(Execution)
            .where(Execution.id == event.execution_id)
            .values(last_seq=Execution.last_seq + 1, **(execution_values or {}))
            .returning(Execution.last_seq)
            .execution_options(synchronize_session=False)
        )
        data: dict[str, Any] = {k: event.data[k] for k in _LOGGED_DATA_KEYS if k in event.data}
        data |= {"status": event.status, "agent_id": event.agent_id}
        self._rows.append(
            {
                "execution_id": event.execution_id,
                "seq": event.seq,
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
            await self.session.execute(insert(ExecutionLog), rows)
        await self.session.commit()
        outbox, self._outbox = self._outbox, []
        for event in outbox:
            await publish(self._bus, event)
