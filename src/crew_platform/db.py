"""Database engine, sessions and the declarative base shared by every feature."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, MetaData, event, exc, make_url
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

from crew_platform.settings import Settings
from crew_platform.sqlite_driver import OneTripDBAPI

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, always hands back aware UTC (SQLite keeps no zone)."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


PG_RECYCLE_SECONDS = 1800


def create_engine(settings: Settings) -> AsyncEngine:
    if settings.is_sqlite:
        path = settings.sqlite_path()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # One connection: SQLite allows one writer, and a single connection never sees
        # "database is locked" when a read transaction upgrades to a write.
        engine = create_async_engine(
            settings.database_url,
            pool_size=1,
            max_overflow=0,
            pool_timeout=300,
            # Connections and sessions roll back what they leave open when they close; the
            # pool's own extra rollback on every check-in was one more trip to the aiosqlite
            # thread per unit of work.
            pool_reset_on_return=None,
            connect_args={"timeout": 60},
            **_one_trip(settings.database_url),
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "handle_error", _keep_sqlite_connection_on_cancel)
        return engine
    # All DATABASE_POOL_SIZE (40) connections stay pooled once opened: with an overflow (the
    # former 20 + 20), a load past 20 concurrent requests opened and closed a connection for
    # many of them.
    engine = create_async_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=0,
        pool_recycle=PG_RECYCLE_SECONDS,
    )
    event.listen(engine.sync_engine, "checkout", _refuse_closed_connection)
    return engine


def _one_trip(database_url: str) -> dict[str, Any]:
    """On aiosqlite, each statement in one trip to the driver's thread (`sqlite_driver`)."""
    if make_url(database_url).get_driver_name() == "aiosqlite":
        return {"module": OneTripDBAPI()}
    return {}


def _refuse_closed_connection(_dbapi_connection: Any, _record: Any, proxy: Any) -> None:
    """Stands in for `pool_pre_ping`, which costs three round trips per checkout on asyncpg.

    A connection the server closed (restart, `pg_terminate_backend`) is already known closed
    to asyncpg, whose socket saw the end of the stream: the pool then replaces it and every
    connection opened before it, and the checkout goes on with a fresh one.
    """
    if proxy.driver_connection.is_closed():
        raise exc.InvalidatePoolError("connection closed by the server")


def _keep_sqlite_connection_on_cancel(context: ExceptionContext) -> None:
    """A statement cancelled while aiosqlite runs it leaves the connection usable: its thread
    finishes the statement, then runs the cursor's close and the rollback queued behind it.

    SQLAlchemy otherwise treats the cancellation like a lost connection and closes it at once,
    with the cursor still open: SQLite then keeps that connection (and its write lock) alive
    until the garbage collector happens to free the cursor, and every other write waits on the
    lock meanwhile (a shutdown or a cancel mid-statement stalled the next write for up to the
    60 s busy timeout).
    """
    error = context.original_exception
    if not isinstance(error, Exception) or isinstance(error, TimeoutError):
        context.is_disconnect = False


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def session_scope(
    factory: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    async with factory() as session:
        yield session
