"""The engine's share of the database pool.

Runners take connections only through this lane, which holds fewer connections than the pool
has: the rest stay free for API requests. Without it, a burst of accepted runs queues hundreds
of runner transactions at the pool ahead of the next `POST .../execute`, which then waits for a
connection as long as the whole queue takes to drain.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker


def engine_share(pool_size: int) -> int:
    """Connections runners may hold at once: three quarters of the pool, at least one (SQLite
    has one connection, shared by everything)."""
    return max(1, pool_size * 3 // 4)


class StoreLane:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessionmaker
        self.engine: AsyncEngine = sessionmaker.kw["bind"]
        size = getattr(self.engine.pool, "size", None)
        self.slots = engine_share(size() if callable(size) else 1)
        self._free = asyncio.Semaphore(self.slots)

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        async with self._free, self.engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self._free, self.sessions() as session:
            yield session
