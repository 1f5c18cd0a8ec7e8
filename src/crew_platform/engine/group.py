"""Group commit: pieces of work that arrive together share one transaction.

Each piece is a function of a journal that writes through it and neither commits nor rolls
back. Those asked in the same turn of the event loop, or while `MAX_AT_ONCE` groups commit, run
one after another in the next transaction, whose commit (and its one INSERT of log rows) they
share. If any piece raises, the group is rolled back and each piece runs again in a transaction
of its own: a piece's failure is its own, and what it raises alone reaches its caller. So a
piece must be safe to run twice, the first time rolled back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from crew_platform.engine.journal import Journal
from crew_platform.engine.lane import StoreLane
from crew_platform.events.bus import EventBus

T = TypeVar("T")
Work = Callable[[Journal], Awaitable[T]]

log = logging.getLogger(__name__)

MAX_GROUP = 25
"""Most pieces in one group: its pieces run one after another, so a larger group makes its
first pieces wait longer for the commit."""
MAX_AT_ONCE = 4
"""Groups committing at the same time (each on a connection of the engine's lane)."""


@dataclass
class _Piece(Generic[T]):
    work: Work[T]
    execution_id: int
    done: asyncio.Future[T]


class GroupCommit:
    def __init__(self, lane: StoreLane, bus: EventBus, *, owner: str, what: str) -> None:
        self._lane = lane
        self._bus = bus
        self._owner = owner
        self._what = what
        self._asked: list[_Piece[Any]] = []
        self._groups: set[asyncio.Task[None]] = set()
        self._forming = False

    def run(self, work: Work[T], *, execution_id: int) -> asyncio.Future[T]:
        """Run `work` (which writes for `execution_id`) in the next group; the future holds
        its result once committed."""
        piece: _Piece[T] = _Piece(work, execution_id, asyncio.get_running_loop().create_future())
        self._asked.append(piece)
        self._form()
        return piece.done

    def _form(self) -> None:
        """Start a group, which takes what was asked until it starts (the rest of this turn
        of the event loop), unless one is forming already or `MAX_AT_ONCE` are committing."""
        if self._forming or not self._asked or len(self._groups) >= MAX_AT_ONCE:
            return
        self._forming = True
        group = asyncio.create_task(self._next(), name=f"group-{self._what}")
        self._groups.add(group)
        group.add_done_callback(self._ended)

    async def _next(self) -> None:
        self._forming = False
        group, self._asked = self._asked[:MAX_GROUP], self._asked[MAX_GROUP:]
        self._form()  # for what this group left
        # Every group locks its executions' rows in the same (ascending) order, so groups
        # committing at once wait for each other rather than deadlock.
        group.sort(key=lambda piece: piece.execution_id)
        try:
            await self._run(group)
        finally:
            for piece in group:  # only if this task was cancelled (the loop is closing)
                piece.done.cancel()

    def _ended(self, group: asyncio.Task[None]) -> None:
        self._groups.discard(group)
        self._form()

    async def _run(self, group: list[_Piece[Any]]) -> None:
        try:
            results = await self._together(group)
        except Exception as exc:
            if len(group) == 1:
                if not group[0].done.done():
                    group[0].done.set_exception(exc)
                return
            log.debug("a group of %d %s failed (%s): each runs alone", len(group), self._what, exc)
            for piece in group:
                await self._run([piece])
            return
        for piece, result in zip(group, results, strict=True):
            if not piece.done.done():
                piece.done.set_result(result)

    async def _together(self, group: list[_Piece[Any]]) -> list[Any]:
        async with self._lane.connect() as conn:
            journal = Journal(conn, self._bus, owner=self._owner)
            try:
                results = [await piece.work(journal) for piece in group]
            except BaseException:
                await journal.rollback()
                raise
            await journal.commit()
        return results
