"""The API's executor in queue mode: what the services submit goes on the broker, for a worker.

It has the dispatcher's surface (`engine.Executor`) and runs nothing itself. `submit` (called
after the service's commit) enqueues the execution id in the background, a bounded number of
sends at a time; a send that fails is logged and the execution stays `pending` in the database,
where a worker with room picks it up after LEASE_SECONDS (`engine/heartbeat.py`), so a lost
message delays a run but never strands it.

Pause and cancel need nothing from here: the service's journal publishes `workflow_paused` and
`workflow_cancelled` on the Redis event bus, and the worker running the execution stops it at its
next task boundary or aborts it at once (its model call in flight included). The database stays
the truth: a runner that missed the message still stops at its next task boundary. Resume,
retry and an answer to a waiting task submit the execution again, which enqueues it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from crew_platform.settings import Settings
from crew_platform.taskqueue.broker import TASK_NAME, create_broker, queue_name

if TYPE_CHECKING:
    from taskiq import AsyncBroker

log = logging.getLogger(__name__)

SEND_TIMEOUT_SECONDS = 5.0
PARALLEL_SENDS = 16
"""Sends in flight at once (each holds a broker connection while it is sent)."""


class Enqueuer:
    def __init__(self, broker: AsyncBroker, *, queue: str, lease_seconds: float) -> None:
        self._broker = broker
        self.queue = queue
        self._lease_seconds = lease_seconds
        self._sending: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(PARALLEL_SENDS)
        self._connecting = asyncio.Lock()
        self._connected = False
        self._closing = False
        self.sent = 0
        self.failed = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Enqueuer:
        return cls(
            create_broker(settings),
            queue=queue_name(settings),
            lease_seconds=settings.lease_seconds,
        )

    async def start(self) -> None:
        """Connect to the broker and declare the stream's consumer group or the queue (so what
        is enqueued before any worker started waits for one). A broker that cannot be reached
        does not stop the API: it is tried again at each send, and what is accepted meanwhile
        stays pending until a worker with room picks it up."""
        try:
            await self._connect()
        except Exception as exc:
            log.warning(
                "queue broker unreachable at start-up (BROKER_URL, %s: %s): accepted executions "
                "stay pending until a worker with room picks them up; tried again at each send",
                type(exc).__name__,
                exc,
            )

    async def _connect(self) -> None:
        async with self._connecting:
            if self._connected:
                return
            async with asyncio.timeout(SEND_TIMEOUT_SECONDS):
                await self._broker.startup()
            self._connected = True

    def submit(self, execution_id: int) -> None:
        if self._closing:
            return
        task = asyncio.create_task(self._send(execution_id), name=f"enqueue-{execution_id}")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, execution_id: int) -> None:
        from taskiq.kicker import AsyncKicker

        try:
            async with self._slots, asyncio.timeout(SEND_TIMEOUT_SECONDS):
                await self._connect()
                await AsyncKicker[[int], None](TASK_NAME, self._broker, {}).kiq(execution_id)
            self.sent += 1
        except Exception as exc:
            self.failed += 1
            cause = exc.__cause__ or exc
            log.warning(
                "could not enqueue execution %s on %s (%s: %s): it stays pending, and a worker "
                "with room picks it up within about %g s",
                execution_id,
                self.queue,
                type(cause).__name__,
                cause,
                self._lease_seconds * 4 / 3,
            )

    def pause(self, execution_id: int) -> None:
        """Nothing to do here: the pause's `workflow_paused` event reaches the worker."""

    async def cancel(self, execution_id: int, *, wait: float = 10.0) -> None:
        """Nothing to do here: the cancel's `workflow_cancelled` event reaches the worker."""

    async def drain(self, within: float) -> bool:
        """Wait until every submitted execution was sent (or failed to be); False after
        `within` seconds if some are still being sent."""
        try:
            async with asyncio.timeout(within):
                while self._sending:
                    await asyncio.gather(*self._sending, return_exceptions=True)
        except TimeoutError:
            return False
        return True

    async def shutdown(self, within: float = SEND_TIMEOUT_SECONDS) -> None:
        """Send what was submitted (at most `within` seconds), then close the broker."""
        self._closing = True
        if not await self.drain(within):
            for task in self._sending:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._sending, return_exceptions=True)
        await self._broker.shutdown()
