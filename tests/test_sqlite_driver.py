"""SQLite through the one-trip adapter (`crew_platform.sqlite_driver`): what SQLAlchemy reads
from a cursor is all there, errors keep their DB-API classes, and each statement costs one trip
to aiosqlite's thread."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiosqlite.core
import pytest
from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, insert, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from crew_platform.db import create_engine
from crew_platform.settings import Settings
from crew_platform.sqlite_driver import OneTripCursor

metadata = MetaData()
parents = Table("parents", metadata, Column("id", Integer, primary_key=True))
children = Table(
    "children",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("parent_id", ForeignKey("parents.id"), nullable=False),
    Column("name", String),
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'd.db'}"))
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Names of the functions sent to aiosqlite's thread (its queue, `Connection._execute`)."""
    sent: list[str] = []
    queue = aiosqlite.core.Connection._execute

    async def counted(
        self: aiosqlite.Connection, fn: object, *args: object, **kw: object
    ) -> object:
        sent.append(getattr(fn, "__name__", repr(fn)))
        return await queue(self, fn, *args, **kw)

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
    yield sent


async def test_the_engine_uses_the_one_trip_cursor(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.driver_connection, aiosqlite.Connection)
        assert isinstance(raw.dbapi_connection.cursor(), OneTripCursor)  # type: ignore[union-attr]


async def test_rows_counts_and_ids_come_back(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        first = await conn.execute(insert(parents))
        assert first.inserted_primary_key == (1,)
        returned = await conn.execute(insert(parents).returning(parents.c.id))
        assert returned.scalar_one() == 2
        many = await conn.execute(
            insert(children), [{"parent_id": 1, "name": f"c{i}"} for i in range(5)]
        )
        assert many.rowcount == 5
        updated = await conn.execute(
            children.update().where(children.c.name.in_(["c1", "c3"])).values(name="x")
        )
        assert updated.rowcount == 2
        rows = (await conn.execute(select(children.c.name).order_by(children.c.id))).all()
        assert [r.name for r in rows] == ["c0", "x", "c2", "x", "c4"]
        empty = await conn.execute(select(children.c.id, children.c.name).where(children.c.id < 0))
        assert list(empty.keys()) == ["id", "name"]
        assert empty.all() == []
        streamed = await conn.stream(select(children.c.id).order_by(children.c.id))
        assert [row.id async for row in streamed] == [1, 2, 3, 4, 5]


async def test_errors_keep_their_classes_and_the_transaction_rolls_back(
    engine: AsyncEngine,
) -> None:
    with pytest.raises(IntegrityError):
        async with engine.begin() as conn:
            await conn.execute(insert(parents))
            await conn.execute(insert(children).values(parent_id=99, name="orphan"))
    with pytest.raises(OperationalError):
        async with engine.connect() as conn:
            await conn.execute(text("SELECT * FROM no_such_table"))
    async with engine.connect() as conn:
        assert await conn.scalar(select(parents.c.id)) is None


async def test_a_statement_is_one_trip_to_the_driver_thread(
    engine: AsyncEngine, trips: list[str]
) -> None:
    async with engine.begin() as conn:
        await conn.execute(insert(parents))
        await conn.execute(select(parents.c.id))
        await conn.execute(insert(children), [{"parent_id": 1}, {"parent_id": 1}])
        sent_for_statements = list(trips)
    assert sent_for_statements == ["_run", "_run", "_run"]
    assert trips[3:] == ["commit"]
