"""Fan-out of bus events to WebSocket connections by their subscriptions.

The hub is a bus listener: it only ever does a non-blocking put into each matching connection's
bounded queue. A connection whose queue is full is marked for closing; it never slows the engine
or the other clients.
"""

from __future__ import annotations

import asyncio
import contextlib
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
        EventType.AGENT_TEST_COMPLETED,
    }
)


@dataclass(eq=False)
class Connection:
    queue_size: int
    subscriptions: dict[tuple[str, int], bool] = field(default_factory=dict)
    """(channel, id) -> whether this subscription wants streamed chunks."""
    overflowed: bool = False

    def __post_init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self.queue_size)
        self.overflow_signal = asyncio.Event()

    def wants(self, event: Event) -> bool:
        for (channel, ident), stream in self.subscriptions.items():
            if event.is_chunk and not stream:
                continue
            if channel == "workflow" and event.workflow_id == ident:
                return True
            if channel == "execution" and event.execution_id == ident:
                return True
            if channel == "agent" and event.agent_id == ident and event.type in AGENT_EVENTS:
                return True
        return False

    def offer(self, message: dict[str, Any]) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed = True
            self.overflow_signal.set()


class Hub:
    def __init__(self, bus: EventBus, queue_size: int) -> None:
        self._bus = bus
        self._queue_size = queue_size
        self._connections: set[Connection] = set()
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        self._unsubscribe = self._bus.subscribe(self._deliver)

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

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def _deliver(self, event: Event) -> None:
        message: dict[str, Any] | None = None
        for connection in self._connections:
            if connection.wants(event):
                message = message or event.to_message()
                connection.offer(message)
