"""Agent rules: unique names, defaults from settings, no deletion while tasks use one."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from crew_platform.agents.schemas import AgentCreate, AgentTestRequest, AgentTestResult, AgentUpdate
from crew_platform.auth.ownership import owned, visible
from crew_platform.auth.principal import current_creator, current_owner
from crew_platform.common.persistence import commit_unique, name_taken, paginate_rows
from crew_platform.engine import ToolLoop, profile_of, publish
from crew_platform.errors import Conflict, NotFound, PlatformError
from crew_platform.events.bus import EventBus
from crew_platform.events.types import Event, EventType
from crew_platform.llm.fallback import Fallback
from crew_platform.llm.prompts import messages
from crew_platform.models import Agent, Task
from crew_platform.reads import Reads
from crew_platform.tools.base import ToolError


async def read_agents(
    reads: Reads, *, skip: int, limit: int, active_only: bool
) -> tuple[Sequence[Row[Any]], int]:
    query = owned(select(Agent.__table__).order_by(Agent.id), Agent.created_by)
    if active_only:
        query = query.where(Agent.is_active.is_(True))
    return await reads.run(
        lambda connection: paginate_rows(connection, query, skip=skip, limit=limit)
    )


async def get_agent(session: AsyncSession, agent_id: int) -> Agent:
    agent = await session.get(Agent, agent_id)
    if agent is None or not visible(agent.created_by):
        raise NotFound.resource("Agent", agent_id)
    return agent


_AGENT_BY_ID = select(Agent.__table__).where(Agent.id == bindparam("agent_id"))
_OWNED_AGENT_BY_ID = _AGENT_BY_ID.where(Agent.created_by == bindparam("owner"))


async def read_agent(reads: Reads, agent_id: int) -> Row[Any]:
    """The agent's row for a read-only answer (no ORM object, no transaction)."""
    owner = current_owner()
    statement, params = (
        (_AGENT_BY_ID, {"agent_id": agent_id})
        if owner is None
        else (_OWNED_AGENT_BY_ID, {"agent_id": agent_id, "owner": owner})
    )
    row = await reads.run(lambda connection: connection.execute(statement, params).first())
    if row is None:
        raise NotFound.resource("Agent", agent_id)
    return row


async def _ensure_name_free(session: AsyncSession, name: str, exclude_id: int | None) -> None:
    if await name_taken(session, Agent, name, exclude_id=exclude_id):
        raise _duplicate(name)


def _duplicate(name: str) -> Conflict:
    return Conflict(f"An agent named {name!r} already exists", {"field": "name", "value": name})


async def create_agent(session: AsyncSession, *, data: AgentCreate, default_model: str) -> Agent:
    await _ensure_name_free(session, data.name, None)
    values = data.model_dump()
    values["model"] = values["model"] or default_model
    agent = Agent(**values, created_by=current_creator())
    session.add(agent)
    dup = _duplicate(data.name)
    await commit_unique(session, unique=Agent.name, conflict=dup)
    return agent


async def update_agent(session: AsyncSession, *, agent_id: int, data: AgentUpdate) -> Agent:
    agent = await get_agent(session, agent_id)
    changes = data.model_dump(exclude_unset=True)
    if "name" in changes and changes["name"] != agent.name:
        await _ensure_name_free(session, changes["name"], agent_id)
    for field, value in changes.items():
        setattr(agent, field, value)
    dup = _duplicate(agent.name)
    await commit_unique(session, unique=Agent.name, conflict=dup)
    await session.refresh(agent)
    return agent


async def delete_agent(session: AsyncSession, *, agent_id: int) -> None:
    agent = await get_agent(session, agent_id)
    # Row lock (PostgreSQL): a task being created for this agent right now either commits
    # first (and is counted below: 409) or waits and then finds the agent gone (422); it never
    # commits in between and turns this delete into a foreign-key failure.
    await session.execute(select(Agent.id).where(Agent.id == agent_id).with_for_update())
    task_ids = list(
        await session.scalars(select(Task.id).where(Task.agent_id == agent_id).order_by(Task.id))
    )
    if task_ids:
        raise Conflict(
            f"Agent {agent_id} is still assigned to {len(task_ids)} task(s); "
            "reassign or delete them first",
            {"task_ids": task_ids},
        )
    await session.delete(agent)
    await session.commit()


async def test_agent(
    session: AsyncSession,
    *,
    agent_id: int,
    data: AgentTestRequest,
    loop: ToolLoop,
    bus: EventBus,
) -> AgentTestResult:
    """Run the agent once, inline (the one deliberate exception to background execution),
    through the same tool loop as a step, keeping no tool call.

    The session is released before the model call so no connection waits on the model.
    """
    agent = await get_agent(session, agent_id)
    profile = profile_of(agent)
    await session.rollback()
    prompt = data.input
    if data.context:
        prompt += "\n\nContext:\n" + json.dumps(data.context, ensure_ascii=False, indent=2)
    began = time.perf_counter()

    async def announce_fallback(change: Fallback) -> None:
        await publish(
            bus,
            Event(
                type=EventType.MODEL_FALLBACK,
                agent_id=agent_id,
                status="running",
                data=change.data(),
            ),
        )

    try:
        completion = await loop.run(
            profile,
            messages(profile, prompt),
            specs=await loop.tools_of(profile),
            on_fallback=announce_fallback,
        )
        result = AgentTestResult(
            agent_id=agent_id,
            input=data.input,
            output=completion.text,
            execution_time=round(time.perf_counter() - began, 6),
            tokens_used=completion.tokens_used,
            success=True,
            error=None,
            model=completion.model,
        )
    except (PlatformError, ToolError) as exc:
        error = f"{exc.code}: {exc.message}" if isinstance(exc, PlatformError) else str(exc)
        result = AgentTestResult(
            agent_id=agent_id,
            input=data.input,
            output=None,
            execution_time=round(time.perf_counter() - began, 6),
            tokens_used=0,
            success=False,
            error=error,
        )
    await publish(
        bus,
        Event(
            type=EventType.AGENT_TEST_COMPLETED,
            agent_id=agent_id,
            status="completed" if result.success else "failed",
            data={
                "output": result.output,
                "error": result.error,
                "tokens_used": result.tokens_used,
                "execution_time": result.execution_time,
            },
        ),
    )
    return result
