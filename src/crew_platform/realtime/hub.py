"""Fan-out of bus events to WebSocket connections by their subscriptions.

The hub is a bus listener: it only ever does a non-blocking put into each matching connection's
bounded queue. A connection whose queue is full is marked for closing; it never slows the engine
or the other clients.

Subscriptions are indexed by (channel, id), so an event costs a few dict look-ups plus one put per
interested connection, however many connections there are. Each event is serialised to JSON text
once, whatever the number of its recipients; the connections' writers send that text as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crew_platform.events.bus import EventBus
from crew_platform.events.types import Event, EventType

CHANNELS = ("workflow", "agent", "execution")
AGENT_EVENTS = frozenset(
    {
        EventType.TASK_STARTED,
        EventType.TASK_COMPLETED,
        EventType.TASK_FAILED,
        EventType.TASK_SKIPPED,
        EventType.TASK_CANCELLED,
        EventType.TASK_OUTPUT_CHUNK,
        EventType.INPUT_REQUIRED,
        EventType.INPUT_RECEIVED,
        EventType.AGENT_TEST_COMPLETED,
        EventType.MODEL_FALLBACK,
        EventType.DELEGATION_STARTED,
        EventType.DELEGATION_COMPLETED,
    }
)
"""What an agent's subscribers receive of the events carrying its id: its task runs, its tests,
and the delegations a manager gives it (a coworker's events carry the coworker's id)."""

Key = tuple[str, int]
"""(channel, id) of a subscription."""


@dataclass(eq=False)
class Connection:
    queue_size: int
    subscriptions: dict[Key, bool] = field(default_factory=dict)
    """(channel, id) -> whether this subscription wants streamed chunks. Change it through
    `Hub.subscribe` / `Hub.unsubscribe`, which keep the hub's index in step."""
    overflowed: bool = False

    def __post_init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue(self.queue_size)
        """Outgoing messages, already JSON text."""
        self.overflow_signal = asyncio.Event()

    def offer(self, message: dict[str, Any]) -> None:
        self.offer_text(json.dumps(message))

    def offer_text(self, text: str) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.overflowed = True
            self.overflow_signal.set()


class Hub:
    def __init__(self, bus: EventBus, queue_size: int) -> None:
        self._bus = bus
        self._queue_size = queue_size
        self._connections: set[Connection] = set()
        self._index: dict[Key, dict[Connection, None]] = {}
        """(channel, id) -> the connections subscribed to it (a dict: ordered, O(1) removal)."""
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        self._unsubscribe = self._bus.subscribe(self._deliver, wants=self._watched)

    def stop(self) -> None:
        if self._unsubscribe:
            self._unsubscribe()

    def connect(self) -> Connection:
        connection = Connection(self._queue_size)
        self._connections.add(connection)
        return connection

    def disconnect(self, connection: Connection) -> None:
        with contextlib.suppress(KeyError):
            self._connections.remove(connection)
        for key in list(connection.subscriptions):
            self.unsubscribe(connection, key)

    def subscribe(self, connection: Connection, key: Key, stream: bool) -> None:
        if connection not in self._connections:  # disconnected while the id was looked up
            return
        connection.subscriptions[key] = stream
        self._index.setdefault(key, {})[connection] = None

    def unsubscribe(self, connection: Connection, key: Key) -> None:
        connection.subscriptions.pop(key, None)
        subscribers = self._index.get(key)
        if subscribers is not None:
            subscribers.pop(connection, None)
            if not subscribers:
                del self._index[key]

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def _watched(
        self, workflow_id: int | None, execution_id: int | None, agent_id: int | None
    ) -> bool:
        """Whether a connection here subscribed to any of these ids (the bus asks before it
        decodes another process's event)."""
        index = self._index
        return bool(index) and (
            ("execution", execution_id) in index
            or ("workflow", workflow_id) in index
            or ("agent", agent_id) in index
        )

    def _recipients(self, event: Event) -> list[Connection]:
        keys: list[Key] = []
        if event.workflow_id is not None:
            keys.append(("workflow", event.workflow_id))
        if event.execution_id is not None:
            keys.append(("execution", event.execution_id))
        if event.agent_id is not None and event.type in AGENT_EVENTS:
            keys.append(("agent", event.agent_id))
        chunk = event.is_chunk
        found: dict[Connection, None] = {}
        for key in keys:
            subscribers = self._index.get(key)
            if not subscribers:
                continue
            for connection in subscribers:
                if not chunk or connection.subscriptions.get(key):
                    found[connection] = None
        return list(found)

    def _deliver(self, event: Event) -> None:
        recipients = self._recipients(event)
        if not recipients:
            return
        text = json.dumps(event.to_message())
        for connection in recipients:
            connection.offer_text(text)
