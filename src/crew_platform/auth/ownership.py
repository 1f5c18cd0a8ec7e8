"""The owner filter of the services (AUTH_OWNERSHIP=on): rows of other owners do not exist.

Agents, workflows, HTTP tools and MCP servers belong to their `created_by`; tasks and
executions belong to their workflow's owner (they are parts of it: a task an admin added to
someone's workflow, or a run an admin started, is still that workflow's). Without a restricted
caller every helper here is a no-op, so AUTH_MODE=none costs nothing.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from crew_platform.auth.principal import current_owner
from crew_platform.models import Workflow

Q = TypeVar("Q", bound=Select)


def visible(created_by: str | None) -> bool:
    """Whether a row with this `created_by` exists for the caller."""
    owner = current_owner()
    return owner is None or created_by == owner


def owned(query: Q, created_by: InstrumentedAttribute[Any]) -> Q:
    """`query` restricted to the caller's rows of a table that has an owner."""
    owner = current_owner()
    return query if owner is None else query.where(created_by == owner)


def in_owned_workflows(workflow_id: InstrumentedAttribute[Any]) -> ColumnElement[bool] | None:
    """The condition that rows (tasks, executions) belong to the caller's workflows; None when
    the caller is not restricted."""
    owner = current_owner()
    if owner is None:
        return None
    return workflow_id.in_(select(Workflow.id).where(Workflow.created_by == owner))


def of_owned_workflows(query: Q, workflow_id: InstrumentedAttribute[Any]) -> Q:
    """`query` restricted to rows (tasks, executions) of the caller's workflows."""
    condition = in_owned_workflows(workflow_id)
    return query if condition is None else query.where(condition)


async def workflow_visible(session: AsyncSession, workflow_id: int) -> bool:
    """Whether the workflow that a task or an execution belongs to is the caller's."""
    owner = current_owner()
    if owner is None:
        return True
    found = await session.scalar(
        select(Workflow.id).where(Workflow.id == workflow_id, Workflow.created_by == owner)
    )
    return found is not None
