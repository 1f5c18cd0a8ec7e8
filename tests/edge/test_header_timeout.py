"""HTTP_HEADER_TIMEOUT_SECONDS: a connection whose request headers do not arrive in time is
closed by the server (`crew-platform serve`, real sockets); slow bodies and idle keep-alive
connections are not its business."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from crew_platform.devtools.llm_stub import StubServer
from tests.api import live_env
from tests.support import LiveServer, live_server

BOUND = 15.0
"""Generous: the server's deadline in these tests is 1 s."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, stub: StubServer) -> Iterator[LiveServer]:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('headers') / 'crew.db'}"
    with live_server(live_env(url, stub) | {"HTTP_HEADER_TIMEOUT_SECONDS": "1"}) as running:
        yield running


def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=BOUND)


def closed_by_server(conn: socket.socket, deadline: float) -> bool:
    """Waits (until `deadline`) for the server to close `conn`; True if it did."""
    try:
        conn.settimeout(max(0.1, deadline - time.monotonic()))
        return conn.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def read_response(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += conn.recv(65536)
    return head


def test_a_request_whose_headers_stall_is_closed(server: LiveServer) -> None:
    with connect(server) as stalled, connect(server) as silent:
        stalled.sendall(b"GET /health HTTP/1.1\r\nHo")
        assert httpx.get(server.base_url + "/health", timeout=BOUND).status_code == 200
        deadline = time.monotonic() + BOUND
        assert closed_by_server(stalled, deadline)
        assert closed_by_server(silent, deadline)


def test_many_trickling_connections_are_all_closed(server: LiveServer) -> None:
    connections = [connect(server) for _ in range(50)]
    try:
        for i, conn in enumerate(connections):
            conn.sendall(f"GET /api/v1/agents/?n={i} HTTP/1.1\r\n".encode())
        deadline = time.monotonic() + BOUND
        assert all(closed_by_server(conn, deadline) for conn in connections)
    finally:
        for conn in connections:
            conn.close()


def test_slow_bodies_and_idle_keep_alive_connections_are_left_alone(server: LiveServer) -> None:
    body = json.dumps({"name": "Slow", "role": "r", "goal": "g"}).encode()
    with connect(server) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(conn).startswith(b"HTTP/1.1 200")
        time.sleep(2)  # idle on a keep-alive connection, past the header deadline
        conn.sendall(
            b"POST /api/v1/agents/ HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        time.sleep(2)  # headers complete, the body is late
        conn.sendall(body)
        assert read_response(conn).startswith(b"HTTP/1.1 201")
