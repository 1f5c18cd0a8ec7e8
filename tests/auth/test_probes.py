"""What a client can get wrong around a credential, found by probing a served app by hand:
two credentials at once, `bearer` in lower case, spaces around a key, bytes that are not
UTF-8, a huge token, a JWT sent to an API-key-only server, `scp` as a list and `aud` as a list,
a JWKS that cannot be read (503, not 401, and never the brute-force budget), `access_token`
on a WebSocket URL; and GET /api/v1/workers under ownership. Each answer is an error envelope,
never a 500."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from asgi_lifespan import LifespanManager

from crew_platform.app import create_app
from crew_platform.auth.principal import Scope
from crew_platform.auth.scopes import required_scope
from crew_platform.devtools.llm_stub import StubServer
from tests.api import assert_error
from tests.auth.conftest import api_key, auth_settings, client_of, token_of
from tests.auth.support import (
    JwksServer,
    WebSocketClosed,
    bearer,
    claims,
    jwk_of,
    rs256,
    rsa_key,
    websocket,
)
from tests.flows import wait_for_gate
from tests.support import wait_for_execution

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])  # credentials: one backend


async def test_one_credential_per_request(auth_app: Any, http: Any) -> None:
    key = await api_key(auth_app, "alice-key", ["read"], "alice")
    token = token_of("alice", "read")["Authorization"].removeprefix("Bearer ")
    accepted = [
        {"Authorization": f"bearer {key}"},
        {"Authorization": f"BEARER {token}"},
        {"Authorization": f"Bearer \t {key} \t"},
        {"X-API-Key": f" {key} "},
        {"Authorization": f"Bearer {key}", "X-API-Key": key},  # the same one twice
    ]
    for headers in accepted:
        response = await http.get("/api/v1/agents/", headers=headers)
        assert response.status_code == 200, (headers, response.text)
    for headers in (
        {"Authorization": f"Bearer {token}", "X-API-Key": key},
        {"Authorization": f"Bearer {key}", "X-API-Key": key[:-4] + "AAAA"},
        {"Authorization": "Bearer crew_made_up", "X-API-Key": key},
    ):
        refused = await http.get("/api/v1/agents/", headers=headers)
        body = assert_error(refused, 401, "UNAUTHORIZED")
        assert body["details"]["reason"] == "ambiguous", body
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert key not in refused.text and token not in refused.text
    twice = [(b"authorization", f"Bearer {key}".encode()), (b"authorization", b"Bearer x")]
    refused = await http.get("/api/v1/agents/", headers=twice)
    assert assert_error(refused, 401, "UNAUTHORIZED")["details"]["reason"] == "ambiguous"
    events = "/api/v1/executions/1/events"
    both = await http.get(events, params={"access_token": token}, headers={"X-API-Key": key})
    assert assert_error(both, 401, "UNAUTHORIZED")["details"]["reason"] == "ambiguous"
    same = await http.get(events, params={"access_token": key}, headers={"X-API-Key": key})
    assert_error(same, 404, "NOT_FOUND")  # authenticated; no such execution


async def test_bytes_and_sizes_a_header_should_not_have(auth_app: Any, http: Any) -> None:
    for raw in (b"Bearer \xff\xfe\xc3(", b"\xff", b"Bearer crew_\xff" + b"a" * 60):
        refused = await http.get("/api/v1/agents/", headers=[(b"authorization", raw)])
        assert_error(refused, 401, "UNAUTHORIZED")
    refused = await http.get("/api/v1/agents/", headers=[(b"x-api-key", b"crew_\xff\xfe")])
    assert assert_error(refused, 401, "UNAUTHORIZED")["details"]["reason"] == "malformed"
    for huge in ("a" * 60_000, "crew_" + "a" * 60_000, "eyJ" + "a" * 60_000 + ".e30.x"):
        refused = await http.get("/api/v1/agents/", headers=bearer(huge))
        body = assert_error(refused, 401, "UNAUTHORIZED")
        assert len(refused.text) < 1000, body["message"][:200]


async def test_jwt_claims_in_their_list_forms(auth_app: Any, http: Any) -> None:
    from tests.auth.support import AUDIENCE

    for extra in (
        {"scope": None, "scp": ["read", "write"]},
        {"scope": "read write"},
        {"aud": ["another-api", AUDIENCE]},
    ):
        response = await http.get("/api/v1/agents/", headers=bearer(rs256(claims(**extra))))
        assert response.status_code == 200, (extra, response.text)
    wrong = await http.get(
        "/api/v1/agents/", headers=bearer(rs256(claims(aud=["another-api", "a-third"])))
    )
    assert assert_error(wrong, 401, "UNAUTHORIZED")["details"]["reason"] == "audience"
    for odd in ({"sub": 5}, {"exp": "soon"}, {"scope": 5}):
        response = await http.get("/api/v1/agents/", headers=bearer(rs256(claims(**odd))))
        assert response.status_code in (401, 403), (odd, response.text)
        assert_error(response, response.status_code)


async def test_an_api_key_server_says_a_jwt_is_not_a_key(
    database_url: str, stub: StubServer
) -> None:
    app = create_app(auth_settings(database_url, stub, auth_mode="api_key"))
    async with LifespanManager(app), client_of(app) as http:
        key = await api_key(app, "k", ["read"])
        assert (await http.get("/api/v1/agents/", headers=bearer(key))).status_code == 200
        refused = await http.get("/api/v1/agents/", headers=token_of("alice"))
        body = assert_error(refused, 401, "UNAUTHORIZED")
        assert "AUTH_MODE=api_key" in body["message"] and body["details"]["reason"] == "malformed"


async def test_a_jwks_that_cannot_be_read_is_a_503_and_spends_no_budget(
    database_url: str, stub: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The identity provider down at start-up: the server starts, answers 503 (the token may
    be valid; refusing it as a failed authentication would lock its IP out), fetches the key
    set again at most once per interval, and verifies tokens as soon as the key set is back."""
    from crew_platform.auth import jwt_tokens

    caplog.set_level(logging.WARNING, "crew_platform.auth")
    with JwksServer({"keys": [jwk_of(rsa_key("idp"), "idp")]}, status=503) as idp:
        settings = auth_settings(
            database_url,
            stub,
            jwt_public_key=None,
            jwt_jwks_url=idp.url,
            rate_limit_auth_failures="2/minute",
        )
        app = create_app(settings)
        async with LifespanManager(app), client_of(app) as http:
            assert idp.requests == 0  # start-up does not wait for the identity provider
            keys = app.state.authenticator.jwt.jwks
            token = bearer(rs256(claims(), rsa_key("idp"), "idp"))
            for _ in range(5):
                down = await http.get("/api/v1/agents/", headers=token)
                body = assert_error(down, 503, "SERVICE_UNAVAILABLE")
                assert "JWT_JWKS_URL" in body["message"]
                assert int(down.headers["retry-after"]) == jwt_tokens.JWKS_MIN_REFRESH_SECONDS
            made_up = bearer(rs256(claims(), rsa_key("attacker"), "kid-1"))
            assert_error(await http.get("/api/v1/agents/", headers=made_up), 503)
            assert idp.requests == 1  # at most once per JWKS_MIN_REFRESH_SECONDS
            async with websocket(app, "/ws/", token) as ws:
                with pytest.raises(WebSocketClosed) as closed:
                    await ws.open()
                    await ws.receive()
                assert closed.value.code == 1013
            idp.status = 200
            keys.min_refresh_seconds = 0  # the interval has passed
            assert (await http.get("/api/v1/agents/", headers=token)).status_code == 200
            assert idp.requests == 2
            # None of the 503s spent the IP's budget of 2 failures: a bad token still gets 401
            bad = bearer(rs256(claims(), rsa_key("attacker"), "idp"))
            assert_error(await http.get("/api/v1/agents/", headers=bad), 401, "UNAUTHORIZED")
    assert "could not be read" in caplog.text


