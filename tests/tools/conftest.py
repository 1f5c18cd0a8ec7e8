"""A real local HTTP server for the tools (fetch_url, HTTP tools, a SearXNG-shaped search),
a `Registry` on a real database (both backends), and the test MCP server
(`tests.tools.mcp_server`) as a process on a free port.

Other test packages use the MCP fixtures by importing them into their own conftest:
`from tests.tools.conftest import mcp_server, mcp_server_process`.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from crew_platform.db import create_engine, create_sessionmaker
from crew_platform.devtools.llm_stub import free_port
from crew_platform.settings import Settings
from crew_platform.tools.registry import Registry
from tests.conftest import make_settings
from tests.tools.mcp_server import read_counts

LOOPBACK_ONLY = "127.0.0.1/32"


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/plain"})
    delay: float = 0.0


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


class LocalSite:
    """Answers each path with its `Route`; records every request it gets."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.received: list[Received] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                site.received.append(
                    Received(
                        self.command,
                        parts.path,
                        parse_qs(parts.query),
                        dict(self.headers.items()),
                        self.rfile.read(length) if length else b"",
                    )
                )
                route = site.routes.get(parts.path, Route(404, b"no such page"))
                if route.delay:
                    time.sleep(route.delay)
                self.send_response(route.status)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                if self.command != "HEAD":
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        self.wfile.write(route.body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def route(self, path: str, body: bytes | str = b"", **options: Any) -> str:
        raw = body.encode() if isinstance(body, str) else body
        self.routes[path] = Route(body=raw, **options)
        return self.url(path)

    def paths(self) -> list[str]:
        return [request.path for request in self.received]


@pytest.fixture
def site() -> Iterator[LocalSite]:
    local = LocalSite()
    local._thread.start()
    yield local
    local.server.shutdown()
    local.server.server_close()


@pytest.fixture
def tool_settings() -> Settings:
    """Settings for tools that need no database: the local site allowed."""
    return Settings(tools_allowed_networks=LOOPBACK_ONLY, tool_timeout_seconds=10)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, tools_allowed_networks=LOOPBACK_ONLY)


@pytest.fixture
async def sessionmaker(settings: Settings) -> AsyncIterator[Any]:
    engine = create_engine(settings)
    yield create_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def registry(settings: Settings, sessionmaker: Any) -> Registry:
    return Registry(settings, sessionmaker)


# -- the test MCP server ---------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


class McpTestServer:
    """`python -m tests.tools.mcp_server` on 127.0.0.1: start, stop, kill, read its counts.

    The port is chosen when the object is made, so a test can hand out the URL of a server that
    is not running yet and start it later."""

    def __init__(self, count_file: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.count_file = count_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self, timeout: float = 30.0) -> McpTestServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.tools.mcp_server", "--port", str(self.port),
             "--count-file", str(self.count_file)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"MCP test server exited early:\n{err[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"MCP test server did not listen on port {self.port}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process and self.process.stderr:
            self.process.stderr.close()

    def counts(self) -> dict[str, int]:
        """Invocations per tool since the last `reset_counts`."""
        return read_counts(self.count_file)

    def reset_counts(self) -> None:
        self.count_file.write_text("{}", encoding="utf-8")


@pytest.fixture(scope="session")
def mcp_server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpTestServer]:
    """One MCP test server for the whole session (starting one takes about a second)."""
    server = McpTestServer(tmp_path_factory.mktemp("mcp") / "counts.json").start()
    yield server
    server.stop()


@pytest.fixture
def mcp_server(mcp_server_process: McpTestServer) -> McpTestServer:
    """The session's MCP test server with its counts at zero."""
    mcp_server_process.reset_counts()
    return mcp_server_process


@pytest.fixture
def idle_mcp_server(tmp_path: Path) -> Iterator[McpTestServer]:
    """An MCP test server of this test's own, not started: its URL refuses connections until
    the test calls `start()` (the test may also `stop()` it or kill its process)."""
    server = McpTestServer(tmp_path / "mcp-counts.json")
    yield server
    server.stop()
