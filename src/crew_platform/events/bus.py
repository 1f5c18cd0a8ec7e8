"""Event bus: in-memory by default, Redis pub/sub when REDIS_URL is set (several processes).

Subscribers are plain callables that must not block (they put into their own bounded queues);
a slow listener therefore never slows the publisher. `publish` never waits either: with Redis it
delivers locally at once and leaves the rest to a bounded outbox, so a frozen or dead Redis costs
a run nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from sqlalchemy import make_url

from crew_platform.events.outbox import Outbox
from crew_platform.events.types import Event, EventType
from crew_platform.settings import Settings

log = logging.getLogger(__name__)

Listener = Callable[[Event], None]
Interest = Callable[[int | None, int | None, int | None], bool]
"""Whether a listener wants an event of (workflow_id, execution_id, agent_id); it is given only
those. For an event another process published, asked before it is decoded: what nobody on this
process watches costs a few look-ups, not an `Event`. A listener without one gets every event."""


class EventBus(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def publish(self, event: Event) -> None: ...
    def subscribe(
        self, listener: Listener, wants: Interest | None = None
    ) -> Callable[[], None]: ...


class _Fanout:
    def __init__(self) -> None:
        self._listeners: list[tuple[Listener, Interest | None]] = []

    def subscribe(self, listener: Listener, wants: Interest | None = None) -> Callable[[], None]:
        entry = (listener, wants)
        self._listeners.append(entry)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(entry)

        return unsubscribe

    def deliver(self, event: Event) -> None:
        ids = (event.workflow_id, event.execution_id, event.agent_id)
        for listener, wants in tuple(self._listeners):
            try:
                if wants is None or wants(*ids):
                    listener(event)
            except Exception:
                log.exception("event listener failed on %s", event.type)

    def wanted(
        self, workflow_id: int | None, execution_id: int | None, agent_id: int | None
    ) -> bool:
        """Whether some listener may want an event of these ids."""
        return any(
            wants is None or wants(workflow_id, execution_id, agent_id)
            for _, wants in self._listeners
        )


class InMemoryBus(_Fanout):
    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def publish(self, event: Event) -> None:
        self.deliver(event)


CONTROL_EVENTS = frozenset({EventType.WORKFLOW_CANCELLED, EventType.WORKFLOW_PAUSED})
"""What a process that only runs executions (a queue worker) needs from the others."""


class RedisBus(_Fanout):
    """Delivers to this process's listeners at once, and through a bounded outbox to a Redis
    channel for the other processes of the same deployment.

    Local delivery never depends on Redis: local WebSocket and SSE clients and the dispatcher's
    cancel listener see this process's events even while Redis is frozen or gone. A message
    carries the events the outbox sent together, in order, and the publishing process's id, so
    a reader skips what its own process published.

    Control events (cancel, pause) also go to `control_channel`. A `control_only` bus (a queue
    worker's) listens there alone: it has no client to show the other processes' events to, and
    decoding every event of every other worker would cost each worker more the more there are.
    """

    def __init__(
        self,
        url: str,
        channel: str,
        *,
        control_channel: str | None = None,
        control_only: bool = False,
        outbox_size: int = 10_000,
        publish_timeout: float = 1.0,
        retry_interval: float = 1.0,
    ) -> None:
        super().__init__()
        if control_only and control_channel is None:
            raise ValueError("a control-only bus needs its control channel")
        self._url = url
        self.channel = channel
        self.control_channel = control_channel
        self.listens_to = control_channel if control_only and control_channel else channel
        self.origin = uuid.uuid4().hex
        self._retry_interval = retry_interval
        self._publish_timeout = publish_timeout
        self.outbox = Outbox(
            self._send,
            self._ping,
            size=outbox_size,
            send_timeout=publish_timeout,
            retry_interval=retry_interval,
        )
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        import redis.asyncio as redis

        self._redis = redis.from_url(self._url)
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            async with asyncio.timeout(self._publish_timeout * 5):
                await self._pubsub.subscribe(self.listens_to)
        except Exception as exc:
            log.warning(
                "event bus: cannot subscribe to Redis (%s: %s); retrying in the background",
                type(exc).__name__,
                exc,
            )
        self._reader = asyncio.create_task(self._read(), name="redis-event-reader")
        self.outbox.start()

    async def stop(self) -> None:
        await self.outbox.stop()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for closing in (self._pubsub.aclose(), self._redis.aclose()):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._publish_timeout):
                    await closing

    async def publish(self, event: Event) -> None:
        """Never waits on Redis: local listeners now, other processes through the outbox."""
        self.deliver(event)
        self.outbox.offer(event)

    async def _send(self, events: list[Event]) -> None:
        """One round trip for the batch, and one message: what the outbox drained together
        crosses as one JSON array, in order (per message, Redis fans out and every reader
        parses once: a run's events cost the other processes one parse per batch, not one per
        event). Control events also go to the control channel, together in one message."""
        wire = [event.to_json_dict() for event in events]
        async with self._redis.pipeline(transaction=False) as pipe:
            if self.control_channel is not None:
                control = [w for w, e in zip(wire, events, strict=True) if e.type in CONTROL_EVENTS]
                if control:
                    pipe.publish(self.control_channel, self._message(control))
            pipe.publish(self.channel, self._message(wire))
            await pipe.execute()

    def _message(self, events: list[dict[str, object]]) -> str:
        return json.dumps({"origin": self.origin, "events": events})

    async def _ping(self) -> None:
        await self._redis.ping()

    def _receive(self, data: bytes | str) -> None:
        message = json.loads(data)
        if message.get("origin") == self.origin:
            return
        for raw in message["events"]:
            if self.wanted(raw["workflow_id"], raw["execution_id"], raw["agent_id"]):
                self.deliver(Event.from_json_dict(raw))

    async def _read(self) -> None:
        failing = False
        while True:
            try:
                if not self._pubsub.subscribed:
                    await self._pubsub.subscribe(self.listens_to)
                async for message in self._pubsub.listen():
                    if failing:
                        failing = False
                        log.warning("event bus reader reconnected to Redis")
                    try:
                        self._receive(message["data"])
                    except (ValueError, KeyError, TypeError):
                        log.warning("event bus: skipped a malformed message on %s", self.listens_to)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not failing:
                    failing = True
                    log.warning(
                        "event bus reader lost Redis (%s: %s); reconnecting every %.1f s",
                        type(exc).__name__,
                        exc,
                        self._retry_interval,
                    )
                await asyncio.sleep(self._retry_interval)


def channel_prefix(database_url: str) -> str:
    """The default EVENTS_CHANNEL_PREFIX: a short stable hash of the database (its URL without
    the password; a SQLite file by its absolute path), so the processes of one deployment share
    a channel and two deployments on one Redis never meet (Redis pub/sub ignores the db number).
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        url = url.set(database=str(Path(url.database).resolve()))
    digest = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()
    return f"crew_platform:{digest[:12]}"


def deployment_prefix(settings: Settings) -> str:
    """What this deployment's names on Redis (and RabbitMQ) start with."""
    return settings.events_channel_prefix or channel_prefix(settings.database_url)


def events_channel(settings: Settings) -> str:
    return f"{deployment_prefix(settings)}:events"


def control_channel(settings: Settings) -> str:
    return f"{deployment_prefix(settings)}:control"


def create_bus(settings: Settings, *, control_only: bool = False) -> EventBus:
    """The process's bus; `control_only`: it hears from the other processes only their control
    events (a queue worker)."""
    if not settings.redis_url:
        return InMemoryBus()
    return RedisBus(
        settings.redis_url,
        events_channel(settings),
        control_channel=control_channel(settings),
        control_only=control_only,
        outbox_size=settings.events_outbox_size,
        publish_timeout=settings.events_publish_timeout_seconds,
        retry_interval=settings.events_retry_seconds,
    )
