"""`GET /api/v1/executions/{id}/events`: the execution's events as text/event-stream.

The bus subscription is opened before the persisted log is read, so nothing falls between the
replay (everything after Last-Event-ID) and the live tail; duplicates are dropped by `seq`.
Streamed model chunks carry no `id:` (they are not persisted) and come only with `?stream=true`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from sqlalchemy import select
from sse_starlette import EventSourceResponse, ServerSentEvent

from crew_platform.common.deps import SessionDep
from crew_platform.common.http import ERROR_RESPONSES, ExecutionId
from crew_platform.common.types import MAX_ID
from crew_platform.engine.states import FINISHED
from crew_platform.events.types import FINAL_EVENTS, Event, EventType
from crew_platform.executions.service import get_execution
from crew_platform.models import Execution, ExecutionLog

router = APIRouter(prefix="/api/v1/executions", tags=["executions"], responses=ERROR_RESPONSES)

_FINAL_NAMES = frozenset(e.value for e in FINAL_EVENTS)
LIVE_QUEUE_SIZE = 10_000


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

    live: asyncio.Queue[Event] = asyncio.Queue(LIVE_QUEUE_SIZE)

    def listener(event: Event) -> None:
        if event.execution_id == execution_id and (stream or not event.is_chunk):
            with contextlib.suppress(asyncio.QueueFull):
                live.put_nowait(event)

    bus = request.app.state.bus
    unsubscribe = bus.subscribe(listener)
    sessions = request.app.state.sessionmaker

    async def events() -> AsyncIterator[ServerSentEvent]:
        try:
            last = start_after
            async with sessions() as db:
                # Status first: a final status implies its final event is already in the log.
                status = await db.scalar(
                    select(Execution.status).where(Execution.id == execution_id)
                )
                rows = (
                    await db.scalars(
                        select(ExecutionLog)
                        .where(ExecutionLog.execution_id == execution_id, ExecutionLog.seq > last)
                        .order_by(ExecutionLog.seq)
                    )
                ).all()
            for row in rows:
                last = row.seq
                yield _frame(_log_message(row, workflow_id))
                if row.event in _FINAL_NAMES:
                    return
            if status in FINISHED and not any(r.event in _FINAL_NAMES for r in rows):
                # Finished before this request and its final event was replayed earlier.
                return
            while True:
                event = await live.get()
                if event.type == EventType.TASK_OUTPUT_CHUNK:
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
