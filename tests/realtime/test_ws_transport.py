"""WebSocket transport settings on a real server: idle pings, compression, backlog delivery."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from crew_platform.devtools.llm_stub import StubServer
from tests.realtime.conftest import build_workflow, collect_until, next_message, ws_request, ws_url
from tests.support import LiveServer


def _server(stub: StubServer, tmp: Path, **extra: str) -> LiveServer:
    return LiveServer(
        {
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'crew.db'}",
            "CEREBRAS_API_KEY": "test-key",
            "CEREBRAS_BASE_URL": stub.base_url,
            "RATE_LIMIT_API": "off",
            "RATE_LIMIT_WS": "off",
            "LLM_MAX_RETRIES": "0",
            **extra,
        }
    ).start()


@pytest.fixture(scope="module")
def pinging_server(
    stub: StubServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    server = _server(
        stub,
        tmp_path_factory.mktemp("pinging"),
        WS_PING_INTERVAL_SECONDS="0.2",
        WS_COMPRESSION="true",
    )
    yield server
    server.stop()


async def test_an_idle_connection_gets_pings(pinging_server: LiveServer) -> None:
    async with connect(ws_url(pinging_server)) as ws:
        pings = [await next_message(ws, timeout=10) for _ in range(2)]
    assert [p["type"] for p in pings] == ["ping", "ping"]
    assert all(isinstance(p["timestamp"], str) for p in pings)


async def test_compression_is_negotiated_only_when_enabled(
    pinging_server: LiveServer, stub: StubServer, tmp_path: Path
) -> None:
    async with connect(ws_url(pinging_server)) as ws:
        assert [e.name for e in ws.protocol.extensions] == ["permessage-deflate"]
        pong = await ws_request(ws, {"type": "ping"})
        assert pong["type"] == "pong"
    plain = _server(stub, tmp_path)  # WS_COMPRESSION defaults to off
    try:
        async with connect(ws_url(plain)) as ws:  # the client offers permessage-deflate
            assert ws.protocol.extensions == []
            pong = await ws_request(ws, {"type": "ping"})
            assert pong["type"] == "pong"
    finally:
        plain.stop()


async def test_a_backlog_arrives_complete_and_in_order(pinging_server: LiveServer) -> None:
    """Replies queued back to back (no reads in between) all arrive, in the order sent."""
    async with (
        httpx.AsyncClient(base_url=pinging_server.base_url, timeout=30) as http,
        connect(ws_url(pinging_server)) as ws,
    ):
        built = await build_workflow(http, [{"description": f"step {i}"} for i in range(3)])
        wf = built["workflow"]["id"]
        for stamp in range(50):
            await ws.send(json.dumps({"type": "ping", "timestamp": str(stamp)}))
        await ws.send(json.dumps({"type": "subscribe_workflow", "workflow_id": wf}))
        stamps = []
        while len(stamps) < 50:
            message = await next_message(ws)
            if message["type"] == "pong":
                stamps.append(message["client_timestamp"])
        assert stamps == [str(s) for s in range(50)]
        while (await next_message(ws))["type"] != "subscribed":
            pass
        await http.post(f"/api/v1/workflows/{wf}/execute", json={})
        events = await asyncio.wait_for(collect_until(ws), 30)
    tasks = [e for e in events if e["type"] == "task_completed"]
    assert [e["task_id"] for e in tasks] == built["task_ids"]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
