"""The Registry over every source, on both backends: listing, resolving, calling (arguments
checked against the schema, time-outs, results cut), HTTP tools with secret headers."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from crew_platform.models.tables import McpServer, Tool
from crew_platform.tools.base import ToolError, ToolSource
from crew_platform.tools.registry import Registry, cut
from tests.tools.conftest import LocalSite

SECRET = "s3cr3t-token-value"
LOOKUP_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"],
}


async def add_http_tool(
    sessionmaker: async_sessionmaker[AsyncSession], name: str, http: dict[str, Any]
) -> None:
    async with sessionmaker() as session:
        session.add(
            Tool(name=name, description=f"{name} tool", parameters=LOOKUP_SCHEMA, http=http)
        )
        await session.commit()


async def add_mcp_server(sessionmaker: async_sessionmaker[AsyncSession], **values: Any) -> None:
    async with sessionmaker() as session:
        session.add(McpServer(**values))
        await session.commit()


async def test_list_all_covers_every_source(
    registry: Registry, sessionmaker: Any, site: LocalSite
) -> None:
    await add_http_tool(sessionmaker, "weather", {"method": "GET", "url": site.url("/w")})
    listed = [{"name": "add", "description": "Add", "input_schema": {"type": "object"}}]
    await add_mcp_server(
        sessionmaker, name="calc", url=site.url("/mcp"), tools=listed, reachable=False
    )
    specs = {spec.name: spec for spec in await registry.list_all()}
    assert {"calculator", "current_time", "fetch_url", "web_search"} <= set(specs)
    assert specs["calculator"].source is ToolSource.BUILTIN
    assert specs["weather"].source is ToolSource.HTTP
    assert specs["weather"].parameters == LOOKUP_SCHEMA
    mcp = specs["calc.add"]
    assert (mcp.source, mcp.server, mcp.available) == (ToolSource.MCP, "calc", False)
    assert await registry.get("calc.add") == mcp
    assert await registry.get("nope") is None


async def test_resolve_reports_unknown_names(registry: Registry) -> None:
    specs, unknown = await registry.resolve(["calculator", "search_tool", "fetch_url", "x"])
    assert [spec.name for spec in specs] == ["calculator", "fetch_url"]
    assert unknown == ["search_tool", "x"]


async def test_call_runs_a_builtin(registry: Registry) -> None:
    assert await registry.call("calculator", {"expression": "2+3*4"}, timeout=5) == "14"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "'expression' is a required property"),
        ({"expression": 5}, "expression: 5 is not of type 'string'"),
        ({"expression": "1", "extra": 1}, "Additional properties"),
    ],
)
async def test_call_checks_arguments_against_the_schema(
    registry: Registry, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ToolError, match=f"invalid arguments for calculator: .*{message}"):
        await registry.call("calculator", arguments, timeout=5)


async def test_call_of_an_unknown_tool(registry: Registry) -> None:
    with pytest.raises(ToolError, match="unknown tool 'nope'"):
        await registry.call("nope", {}, timeout=5)


async def test_a_slow_tool_times_out(
    registry: Registry, sessionmaker: Any, site: LocalSite
) -> None:
    url = site.route("/slow", "late", delay=3)
    await add_http_tool(sessionmaker, "slow", {"method": "GET", "url": url})
    with pytest.raises(ToolError, match=r"slow timed out after 0\.2 s"):
        await registry.call("slow", {"city": "Oslo"}, timeout=0.2)


async def test_results_are_cut(registry: Registry, settings: Any, site: LocalSite) -> None:
    url = site.route("/long", "x" * 5000)
    settings.tool_result_max_chars = 100
    result = await registry.call("fetch_url", {"url": url}, timeout=5)
    assert len(result) == 100
    assert result.endswith("[cut at 100 characters]")
    assert cut("short", 100) == "short"


async def test_get_tool_sends_arguments_as_query(
    registry: Registry, sessionmaker: Any, site: LocalSite
) -> None:
    url = site.route("/weather", "sunny")
    await add_http_tool(sessionmaker, "weather", {"method": "GET", "url": url + "?units=metric"})
    assert await registry.call("weather", {"city": "Oslo", "days": 3}, timeout=5) == "sunny"
    assert site.received[0].query == {"units": ["metric"], "city": ["Oslo"], "days": ["3"]}


async def test_post_tool_sends_json_with_the_secret_header_resolved(
    registry: Registry,
    sessionmaker: Any,
    site: LocalSite,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("CREW_TEST_SECRET", SECRET)
    caplog.set_level(logging.DEBUG)
    ok = site.route("/ok", '{"temp": 21}', headers={"Content-Type": "application/json"})
    headers = {"Authorization": "Bearer ${CREW_TEST_SECRET}", "X-Plain": "yes"}
    await add_http_tool(sessionmaker, "lookup", {"method": "POST", "url": ok, "headers": headers})
    failing = site.route("/fail", "upstream broke", status=500)
    await add_http_tool(
        sessionmaker, "failing", {"method": "POST", "url": failing, "headers": headers}
    )
    moved = site.route("/moved", status=302, headers={"Location": "http://127.0.0.2/steal"})
    await add_http_tool(sessionmaker, "moved", {"method": "PUT", "url": moved, "headers": headers})

    assert await registry.call("lookup", {"city": "Oslo"}, timeout=5) == '{"temp": 21}'
    sent = site.received[0]
    assert sent.method == "POST"
    assert sent.headers["Authorization"] == f"Bearer {SECRET}"
    assert sent.headers["X-Plain"] == "yes"
    assert json.loads(sent.body) == {"city": "Oslo"}

    errors = []
    for name in ("failing", "moved"):
        with pytest.raises(ToolError) as caught:
            await registry.call(name, {"city": "Oslo"}, timeout=5)
        errors.append(caught.value)
    assert "HTTP 500: upstream broke" in str(errors[0])
    assert "do not follow redirects" in str(errors[1])
    assert site.paths() == ["/ok", "/fail", "/moved"]  # the redirect was not followed
    for error in errors:
        chain = [error, error.__cause__, error.__context__]
        assert all(SECRET not in repr(link) for link in chain)
    assert SECRET not in caplog.text
    stored = (await registry.get("lookup"), await registry.list_all())
    assert SECRET not in repr(stored)


async def test_a_missing_secret_is_named(
    registry: Registry, sessionmaker: Any, site: LocalSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CREW_TEST_MISSING", raising=False)
    url = site.route("/ok", "fine")
    headers = {"Authorization": "Bearer ${CREW_TEST_MISSING}"}
    await add_http_tool(sessionmaker, "lookup", {"method": "POST", "url": url, "headers": headers})
    with pytest.raises(ToolError, match=r"CREW_TEST_MISSING is not set.*Authorization"):
        await registry.call("lookup", {"city": "Oslo"}, timeout=5)
    assert site.received == []


async def test_http_tools_are_held_to_the_ssrf_guard(
    registry: Registry, settings: Any, sessionmaker: Any, site: LocalSite
) -> None:
    url = site.route("/internal", "secret data")
    await add_http_tool(sessionmaker, "internal", {"method": "GET", "url": url})
    settings.tools_allowed_networks = ""
    with pytest.raises(ToolError, match="loopback"):
        await registry.call("internal", {"city": "Oslo"}, timeout=5)
    assert site.received == []


async def test_the_app_holds_a_registry(app: Any) -> None:
    registry = app.state.tools
    assert isinstance(registry, Registry)
    assert await registry.get("calculator") is not None
