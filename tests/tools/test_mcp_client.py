"""The MCP client against a real MCP server (the SDK's server side) in a subprocess, over
streamable HTTP on a free loopback port, and over stdio."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crew_platform.devtools.llm_stub import free_port
from crew_platform.models.tables import McpServer
from crew_platform.tools.base import ToolError
from crew_platform.tools.mcp_client import McpUnreachable, call_tool, list_tools
from crew_platform.tools.registry import Registry

SERVER_SOURCE = """
import sys
from mcp.server.mcpserver import MCPServer

server = MCPServer("calc")

@server.tool(description="Add two integers.")
def add(a: int, b: int) -> int:
    return a + b

@server.tool(description="Always fails.")
def broken() -> str:
    raise ValueError("the gauge is broken")

if sys.argv[1] == "stdio":
    server.run("stdio")
else:
    server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
"""
ALLOWED = "127.0.0.1/32"
TIMEOUT = 20.0


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def mcp_url() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER_SOURCE, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while not _listening(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            err = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"MCP server did not start:\n{err[-2000:]}")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp"
    process.terminate()
    process.wait(timeout=10)


async def test_list_tools(mcp_url: str) -> None:
    tools = {
        tool["name"]: tool
        for tool in await list_tools(mcp_url, {}, timeout=TIMEOUT, allowed_networks=ALLOWED)
    }
    assert set(tools) == {"add", "broken"}
    assert tools["add"]["description"] == "Add two integers."
    schema = tools["add"]["input_schema"]
    assert schema["type"] == "object"
    assert set(schema["properties"]) == {"a", "b"}


async def test_call_tool(mcp_url: str) -> None:
    result = await call_tool(
        mcp_url, {}, "add", {"a": 2, "b": 3}, timeout=TIMEOUT, allowed_networks=ALLOWED
    )
    assert result == "5"


async def test_a_failing_tool_is_a_tool_error(mcp_url: str) -> None:
    with pytest.raises(ToolError, match="Error executing tool broken") as caught:
        await call_tool(mcp_url, {}, "broken", {}, timeout=TIMEOUT, allowed_networks=ALLOWED)
    assert not isinstance(caught.value, McpUnreachable)


async def test_an_unknown_tool_is_a_tool_error(mcp_url: str) -> None:
    with pytest.raises(ToolError, match="nope") as caught:
        await call_tool(mcp_url, {}, "nope", {}, timeout=TIMEOUT, allowed_networks=ALLOWED)
    assert not isinstance(caught.value, McpUnreachable)


async def test_a_server_that_is_down_is_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    with pytest.raises(McpUnreachable, match=f"cannot reach MCP server {url}"):
        await list_tools(url, {}, timeout=TIMEOUT, allowed_networks=ALLOWED)
    with pytest.raises(McpUnreachable, match=f"cannot reach MCP server {url}"):
        await call_tool(url, {}, "add", {}, timeout=TIMEOUT, allowed_networks=ALLOWED)


async def test_a_loopback_server_needs_the_allow_list(mcp_url: str) -> None:
    with pytest.raises(McpUnreachable, match=r"loopback.*TOOLS_ALLOWED_NETWORKS"):
        await list_tools(mcp_url, {}, timeout=TIMEOUT)


async def test_a_missing_header_secret_is_named(
    mcp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREW_TEST_MCP_TOKEN", raising=False)
    headers = {"Authorization": "Bearer ${CREW_TEST_MCP_TOKEN}"}
    with pytest.raises(McpUnreachable, match="CREW_TEST_MCP_TOKEN is not set"):
        await list_tools(mcp_url, headers, timeout=TIMEOUT, allowed_networks=ALLOWED)


async def test_stdio_needs_mcp_allow_stdio() -> None:
    command = [sys.executable, "-c", SERVER_SOURCE, "stdio"]
    with pytest.raises(McpUnreachable, match="MCP_ALLOW_STDIO=true"):
        await list_tools(None, None, timeout=TIMEOUT, command=command)
    tools = await list_tools(None, None, timeout=TIMEOUT, command=command, allow_stdio=True)
    assert {tool["name"] for tool in tools} == {"add", "broken"}
    result = await call_tool(
        None, None, "add", {"a": 1, "b": 1}, timeout=TIMEOUT, command=command, allow_stdio=True
    )
    assert result == "2"


async def test_registry_calls_an_mcp_tool_by_its_dotted_name(
    mcp_url: str, registry: Registry, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    listed: list[dict[str, Any]] = await list_tools(
        mcp_url, {}, timeout=TIMEOUT, allowed_networks=ALLOWED
    )
    async with sessionmaker() as session:
        session.add(McpServer(name="calc", url=mcp_url, tools=listed, reachable=True))
        await session.commit()
    assert await registry.call("calc.add", {"a": 20, "b": 22}, timeout=TIMEOUT) == "42"
    with pytest.raises(ToolError, match=r"invalid arguments for calc\.add"):
        await registry.call("calc.add", {"a": "x", "b": 1}, timeout=TIMEOUT)
