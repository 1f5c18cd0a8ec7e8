"""Rate limits: per-IP budgets in memory and in Redis, WebSocket handshakes, proxy headers."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from asgi_lifespan import LifespanManager
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from crew_platform.app import create_app
from crew_platform.devtools.llm_stub import StubServer
from tests.conftest import REDIS_URL, make_settings, require_service
from tests.support import LiveServer


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    target = tmp_path / "crew.db"
    target.write_bytes(sqlite_template.read_bytes())
    return f"sqlite+aiosqlite:///{target}"


@pytest.fixture
async def limited_client(sqlite_url: str) -> AsyncIterator[Any]:
    settings = make_settings(sqlite_url, rate_limit_api="5/minute")
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


async def test_api_budget_headers_and_429_envelope(limited_client: httpx.AsyncClient) -> None:
    remaining = []
    for _ in range(5):
        response = await limited_client.get("/api/v1/agents/")
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "5"
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
        assert int(response.headers["X-RateLimit-Reset"]) >= int(time.time())
    assert remaining == [4, 3, 2, 1, 0]
    refused = await limited_client.get("/api/v1/agents/")
    assert refused.status_code == 429
    body = refused.json()
    assert set(body) == {"error", "message", "details"}
    assert body["error"] == "RATE_LIMITED"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    # Errors of every kind count and carry the headers too.
    assert (await limited_client.get("/api/v1/nowhere")).status_code == 429


async def test_health_and_docs_are_exempt(limited_client: httpx.AsyncClient) -> None:
    for _ in range(8):
        assert (await limited_client.get("/health")).status_code == 200
        assert (await limited_client.get("/openapi.json")).status_code == 200
    assert (await limited_client.get("/docs")).status_code == 200
    assert (await limited_client.get("/api/v1/agents/")).status_code == 200


async def test_off_disables_the_limit(sqlite_url: str) -> None:
    app = create_app(make_settings(sqlite_url, rate_limit_api="off"))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            for _ in range(120):
                response = await http.get("/api/v1/workflows")
                assert response.status_code == 200
            assert "X-RateLimit-Limit" not in response.headers


def _server_env(tmp_path: Path, stub: StubServer, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'crew.db'}",
        "CEREBRAS_API_KEY": "test-key",
        "CEREBRAS_BASE_URL": stub.base_url,
        "RATE_LIMIT_API": "off",
        "RATE_LIMIT_WS": "off",
        **extra,
    }


@pytest.fixture
def ws_limited(tmp_path: Path, stub: StubServer) -> Iterator[LiveServer]:
    server = LiveServer(_server_env(tmp_path, stub, RATE_LIMIT_WS="2/minute")).start()
    yield server
    server.stop()


async def test_websocket_handshakes_over_the_limit_are_refused(ws_limited: LiveServer) -> None:
    url = f"ws://127.0.0.1:{ws_limited.port}/ws/"
    for _ in range(2):
        async with connect(url) as ws:
            await ws.send('{"type": "ping"}')
            assert "pong" in await ws.recv()
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url):
            pass
    assert refused.value.response.status_code == 429
    assert b"RATE_LIMITED" in refused.value.response.body
    # The REST API has its own budget.
    async with httpx.AsyncClient(base_url=ws_limited.base_url) as http:
        assert (await http.get("/api/v1/agents/")).status_code == 200


def _redis_problem() -> str | None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def test_two_processes_share_one_budget_in_redis(tmp_path: Path, stub: StubServer) -> None:
    require_service("Redis", _redis_problem())
    prefix = f"crew_test_{uuid.uuid4().hex[:8]}"
    env = _server_env(
        tmp_path, stub, REDIS_URL=REDIS_URL, RATE_LIMIT_API="6/minute", RATE_LIMIT_KEY_PREFIX=prefix
    )
    first = LiveServer(env).start()
    try:
        second = LiveServer(env).start()
        try:
            codes = [
                httpx.get(
                    (first if i % 2 == 0 else second).base_url + "/api/v1/agents/"
                ).status_code
                for i in range(8)
            ]
        finally:
            second.stop()
    finally:
        first.stop()
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
    assert codes == [200] * 6 + [429, 429]


def test_spoofed_forwarded_for_does_not_escape_the_limit(tmp_path: Path, stub: StubServer) -> None:
    server = LiveServer(_server_env(tmp_path, stub, RATE_LIMIT_API="3/minute")).start()
    try:
        codes = [
            httpx.get(
                server.base_url + "/api/v1/agents/", headers={"X-Forwarded-For": f"203.0.113.{i}"}
            ).status_code
            for i in range(5)
        ]
    finally:
        server.stop()
    assert codes == [200, 200, 200, 429, 429]


def test_forwarded_for_counts_from_a_trusted_proxy(tmp_path: Path, stub: StubServer) -> None:
    server = LiveServer(
        _server_env(tmp_path, stub, RATE_LIMIT_API="2/minute", TRUSTED_PROXIES="127.0.0.1")
    ).start()
    try:
        url = server.base_url + "/api/v1/agents/"
        alice = [
            httpx.get(url, headers={"X-Forwarded-For": "198.51.100.7"}).status_code
            for _ in range(3)
        ]
        bob = [
            httpx.get(url, headers={"X-Forwarded-For": "198.51.100.8"}).status_code
            for _ in range(2)
        ]
        # A client cannot prepend a fake hop: the proxy's own hop (rightmost) is the one used.
        forged = httpx.get(url, headers={"X-Forwarded-For": "10.9.9.9, 198.51.100.7"}).status_code
    finally:
        server.stop()
    assert alice == [200, 200, 429]
    assert bob == [200, 200]
    assert forged == 429
