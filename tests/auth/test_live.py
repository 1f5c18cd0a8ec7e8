"""`crew-platform serve` with AUTH_MODE=jwt, as an operator runs it, at LOG_LEVEL=debug with
the access log on: bearer headers, API keys from `crew-platform api-key`, the SSE stream with
`?access_token=`, real WebSocket clients (header, first message, 4401); then every secret of
the run is looked for in everything the server wrote. And `serve` refusing 0.0.0.0 without
authentication."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from crew_platform.cli import is_loopback, unauthenticated_refusal
from crew_platform.devtools.llm_stub import StubServer
from crew_platform.settings import Settings
from tests.api import live_env
from tests.auth.support import API_KEY_SECRET, HS_SECRET, claims
from tests.auth.test_api_keys import cli
from tests.support import LiveServer, wait_for_execution

PROVIDER_KEY = "csk-provider-key-for-the-live-test-0123456789"


def hs(subject: str, scopes: str = "read write execute", **extra: object) -> str:
    payload = claims(subject, scopes, iss=None, aud=None, **extra)
    return jwt.encode(payload, HS_SECRET, algorithm="HS256")


async def test_a_served_run_keeps_every_secret_out_of_the_log(
    tmp_path: Path, stub: StubServer
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'crew.db'}"
    log_path = tmp_path / "server.log"
    env = live_env(url, stub) | {
        "CEREBRAS_API_KEY": PROVIDER_KEY,
        "AUTH_MODE": "jwt",
        "JWT_SECRET": HS_SECRET,
        "API_KEY_SECRET": API_KEY_SECRET,
        "AUTH_OWNERSHIP": "on",
        "HTTP_ACCESS_LOG": "true",
        "LOG_LEVEL": "debug",
    }
    server = LiveServer(env, log_path=log_path).start()
    alice = hs("alice")
    bad_tokens = [hs("alice", exp=1), f"not-a-token-{uuid.uuid4().hex}", hs("eve")[:-3] + "abc"]
    try:
        created = cli(url, "create", "--name", "ops", "--scopes", "read,execute")
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip()
        headers = {"Authorization": f"Bearer {alice}"}
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            agent = await http.post(
                "/api/v1/agents/", json={"name": "a", "role": "r", "goal": "g"}, headers=headers
            )
            assert agent.status_code == 201, agent.text
            workflow = (
                await http.post("/api/v1/workflows/", json={"name": "w"}, headers=headers)
            ).json()
            task = await http.post(
                "/api/v1/tasks/",
                json={"workflow_id": workflow["id"], "agent_id": agent.json()["id"], "name": "t"},
                headers=headers,
            )
            assert task.status_code == 201, task.text
            run = await http.post(
                f"/api/v1/workflows/{workflow['id']}/execute", json={}, headers=headers
            )
            assert run.status_code == 202, run.text
            http.headers.update(headers)
            await wait_for_execution(http, run.json()["id"])
            http.headers.pop("Authorization")
            events = f"/api/v1/executions/{run.json()['id']}/events"
            streamed = await http.get(events, params={"access_token": alice, "stream": "false"})
            assert streamed.status_code == 200 and "workflow_completed" in streamed.text
            refused = await http.get(events, params={"access_token": bad_tokens[0]})
            assert refused.status_code == 401
            not_here = await http.get("/api/v1/agents/", params={"access_token": alice})
            assert not_here.status_code == 401  # the query parameter is for the stream only
            for token in bad_tokens:
                response = await http.get("/api/v1/agents/", headers={"X-API-Key": token})
                assert response.status_code == 401 and token not in response.text
            by_key = await http.get("/api/v1/executions/", headers={"X-API-Key": key})
            assert by_key.status_code == 200 and by_key.json() == []  # another principal's

        ws_url = f"ws://127.0.0.1:{server.port}/ws/"
        async with connect(ws_url, additional_headers=headers) as ws:
            await ws.send(json.dumps({"type": "subscribe_workflow", "workflow_id": workflow["id"]}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
        async with connect(ws_url) as ws:
            await ws.send(json.dumps({"type": "auth", "token": key}))
            assert json.loads(await ws.recv())["subject"] == "ops"
            await ws.send(json.dumps({"type": "subscribe_workflow", "workflow_id": workflow["id"]}))
            assert json.loads(await ws.recv())["error"] == "NOT_FOUND"
        for token in bad_tokens:
            async with connect(ws_url) as ws:
                await ws.send(json.dumps({"type": "auth", "token": token}))
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    finally:
        server.stop()
    log = log_path.read_text()
    assert f"GET {events}?stream=false HTTP/1.1" in log  # access line, token taken out
    assert "authentication failed" in log
    secrets = {
        "JWT_SECRET": HS_SECRET,
        "API_KEY_SECRET": API_KEY_SECRET,
        "provider key": PROVIDER_KEY,
        "API key": key,
        "alice's token": alice,
        **{f"bad token {i}": t for i, t in enumerate(bad_tokens)},
    }
    leaked = [name for name, secret in secrets.items() if secret in log]
    assert not leaked, f"in the server's log: {leaked}"
    assert "access_token" not in log


def test_serve_refuses_a_public_address_without_authentication(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'crew.db'}",
        "HOST": "0.0.0.0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "crew_platform.cli", "serve", "--migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "0.0.0.0" in lines[0] and "--allow-unauthenticated" in lines[0]
    assert not (tmp_path / "crew.db").exists()  # refused before migrating or binding


@pytest.mark.parametrize(
    ("host", "mode", "allow", "refused"),
    [
        ("0.0.0.0", "none", False, True),
        ("::", "none", False, True),
        ("192.168.1.10", "none", False, True),
        ("example.org", "none", False, True),
        ("0.0.0.0", "none", True, False),
        ("0.0.0.0", "api_key", False, False),
        ("0.0.0.0", "jwt", False, False),
        ("127.0.0.1", "none", False, False),
        ("127.0.0.2", "none", False, False),
        ("::1", "none", False, False),
        ("[::1]", "none", False, False),
        ("localhost", "none", False, False),
    ],
)
def test_which_hosts_need_authentication(host: str, mode: str, allow: bool, refused: bool) -> None:
    settings = Settings(
        database_url="sqlite://",
        auth_mode=mode,
        jwt_secret=HS_SECRET,
        api_key_secret=API_KEY_SECRET,
    )
    assert (unauthenticated_refusal(settings, host, allow) is not None) == refused
    assert is_loopback(host) == (host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))


def test_make_run_binds_loopback_by_default() -> None:
    assert Settings(database_url="sqlite://").host == "127.0.0.1"
