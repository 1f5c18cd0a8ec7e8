"""A real `crew-platform serve` killed with SIGKILL between a finished tool call and the next
model call, then restarted on the same database: the tool ran once, the run completes, and the
model is given the recorded result again."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import create_async_engine

from crew_platform.devtools.llm_stub import StubServer
from crew_platform.models import Tool
from tests.conftest import make_settings
from tests.engine.test_durability import servers, start  # noqa: F401 (fixture)
from tests.flows import API, calls_for, eventually, execute, for_task, pipeline, wait_for_gate
from tests.support import LiveServer
from tests.tools.conftest import LocalSite

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
    return {
        "DATABASE_URL": database_url,
        "CEREBRAS_API_KEY": "test-key",
        "CEREBRAS_BASE_URL": stub.base_url,
        "LLM_MAX_RETRIES": "0",
        "RATE_LIMIT_API": "off",
        "RATE_LIMIT_WS": "off",
        "LOG_LEVEL": "warning",
        "TOOLS_ALLOWED_NETWORKS": "127.0.0.1/32",
    }


async def add_http_tool(database_url: str, name: str, url: str) -> None:
    engine = create_async_engine(make_settings(database_url).database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                insert(Tool).values(
                    name=name,
                    description="Counts its invocations",
                    parameters=COUNTER_SCHEMA,
                    http={"method": "POST", "url": url},
                )
            )
    finally:
        await engine.dispose()


async def test_sigkill_after_a_tool_call_resumes_without_calling_it_again(
    servers: list[LiveServer],  # noqa: F811
    server_env: dict[str, str],
    stub: StubServer,
    site: LocalSite,
    database_url: str,
) -> None:
    await add_http_tool(database_url, "counter", site.route("/count", "counted"))
    stub.script(
        for_task(
            "K",
            tool_calls=[
                {"name": "counter", "id": "c1", "arguments": {"n": 1}},
                {"name": "calculator", "id": "c2", "arguments": {"expression": "6*7"}},
            ],
        ),
        for_task("K", gate="after-tools"),
        for_task("K", content="Final.", quote_tools=True),
    )
    first = start(servers, server_env)
    async with httpx.AsyncClient(base_url=first.base_url, timeout=30) as http:
        _, workflow, (task,) = await pipeline(http, ["K"], tools=["counter", "calculator"])
        started = await execute(http, workflow["id"])
        await wait_for_gate(stub, "after-tools")
    first.kill()
    await eventually(lambda: stub.disconnects == 1, what="the killed server's call to drop")
    assert site.paths() == ["/count"]

    second = start(servers, server_env)
    async with httpx.AsyncClient(base_url=second.base_url, timeout=30) as http:

        async def finished() -> dict[str, object] | None:
            body = (await http.get(f"{API}/executions/{started['id']}")).json()
            return body if body["status"] in ("completed", "failed") else None

        done = await eventually(finished, what="the resumed run to finish")
        assert done["status"] == "completed", done
        assert done["output_data"]["result"] == "Final. Tool results: c1=counted; c2=42"
        runs = (await http.get(f"{API}/tasks/{task['id']}/executions")).json()
        assert [(r["attempt"], r["status"]) for r in runs] == [(2, "completed"), (1, "cancelled")]
        assert [c["status"] for c in runs[0]["tool_calls"]] == ["completed", "completed"]
    assert site.paths() == ["/count"]  # the tool ran once
    requests = calls_for(stub, "K")
    assert len(requests) == 3
    assert requests[-1]["messages"][-2:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "counted"},
        {"role": "tool", "tool_call_id": "c2", "content": "42"},
    ]