async def test_a_websocket_url_token_is_no_credential_and_leaves_the_url(
    auth_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crew_platform.auth import middleware

    monkeypatch.setattr(middleware, "WS_AUTH_SECONDS", 0.3)
    key = await api_key(auth_app, "alice-key", ["read"], "alice")
    async with websocket(auth_app, "/ws/") as ws:
        ws.scope["query_string"] = f"access_token={key}&x=1".encode()
        await ws.open()
        with pytest.raises(WebSocketClosed) as closed:
            await ws.receive()
        assert closed.value.code == 4401
        assert ws.scope["query_string"] == b"x=1"
    async with websocket(auth_app, "/ws/") as ws:  # the first message still works
        ws.scope["query_string"] = f"access_token={key}".encode()
        await ws.open()
        await ws.send({"type": "auth", "token": f"  {key} "})
        assert (await ws.receive())["type"] == "authenticated"
        assert ws.scope["query_string"] == b""


async def test_a_first_message_that_is_not_an_auth_object_closes_4401(
    auth_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crew_platform.auth import middleware

    monkeypatch.setattr(middleware, "WS_AUTH_SECONDS", 0.3)
    key = await api_key(auth_app, "alice-key", ["read"], "alice")
    for frame in (
        {"text": '{"type": "auth", "token": '},  # malformed JSON
        {"text": "[1, 2]"},
        {"text": '"auth"'},
        {"text": '{"type": "auth", "token": ["' + key + '"]}'},
        {"bytes": b"\xff\xfe"},
        {"text": "[" * 100_000},  # deeper than the JSON parser goes
    ):
        async with websocket(auth_app, "/ws/") as ws:
            await ws.open()
            await ws._to_app.put({"type": "websocket.receive", **frame})
            with pytest.raises(WebSocketClosed) as closed:
                await ws.receive()
            assert closed.value.code == 4401, frame
            assert key not in closed.value.reason
    async with websocket(auth_app, "/ws/") as ws:  # a binary frame of the right JSON will do
        await ws.open()
        auth = b'{"type": "auth", "token": "' + key.encode() + b'"}'
        await ws._to_app.put({"type": "websocket.receive", "bytes": auth})
        assert (await ws.receive())["type"] == "authenticated"


async def test_workers_need_read_and_show_only_the_callers_runs(
    auth_app: Any, http: Any, stub: StubServer
) -> None:
    """GET /api/v1/workers is a read (a process has no owner); under AUTH_OWNERSHIP=on the
    executions each process holds are the caller's own only (admin: all), so the ids of other
    owners' runs do not leak."""
    assert required_scope("GET", "/api/v1/workers/") == Scope.READ
    alice = token_of("alice")

    async def post(path: str, body: dict[str, Any]) -> Any:
        response = await http.post(path, json=body, headers=alice)
        assert response.status_code in (201, 202), response.text
        return response.json()

    stub.script({"content": "done", "gate": "workers"})
    agent = await post("/api/v1/agents/", {"name": "alice-agent", "role": "r", "goal": "g"})
    workflow = await post("/api/v1/workflows/", {"name": "alice-workflow"})
    await post(
        "/api/v1/tasks/",
        {"workflow_id": workflow["id"], "agent_id": agent["id"], "name": "t"},
    )
    run = await post(f"/api/v1/workflows/{workflow['id']}/execute", {})
    await wait_for_gate(stub, "workers")
    try:
        held = {}
        for who, scopes in (("alice", "read"), ("bob", "read"), ("root", "admin")):
            response = await http.get("/api/v1/workers/", headers=token_of(who, scopes))
            assert response.status_code == 200, response.text
            workers = response.json()
            assert workers, who  # every caller sees the processes
            held[who] = [e["execution_id"] for w in workers for e in w["executions"]]
        assert held == {"alice": [run["id"]], "bob": [], "root": [run["id"]]}
        no_read = await http.get("/api/v1/workers/", headers=token_of("alice", "write execute"))
        assert assert_error(no_read, 403, "FORBIDDEN")["details"]["required_scope"] == "read"
    finally:
        stub.open_gate("workers")
    http.headers.update(alice)
    await wait_for_execution(http, run["id"])
