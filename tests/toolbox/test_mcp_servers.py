"""`/api/v1/mcp-servers` against the real test MCP server: its tools become `<server>.<tool>`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from crew_platform.app import create_app
from crew_platform.devtools.llm_stub import StubServer
from tests.api import assert_error, make_agent
from tests.conftest import make_settings
from tests.tools.conftest import McpTestServer
from tests.tools.mcp_server import TOOL_NAMES

SECRET_VALUE = "mcp-s3cret-from-the-environment"


async def add_server(client: httpx.AsyncClient, url: str, **fields: Any) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/mcp-servers/", json={"name": "calc", "url": url, **fields}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def tools_by_name(client: httpx.AsyncClient) -> dict[str, Any]:
    return {tool["name"]: tool for tool in (await client.get("/api/v1/tools")).json()}


async def test_a_reachable_server_lists_its_tools_as_server_dot_tool(
    client: httpx.AsyncClient, mcp_server: McpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCP_TOKEN", SECRET_VALUE)
    created = await add_server(
        client, mcp_server.url, headers={"Authorization": "Bearer ${MCP_TOKEN}"}
    )
    assert created["reachable"] is True and created["last_error"] is None
    assert created["refreshed_at"] is not None
    assert created["headers"] == {"Authorization": "Bearer ${MCP_TOKEN}"}
    assert sorted(t["name"] for t in created["tools"]) == sorted(f"calc.{n}" for n in TOOL_NAMES)

    tools = await tools_by_name(client)
    add = tools["calc.add"]
    assert add["source"] == "mcp" and add["server"] == "calc" and add["available"] is True
    assert set(add["parameters"]["properties"]) == {"a", "b"}
    assert "calculator" in tools  # the built-ins are still there
    assert (await client.get("/api/v1/tools/calc.echo")).json()["server"] == "calc"

    answers = [
        await client.get("/api/v1/mcp-servers"),
        await client.get(f"/api/v1/mcp-servers/{created['id']}"),
        await client.post(f"/api/v1/mcp-servers/{created['id']}/refresh"),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert SECRET_VALUE not in answer.text
    assert answers[0].headers["X-Total-Count"] == "1"
    assert mcp_server.counts() == {}  # listing calls no tool


async def test_mcp_tools_are_not_editable_and_their_names_are_taken(
    client: httpx.AsyncClient, mcp_server: McpTestServer
) -> None:
    await add_server(client, mcp_server.url)
    changed = await client.put("/api/v1/tools/calc.add", json={"description": "mine"})
    assert assert_error(changed, 409, "CONFLICT")["details"]["source"] == "mcp"
    assert_error(await client.delete("/api/v1/tools/calc.add"), 409, "CONFLICT")
    http = {"url": "https://example.com/"}
    for name in ("calc.add", "calc.later"):
        taken = await client.post(
            "/api/v1/tools/", json={"name": name, "description": "x", "http": http}
        )
        assert_error(taken, 409, "CONFLICT")
    again = await client.post("/api/v1/mcp-servers/", json={"name": "calc", "url": mcp_server.url})
    assert_error(again, 409, "CONFLICT")


async def test_an_http_tool_keeps_its_dotted_names_from_a_new_server(
    client: httpx.AsyncClient, mcp_server: McpTestServer
) -> None:
    body = {"name": "calc.add", "description": "x", "http": {"url": "https://example.com/"}}
    assert (await client.post("/api/v1/tools/", json=body)).status_code == 201
    refused = await client.post(
        "/api/v1/mcp-servers/", json={"name": "calc", "url": mcp_server.url}
    )
    assert_error(refused, 409, "CONFLICT")
    assert (await client.get("/api/v1/mcp-servers")).json() == []


async def test_an_unreachable_server_is_created_and_a_refresh_lists_it_later(
    client: httpx.AsyncClient, idle_mcp_server: McpTestServer
) -> None:
    created = await add_server(client, idle_mcp_server.url)
    assert created["reachable"] is False
    assert created["last_error"]
    assert created["tools"] == []
    assert not any(name.startswith("calc.") for name in await tools_by_name(client))

    idle_mcp_server.start()
    refreshed = await client.post(f"/api/v1/mcp-servers/{created['id']}/refresh")
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["reachable"] is True and refreshed.json()["last_error"] is None
    assert (await tools_by_name(client))["calc.add"]["available"] is True

    idle_mcp_server.stop()
    down = (await client.post(f"/api/v1/mcp-servers/{created['id']}/refresh")).json()
    assert down["reachable"] is False and down["last_error"]
    assert len(down["tools"]) == len(TOOL_NAMES)  # the last listing is kept...
    assert (await tools_by_name(client))["calc.add"]["available"] is False  # ...unavailable


async def test_loopback_needs_the_allow_list(
    database_url: str, stub: StubServer, mcp_server: McpTestServer
) -> None:
    app = create_app(make_settings(database_url, stub))  # TOOLS_ALLOWED_NETWORKS empty
    async with (
        LifespanManager(app, startup_timeout=30, shutdown_timeout=30),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        for url in (mcp_server.url, f"http://localhost:{mcp_server.port}/mcp"):
            response = await client.post("/api/v1/mcp-servers/", json={"name": "calc", "url": url})
            body = assert_error(response, 422, "VALIDATION_ERROR", fields=["url"])
            assert "TOOLS_ALLOWED_NETWORKS" in body["message"]
        assert (await client.get("/api/v1/mcp-servers/")).json() == []


async def test_bad_bodies_are_422s(client: httpx.AsyncClient, mcp_server: McpTestServer) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "calc"}, "url"),
        ({"name": "calc", "url": mcp_server.url, "command": ["python", "server.py"]}, "url"),
        ({"name": "calc", "command": ["python", "server.py"]}, "command"),
        ({"name": "calc", "url": "ftp://127.0.0.1/mcp"}, "url"),
        ({"name": "has.dot", "url": mcp_server.url}, "name"),
        ({"name": "", "url": mcp_server.url}, "name"),
        ({"name": "calc", "url": mcp_server.url, "headers": {"X": 1}}, "headers"),
    ]
    for body, field in cases:
        response = await client.post("/api/v1/mcp-servers/", json=body)
        assert_error(response, 422, fields=[field])
    assert (await client.get("/api/v1/mcp-servers/")).json() == []


async def test_delete_is_refused_while_agents_name_its_tools(
    client: httpx.AsyncClient, mcp_server: McpTestServer
) -> None:
    server = await add_server(client, mcp_server.url)
    agent = await make_agent(client, "Adder", tools=["calc.add", "calculator"])
    refused = await client.delete(f"/api/v1/mcp-servers/{server['id']}")
    body = assert_error(refused, 409, "CONFLICT")
    assert body["details"]["agents"] == [
        {"id": agent["id"], "name": "Adder", "tools": ["calc.add"]}
    ]

    await client.put(f"/api/v1/agents/{agent['id']}", json={"tools": ["calculator"]})
    deleted = await client.delete(f"/api/v1/mcp-servers/{server['id']}")
    assert deleted.status_code == 200, deleted.text
    assert "calc.add" not in await tools_by_name(client)
    for response in (
        await client.get(f"/api/v1/mcp-servers/{server['id']}"),
        await client.delete(f"/api/v1/mcp-servers/{server['id']}"),
        await client.post(f"/api/v1/mcp-servers/{server['id']}/refresh"),
        await client.get("/api/v1/mcp-servers/0"),
    ):
        assert_error(response, 404, "NOT_FOUND")
