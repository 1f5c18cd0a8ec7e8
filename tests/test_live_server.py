"""The foundation's guarantees through a real server process (uvicorn, real sockets): unique
names under concurrent requests, the error envelope from the HTTP server's own paths, and the
body limit for declared and streamed (chunked) bodies."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from crew_platform.devtools.llm_stub import StubServer
from tests.api import assert_error, live_env, module_live_server, wipe
from tests.support import LiveServer, live_server

LIMIT = 1024 * 1024
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, stub: StubServer
) -> Iterator[tuple[LiveServer, str]]:
    with module_live_server(request, tmp_path_factory, stub) as running:
        yield running


@pytest.fixture
def base(live: tuple[LiveServer, str]) -> str:
    server, url = live
    wipe(url)
    return server.base_url


def padded_agent(size: int, name: str) -> bytes:
    body = json.dumps({"name": name, "role": "r", "goal": "g"}).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


def in_chunks(payload: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(payload), size):
        yield payload[start : start + size]


@pytest.mark.parametrize("resource", ["agents", "workflows"])
async def test_concurrent_creates_of_one_name_let_exactly_one_win(base: str, resource: str) -> None:
    body = {"name": "Live racer"} | ({"role": "r", "goal": "g"} if resource == "agents" else {})
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:
        responses = await asyncio.gather(
            *(http.post(f"/api/v1/{resource}/", json=body) for _ in range(20))
        )
        assert sorted(r.status_code for r in responses) == [201] + [409] * 19
        for response in responses:
            if response.status_code == 409:
                assert_error(response, 409, "CONFLICT")
        listed = await http.get(f"/api/v1/{resource}/")
        assert [item["name"] for item in listed.json()] == ["Live racer"]


def test_errors_come_in_the_envelope(base: str) -> None:
    with httpx.Client(base_url=base, timeout=30) as http:
        assert_error(http.get("/nope"), 404, "NOT_FOUND")
        assert_error(http.get("/api/v1/agents/1"), 404, "NOT_FOUND")
        wrong = http.patch("/api/v1/agents/1")
        assert_error(wrong, 405, "METHOD_NOT_ALLOWED")
        assert wrong.headers["allow"] == "GET, PUT, DELETE"
        assert_error(http.post("/api/v1/agents/", content=b"{bad", headers=JSON), 400)
        assert_error(http.post("/api/v1/agents/", json={}), 422, fields=["name", "role", "goal"])
        assert_error(http.get("/api/v1/agents/99999999999"), 404, "NOT_FOUND")
        assert_error(http.get("/api/v1/agents/abc"), 422, fields=["agent_id"])
        created = http.post("/api/v1/agents/", json={"name": "A", "role": "r", "goal": "g"})
        assert created.status_code == 201, created.text


def test_bodies_over_the_limit_are_413_declared_or_streamed(base: str) -> None:
    with httpx.Client(base_url=base, timeout=30) as http:
        declared = http.post(
            "/api/v1/agents/", content=padded_agent(LIMIT + 1, "Declared"), headers=JSON
        )
        body = assert_error(declared, 413, "PAYLOAD_TOO_LARGE")
        assert body["details"] == {"max_bytes": LIMIT}
        streamed = http.post(
            "/api/v1/agents/", content=in_chunks(padded_agent(2 * LIMIT, "Streamed")), headers=JSON
        )
        assert_error(streamed, 413, "PAYLOAD_TOO_LARGE")
        fits = http.post(
            "/api/v1/agents/", content=in_chunks(padded_agent(LIMIT, "Fits")), headers=JSON
        )
        assert fits.status_code == 201, fits.text
        assert [a["name"] for a in http.get("/api/v1/agents/").json()] == ["Fits"]


def _idle_connection_closed_within(base_url: str, seconds: float) -> bool:
    """Send one keep-alive request on a raw socket, then wait: True if the server closes it."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        conn.settimeout(seconds)
        received = b""
        try:
            while chunk := conn.recv(65536):
                received += chunk
        except TimeoutError:
            assert received.startswith(b"HTTP/1.1 200"), received[:100]
            return False
        assert received.startswith(b"HTTP/1.1 200"), received[:100]
        return True


def test_idle_keep_alive_connections_close_after_http_keep_alive_seconds(
    tmp_path: Path, stub: StubServer
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'keepalive.db'}"
    with live_server(live_env(url, stub) | {"HTTP_KEEP_ALIVE_SECONDS": "1"}) as server:
        assert _idle_connection_closed_within(server.base_url, 5.0)
    with live_server(live_env(url, stub)) as server:  # default: 75 s, longer than httpx's 5 s
        assert not _idle_connection_closed_within(server.base_url, 6.0)
