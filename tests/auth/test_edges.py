"""Around the matrix: the failed-authentication budget per IP, what stays open (/health, the
docs by AUTH_DOCS_PUBLIC), the security schemes in /openapi.json, `created_by` on every kind
of resource, references to another owner's resources, AUTH_OWNERSHIP=off."""

from __future__ import annotations

from typing import Any

import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text

from crew_platform.app import create_app
from crew_platform.devtools.llm_stub import StubServer
from tests.api import assert_error
from tests.auth.conftest import api_key, auth_settings, client_of, create_owned, token_of
from tests.auth.support import WebSocketClosed, bearer, websocket


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_failed_authentications_spend_the_ips_budget(
    database_url: str, stub: StubServer
) -> None:
    app = create_app(auth_settings(database_url, stub, rate_limit_auth_failures="3/minute"))
    async with LifespanManager(app):
        attacker, neighbour = client_of(app, "10.0.0.66"), client_of(app, "10.0.0.7")
        good = token_of("alice", "read")
        key = await api_key(app, "k", ["read"])
        async with attacker, neighbour:
            for _ in range(5):  # valid requests and missing credentials cost nothing
                assert (await attacker.get("/api/v1/agents/", headers=good)).status_code == 200
                assert (await attacker.get("/api/v1/agents/")).status_code == 401
            for guess in range(3):
                wrong = {"X-API-Key": key[:-6] + f"{guess:06d}"}
                refused = await attacker.get("/api/v1/agents/", headers=wrong)
                assert refused.status_code == 401
            locked = await attacker.get("/api/v1/agents/", headers=good)
            body = assert_error(locked, 429, "RATE_LIMITED")
            assert "failed authentications" in body["message"]
            assert int(locked.headers["retry-after"]) >= 1
            assert (
                await attacker.get("/api/v1/agents/", headers={"X-API-Key": key})
            ).status_code == 429
            assert (await attacker.get("/health")).status_code == 200
            assert (await neighbour.get("/api/v1/agents/", headers=good)).status_code == 200
        async with websocket(app, "/ws/", good, client="10.0.0.7") as ws:
            await ws.open()
        async with websocket(app, "/ws/", good, client="10.0.0.66") as ws:
            with pytest.raises(WebSocketClosed) as closed:
                await ws.open()
                await ws.receive()
            assert closed.value.code == 4429


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_failure_budget_off(database_url: str, stub: StubServer) -> None:
    app = create_app(auth_settings(database_url, stub, rate_limit_auth_failures="off"))
    async with LifespanManager(app), client_of(app) as http:
        for _ in range(30):
            assert (await http.get("/api/v1/agents/", headers=bearer("x"))).status_code == 401
        assert (await http.get("/api/v1/agents/", headers=token_of("a"))).status_code == 200


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("docs_public", [True, False])
async def test_health_is_open_and_docs_by_setting(
    database_url: str, stub: StubServer, docs_public: bool
) -> None:
    app = create_app(auth_settings(database_url, stub, auth_docs_public=docs_public))
    async with LifespanManager(app), client_of(app) as http:
        assert (await http.get("/health")).status_code == 200
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
            response = await http.get(path)
            assert response.status_code == (200 if docs_public else 401), path
        assert (await http.get("/openapi.json", headers=token_of("a", "read"))).status_code == 200
        assert (await http.get("/nope")).status_code == 401  # unknown paths: no map of routes
        assert (await http.get("/nope", headers=token_of("a", "admin"))).status_code == 404


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_openapi_documents_the_security_schemes(database_url: str, stub: StubServer) -> None:
    app = create_app(auth_settings(database_url, stub))
    schema = app.openapi()
    assert set(schema["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    operation = schema["paths"]["/api/v1/workflows/{workflow_id}/execute"]["post"]
    assert operation["x-required-scope"] == "execute"
    assert {"401", "403"} <= set(operation["responses"])
    assert schema["paths"]["/health"]["get"]["security"] == []
    plain = create_app(auth_settings(database_url, stub, auth_mode="none")).openapi()
    assert "securitySchemes" not in plain.get("components", {})


async def test_created_by_is_the_principal_on_every_kind_of_resource(
    auth_app: Any, http: Any
) -> None:
    await create_owned(http, "alice")
    async with auth_app.state.engine.connect() as connection:
        for table in ("agents", "workflows", "tasks", "tools", "mcp_servers", "executions"):
            owners = (await connection.execute(text(f"SELECT created_by FROM {table}"))).all()
            assert owners == [("alice",)], table


async def test_another_owners_agents_and_workflows_cannot_be_referenced(
    auth_app: Any, http: Any
) -> None:
    alice = await create_owned(http, "alice")
    bob = await create_owned(http, "bob")
    as_bob = token_of("bob")
    cases = [
        ({"workflow_id": alice.workflow, "name": "t"}, "workflow_id"),
        ({"workflow_id": bob.workflow, "agent_id": alice.agent, "name": "t"}, "agent_id"),
    ]
    for body, field in cases:
        refused = await http.post("/api/v1/tasks/", json=body, headers=as_bob)
        assert_error(refused, 422, "VALIDATION_ERROR", fields=[field])
    moved = await http.put(
        f"/api/v1/tasks/{bob.task}", json={"workflow_id": alice.workflow}, headers=as_bob
    )
    assert_error(moved, 422, "VALIDATION_ERROR", fields=["workflow_id"])
    reassigned = await http.put(
        f"/api/v1/tasks/{bob.task}", json={"agent_id": alice.agent}, headers=as_bob
    )
    assert_error(reassigned, 422, "VALIDATION_ERROR", fields=["agent_id"])
    admin = token_of("root", "admin")
    across = await http.post(
        "/api/v1/tasks/",
        json={"workflow_id": alice.workflow, "agent_id": bob.agent, "name": "by admin"},
        headers=admin,
    )
    assert across.status_code == 201, across.text
    assert across.json()["created_by"] == "root"
    mine = await http.get(f"/api/v1/tasks/{across.json()['id']}", headers=token_of("alice"))
    assert mine.status_code == 200  # a task belongs to its workflow's owner


async def test_another_owners_agent_cannot_manage_a_hierarchical_workflow(
    auth_app: Any, http: Any
) -> None:
    alice = await create_owned(http, "alice")
    bob = await create_owned(http, "bob")
    as_bob = token_of("bob")
    borrowed = {"workflow_type": "hierarchical", "config": {"manager_agent_id": alice.agent}}
    created = await http.post(
        "/api/v1/workflows/", json={"name": "borrowing", **borrowed}, headers=as_bob
    )
    assert_error(created, 422, "VALIDATION_ERROR", fields=["config.manager_agent_id"])
    switched = await http.put(f"/api/v1/workflows/{bob.workflow}", json=borrowed, headers=as_bob)
    assert_error(switched, 422, "VALIDATION_ERROR", fields=["config.manager_agent_id"])
    own = {"workflow_type": "hierarchical", "config": {"manager_agent_id": bob.agent}}
    allowed = await http.put(f"/api/v1/workflows/{bob.workflow}", json=own, headers=as_bob)
    assert allowed.status_code == 200, allowed.text


async def test_without_ownership_everyone_sees_everything_but_created_by_is_kept(
    database_url: str, stub: StubServer
) -> None:
    app = create_app(auth_settings(database_url, stub, auth_ownership=False))
    async with LifespanManager(app), client_of(app) as http:
        alice = await create_owned(http, "alice")
        seen = await http.get(f"/api/v1/agents/{alice.agent}", headers=token_of("bob"))
        assert seen.status_code == 200 and seen.json()["created_by"] == "alice"
        listed = await http.get("/api/v1/executions/", headers=token_of("bob"))
        assert [e["created_by"] for e in listed.json()] == ["alice"]


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("value", ["/no/such/key.pem", "-----BEGIN PUBLIC KEY-----\nxx\n"])
async def test_an_unreadable_public_key_stops_start_up_naming_the_setting(
    database_url: str, stub: StubServer, value: str
) -> None:
    from crew_platform.app import StartupFailed

    app = create_app(auth_settings(database_url, stub, jwt_public_key=value))
    with pytest.raises(StartupFailed, match="JWT_PUBLIC_KEY"):
        async with LifespanManager(app):
            pass


async def test_agents_cannot_run_another_owners_tools(auth_app: Any, http: Any) -> None:
    alice = await create_owned(http, "alice")
    bob = await create_owned(http, "bob")
    as_bob = token_of("bob")
    server = await http.get(f"/api/v1/mcp-servers/{alice.server}", headers=token_of("alice"))
    assert server.status_code == 200
    named = await http.put(
        f"/api/v1/agents/{bob.agent}", json={"tools": [alice.tool, "calculator"]}, headers=as_bob
    )
    assert named.status_code == 200, named.text
    for path, body in (
        (f"/api/v1/agents/{bob.agent}/test", {"input": "hi"}),
        (f"/api/v1/workflows/{bob.workflow}/execute", {}),
        (f"/api/v1/tasks/{bob.task}/execute", {}),
    ):
        refused = await http.post(path, json=body, headers=as_bob)
        error = assert_error(refused, 422, "TOOL_NOT_FOUND")
        assert error["details"]["unknown_tools"] == [alice.tool], path
    as_root = await http.post(
        f"/api/v1/agents/{bob.agent}/test", json={"input": "hi"}, headers=token_of("r", "admin")
    )
    assert as_root.status_code == 200, as_root.text


def test_the_defaults_the_issue_names() -> None:
    """AUTH_MODE=none as the spec has it, ownership off, the docs open, 10 failed
    authentications a minute per IP, a small leeway, revocations within seconds."""
    from crew_platform.edge.ratelimit import parse_limit
    from crew_platform.settings import Settings

    settings = Settings(database_url="sqlite://")
    assert settings.auth_mode == "none" and settings.auth_ownership is False
    assert settings.auth_docs_public is True
    limit = parse_limit(settings.rate_limit_auth_failures)
    assert limit is not None and settings.rate_limit_auth_failures == "10/minute"
    assert parse_limit("off") is None
    assert 0 < settings.jwt_leeway_seconds <= 60
    assert 0 < settings.api_key_cache_seconds <= 10
