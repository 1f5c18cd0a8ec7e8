"""A bounded outbox between the engine and a remote transport (Redis).

`offer()` never waits: the event goes into a bounded queue that one owned task drains, sending
what has queued up meanwhile together (up to BATCH_MAX events in one round trip: a run that
streams thousands of chunks costs one send per batch, not one per chunk). When the
transport stalls or is gone, events are dropped and counted instead of slowing anyone down:
streamed chunks are live-only by nature, and every other event is already in the persisted
execution log, which is where the SSE stream and late readers take it from.

While the transport is down the drain does not try each message in turn (that would cost a
timeout per event); it drops them and a background probe checks every `retry_interval` seconds
whether the transport is back. An outage is logged once when it begins and once when it ends,
with the counts of what was not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from crew_platform.events.types import Event

log = logging.getLogger(__name__)

Send = Callable[[list[Event]], Awaitable[object]]
"""Sends a batch of events, in order."""
BATCH_MAX = 256
Probe = Callable[[], Awaitable[object]]


@dataclass
class Dropped:
    chunks: int = 0
    events: int = 0

    def count(self, event: Event) -> None:
        if event.is_chunk:
            self.chunks += 1
        else:
            self.events += 1

    def __bool__(self) -> bool:
        return bool(self.chunks or self.events)

    def __str__(self) -> str:
        return f"{self.chunks} chunk(s) and {self.events} other event(s) not published"


class Outbox:
    def __init__(
        self,
        send: Send,
        probe: Probe,
        *,
        size: int,
        send_timeout: float,
        retry_interval: float,
        name: str = "event-outbox",
    ) -> None:
        self._send = send
        self._probe = probe
        self._queue: asyncio.Queue[Event] = asyncio.Queue(size)
        self._send_timeout = send_timeout
        self._retry_interval = retry_interval
        self._name = name
        self._drain_task: asyncio.Task[None] | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._down_since: float | None = None
        self._full = False
        self.dropped = Dropped()
        """What was not sent during the current outage or overflow (reset when it ends)."""
        self.dropped_total = Dropped()

    @property
    def is_down(self) -> bool:
        return self._down_since is not None

    def start(self) -> None:
        self._drain_task = asyncio.create_task(self._drain(), name=self._name)

    async def stop(self) -> None:
        for task in (self._probe_task, self._drain_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._probe_task = self._drain_task = None

    def offer(self, event: Event) -> None:
        """Queue `event` for the transport; never waits, never raises."""
        if self.is_down:
            self._drop(event)
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            if not self._full:
                self._full = True
                log.warning(
                    "event outbox full (%d queued): the bus is not keeping up; dropping events "
                    "(they stay in the execution log) until it does",
                    self._queue.maxsize,
                )
            self._drop(event)

    def _drop(self, event: Event) -> None:
        self.dropped.count(event)
        self.dropped_total.count(event)

    async def _drain(self) -> None:
        while True:
            _raise_if_cancelling()
            batch = [await self._queue.get()]
            while len(batch) < BATCH_MAX and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if self.is_down:
                for event in batch:
                    self._drop(event)
                continue
            try:
                async with asyncio.timeout(self._send_timeout):
                    await self._send(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _raise_if_cancelling()
                for event in batch:
                    self._drop(event)
                self._went_down(exc)
                continue
            if self._full and self._queue.qsize() < self._queue.maxsize // 2:
                self._full = False
                log.warning("event outbox caught up; %s", self.dropped)
                self.dropped = Dropped()

    def _went_down(self, exc: BaseException) -> None:
        self._down_since = time.monotonic()
        reason = "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        log.warning(
            "event bus unreachable (%s): events are not published to other processes until it "
            "is back (local listeners still get them; the execution log has them all)",
            reason,
        )
        self._probe_task = asyncio.create_task(self._wait_until_back(), name=f"{self._name}-probe")

    async def _wait_until_back(self) -> None:
        while True:
            await asyncio.sleep(self._retry_interval)
            try:
                async with asyncio.timeout(self._send_timeout):
                    await self._probe()
            except asyncio.CancelledError:
                raise
            except Exception:
                continue
            break
        assert self._down_since is not None
        log.warning(
            "event bus back after %.1f s; %s",
            time.monotonic() - self._down_since,
            self.dropped,
        )
        self._down_since = None
        self._full = False
        self.dropped = Dropped()
        self._probe_task = None


def _raise_if_cancelling() -> None:
    """A send under way when this task is cancelled (`stop`) must not swallow the cancellation:
    the Redis client may end a cancelled publish with a connection error or even normally, and
    Python 3.11's `asyncio.timeout` turns a cancel that meets its deadline into a TimeoutError.
    Swallowed, the drain went back to waiting on its queue and `stop` waited for ever (a worker
    under load ignored SIGTERM)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
