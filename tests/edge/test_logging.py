"""The default log of `crew-platform serve` has no line per request and none per model call;
HTTP_ACCESS_LOG=true brings uvicorn's access line back."""

from __future__ import annotations

from pathlib import Path

import httpx

from crew_platform.devtools.llm_stub import StubServer
from tests.api import live_env
from tests.support import LiveServer

CREATED_LINE = '"POST /api/v1/agents/ HTTP/1.1" 201'


def served_log(tmp_path: Path, stub: StubServer, **env: str) -> str:
    """Serves a few requests and one model call at LOG_LEVEL=info; returns all the server wrote."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'crew.db'}"
    log_path = tmp_path / "server.log"
    server = LiveServer(live_env(url, stub) | {"LOG_LEVEL": "info", **env}, log_path=log_path)
    server.start()
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            agent = http.post("/api/v1/agents/", json={"name": "A", "role": "r", "goal": "g"})
            assert agent.status_code == 201, agent.text
            stub.script({"content": "Agent response"})
            tested = http.post(f"/api/v1/agents/{agent.json()['id']}/test", json={"input": "hi"})
            assert tested.status_code == 200 and tested.json()["success"], tested.text
            assert http.get("/api/v1/agents/").status_code == 200
    finally:
        server.stop()
    return log_path.read_text()


def test_default_log_has_no_access_or_http_client_lines(tmp_path: Path, stub: StubServer) -> None:
    log = served_log(tmp_path, stub)
    assert "Application startup complete" in log  # the log was captured
    assert CREATED_LINE not in log, log
    assert "GET /api/v1/agents/" not in log, log
    assert "HTTP Request:" not in log, log  # httpx's line per model call


def test_http_access_log_turns_the_access_line_on(tmp_path: Path, stub: StubServer) -> None:
    log = served_log(tmp_path, stub, HTTP_ACCESS_LOG="true")
    assert CREATED_LINE in log, log
