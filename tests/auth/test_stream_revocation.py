"""An open WebSocket or SSE stream ends when its credential stops being valid (a revoked key),
as the next request with that credential would be refused."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgi_lifespan import LifespanManager

from crew_platform.app import create_app
from crew_platform.auth.api_keys import revoke_key
from crew_platform.devtools.llm_stub import StubServer
from tests.auth.conftest import api_key, auth_settings, client_of
from tests.auth.support import WebSocketClosed, websocket
from tests.flows import for_task, pipeline, wait_for_gate

WAIT = 15.0
"""Bound on waiting for the stream's end (the check runs every second)."""


async def revoke(app: Any, name: str) -> None:
    async with app.state.sessionmaker() as session:
        assert await revoke_key(session, name)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_websocket_is_closed_4401_when_its_key_is_revoked(
    database_url: str, stub: StubServer
) -> None:
    app = create_app(auth_settings(database_url, stub, api_key_cache_seconds=0))
    async with LifespanManager(app):
        kept = {"X-API-Key": await api_key(app, "kept", ["read"])}
        doomed = {"X-API-Key": await api_key(app, "doomed", ["read"])}
        async with websocket(app, "/ws/", kept) as survivor, websocket(app, "/ws/", doomed) as ws:
            await survivor.open()
            await ws.open()
            await revoke(app, "doomed")
            with pytest.raises(WebSocketClosed) as closed:
                while True:
                    await ws.receive(timeout=WAIT)
            assert closed.value.code == 4401
            await survivor.send({"type": "ping"})
            assert (await survivor.receive(timeout=WAIT))["type"] == "pong"


async def _stream_until_end(app: Any, path: str, key: str, started: asyncio.Event) -> list[dict]:
    """Drives the app's SSE endpoint as a server would; returns the messages it sent."""
    sent: list[dict[str, Any]] = []
    requests = [{"type": "http.request", "body": b"", "more_body": False}]
    disconnected = asyncio.Event()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"x-api-key", key.encode()), (b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop()
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.start":
            started.set()
        if message["type"] == "http.response.body" and not message.get("more_body"):
            disconnected.set()

    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_an_sse_stream_ends_when_its_key_is_revoked(
    database_url: str, stub: StubServer
) -> None:
    settings = auth_settings(database_url, stub, api_key_cache_seconds=0, llm_timeout_seconds=120)
    app = create_app(settings)
    async with LifespanManager(app), client_of(app) as http:
        http.headers["X-API-Key"] = await api_key(
            app, "writer", ["read", "write", "execute"], subject="team"
        )
        stub.script(for_task("slow", gate="held"))
        _agent, workflow, _tasks = await pipeline(http, ["slow"])
        started = await http.post(f"/api/v1/workflows/{workflow['id']}/execute", json={})
        assert started.status_code == 202, started.text
        await wait_for_gate(stub, "held")
        reader = await api_key(app, "reader", ["read"], subject="team")
        opened = asyncio.Event()
        path = f"/api/v1/executions/{started.json()['id']}/events"
        stream = asyncio.create_task(_stream_until_end(app, path, reader, opened))
        await asyncio.wait_for(opened.wait(), WAIT)
        await revoke(app, "reader")
        sent = await asyncio.wait_for(stream, WAIT)
        assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
        assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
        assert stub.waiting_at("held") == 1  # the run goes on: its stream was cut, not ended
        body = b"".join(m.get("body", b"") for m in sent[1:])
        assert b"workflow_started" in body and b"workflow_failed" not in body
        stub.open_gate("held")
        refused = await http.get(path, headers={"X-API-Key": reader})
        assert refused.status_code == 401
