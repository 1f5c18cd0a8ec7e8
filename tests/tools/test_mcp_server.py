"""The test MCP server itself: its tools answer through the official client, and it counts
each invocation."""

from __future__ import annotations

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.tools.conftest import McpTestServer
from tests.tools.mcp_server import TOOL_NAMES


async def test_lists_its_tools_and_counts_each_call(mcp_server: McpTestServer) -> None:
    async with (
        streamable_http_client(mcp_server.url) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        listed = await session.list_tools()
        added = await session.call_tool("add", {"a": 2, "b": 3})
        await session.call_tool("echo", {"text": "hi"})
        await session.call_tool("echo", {"text": "again"})
    assert sorted(t.name for t in listed.tools) == sorted(TOOL_NAMES)
    assert "5" in added.content[0].text  # type: ignore[union-attr]
    assert mcp_server.counts() == {"add": 1, "echo": 2}


async def test_tells_the_headers_it_received_and_fails_on_demand(mcp_server: McpTestServer) -> None:
    async with (
        httpx2.AsyncClient(headers={"X-Api-Key": "sekret"}) as http,
        streamable_http_client(mcp_server.url, http_client=http) as (read, write, *_),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        header = await session.call_tool("request_header", {"name": "x-api-key"})
        failed = await session.call_tool("fail", {"message": "boom"})
    assert header.content[0].text == "sekret"  # type: ignore[union-attr]
    assert failed.is_error and "boom" in failed.content[0].text  # type: ignore[union-attr]
    assert mcp_server.counts() == {"request_header": 1, "fail": 1}
