"""Runners take at most their share of the pool, so API requests still get a connection while
a burst of runs waits for the store."""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy import text

from crew_platform.db import create_engine, create_sessionmaker
from crew_platform.engine.lane import StoreLane
from tests.conftest import make_settings


async def test_runners_leave_part_of_the_pool_to_api_requests(postgres_migrated: str) -> None:
    engine = create_engine(make_settings(postgres_migrated))
    lane = StoreLane(create_sessionmaker(engine))
    pool_size = engine.pool.size()  # type: ignore[attr-defined]
    assert 0 < lane.slots < pool_size
    try:
        async with contextlib.AsyncExitStack() as runners:
            held = [await runners.enter_async_context(lane.connect()) for _ in range(lane.slots)]
            waiting = asyncio.create_task(_use(lane.connect()))
            async with asyncio.timeout(30), contextlib.AsyncExitStack() as requests:
                for _ in range(pool_size - lane.slots):
                    conn = await requests.enter_async_context(engine.connect())
                    assert await conn.scalar(text("select 1")) == 1
            assert not waiting.done()
            assert len(held) == lane.slots
        async with asyncio.timeout(30):
            assert await waiting == 1  # the lane's slot came back: the waiting runner went on
    finally:
        await engine.dispose()


async def _use(connecting: contextlib.AbstractAsyncContextManager) -> int:  # type: ignore[type-arg]
    async with connecting as conn:
        return int(await conn.scalar(text("select 1")))
