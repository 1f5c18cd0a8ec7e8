from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response

from crew_platform.common.deps import SessionDep, SettingsDep
from crew_platform.common.http import ERROR_RESPONSES, TOTAL_COUNT, McpServerId, PageDep
from crew_platform.common.schemas import Deleted
from crew_platform.toolbox import service
from crew_platform.toolbox.schemas import (
    McpServerCreate,
    McpServerRead,
    ToolCreate,
    ToolDeleted,
    ToolRead,
    ToolUpdate,
)
from crew_platform.tools.registry import Registry

tools_router = APIRouter(prefix="/api/v1/tools", tags=["tools"], responses=ERROR_RESPONSES)
servers_router = APIRouter(
    prefix="/api/v1/mcp-servers", tags=["mcp-servers"], responses=ERROR_RESPONSES
)

ToolName = Annotated[str, Path(description="The tool's unique name (`<server>.<tool>` for MCP)")]


def _registry(request: Request) -> Registry:
    registry: Registry = request.app.state.tools
    return registry


@tools_router.get(
    "/", response_model=list[ToolRead], responses=TOTAL_COUNT, summary="List every tool"
)
@tools_router.get("", response_model=list[ToolRead], include_in_schema=False)
async def list_tools(
    session: SessionDep, request: Request, response: Response, page: PageDep
) -> list[ToolRead]:
    """Every tool an agent may name: built-in tools, HTTP tools and the tools of each MCP
    server (as last listed)."""
    tools = await service.list_tools(session, _registry(request))
    response.headers["X-Total-Count"] = str(len(tools))
    return tools[page.skip : page.skip + page.limit]


@tools_router.post("/", response_model=ToolRead, status_code=201, summary="Create an HTTP tool")
@tools_router.post("", response_model=ToolRead, status_code=201, include_in_schema=False)
async def create_tool(data: ToolCreate, session: SessionDep, request: Request) -> ToolRead:
    return await service.create_tool(session, _registry(request), data)


@tools_router.get("/{name}", response_model=ToolRead, summary="Get a tool by name")
async def get_tool(name: ToolName, session: SessionDep, request: Request) -> ToolRead:
    return await service.get_tool(session, _registry(request), name)


@tools_router.put("/{name}", response_model=ToolRead, summary="Update an HTTP tool")
async def update_tool(
    name: ToolName, data: ToolUpdate, session: SessionDep, request: Request
) -> ToolRead:
    """Built-in and MCP tools cannot be changed (409)."""
    return await service.update_tool(session, _registry(request), name, data)


@tools_router.delete("/{name}", response_model=ToolDeleted, summary="Delete an HTTP tool")
async def delete_tool(name: ToolName, session: SessionDep, request: Request) -> ToolDeleted:
    """409 while agents name it in their `tools` (listed in `details.agents`)."""
    await service.delete_tool(session, _registry(request), name)
    return ToolDeleted(name=name, message=f"Tool {name} deleted")


@servers_router.get(
    "/", response_model=list[McpServerRead], responses=TOTAL_COUNT, summary="List MCP servers"
)
@servers_router.get("", response_model=list[McpServerRead], include_in_schema=False)
async def list_servers(
    session: SessionDep, response: Response, page: PageDep
) -> list[McpServerRead]:
    servers = await service.list_servers(session)
    response.headers["X-Total-Count"] = str(len(servers))
    return [service.server_read(row) for row in servers[page.skip : page.skip + page.limit]]


@servers_router.post(
    "/", response_model=McpServerRead, status_code=201, summary="Add an MCP server"
)
@servers_router.post("", response_model=McpServerRead, status_code=201, include_in_schema=False)
async def create_server(
    data: McpServerCreate, session: SessionDep, settings: SettingsDep
) -> McpServerRead:
    """Stores the server, then lists its tools; an unreachable server is still created, with
    `reachable: false` and `last_error`."""
    return service.server_read(await service.create_server(session, settings, data))


@servers_router.get("/{server_id}", response_model=McpServerRead, summary="Get an MCP server")
async def get_server(server_id: McpServerId, session: SessionDep) -> McpServerRead:
    return service.server_read(await service.get_server(session, server_id))


@servers_router.delete("/{server_id}", response_model=Deleted, summary="Delete an MCP server")
async def delete_server(server_id: McpServerId, session: SessionDep) -> Deleted:
    """409 while agents name any of its tools (listed in `details.agents`)."""
    await service.delete_server(session, server_id)
    return Deleted(id=server_id, message=f"MCP server {server_id} deleted")


@servers_router.post(
    "/{server_id}/refresh", response_model=McpServerRead, summary="List an MCP server's tools again"
)
async def refresh_server(
    server_id: McpServerId, session: SessionDep, settings: SettingsDep
) -> McpServerRead:
    row = await service.get_server(session, server_id)
    return service.server_read(await service.refresh_server(session, settings, row))
