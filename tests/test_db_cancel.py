"""SQLite: a statement cancelled mid-flight (a cancel, a shutdown) releases the write lock.

SQLAlchemy closes a connection whose statement was cancelled; aiosqlite's cursor then stayed
open, SQLite kept the closed connection and its write transaction alive until the garbage
collector freed the cursor, and every other writer waited on the lock (a shutdown with a run in
flight stalled for the 60 s busy timeout). The garbage collector is off here so that it cannot
hide the leak.
"""

from __future__ import annotations

import asyncio
import gc
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, text

from crew_platform.db import create_engine
from crew_platform.settings import Settings

SLOW_READ = text(
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3000000) "
    "SELECT count(*) FROM n"
)


@pytest.fixture
def no_garbage_collection() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_garbage_collection")
async def test_a_statement_cancelled_inside_a_write_transaction_releases_the_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cancel.db"
    engine = create_engine(Settings(database_url=f"sqlite+aiosqlite:///{path}"))
    invalidated: list[BaseException | None] = []
    event.listen(engine.sync_engine.pool, "invalidate", lambda _c, _r, e: invalidated.append(e))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE counter (n INTEGER)"))
            await conn.execute(text("INSERT INTO counter VALUES (0)"))
        started = asyncio.Event()

        async def write_then_read_slowly() -> None:
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE counter SET n = n + 1"))
                started.set()
                await conn.execute(SLOW_READ)

        job = asyncio.create_task(write_then_read_slowly())
        await started.wait()
        await asyncio.sleep(0.05)  # the slow read is running on aiosqlite's thread
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job

        other = sqlite3.connect(path, timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")  # "database is locked" while the lock leaks
            other.rollback()
            assert other.execute("SELECT n FROM counter").fetchone() == (0,)
        finally:
            other.close()
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE counter SET n = 5"))
        assert invalidated == []
    finally:
        await engine.dispose()
