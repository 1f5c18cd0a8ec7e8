"""Tool and MCP server rules: names unique across every source, only HTTP tools editable, no
deletion while agents name a tool, MCP listings on create and refresh only."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crew_platform.auth.ownership import owned, visible
from crew_platform.auth.principal import current_creator, current_owner
from crew_platform.common.persistence import commit_unique
from crew_platform.db import utcnow
from crew_platform.errors import Conflict, NotFound, ToolNotFound, ValidationFailed
from crew_platform.models import Agent
from crew_platform.models.tables import McpServer, Tool
from crew_platform.settings import Settings
from crew_platform.toolbox.schemas import (
    HttpCall,
    McpServerCreate,
    McpServerRead,
    McpToolRead,
    ToolCreate,
    ToolRead,
    ToolUpdate,
)
from crew_platform.tools import mcp_client
from crew_platform.tools.base import Toolbox, ToolError, ToolSource, ToolSpec
from crew_platform.tools.registry import Registry, mcp_tool_name
from crew_platform.tools.ssrf import check_url

MCP_LISTING_TIMEOUT_SECONDS = 10.0
"""At most this long (or TOOL_TIMEOUT_SECONDS if shorter) is spent listing a server's tools on
create and refresh; a server slower than that is stored as unreachable."""


# -- tools -----------------------------------------------------------------------------------


def _read(spec: ToolSpec, row: Tool | None) -> ToolRead:
    return ToolRead(
        name=spec.name,
        description=spec.description,
        parameters=dict(spec.parameters),
        source=spec.source,
        server=spec.server,
        available=spec.available,
        http=HttpCall.model_validate(row.http) if row is not None else None,
    )


def _http_read(row: Tool) -> ToolRead:
    spec = ToolSpec(row.name, row.description, row.parameters, ToolSource.HTTP)
    return _read(spec, row)


async def list_tools(session: AsyncSession, registry: Registry) -> list[ToolRead]:
    specs = await registry.list_all()
    rows = {row.name: row for row in await session.scalars(select(Tool))}
    hidden_servers = await _hidden_servers(session)
    return [
        _read(spec, rows.get(spec.name) if spec.source == ToolSource.HTTP else None)
        for spec in specs
        if _spec_visible(spec, rows.get(spec.name), hidden_servers)
    ]


async def _hidden_servers(session: AsyncSession) -> set[str]:
    """Names of the MCP servers of other owners (none unless the caller is restricted)."""
    owner = current_owner()
    if owner is None:
        return set()
    rows = await session.execute(select(McpServer.name, McpServer.created_by))
    return {name for name, created_by in rows if created_by != owner}


async def _others_tools(session: AsyncSession, specs: Sequence[ToolSpec]) -> set[str]:
    """The names among `specs` of other owners' HTTP tools and MCP servers' tools: for a
    restricted caller they do not exist, so its agents cannot run them either."""
    owner = current_owner()
    if owner is None:
        return set()
    http = [spec.name for spec in specs if spec.source == ToolSource.HTTP]
    rows = (
        {row.name: row for row in await session.scalars(select(Tool).where(Tool.name.in_(http)))}
        if http
        else {}
    )
    hidden_servers = await _hidden_servers(session)
    return {
        spec.name for spec in specs if not _spec_visible(spec, rows.get(spec.name), hidden_servers)
    }


def _spec_visible(spec: ToolSpec, row: Tool | None, hidden_servers: set[str]) -> bool:
    """Built-in tools are everyone's; an HTTP tool is its creator's, an MCP tool its server's."""
    if spec.source == ToolSource.HTTP:
        return row is None or visible(row.created_by)
    if spec.source == ToolSource.MCP:
        return spec.server not in hidden_servers
    return True


async def get_tool(session: AsyncSession, registry: Registry, name: str) -> ToolRead:
    spec = await registry.get(name)
    row = await _http_row(session, name) if spec and spec.source == ToolSource.HTTP else None
    if spec is None or not _spec_visible(spec, row, await _hidden_servers(session)):
        raise NotFound.resource("Tool", name)
    return _read(spec, row)


async def _lookup(session: AsyncSession, registry: Registry, name: str) -> ToolSpec | None:
    """`registry.get`, after ending the session's transaction: the registry reads through a
    session of its own, and on SQLite the pool has a single connection, which the request's
    session would otherwise hold. Nothing is expired (`expire_on_commit=False`)."""
    await session.commit()
    return await registry.get(name)


async def _http_row(session: AsyncSession, name: str) -> Tool | None:
    return await session.scalar(select(Tool).where(Tool.name == name))


def _taken(name: str, owner: str) -> Conflict:
    return Conflict(
        f"A tool named {name!r} already exists ({owner}); tool names are unique across "
        "built-in, HTTP and MCP tools",
        {"field": "name", "value": name},
    )


