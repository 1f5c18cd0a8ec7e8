"""A real `crew-platform serve` killed with SIGKILL between finished tool calls and the next
model call, then restarted on the same database: each tool ran once (the test MCP server counts
its invocations, the local site records its requests), the run completes, and the model is
given the recorded results again."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from crew_platform.devtools.llm_stub import StubServer
from tests.api import live_env
from tests.engine.test_durability import servers, start  # noqa: F401 (fixture)
from tests.flows import API, calls_for, eventually, execute, for_task, pipeline, wait_for_gate
from tests.support import LiveServer
from tests.tools.conftest import LocalSite, McpTestServer

COUNTER_SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}},
    "required": ["n"],
    "additionalProperties": False,
}


@pytest.fixture
def site() -> Iterator[LocalSite]:
    local = LocalSite()
    local._thread.start()
    yield local
    local.server.shutdown()
    local.server.server_close()


@pytest.fixture
def server_env(database_url: str, stub: StubServer) -> dict[str, str]:
    return live_env(database_url, stub) | {"TOOLS_ALLOWED_NETWORKS": "127.0.0.1/32"}


async def add_tools(http: httpx.AsyncClient, mcp_url: str, counter_url: str) -> None:
    """The MCP test server as `lab`, and an HTTP tool `counter` on the local site."""
    server = await http.post(f"{API}/mcp-servers/", json={"name": "lab", "url": mcp_url})
    assert server.status_code == 201 and server.json()["reachable"] is True, server.text
    tool = {
        "name": "counter",
        "description": "Counts its invocations",
        "parameters": COUNTER_SCHEMA,
        "http": {"method": "POST", "url": counter_url},
    }
    created = await http.post(f"{API}/tools/", json=tool)
    assert created.status_code == 201, created.text


async def test_sigkill_after_tool_calls_resumes_without_calling_them_again(
    servers: list[LiveServer],  # noqa: F811
    server_env: dict[str, str],
    stub: StubServer,
    site: LocalSite,
    mcp_server: McpTestServer,
) -> None:
    stub.script(
        for_task(
            "K",
            tool_calls=[
                {"name": "lab__add", "id": "c1", "arguments": {"a": 2, "b": 3}},
                {"name": "counter", "id": "c2", "arguments": {"n": 1}},
                {"name": "calculator", "id": "c3", "arguments": {"expression": "6*7"}},
            ],
        ),
        for_task("K", gate="after-tools"),
        for_task("K", content="Final.", quote_tools=True),
    )
    tools = ["lab.add", "counter", "calculator"]
    first = start(servers, server_env)
    async with httpx.AsyncClient(base_url=first.base_url, timeout=30) as http:
        await add_tools(http, mcp_server.url, site.route("/count", "counted"))
        _, workflow, (task,) = await pipeline(http, ["K"], tools=tools)
        started = await execute(http, workflow["id"])
        await wait_for_gate(stub, "after-tools")
    first.kill()
    await eventually(lambda: stub.disconnects == 1, what="the killed server's call to drop")
    assert mcp_server.counts() == {"add": 1}
    assert site.paths() == ["/count"]

    second = start(servers, server_env)
    async with httpx.AsyncClient(base_url=second.base_url, timeout=30) as http:

        async def finished() -> dict[str, object] | None:
            body = (await http.get(f"{API}/executions/{started['id']}")).json()
            return body if body["status"] in ("completed", "failed") else None

        done = await eventually(finished, what="the resumed run to finish")
        assert done["status"] == "completed", done
        assert done["output_data"]["result"] == "Final. Tool results: c1=5; c2=counted; c3=42"
        runs = (await http.get(f"{API}/tasks/{task['id']}/executions")).json()
        assert [(r["attempt"], r["status"]) for r in runs] == [(2, "completed"), (1, "cancelled")]
        assert [c["status"] for c in runs[0]["tool_calls"]] == ["completed"] * 3
    assert mcp_server.counts() == {"add": 1}  # the MCP server counts its invocations: one
    assert site.paths() == ["/count"]  # and the HTTP tool was called once
    requests = calls_for(stub, "K")
    assert len(requests) == 3
    assert requests[-1]["messages"][-3:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "5"},
        {"role": "tool", "tool_call_id": "c2", "content": "counted"},
        {"role": "tool", "tool_call_id": "c3", "content": "42"},
    ]
