"""An unexpected error in a route is a 500 in the envelope, and the client keeps its connection
(a real server process, one keep-alive connection)."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import create_async_engine

from crew_platform.devtools.llm_stub import StubServer
from tests.api import assert_error, live_env, refusing_trigger
from tests.support import LiveServer


def local_port(response: httpx.Response) -> int:
    """The client-side port of the connection that carried `response`."""
    port: int = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    return port


async def test_a_500_keeps_the_keep_alive_connection(tmp_path: Path, stub: StubServer) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'crew.db'}"
    server = LiveServer(live_env(url, stub)).start()
    engine = create_async_engine(url)
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            ports = []
            response = await http.get("/api/v1/agents/")
            ports.append(local_port(response))
            async with refusing_trigger(engine, "sqlite", "agents", "INSERT"):
                failed = await http.post(
                    "/api/v1/agents/", json={"name": "A", "role": "r", "goal": "g"}
                )
                ports.append(local_port(failed))
            assert_error(failed, 500, "INTERNAL_ERROR")
            for _ in range(3):
                response = await http.get("/api/v1/agents/")
                ports.append(local_port(response))
                assert response.status_code == 200, response.text
            created = await http.post(
                "/api/v1/agents/", json={"name": "A", "role": "r", "goal": "g"}
            )
            ports.append(local_port(created))
            assert created.status_code == 201, created.text
        assert len(set(ports)) == 1, ports
    finally:
        await engine.dispose()
        server.stop()
    assert server.process is not None and server.process.stderr is not None
    log = server.process.stderr.read().decode()
    # Logged once, with its trace, by us; not a second time by the server.
    assert log.count("unhandled error on POST /api/v1/agents/") == 1, log
    assert "refused by test trigger" in log
    assert "Exception in ASGI application" not in log, log