def _owner(spec: ToolSpec) -> str:
    if spec.source == ToolSource.MCP:
        return f"a tool of MCP server {spec.server!r}"
    return "a built-in tool" if spec.source == ToolSource.BUILTIN else "an HTTP tool"


async def _ensure_tool_name_free(session: AsyncSession, registry: Registry, name: str) -> None:
    """Free in every source, and outside every MCP server's `<server>.` namespace (a tool the
    server lists later must not collide with it)."""
    if (spec := await _lookup(session, registry, name)) is not None:
        raise _taken(name, _owner(spec))
    prefix = name.split(".", 1)[0]
    if "." in name and await _server_row(session, prefix) is not None:
        raise _taken(name, f"names starting with {prefix + '.'!r} belong to MCP server {prefix!r}")


async def create_tool(session: AsyncSession, registry: Registry, data: ToolCreate) -> ToolRead:
    await _ensure_tool_name_free(session, registry, data.name)
    row = Tool(
        name=data.name,
        description=data.description,
        parameters=data.parameters,
        http=data.http.model_dump(),
        created_by=current_creator(),
    )
    session.add(row)
    await commit_unique(session, unique=Tool.name, conflict=_taken(data.name, "an HTTP tool"))
    return _http_read(row)


async def _editable(session: AsyncSession, registry: Registry, name: str, action: str) -> Tool:
    """The HTTP tool `name`; built-in and MCP tools exist but cannot be changed (409)."""
    row = await _http_row(session, name)
    if row is not None and visible(row.created_by):
        return row
    hidden_servers = await _hidden_servers(session)
    spec = await _lookup(session, registry, name) if row is None else None
    if spec is None or not _spec_visible(spec, None, hidden_servers):
        raise NotFound.resource("Tool", name)
    where = (
        f"change the MCP server {spec.server!r} instead"
        if spec.source == ToolSource.MCP
        else "built-in tools are always present"
    )
    raise Conflict(
        f"Tool {name!r} is {_owner(spec)} and cannot be {action}d; only HTTP tools can ({where})",
        {"tool": name, "source": spec.source.value, "intent": action},
    )


async def update_tool(
    session: AsyncSession, registry: Registry, name: str, data: ToolUpdate
) -> ToolRead:
    row = await _editable(session, registry, name, "update")
    changes = data.model_dump(exclude_unset=True)
    new_name = changes.get("name", name)
    if new_name != name:
        await _ensure_tool_name_free(session, registry, new_name)
    for field, value in changes.items():
        setattr(row, field, value)
    await commit_unique(session, unique=Tool.name, conflict=_taken(new_name, "an HTTP tool"))
    await session.refresh(row)
    return _http_read(row)


async def _agents_naming(
    session: AsyncSession, matches: Callable[[str], bool]
) -> list[dict[str, Any]]:
    rows = (
        await session.execute(select(Agent.id, Agent.name, Agent.tools).order_by(Agent.id))
    ).all()
    return [
        {"id": agent_id, "name": agent_name, "tools": [t for t in tools or [] if matches(t)]}
        for agent_id, agent_name, tools in rows
        if any(matches(t) for t in tools or [])
    ]


def _still_named(what: str, agents: list[dict[str, Any]]) -> Conflict:
    names = ", ".join(f"{a['id']} ({a['name']})" for a in agents)
    return Conflict(
        f"{what} is still named in the tools of agent(s) {names}; remove it from their tools first",
        {"agents": agents, "agent_ids": [a["id"] for a in agents]},
    )


async def delete_tool(session: AsyncSession, registry: Registry, name: str) -> None:
    row = await _editable(session, registry, name, "delete")
    if agents := await _agents_naming(session, lambda tool: tool == name):
        raise _still_named(f"Tool {name!r}", agents)
    await session.delete(row)
    await session.commit()


# -- the check before a run ------------------------------------------------------------------


async def check_agents_tools(
    session: AsyncSession, toolbox: Toolbox, agent_ids: Iterable[int]
) -> None:
    """`ToolNotFound` (422) when any of these agents names a tool that resolves to none."""
    ids = sorted(set(agent_ids))
    if not ids:
        return
    rows = await session.execute(select(Agent.id, Agent.name, Agent.tools).where(Agent.id.in_(ids)))
    await check_tools_named(
        session, toolbox, {agent_id: (name, tools or []) for agent_id, name, tools in rows}
    )


