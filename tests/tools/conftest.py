"""A real local HTTP server for the tools (fetch_url, HTTP tools, a SearXNG-shaped search),
and a `Registry` on a real database (both backends)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from crew_platform.db import create_engine, create_sessionmaker
from crew_platform.settings import Settings
from crew_platform.tools.registry import Registry
from tests.conftest import make_settings

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
