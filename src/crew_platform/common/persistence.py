"""Small helpers the services share around SQLAlchemy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from crew_platform.errors import Conflict

T = TypeVar("T")


async def paginate(
    session: AsyncSession, query: Select[Any], *, skip: int, limit: int
) -> tuple[Sequence[Any], int]:
    total = await session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = (await session.scalars(query.offset(skip).limit(limit))).all()
    return rows, int(total or 0)


async def commit_unique(session: AsyncSession, *, message: str, details: dict[str, Any]) -> None:
    """Commit; a unique-constraint race lost to another request becomes a 409."""
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict(message, details) from exc


async def name_taken(
    session: AsyncSession, model: Any, name: str, *, exclude_id: int | None = None
) -> bool:
    query = select(model.id).where(model.name == name)
    if exclude_id is not None:
        query = query.where(model.id != exclude_id)
    return (await session.scalar(query.limit(1))) is not None