async def check_tools_named(
    session: AsyncSession, toolbox: Toolbox, agents: Mapping[int, tuple[str, Sequence[str]]]
) -> None:
    """`ToolNotFound` (422) when an agent (id -> its name and tools) names a tool that resolves
    to none."""
    names = sorted({tool for _, tools in agents.values() for tool in tools})
    if not names:
        return
    await session.commit()  # frees the connection for the toolbox's own session (see _lookup)
    found, unknown = await toolbox.resolve(names)
    missing = set(unknown) | await _others_tools(session, found)
    if not missing:
        return
    per_agent = {
        agent_id: [tool for tool in tools if tool in missing]
        for agent_id, (_, tools) in agents.items()
        if any(tool in missing for tool in tools)
    }
    raise ToolNotFound.for_agents(
        per_agent, {agent_id: name for agent_id, (name, _) in agents.items()}
    )


# -- MCP servers -----------------------------------------------------------------------------


def server_read(row: McpServer) -> McpServerRead:
    return McpServerRead(
        id=row.id,
        name=row.name,
        url=row.url,
        command=row.command,
        headers=dict(row.headers or {}),
        reachable=row.reachable,
        last_error=row.last_error,
        tools=[
            McpToolRead(
                name=mcp_tool_name(row.name, str(listed["name"])),
                description=str(listed.get("description") or ""),
                parameters=listed.get("input_schema") or {"type": "object"},
            )
            for listed in row.tools or []
        ],
        refreshed_at=row.refreshed_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        created_by=row.created_by,
    )


async def _server_row(session: AsyncSession, name: str) -> McpServer | None:
    return await session.scalar(select(McpServer).where(McpServer.name == name))


async def get_server(session: AsyncSession, server_id: int) -> McpServer:
    row = await session.get(McpServer, server_id)
    if row is None or not visible(row.created_by):
        raise NotFound.resource("MCP server", server_id)
    return row


async def list_servers(session: AsyncSession) -> Sequence[McpServer]:
    query = owned(select(McpServer).order_by(McpServer.id), McpServer.created_by)
    return (await session.scalars(query)).all()


def _server_taken(name: str) -> Conflict:
    return Conflict(
        f"An MCP server named {name!r} already exists", {"field": "name", "value": name}
    )


async def _check_transport(data: McpServerCreate, settings: Settings) -> None:
    if (data.url is None) == (data.command is None):
        raise ValidationFailed.field("url", "give exactly one of url (streamable HTTP) or command")
    if data.command is not None and not settings.mcp_allow_stdio:
        raise ValidationFailed.field(
            "command", "stdio MCP servers are disabled; set MCP_ALLOW_STDIO=true to allow them"
        )
    if data.url is not None:
        try:
            await check_url(data.url, settings.tools_allowed_networks)
        except ToolError as exc:
            raise ValidationFailed.field(
                "url", f"{exc} (a local server needs its address in TOOLS_ALLOWED_NETWORKS)"
            ) from exc


async def create_server(
    session: AsyncSession, settings: Settings, data: McpServerCreate
) -> McpServer:
    if await _server_row(session, data.name) is not None:
        raise _server_taken(data.name)
    clashing = await session.scalar(
        select(Tool.name).where(Tool.name.startswith(data.name + ".", autoescape=True)).limit(1)
    )
    if clashing is not None:
        raise Conflict(
            f"HTTP tool {clashing!r} already uses the names of MCP server {data.name!r} "
            f"({data.name}.<tool>); choose another server name",
            {"field": "name", "value": data.name, "tool": clashing},
        )
    await _check_transport(data, settings)
    row = McpServer(
        name=data.name,
        url=data.url,
        command=data.command,
        headers=data.headers or {},
        tools=[],
        created_by=current_creator(),
    )
    session.add(row)
    await commit_unique(session, unique=McpServer.name, conflict=_server_taken(data.name))
    return await refresh_server(session, settings, row)


async def refresh_server(session: AsyncSession, settings: Settings, row: McpServer) -> McpServer:
    """Lists the server's tools now. Unreachable: the last listing is kept (its tools show as
    unavailable) and `last_error` says why. No database connection is held while listing."""
    url, headers, command = row.url, dict(row.headers or {}), row.command
    await session.commit()
    try:
        tools: list[dict[str, Any]] | None = await mcp_client.list_tools(
            url,
            headers,
            timeout=min(MCP_LISTING_TIMEOUT_SECONDS, settings.tool_timeout_seconds),
            allowed_networks=settings.tools_allowed_networks,
            command=command,
            allow_stdio=settings.mcp_allow_stdio,
        )
        error = None
    except ToolError as exc:
        tools, error = None, str(exc) or type(exc).__name__
    if tools is not None:
        row.tools = tools
    row.reachable = tools is not None
    row.last_error = error
    row.refreshed_at = utcnow()
    await session.commit()
    await session.refresh(row)
    return row


async def delete_server(session: AsyncSession, server_id: int) -> None:
    row = await get_server(session, server_id)
    prefix = row.name + "."
    if agents := await _agents_naming(session, lambda tool: tool.startswith(prefix)):
        raise _still_named(f"MCP server {row.name!r} (tools {prefix}*)", agents)
    await session.delete(row)
    await session.commit()
