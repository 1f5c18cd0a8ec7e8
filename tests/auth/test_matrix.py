"""Every route of the app's route table x every way a credential can be wrong: the right 401,
403 or 404, in the error envelope, and not one row of any table changed. One app per backend;
the routes come from the app itself, so a route added later is in the matrix without a change
here (a new path parameter needs a sample value in `SAMPLES`, a new body in `BODIES`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from crew_platform.auth.principal import Scope
from crew_platform.auth.scopes import WEBSOCKET, required_scope
from tests.api import assert_error, check_each
from tests.auth import support
from tests.auth.conftest import (
    API_KEY_SECRET,
    Owned,
    api_key,
    create_owned,
    snapshot,
    token_of,
)
from tests.auth.routes import fill, http_routes, parameters, websocket_routes
from tests.auth.support import (
    HS_SECRET,
    WebSocketClosed,
    bearer,
    claims,
    hs_with_public_key,
    public_pem,
    rs256,
    rsa_key,
    unsigned,
    websocket,
)

MISSING = 999_999
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/v1/agents/{agent_id}/test"): {"input": "hello"},
    ("POST", "/api/v1/executions/{execution_id}/input"): {"approve": True},
}
"""A request body the route accepts, where `{}` would not do (a refusal must not be a 422)."""


def samples(owned: Owned) -> dict[str, Any]:
    return {
        "agent_id": owned.agent,
        "workflow_id": owned.workflow,
        "task_id": owned.task,
        "execution_id": owned.execution,
        "server_id": owned.server,
        "name": owned.tool,
    }


MISSING_SAMPLES = {
    "agent_id": MISSING,
    "workflow_id": MISSING,
    "task_id": MISSING,
    "execution_id": MISSING,
    "server_id": MISSING,
    "name": "no-such-tool",
}


def body_for(method: str, path: str) -> dict[str, Any] | None:
    if method in ("GET", "HEAD", "DELETE"):
        return None
    return BODIES.get((method, path), {})


def without(scope: Scope) -> str:
    return " ".join(s.value for s in Scope if s not in (scope, Scope.ADMIN))


@dataclass(frozen=True)
class Case:
    label: str
    headers: Callable[[Scope], dict[str, str]]
    status: int
    reason: str | None = None


def credential_cases(keys: dict[str, str]) -> list[Case]:
    now = int(time.time())
    return [
        Case("no credential", lambda _: {}, 401, "missing"),
        Case("bad token", lambda _: bearer("not-a-token"), 401, "malformed"),
        Case("empty bearer", lambda _: {"Authorization": "Bearer "}, 401, "malformed"),
        Case("basic auth", lambda _: {"Authorization": "Basic YTpi"}, 401, "malformed"),
        Case(
            "expired",
            lambda _: bearer(rs256(claims(exp=now - 3600, iat=now - 7200, nbf=now - 7200))),
            401,
            "expired",
        ),
        Case(
            "not yet valid", lambda _: bearer(rs256(claims(nbf=now + 3600))), 401, "not_yet_valid"
        ),
        Case(
            "wrong issuer",
            lambda _: bearer(rs256(claims(iss="https://elsewhere.test/"))),
            401,
            "issuer",
        ),
        Case("wrong audience", lambda _: bearer(rs256(claims(aud="other-app"))), 401, "audience"),
        Case("no exp", lambda _: bearer(rs256(claims(exp=None))), 401, "missing_claim"),
        Case(
            "wrong signature",
            lambda _: bearer(rs256(claims(), key=rsa_key("attacker"))),
            401,
            "signature",
        ),
        Case("alg none", lambda _: bearer(unsigned(claims())), 401, "algorithm"),
        Case(
            "HS/RS confusion",
            lambda _: bearer(hs_with_public_key(claims(), public_pem(rsa_key()))),
            401,
            "algorithm",
        ),
        Case(
            "HS256 with another secret",
            lambda _: bearer(support.jwt.encode(claims(), HS_SECRET, algorithm="HS256")),
            401,
            "algorithm",
        ),
        Case("revoked key", lambda _: {"X-API-Key": keys["revoked"]}, 401, "revoked"),
        Case("revoked key as bearer", lambda _: bearer(keys["revoked"]), 401, "revoked"),
        Case(
            "made-up key",
            lambda _: {"X-API-Key": keys["alice"][:-4] + "AAAA"},
            401,
            "invalid",
        ),
        Case("malformed key", lambda _: {"X-API-Key": "crew_123"}, 401, "malformed"),
        Case(
            "two different credentials",
            lambda _: {**token_of("alice"), "X-API-Key": keys["alice"]},
            401,
            "ambiguous",
        ),
        Case("missing scope", lambda scope: token_of("alice", without(scope)), 403),
        Case("missing scope, API key", lambda scope: {"X-API-Key": keys[f"no-{scope}"]}, 403),
    ]


@pytest.mark.parametrize("backend", ["sqlite"])  # credentials: one backend is enough
async def test_every_route_refuses_every_bad_credential_and_changes_nothing(
    auth_app: Any,
    http: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    alice = await create_owned(http, "alice")
    await create_owned(http, "bob")
    keys = {
        "alice": await api_key(auth_app, "alice-key", ["read", "write", "execute"], "alice"),
        "revoked": await api_key(auth_app, "old", ["admin"], "alice", revoked=True),
    }
    for scope in (Scope.READ, Scope.WRITE, Scope.EXECUTE):
        keys[f"no-{scope}"] = await api_key(
            auth_app, f"no-{scope}", without(scope).split(), "alice"
        )
    cases = credential_cases(keys)
    secrets_used: set[str] = {API_KEY_SECRET, *keys.values()}
    routes = http_routes(auth_app)
    values = samples(alice)

    async def check(method: str, path: str) -> None:
        url = fill(path, values)
        needed = required_scope(method, path)
        before = await snapshot(auth_app)
        for case in cases:
            headers = case.headers(needed)
            secrets_used.update(v.split()[-1] for v in headers.values() if len(v) > 20)
            response = await http.request(method, url, headers=headers, json=body_for(method, path))
            where = f"{case.label}: {method} {url}"
            code = "UNAUTHORIZED" if case.status == 401 else "FORBIDDEN"
            body = assert_error(response, case.status, code)
            challenge = response.headers.get("www-authenticate", "")
            assert challenge.startswith("Bearer"), where
            if case.reason is not None:
                assert body["details"].get("reason") == case.reason, (where, body)
            else:
                assert body["details"]["required_scope"] == needed.value, (where, body)
                assert 'error="insufficient_scope"' in challenge, where
            for secret in secrets_used:
                assert secret not in response.text, where
        assert await snapshot(auth_app) == before, f"{method} {path} changed rows"

    await check_each(routes, check)
    server_log = "\n".join(
        record.getMessage()
        for record in caplog.records
        if not record.name.startswith(("httpx", "httpcore"))  # the test's own client
    )
    assert "authentication failed" in server_log
    leaked = [secret[:12] for secret in secrets_used if secret in server_log]
    assert not leaked, f"secrets in the log (first characters): {leaked}"


async def test_another_owners_resources_are_not_found_and_lists_leave_them_out(
    auth_app: Any, http: httpx.AsyncClient
) -> None:
    alice = await create_owned(http, "alice")
    await create_owned(http, "bob")
    bob, admin = token_of("bob"), token_of("root", "admin")
    routes = http_routes(auth_app)
    before = await snapshot(auth_app)

    async def check(method: str, path: str) -> None:
        url = fill(path, samples(alice))
        body = body_for(method, path)
        if parameters(path):
            refused = await http.request(method, url, headers=bob, json=body)
            assert_error(refused, 404, "NOT_FOUND")
            assert "alice" not in refused.text.replace(alice.tool, "<the name asked for>")
            if method == "GET":
                seen = await http.request(method, url, headers=admin)
                assert seen.status_code == 200, (url, seen.text)
                assert (await http.get(url, headers=token_of("alice"))).status_code == 200
            return
        if method == "GET":
            listed = await http.get(url, headers=bob)
            assert listed.status_code == 200, listed.text
            assert "alice" not in listed.text, (url, listed.text[:500])
            assert (await http.get(url, headers=admin)).status_code == 200

    await check_each(routes, check)
    assert await snapshot(auth_app) == before


LISTS = [
    "/api/v1/agents/",
    "/api/v1/workflows/",
    "/api/v1/tasks/",
    "/api/v1/executions/",
    "/api/v1/tools/",
    "/api/v1/mcp-servers/",
]


async def test_owners_see_their_own_and_admin_sees_everyone(
    auth_app: Any, http: httpx.AsyncClient
) -> None:
    """The other side of the lists above: the filter is not empty for everyone."""
    await create_owned(http, "alice")
    await create_owned(http, "bob")
    for path in LISTS:
        mine = (await http.get(path, headers=token_of("alice"))).text
        every = (await http.get(path, headers=token_of("root", "admin"))).text
        assert "alice" in mine and "bob" not in mine, (path, mine[:300])
        assert "alice" in every and "bob" in every, (path, every[:300])
    stats = [
        (await http.get("/api/v1/executions/stats", headers=headers)).json()["total_executions"]
        for headers in (token_of("alice"), token_of("bob"), token_of("root", "admin"))
    ]
    assert stats == [1, 1, 2]
    filtered = await http.get(
        "/api/v1/tasks/", params={"workflow_id": 1, "agent_id": 1}, headers=token_of("bob")
    )
    assert filtered.json() == []


async def test_a_right_credential_passes_on_every_route(
    auth_app: Any, http: httpx.AsyncClient
) -> None:
    """Controls: with the scope the rule gives, every route is reached (reads answer 200;
    writes on missing ids 404, creations of nothing 422), through a JWT and an API key."""
    alice = await create_owned(http, "alice")
    key = await api_key(auth_app, "alice-all", ["read", "write", "execute"], "alice")
    before = await snapshot(auth_app)

    async def check(method: str, path: str) -> None:
        needed = required_scope(method, path)
        for headers in (token_of("alice", needed.value), {"X-API-Key": key}, bearer(key)):
            if method in ("GET", "HEAD"):
                response = await http.request(method, fill(path, samples(alice)), headers=headers)
                assert response.status_code == 200, (path, response.text[:300])
                continue
            url = fill(path, MISSING_SAMPLES)
            response = await http.request(method, url, headers=headers, json=body_for(method, path))
            expected = 404 if parameters(path) else 422
            assert response.status_code == expected, (method, url, response.text[:300])

    await check_each(http_routes(auth_app), check)
    assert await snapshot(auth_app) == before


# -- WebSocket ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_websocket_refuses_bad_credentials_in_a_header_or_the_first_message(
    auth_app: Any, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crew_platform.auth import middleware

    monkeypatch.setattr(middleware, "WS_AUTH_SECONDS", 0.3)
    alice = await create_owned(http, "alice")
    keys = {
        "alice": await api_key(auth_app, "alice-key", ["read"], "alice"),
        "revoked": await api_key(auth_app, "old", ["admin"], "alice", revoked=True),
        "no-read": await api_key(auth_app, "no-read", ["write", "execute"], "alice"),
    }
    cases = credential_cases(keys)

    async def closed_with(path: str, headers: dict[str, str], first: Any = None) -> int:
        async with websocket(auth_app, path, headers) as ws:
            try:
                await ws.open()
                if first is not None:
                    await ws.send(first)
                await ws.receive()
            except WebSocketClosed as closed:
                return closed.code
        raise AssertionError("the socket was not closed")

    async def check(path: str) -> None:
        for case in cases:
            headers = case.headers(Scope.READ)
            expected = 4401 if case.status == 401 else 4403
            if headers:
                assert await closed_with(path, headers) == expected, (path, case.label)
            if "Authorization" in headers and case.reason != "ambiguous":
                token = headers["Authorization"].partition(" ")[2]
                first = {"type": "auth", "token": token}
                assert await closed_with(path, {}, first) == expected, (path, case.label)
        assert await closed_with(path, {}) == 4401  # nothing within WS_AUTH_SECONDS
        for first in ({"type": "ping"}, {"type": "auth"}, {"type": "auth", "token": 1}):
            assert await closed_with(path, {}, first) == 4401, first
        unauthenticated = {"type": "subscribe_workflow", "workflow_id": alice.workflow}
        assert await closed_with(path, {}, unauthenticated) == 4401

    await check_each(websocket_routes(auth_app), check)

    for headers, first in (
        (token_of("alice", "read"), None),
        ({"X-API-Key": keys["alice"]}, None),
        ({}, {"type": "auth", "token": token_of("alice", "read")["Authorization"][7:]}),
        ({}, {"type": "auth", "token": keys["alice"]}),
    ):
        async with websocket(auth_app, "/ws/", headers) as ws:
            await ws.open()
            if first is not None:
                await ws.send(first)
                assert await ws.receive() == {
                    "type": "authenticated",
                    "subject": "alice",
                    "scopes": ["read"],
                }
            await ws.send({"type": "subscribe_workflow", "workflow_id": alice.workflow})
            assert (await ws.receive())["type"] == "subscribed"
    assert required_scope(WEBSOCKET, "/ws/") == Scope.READ


async def test_websocket_subscriptions_to_another_owners_resources_are_not_found(
    auth_app: Any, http: httpx.AsyncClient
) -> None:
    alice = await create_owned(http, "alice")
    await create_owned(http, "bob")
    targets = [
        ("subscribe_workflow", "workflow_id", alice.workflow),
        ("subscribe_agent", "agent_id", alice.agent),
        ("subscribe_execution", "execution_id", alice.execution),
    ]
    for who, expected in (("bob", "error"), ("alice", "subscribed"), ("root", "subscribed")):
        scopes = "admin" if who == "root" else "read"
        async with websocket(auth_app, "/ws/", token_of(who, scopes)) as ws:
            await ws.open()
            for kind, field, ident in targets:
                await ws.send({"type": kind, field: ident})
                answer = await ws.receive()
                assert answer["type"] == expected, (who, kind, answer)
                if expected == "error":
                    assert answer["error"] == "NOT_FOUND", answer
