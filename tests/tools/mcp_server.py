"""A real MCP server for the tests, built with the `mcp` SDK's `MCPServer`.

Run as `python -m tests.tools.mcp_server --port P [--count-file F]`; it serves streamable HTTP
at `http://127.0.0.1:P/mcp`. Every tool invocation is counted per tool, at its start, in the
count file (JSON `{"tool": n}`): a test reads it to see whether a tool ran, and how often
(e.g. exactly once across a crash and a resume). The file is read back before each increment,
so a test may reset the counts by rewriting it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
from pathlib import Path

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings

SERVER_NAME = "crew-test-tools"
TOOL_NAMES = ("add", "echo", "slow", "meet", "fail", "request_header")
MEET_WAIT_SECONDS = 10.0
"""How long a `meet` call waits for the others before it gives up with an error."""

_count_lock = threading.Lock()


def read_counts(path: Path) -> dict[str, int]:
    try:
        counts: dict[str, int] = json.loads(path.read_text(encoding="utf-8") or "{}")
    except FileNotFoundError:
        return {}
    return counts


def _count(path: Path | None, tool: str) -> None:
    if path is None:
        return
    with _count_lock:
        counts = read_counts(path)
        counts[tool] = counts.get(tool, 0) + 1
        scratch = path.with_suffix(".tmp")
        scratch.write_text(json.dumps(counts), encoding="utf-8")
        scratch.replace(path)


def build_server(count_file: Path | None) -> MCPServer:
    server = MCPServer(SERVER_NAME)

    @server.tool(description="Add two integers and return the sum.")
    def add(a: int, b: int) -> int:
        _count(count_file, "add")
        return a + b

    @server.tool(description="Return the text unchanged.")
    def echo(text: str) -> str:
        _count(count_file, "echo")
        return text

    @server.tool(description="Wait the given number of seconds, then say so.")
    async def slow(seconds: float) -> str:
        _count(count_file, "slow")
        await asyncio.sleep(seconds)
        return f"slept {seconds}s"

    meetings: dict[int, asyncio.Barrier] = {}

    @server.tool(description="Return once `parties` calls (this one included) are inside at once.")
    async def meet(who: str, parties: int) -> str:
        _count(count_file, "meet")
        barrier = meetings.setdefault(parties, asyncio.Barrier(parties))
        try:
            await asyncio.wait_for(barrier.wait(), MEET_WAIT_SECONDS)
        except TimeoutError:
            raise ToolError(f"{who} waited alone") from None
        return f"{who} met"

    @server.tool(description="Always fails with the given message.")
    def fail(message: str) -> str:
        _count(count_file, "fail")
        raise ToolError(message)

    @server.tool(description="The value of an HTTP header of the call's request (or '').")
    def request_header(name: str, ctx: Context) -> str:
        _count(count_file, "request_header")
        request = ctx.request_context.request
        headers = getattr(request, "headers", None) or {}
        return str(headers.get(name, ""))

    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count-file", type=Path, default=None)
    args = parser.parse_args(argv)
    build_server(args.count_file).run(
        "streamable-http",
        host="127.0.0.1",
        port=args.port,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )


if __name__ == "__main__":
    main()
