"""Listing and calling the tools of an MCP server with the official SDK.

Each listing or call opens its own session and closes it before returning, all in the calling
task (the SDK runs on anyio task groups, which must be entered and left in one task). What the
task groups raise (`ExceptionGroup`s) is turned into one clear error: `McpUnreachable` when the
server cannot be reached or spoken to, `ToolError` when the tool itself failed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import httpx2

from crew_platform.tools.base import ToolError
from crew_platform.tools.secrets import resolve_headers
from crew_platform.tools.ssrf import AllowedNetworks
from crew_platform.tools.transport import guarded_client

if TYPE_CHECKING:  # the SDK is imported on first use: it is a third of the app's import time
    from mcp import ClientSession
    from mcp_types import CallToolResult

MAX_LISTING_PAGES = 100
T = TypeVar("T")


class McpUnreachable(ToolError):
    """The server could not be reached or did not speak MCP (its tools are unavailable)."""


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _explain(exc: BaseException, where: str) -> ToolError:
    """The one error a failed session stands for, worded for the model and the API."""
    from mcp.shared.exceptions import MCPError

    leaves = _leaves(exc)
    for leaf in leaves:
        if isinstance(leaf, ToolError):
            return leaf
    for leaf in leaves:
        if isinstance(leaf, MCPError):
            return ToolError(f"MCP server {where} answered an error: {leaf}")
        if isinstance(leaf, httpx2.HTTPStatusError):
            return McpUnreachable(f"MCP server {where} answered HTTP {leaf.response.status_code}")
        if isinstance(leaf, httpx2.HTTPError | OSError):
            return McpUnreachable(
                f"cannot reach MCP server {where}: {type(leaf).__name__}: {leaf}".rstrip(": ")
            )
    first = leaves[0]
    return McpUnreachable(f"MCP session with {where} failed: {type(first).__name__}: {first}")


@asynccontextmanager
async def _session(
    url: str | None,
    headers: Mapping[str, str] | None,
    *,
    timeout: float,
    allowed_networks: AllowedNetworks,
    command: Sequence[str] | None,
    allow_stdio: bool,
) -> AsyncIterator[ClientSession]:
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client
    from mcp.client.streamable_http import streamable_http_client

    if command:
        if not allow_stdio:
            raise McpUnreachable("stdio MCP servers are disabled (set MCP_ALLOW_STDIO=true)")
        params = StdioServerParameters(command=command[0], args=list(command[1:]))
        async with (
            stdio_client(params) as (read, write, *_),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session
        return
    if not url:
        raise McpUnreachable("the MCP server has neither a URL nor a command")
    resolved = resolve_headers(headers or {})
    async with (
        guarded_client(allowed_networks, timeout=timeout, headers=resolved) as client,
        streamable_http_client(url, http_client=client) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def _with_session(
    url: str | None,
    headers: Mapping[str, str] | None,
    work: Callable[[ClientSession], Awaitable[T]],
    *,
    timeout: float,
    allowed_networks: AllowedNetworks,
    command: Sequence[str] | None,
    allow_stdio: bool,
) -> T:
    where = url or " ".join(command or ()) or "(none)"
    try:
        with anyio.fail_after(timeout):
            async with _session(
                url,
                headers,
                timeout=timeout,
                allowed_networks=allowed_networks,
                command=command,
                allow_stdio=allow_stdio,
            ) as session:
                return await work(session)
    except TimeoutError as exc:
        raise McpUnreachable(f"MCP server {where} did not answer within {timeout:g} s") from exc
    except ToolError:
        raise
    except Exception as exc:
        raise _explain(exc, where) from exc


async def list_tools(
    url: str | None,
    headers: Mapping[str, str] | None,
    *,
    timeout: float,
    allowed_networks: AllowedNetworks = "",
    command: Sequence[str] | None = None,
    allow_stdio: bool = False,
) -> list[dict[str, Any]]:
    """The server's tools, each `{"name", "description", "input_schema"}`; any failure is
    `McpUnreachable`."""

    async def listing(session: ClientSession) -> list[dict[str, Any]]:
        from mcp_types import PaginatedRequestParams

        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(MAX_LISTING_PAGES):
            params = PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await session.list_tools(params=params)
            tools += [
                {
                    "name": tool.name,
                    "description": tool.description or "",
                    "input_schema": tool.input_schema,
                }
                for tool in page.tools
            ]
            cursor = page.next_cursor
            if cursor is None:
                break
        return tools

    try:
        return await _with_session(
            url,
            headers,
            listing,
            timeout=timeout,
            allowed_networks=allowed_networks,
            command=command,
            allow_stdio=allow_stdio,
        )
    except McpUnreachable:
        raise
    except ToolError as exc:
        raise McpUnreachable(str(exc)) from exc


def _result_text(result: CallToolResult) -> str:
    from mcp_types import TextContent

    parts = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        else:
            parts.append(f"[{block.type} content omitted]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


async def call_tool(
    url: str | None,
    headers: Mapping[str, str] | None,
    tool: str,
    arguments: Mapping[str, Any],
    *,
    timeout: float,
    allowed_networks: AllowedNetworks = "",
    command: Sequence[str] | None = None,
    allow_stdio: bool = False,
) -> str:
    """The tool's result as text; `ToolError` when the tool reports an error,
    `McpUnreachable` when the server cannot be reached."""

    async def calling(session: ClientSession) -> CallToolResult:
        return await session.call_tool(tool, dict(arguments))

    result = await _with_session(
        url,
        headers,
        calling,
        timeout=timeout,
        allowed_networks=allowed_networks,
        command=command,
        allow_stdio=allow_stdio,
    )
    text = _result_text(result)
    if result.is_error:
        raise ToolError(text or f"the MCP tool {tool} reported an error")
    return text
