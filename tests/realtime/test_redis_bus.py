"""With REDIS_URL set, events cross processes: a client of one server sees runs of another."""

from __future__ import annotations

from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from crew_platform.devtools.llm_stub import StubServer
from tests.conftest import REDIS_URL, require_service
from tests.edge.test_ratelimit import _redis_problem
from tests.realtime.conftest import build_workflow, collect_until, ws_request, ws_url
from tests.support import LiveServer


async def test_events_of_one_process_reach_websockets_of_another(
    tmp_path: Path, stub: StubServer
) -> None:
    require_service("Redis", _redis_problem())
    env = {
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}",
        "CEREBRAS_API_KEY": "test-key",
        "CEREBRAS_BASE_URL": stub.base_url,
        "RATE_LIMIT_API": "off",
        "RATE_LIMIT_WS": "off",
        "REDIS_URL": REDIS_URL,
    }
    runner = LiveServer(env).start()
    watcher = LiveServer(env).start()
    try:
        async with httpx.AsyncClient(base_url=runner.base_url) as http:
            built = await build_workflow(http, [{}, {}])
            wf = built["workflow"]["id"]
            async with connect(ws_url(watcher)) as ws:
                await ws_request(ws, {"type": "subscribe_workflow", "workflow_id": wf})
                run = (await http.post(f"/api/v1/workflows/{wf}/execute", json={})).json()
                events = await collect_until(ws)
    finally:
        watcher.stop()
        runner.stop()
    assert [e["type"] for e in events] == [
        "workflow_started",
        "task_started",
        "task_completed",
        "task_started",
        "task_completed",
        "workflow_completed",
    ]
    assert {e["execution_id"] for e in events} == {run["id"]}
