"""Read-only queries for the hot GET endpoints, outside the ORM session.

A read is a plain function of a (sync) SQLAlchemy `Connection`, run in one go:

* SQLite (a file): on a small pool of its own connections, each read in one hop to a reader
  thread. WAL lets readers run while the single writer connection writes, and
  `PRAGMA query_only` keeps these connections from ever writing (so never a read->write
  upgrade, never "database is locked"). Each statement runs in its own implicit transaction,
  so it sees everything committed before it started.
* PostgreSQL (and in-memory SQLite): on the main pool in autocommit mode, so a read is one
  statement: no BEGIN and no ROLLBACK round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.ext.asyncio import AsyncEngine

from crew_platform.settings import Settings

T = TypeVar("T")
Read = Callable[[Connection], T]


class Reads(Protocol):
    async def run(self, read: Read[T]) -> T: ...

    async def close(self) -> None: ...


class PooledReads:
    """Reads on the async engine's own pool, in autocommit mode."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def run(self, read: Read[T]) -> T:
        async with self._engine.connect() as connection:
            return await connection.run_sync(read)

    async def close(self) -> None:
        return None


class SQLiteThreadReads:
    """Reads on `workers` read-only SQLite connections, one thread each."""

    def __init__(self, path: Path, workers: int) -> None:
        self._engine: Engine = create_sync_engine(
            f"sqlite:///{path}",
            pool_size=workers,
            max_overflow=0,
            connect_args={"check_same_thread": False, "timeout": 60},
        )
        event.listen(self._engine, "connect", _reader_pragmas)
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="sqlite-read")

    async def run(self, read: Read[T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, read)

    def _run(self, read: Read[T]) -> T:
        with self._engine.connect() as connection:
            return read(connection)

    async def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._engine.dispose()


def _reader_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # a no-op once the writer has set it
    cursor.execute("PRAGMA query_only=ON")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def create_reads(settings: Settings, engine: AsyncEngine) -> Reads:
    path = settings.sqlite_path()
    if path is not None:
        return SQLiteThreadReads(path, settings.sqlite_read_connections)
    return PooledReads(engine)
