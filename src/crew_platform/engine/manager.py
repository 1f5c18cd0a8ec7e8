"""The crew of a hierarchical workflow: its manager and the coworkers the manager delegates to.

The manager is the agent `config.manager_agent_id` names, or one the platform builds on
`config.manager_model` (the default model when unset) with a manager's role. Either way it is
offered only the delegation tools, never tools of its own. The coworkers are the active agents
assigned to the workflow's active tasks (the manager itself left out), read when the runner
begins or resumes, like the tasks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Select, select

from crew_platform.engine.delegation import DEFAULT_MAX_DELEGATIONS, MAX_DELEGATIONS_CEILING, Crew
from crew_platform.engine.loading import AGENTS, TASKS, profile_of
from crew_platform.engine.rules import Writer
from crew_platform.llm.prompts import AgentProfile

HIERARCHICAL = "hierarchical"
MANAGER_ROLE = "Crew Manager"
MANAGER_GOAL = "Get every task done well by handing it to the coworker best suited for it"
MANAGER_BACKSTORY = (
    "You have run many teams. You know what each of your coworkers is good at, you hand each "
    "piece of work to the one best placed to do it, you ask when something is unclear, and you "
    "check what comes back before you give your final answer. You rely on your crew rather "
    "than doing their work yourself."
)
"""Written for this platform, in the spirit of CrewAI's manager agent."""


def built_manager(model: str) -> AgentProfile:
    """The manager the platform builds when the workflow names no manager agent."""
    return AgentProfile(
        agent_id=None,
        name="manager",
        role=MANAGER_ROLE,
        goal=MANAGER_GOAL,
        backstory=MANAGER_BACKSTORY,
        model=model,
        temperature=0.6,
        top_p=0.9,
        max_tokens=32768,
    )


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value


def manager_agent_id(config: Mapping[str, Any] | None) -> int | None:
    return _positive_int((config or {}).get("manager_agent_id"))


def max_delegations(config: Mapping[str, Any] | None) -> int:
    """`config.max_delegations`, or the default where it is missing or out of range (a stored
    config is checked when written; this reads it as leniently as `max_parallel`)."""
    value = (config or {}).get("max_delegations", DEFAULT_MAX_DELEGATIONS)
    if isinstance(value, bool) or not isinstance(value, int):
        return DEFAULT_MAX_DELEGATIONS
    return value if 0 <= value <= MAX_DELEGATIONS_CEILING else DEFAULT_MAX_DELEGATIONS


def manager_model(config: Mapping[str, Any] | None, default_model: str) -> str:
    value = (config or {}).get("manager_model")
    return value if isinstance(value, str) and value.strip() else default_model


def crew_agents(workflow_id: int) -> Select[Any]:
    """The active agents of the workflow's active tasks, by id (a SELECT of agent rows)."""
    assigned = select(TASKS.c.agent_id).where(
        TASKS.c.workflow_id == workflow_id, TASKS.c.is_active.is_(True)
    )
    return (
        select(AGENTS)
        .where(AGENTS.c.id.in_(assigned), AGENTS.c.is_active.is_(True))
        .order_by(AGENTS.c.id)
    )


async def load_crew(
    reader: Writer, *, workflow_id: int, config: Mapping[str, Any] | None, default_model: str
) -> Crew:
    manager_id = manager_agent_id(config)
    manager: AgentProfile | None = built_manager(manager_model(config, default_model))
    problem = None
    if manager_id is not None:
        row = (await reader.execute(select(AGENTS).where(AGENTS.c.id == manager_id))).first()
        manager = dataclasses.replace(profile_of(row), tools=()) if row else None
        if row is None:
            problem = f"TASK_NOT_RUNNABLE: the manager agent {manager_id} no longer exists"
    rows = (await reader.execute(crew_agents(workflow_id))).all()
    coworkers = tuple(profile_of(r) for r in rows if r.id != manager_id)
    return Crew(manager, coworkers, max_delegations(config), problem)
