"""WebSocket endpoint `/ws/`: ping/pong, subscriptions, live events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crew_platform.auth.ownership import visible, workflow_visible
from crew_platform.common.limits import MAX_ID
from crew_platform.errors import NotFound
from crew_platform.models import Agent, Execution, Workflow
from crew_platform.realtime.hub import Connection, Hub

router = APIRouter(tags=["realtime"])

CLOSE_SLOW_CONSUMER = 4008
"""Close code for a client that fell more than WS_QUEUE_SIZE messages behind."""

_TARGETS: dict[str, tuple[str, type[Any]]] = {
    "workflow": ("workflow_id", Workflow),
    "agent": ("agent_id", Agent),
    "execution": ("execution_id", Execution),
}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _error(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "error": code, "message": message, **extra}


def _not_found(channel: str, ident: int, field: str) -> dict[str, Any]:
    """Worded as the HTTP API's 404s, with the same details (resource, id)."""
    error = NotFound.resource(channel.capitalize(), ident)
    return _error(error.code, error.message, field=field, details=error.details)


async def _visible(session: AsyncSession, model: type[Any], ident: int) -> bool:
    """Whether the row exists for the caller (another owner's is not found, as over HTTP)."""
    row = await session.get(model, ident)
    if row is None:
        return False
    if isinstance(row, Execution):
        return await workflow_visible(session, row.workflow_id)
    return visible(row.created_by)


class Session:
    def __init__(
        self, websocket: WebSocket, hub: Hub, sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        self.websocket = websocket
        self.hub = hub
        self.sessions = sessions
        self.connection: Connection = hub.connect()

    def reply(self, message: dict[str, Any]) -> None:
        """Replies go through the same bounded queue as events, so ordering is preserved."""
        self.connection.offer(message)

    async def handle(self, raw: str) -> None:
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError):
            self.reply(_error("INVALID_JSON", "Message is not valid JSON"))
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self.reply(_error("INVALID_MESSAGE", "A message is a JSON object with a string 'type'"))
            return
        kind = message["type"]
        if kind == "ping":
            self.reply(
                {"type": "pong", "timestamp": _now(), "client_timestamp": message.get("timestamp")}
            )
            return
        action, _, channel = kind.partition("_")
        if action in ("subscribe", "unsubscribe") and channel in _TARGETS:
            await self._subscription(action, channel, message)
            return
        self.reply(
            _error(
                "UNKNOWN_TYPE",
                f"Unknown message type {kind!r}",
                accepted=[
                    "ping",
                    *(f"{a}_{c}" for a in ("subscribe", "unsubscribe") for c in _TARGETS),
                ],
            )
        )

    async def _subscription(self, action: str, channel: str, message: dict[str, Any]) -> None:
        field, model = _TARGETS[channel]
        ident = message.get(field)
        if isinstance(ident, bool) or not isinstance(ident, int):
            self.reply(_error("INVALID_MESSAGE", f"'{field}' must be an integer", field=field))
            return
        if not 1 <= ident <= MAX_ID:
            self.reply(_not_found(channel, ident, field))
            return
        stream = message.get("stream", False)
        if not isinstance(stream, bool):
            self.reply(_error("INVALID_MESSAGE", "'stream' must be true or false", field="stream"))
            return
        key = (channel, ident)
        if action == "unsubscribe":
            self.hub.unsubscribe(self.connection, key)
            self.reply({"type": "unsubscribed", "channel": channel, field: ident})
            return
        async with self.sessions() as session:
            exists = await _visible(session, model, ident)
        if not exists:
            self.reply(_not_found(channel, ident, field))
            return
        self.hub.subscribe(self.connection, key, stream)
        self.reply({"type": "subscribed", "channel": channel, field: ident, "stream": stream})


async def _writer(websocket: WebSocket, connection: Connection, idle_ping: float) -> None:
    """Sends the connection's queued messages (JSON text, serialised once per event by the hub);
    a ping after `idle_ping` seconds without any. A backlog is sent without waiting in between."""
    queue = connection.queue
    while True:
        if queue.empty():
            try:
                async with asyncio.timeout(idle_ping):
                    text = await queue.get()
            except TimeoutError:
                text = json.dumps({"type": "ping", "timestamp": _now()})
        else:
            text = queue.get_nowait()
        await websocket.send({"type": "websocket.send", "text": text})


async def _reader(session: Session) -> None:
    while True:
        message = await session.websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        raw = message.get("text")
        if raw is None:
            raw = (message.get("bytes") or b"").decode("utf-8", "replace")
        await session.handle(raw)


@router.websocket("/ws/")
@router.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    state = websocket.app.state
    await websocket.accept()
    session = Session(websocket, state.hub, state.sessionmaker)
    connection = session.connection
    tasks = [
        asyncio.create_task(_reader(session)),
        asyncio.create_task(
            _writer(websocket, connection, state.settings.ws_ping_interval_seconds)
        ),
        asyncio.create_task(connection.overflow_signal.wait()),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if connection.overflowed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    websocket.close(
                        CLOSE_SLOW_CONSUMER, "client too slow: outgoing queue overflowed"
                    ),
                    timeout=2,
                )
        for task in done:
            if (
                not task.cancelled()
                and (exc := task.exception()) is not None
                and not isinstance(exc, WebSocketDisconnect | RuntimeError)
            ):
                raise exc
    finally:
        state.hub.disconnect(connection)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
