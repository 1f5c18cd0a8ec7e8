from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from crew_platform.agents import service
from crew_platform.agents.schemas import (
    AgentCreate,
    AgentRead,
    AgentTestRequest,
    AgentTestResult,
    AgentUpdate,
)
from crew_platform.common.deps import BusDep, ReadsDep, SessionDep, SettingsDep, ToolboxDep
from crew_platform.common.http import ERROR_RESPONSES, TOTAL_COUNT, AgentId, PageDep
from crew_platform.common.schemas import Deleted
from crew_platform.engine import ToolLoop
from crew_platform.toolbox.service import check_agents_tools

router = APIRouter(prefix="/api/v1/agents", tags=["agents"], responses=ERROR_RESPONSES)


@router.get("/", response_model=list[AgentRead], responses=TOTAL_COUNT, summary="Get all agents")
@router.get("", response_model=list[AgentRead], include_in_schema=False)
async def list_agents(
    reads: ReadsDep,
    response: Response,
    page: PageDep,
    active_only: Annotated[bool, Query(description="Filter only active agents")] = True,
) -> list[AgentRead]:
    agents, total = await service.read_agents(
        reads, skip=page.skip, limit=page.limit, active_only=active_only
    )
    response.headers["X-Total-Count"] = str(total)
    return [AgentRead.model_validate(a) for a in agents]


@router.post("/", response_model=AgentRead, status_code=201, summary="Create agent")
@router.post("", response_model=AgentRead, status_code=201, include_in_schema=False)
async def create_agent(data: AgentCreate, session: SessionDep, settings: SettingsDep) -> AgentRead:
    agent = await service.create_agent(session, data=data, default_model=settings.default_model)
    return AgentRead.model_validate(agent)


@router.get("/{agent_id}", response_model=AgentRead, summary="Get agent by ID")
async def get_agent(agent_id: AgentId, reads: ReadsDep) -> AgentRead:
    return AgentRead.model_validate(await service.read_agent(reads, agent_id))


@router.put("/{agent_id}", response_model=AgentRead, summary="Update agent")
async def update_agent(agent_id: AgentId, data: AgentUpdate, session: SessionDep) -> AgentRead:
    agent = await service.update_agent(session, agent_id=agent_id, data=data)
    return AgentRead.model_validate(agent)


@router.delete("/{agent_id}", response_model=Deleted, summary="Delete agent")
async def delete_agent(agent_id: AgentId, session: SessionDep) -> Deleted:
    await service.delete_agent(session, agent_id=agent_id)
    return Deleted(id=agent_id, message=f"Agent {agent_id} deleted")


@router.post("/{agent_id}/test", response_model=AgentTestResult, summary="Test agent")
async def test_agent(
    agent_id: AgentId,
    data: AgentTestRequest,
    session: SessionDep,
    request: Request,
    bus: BusDep,
    toolbox: ToolboxDep,
) -> AgentTestResult:
    """Runs the agent once on `input` (+ `context`) and answers inline; a model failure is
    `success: false` with the error, never a 5xx. 422 `TOOL_NOT_FOUND` when the agent names a
    tool that does not exist."""
    await check_agents_tools(session, toolbox, [agent_id])
    state = request.app.state
    loop = ToolLoop(state.gateway, toolbox, timeout=state.settings.tool_timeout_seconds)
    return await service.test_agent(session, agent_id=agent_id, data=data, loop=loop, bus=bus)
