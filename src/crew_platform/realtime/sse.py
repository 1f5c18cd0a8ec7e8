"""`GET /api/v1/executions/{id}/events`: the execution's events as text/event-stream.

The bus subscription is opened before the persisted log is read, so nothing falls between the
replay (everything after Last-Event-ID) and the live tail; duplicates are dropped by `seq`.
A client that falls behind (its live queue full) is caught up from the log the same way, so it
loses no persisted event and its stream always ends after the final one.
Streamed model chunks carry no `id:` (they are not persisted) and come only with `?stream=true`.
A retried execution's log holds the final event of each run; a replay goes on to the latest.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from sqlalchemy import select
from sse_starlette import EventSourceResponse, ServerSentEvent

from crew_platform.common.deps import SessionDep
from crew_platform.common.http import ERROR_RESPONSES, ExecutionId
from crew_platform.common.types import MAX_ID
from crew_platform.engine import FINISHED
from crew_platform.events.types import FINAL_EVENTS, Event
from crew_platform.executions.repository import get_execution
from crew_platform.models import Execution, ExecutionLog

router = APIRouter(prefix="/api/v1/executions", tags=["executions"], responses=ERROR_RESPONSES)

_FINAL_NAMES = frozenset(e.value for e in FINAL_EVENTS)
LIVE_QUEUE_SIZE = 10_000
CATCH_UP_SECONDS = 15.0
"""A stream that got no live event for this long re-reads the log: events published by another
process while the bus was down reach its clients this way."""


def _log_message(row: ExecutionLog, workflow_id: int) -> dict[str, Any]:
    data = dict(row.data or {})
    message: dict[str, Any] = {
        "type": row.event,
        "workflow_id": workflow_id,
        "execution_id": row.execution_id,
        "task_id": row.task_id,
        "agent_id": data.pop("agent_id", None),
        "status": data.pop("status", None),
        "seq": row.seq,
        "timestamp": row.timestamp.isoformat().replace("+00:00", "Z"),
    }
    for key, value in data.items():
        message.setdefault(key, value)
    return message


def _frame(message: dict[str, Any], with_id: bool = True) -> ServerSentEvent:
    return ServerSentEvent(
        data=json.dumps(message),
        event=message["type"],
        id=str(message["seq"]) if with_id and message.get("seq") is not None else None,
    )


@router.get(
    "/{execution_id}/events",
    summary="Stream execution events (Server-Sent Events)",
    response_class=EventSourceResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`id:` is the event's seq; resume with Last-Event-ID",
        }
    },
)
async def execution_events(
    execution_id: ExecutionId,
    request: Request,
    session: SessionDep,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="Same as Last-Event-ID")
    ] = None,
    stream: Annotated[bool, Query(description="Include task_output_chunk events")] = False,
) -> EventSourceResponse:
    execution = await get_execution(session, execution_id)
    workflow_id = execution.workflow_id
    await session.commit()
    start_after = after or 0
    if last_event_id and last_event_id.strip().isdigit():
        start_after = min(int(last_event_id.strip()), MAX_ID)

    subscription = _LiveEvents(execution_id, stream)
    bus = request.app.state.bus
    unsubscribe = bus.subscribe(subscription.offer, wants=subscription.watches)
    sessions = request.app.state.sessionmaker

    async def catch_up(after: int) -> tuple[list[ExecutionLog], str | None]:
        async with sessions() as db:
            # Status first: a final status implies its final event is already in the log.
            status = await db.scalar(select(Execution.status).where(Execution.id == execution_id))
            rows = (
                await db.scalars(
                    select(ExecutionLog)
                    .where(ExecutionLog.execution_id == execution_id, ExecutionLog.seq > after)
                    .order_by(ExecutionLog.seq)
                )
            ).all()
        return list(rows), status

    async def events() -> AsyncIterator[ServerSentEvent]:
        try:
            last = start_after
            while True:
                subscription.behind = False
                subscription.drop_queued()
                rows, status = await catch_up(last)
                for row in rows:
                    last = row.seq
                    yield _frame(_log_message(row, workflow_id))
                if status in FINISHED and (not rows or rows[-1].event in _FINAL_NAMES):
                    # The run's latest final event is replayed (now or before). A final
                    # event followed by more (a retried execution) does not end the stream.
                    return
                while not subscription.behind:
                    try:
                        event = await asyncio.wait_for(subscription.queue.get(), CATCH_UP_SECONDS)
                    except TimeoutError:
                        break  # quiet for a while: the log says whether events were missed
                    if event.is_chunk:
                        yield _frame(event.to_message(), with_id=False)
                        continue
                    if event.seq is not None and event.seq <= last:
                        continue
                    last = event.seq or last
                    yield _frame(event.to_message())
                    if event.type in FINAL_EVENTS:
                        return
        finally:
            unsubscribe()

    return EventSourceResponse(events(), ping=15, headers={"Cache-Control": "no-cache"})


class _LiveEvents:
    """A stream's bounded queue of live events. When it overflows (the client reads slower
    than the run produces) the subscription is marked behind and stops queueing: the stream
    then re-reads the persisted log from its last seq and goes on live. Streamed chunks that
    did not fit are gone (they are never persisted)."""

    def __init__(self, execution_id: int, stream: bool) -> None:
        self.execution_id = execution_id
        self.stream = stream
        self.queue: asyncio.Queue[Event] = asyncio.Queue(LIVE_QUEUE_SIZE)
        self.behind = False

    def watches(
        self, workflow_id: int | None, execution_id: int | None, _agent: int | None
    ) -> bool:
        return execution_id == self.execution_id

    def offer(self, event: Event) -> None:
        if self.behind or event.execution_id != self.execution_id:
            return
        if event.is_chunk and not self.stream:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.behind = True

    def drop_queued(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()
