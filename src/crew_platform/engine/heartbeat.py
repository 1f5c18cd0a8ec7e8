"""The heartbeat of a process that runs executions, whatever its kind (a server, a worker).

Every LEASE_SECONDS/3 it pushes the process's lease on, stops the runners whose execution another
process took over (this process stood still past its lease: the runners would write nothing
more, but they need not wait for their model call to learn it), and adopts the executions of
processes that died: their leases lapsed, and the runners started here take them over from their
last checkpoint. A failed beat (the database unreachable) is logged and the next one tries again.

A queue worker's heartbeat also picks up accepted executions nobody took up for `pickup_after`
seconds, as many as its dispatcher has room for (`lease.stranded`): their queue message was lost
or is held by a worker that died. A server (EXECUTOR=inprocess) does not: what it accepted waits
in its own dispatcher, and its start-up runs every accepted execution.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from crew_platform.engine import lease
from crew_platform.engine.dispatch import Dispatcher
from crew_platform.engine.lease import Process

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(
        self,
        engine: AsyncEngine,
        process: Process,
        lease_seconds: float,
        *,
        pickup_after: float | None = None,
    ) -> None:
        self.process = process
        self.lease_seconds = lease_seconds
        self.pickup_after = pickup_after
        self._engine = engine
        self._task: asyncio.Task[None] | None = None
        self._registered = False
        self.beats = 0
        """Beats completed (renewal, check and adoption) since start-up."""

    @property
    def interval(self) -> float:
        return self.lease_seconds / 3

    async def register(self) -> None:
        """Record this process as live: before it runs anything, so no other takes that over."""
        async with self._engine.begin() as conn:
            await lease.register(conn, self.process, self.lease_seconds)
        self._registered = True

    def start(self, dispatcher: Dispatcher) -> None:
        self._task = asyncio.create_task(self._run(dispatcher), name="lease-heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def retire(self) -> None:
        """This process stops (its runners already did): its leases lapse now, so another
        process takes its executions over without waiting for them to expire."""
        if not self._registered:
            return
        try:
            async with self._engine.begin() as conn:
                await lease.retire(conn, self.process)
        except Exception as exc:
            log.warning(
                "could not retire process %s: %s: %s", self.process.id, type(exc).__name__, exc
            )

    async def _run(self, dispatcher: Dispatcher) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.beat(dispatcher)
            except Exception as exc:
                log.warning(
                    "heartbeat of process %s failed (%s: %s); its leases expire %g s after "
                    "the last one that succeeded",
                    self.process.id,
                    type(exc).__name__,
                    exc,
                    self.lease_seconds,
                )

    async def beat(self, dispatcher: Dispatcher) -> None:
        leased = dispatcher.leased()
        async with self._engine.begin() as conn:
            await lease.renew(conn, self.process, self.lease_seconds)
        async with self._engine.connect() as conn:
            taken = await lease.taken_from(conn, self.process.id, leased) if leased else []
            orphaned = list(await conn.scalars(lease.ORPHANED))
            if self.pickup_after is not None and (room := dispatcher.room()):
                orphaned += await conn.scalars(lease.stranded(self.pickup_after, room))
        for execution_id in taken:
            dispatcher.abandon(execution_id, leased[execution_id])
        if adopted := dispatcher.adopt(orphaned):
            log.info("process %s adopts execution(s) %s", self.process.id, adopted)
        self.beats += 1
