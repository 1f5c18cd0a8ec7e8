"""Small helpers the services share around SQLAlchemy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, Row, Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from crew_platform.errors import Conflict

T = TypeVar("T")


async def paginate(
    session: AsyncSession, query: Select[Any], *, skip: int, limit: int
) -> tuple[Sequence[Any], int]:
    total = await session.scalar(_count(query))
    rows = (await session.scalars(query.offset(skip).limit(limit))).all()
    return rows, int(total or 0)


def paginate_rows(
    connection: Connection, query: Select[Any], *, skip: int, limit: int
) -> tuple[Sequence[Row[Any]], int]:
    """`paginate` for a Core query on a plain connection (see crew_platform.reads)."""
    total = connection.scalar(_count(query))
    rows = connection.execute(query.offset(skip).limit(limit)).all()
    return rows, int(total or 0)


def _count(query: Select[Any]) -> Select[Any]:
    return select(func.count()).select_from(query.order_by(None).subquery())


async def commit_unique(session: AsyncSession, *, unique: Any, conflict: Conflict) -> None:
    """Commit; losing a race on the `unique` column (e.g. `Agent.name`) to another request is
    `conflict` (409). Any other integrity failure is not a duplicate and propagates."""
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        if violates_unique(exc, unique):
            raise conflict from exc
        raise


def violates_unique(exc: IntegrityError, unique: Any) -> bool:
    """Whether `exc` is a unique violation on the column `unique` (on either backend)."""
    column = unique.property.columns[0]
    table, name = column.table.name, column.name
    text = str(exc.orig)
    return (
        f"uq_{table}_{name}" in text  # PostgreSQL names the constraint (naming convention)
        or f"UNIQUE constraint failed: {table}.{name}" in text  # SQLite names the column
    )


async def name_taken(
    session: AsyncSession, model: Any, name: str, *, exclude_id: int | None = None
) -> bool:
    query = select(model.id).where(model.name == name)
    if exclude_id is not None:
        query = query.where(model.id != exclude_id)
    return (await session.scalar(query.limit(1))) is not None
