"""`Registry`: the `Toolbox` over every source (built-ins, HTTP tools, MCP servers' tools)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crew_platform.models.tables import McpServer, Tool
from crew_platform.settings import Settings
from crew_platform.tools import mcp_client
from crew_platform.tools.base import ToolError, ToolSource, ToolSpec
from crew_platform.tools.builtins import BUILTINS
from crew_platform.tools.http_tools import call_http_tool
from crew_platform.tools.schemas import arguments_problem

log = logging.getLogger(__name__)

Runner = Callable[[Mapping[str, Any], float], Awaitable[str]]


def cut(text: str, max_chars: int) -> str:
    """`text` within `max_chars`, saying so when it was cut."""
    if len(text) <= max_chars:
        return text
    note = f"\n[cut at {max_chars} characters]"
    if len(note) >= max_chars:
        return text[:max_chars]
    return text[: max_chars - len(note)] + note


def mcp_tool_name(server: str, tool: str) -> str:
    return f"{server}.{tool}"


@dataclass(frozen=True)
class _Entry:
    spec: ToolSpec
    run: Runner


class Registry:
    """Implements `Toolbox`. Reads the `tools` and `mcp_servers` tables on each look-up that
    needs them (MCP tools come from each server's cached listing), so changes through the API
    show at once. Built-ins need no read: no stored tool may take a built-in's name."""

    def __init__(self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]):
        self._settings = settings
        self._sessionmaker = sessionmaker
        self._builtins = {name: self._builtin(name) for name in BUILTINS}

    async def list_all(self) -> list[ToolSpec]:
        return [entry.spec for entry in (await self._entries()).values()]

    async def get(self, name: str) -> ToolSpec | None:
        entry = (await self._entries()).get(name)
        return entry.spec if entry else None

    async def resolve(self, names: Sequence[str]) -> tuple[list[ToolSpec], list[str]]:
        entries = (
            self._builtins if all(n in self._builtins for n in names) else await self._entries()
        )
        found = [entries[name].spec for name in names if name in entries]
        unknown = [name for name in names if name not in entries]
        return found, unknown

    async def call(self, name: str, arguments: Mapping[str, Any], *, timeout: float) -> str:
        entry = self._builtins.get(name) or (await self._entries()).get(name)
        if entry is None:
            raise ToolError(f"unknown tool {name!r}")
        problem = arguments_problem(entry.spec.parameters, arguments)
        if problem is not None:
            raise ToolError(f"invalid arguments for {name}: {problem}")
        try:
            async with asyncio.timeout(timeout) as scope:
                result = await entry.run(arguments, timeout)
        except TimeoutError as exc:
            if scope.expired():
                raise ToolError(f"{name} timed out after {timeout:g} s") from exc
            raise ToolError(f"{name} failed: time-out") from exc
        except ToolError:
            raise
        except Exception as exc:
            log.exception("tool %s failed unexpectedly", name)
            raise ToolError(f"{name} failed: {type(exc).__name__}") from exc
        return cut(result, self._settings.tool_result_max_chars)

    async def _entries(self) -> dict[str, _Entry]:
        entries = dict(self._builtins)
        async with self._sessionmaker() as session:
            tools = (await session.scalars(select(Tool).order_by(Tool.name))).all()
            servers = (await session.scalars(select(McpServer).order_by(McpServer.name))).all()
        for tool in tools:
            entries.setdefault(tool.name, self._http(tool))
        for server in servers:
            for listed in server.tools or []:
                entry = self._mcp(server, listed)
                entries.setdefault(entry.spec.name, entry)
        return entries

    def _builtin(self, name: str) -> _Entry:
        builtin = BUILTINS[name]
        settings = self._settings

        async def run(arguments: Mapping[str, Any], timeout: float) -> str:
            return await builtin.run(arguments, settings)

        return _Entry(builtin.spec, run)

    def _http(self, tool: Tool) -> _Entry:
        spec = ToolSpec(tool.name, tool.description, tool.parameters, ToolSource.HTTP)
        http, settings = dict(tool.http), self._settings

        async def run(arguments: Mapping[str, Any], timeout: float) -> str:
            return await call_http_tool(
                http,
                arguments,
                allowed_networks=settings.tools_allowed_networks,
                timeout=min(timeout, settings.tool_timeout_seconds),
                max_bytes=settings.tool_fetch_max_bytes,
            )

        return _Entry(spec, run)

    def _mcp(self, server: McpServer, listed: Mapping[str, Any]) -> _Entry:
        spec = ToolSpec(
            mcp_tool_name(server.name, str(listed["name"])),
            str(listed.get("description") or ""),
            listed.get("input_schema") or {"type": "object"},
            ToolSource.MCP,
            server=server.name,
            available=server.reachable,
        )
        url, headers, command = server.url, dict(server.headers or {}), server.command
        tool_name, settings = str(listed["name"]), self._settings

        async def run(arguments: Mapping[str, Any], timeout: float) -> str:
            return await mcp_client.call_tool(
                url,
                headers,
                tool_name,
                arguments,
                timeout=timeout,
                allowed_networks=settings.tools_allowed_networks,
                command=command,
                allow_stdio=settings.mcp_allow_stdio,
            )

        return _Entry(spec, run)
