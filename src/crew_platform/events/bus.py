"""Event bus: in-memory by default, Redis pub/sub when REDIS_URL is set (several processes).

Subscribers are plain callables that must not block (they put into their own bounded queues);
a slow listener therefore never slows the publisher.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Protocol

from crew_platform.events.types import Event

log = logging.getLogger(__name__)

Listener = Callable[[Event], None]
CHANNEL = "crew_platform:events"


class EventBus(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def publish(self, event: Event) -> None: ...
    def subscribe(self, listener: Listener) -> Callable[[], None]: ...


class _Fanout:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def deliver(self, event: Event) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed on %s", event.type)


class InMemoryBus(_Fanout):
    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def publish(self, event: Event) -> None:
        self.deliver(event)


class RedisBus(_Fanout):
    """Publishes to a Redis channel; every process's reader delivers to its local listeners."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self._url = url
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        import redis.asyncio as redis

        self._redis = redis.from_url(self._url)
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(CHANNEL)
        self._reader = asyncio.create_task(self._read(), name="redis-event-reader")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._pubsub.aclose()
        await self._redis.aclose()

    async def publish(self, event: Event) -> None:
        await self._redis.publish(CHANNEL, json.dumps(event.to_json_dict()))

    async def _read(self) -> None:
        while True:
            try:
                async for message in self._pubsub.listen():
                    self.deliver(Event.from_json_dict(json.loads(message["data"])))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("redis event reader failed; reconnecting")
                await asyncio.sleep(1)


def create_bus(redis_url: str | None) -> EventBus:
    return RedisBus(redis_url) if redis_url else InMemoryBus()
