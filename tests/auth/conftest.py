"""An app with authentication on (JWT with an RSA key, API keys, ownership), on each backend,
and alice's resources created through the API with her token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select

from crew_platform.app import create_app
from crew_platform.auth.api_keys import create_key, revoke_key
from crew_platform.db import Base
from crew_platform.devtools.llm_stub import StubServer, free_port
from crew_platform.settings import Settings
from tests.auth.support import (
    API_KEY_SECRET,
    AUDIENCE,
    ISSUER,
    bearer,
    claims,
    public_pem,
    rs256,
    rsa_key,
)
from tests.conftest import make_settings
from tests.support import wait_for_execution

ALL_SCOPES = "read write execute"


def auth_settings(database_url: str, stub: StubServer | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "auth_mode": "jwt",
        "jwt_public_key": public_pem(rsa_key()),
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "api_key_secret": API_KEY_SECRET,
        "api_key_cache_seconds": 0,
        "auth_ownership": True,
        "rate_limit_auth_failures": "off",
        "tools_allowed_networks": "127.0.0.0/8",
    }
    values.update(overrides)
    return make_settings(database_url, stub, **values)


@pytest.fixture
async def auth_app(database_url: str, stub: StubServer) -> AsyncIterator[Any]:
    app = create_app(auth_settings(database_url, stub))
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
        yield app


def client_of(app: Any, ip: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(ip, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30)


@pytest.fixture
async def http(auth_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(auth_app) as client:
        yield client


def token_of(subject: str, scopes: str = ALL_SCOPES, **extra: Any) -> dict[str, str]:
    return bearer(rs256(claims(subject, scopes, **extra)))


async def api_key(
    app: Any, name: str, scopes: list[str], subject: str | None = None, revoked: bool = False
) -> str:
    """A key made by the service's own code (what `crew-platform api-key create` runs)."""
    async with app.state.sessionmaker() as session:
        created = await create_key(
            session, app.state.settings, name=name, scopes=scopes, subject=subject
        )
        if revoked:
            assert await revoke_key(session, name)
    return created.key


@dataclass
class Owned:
    """One resource of each kind, created by `owner` over the API."""

    owner: str
    agent: int = 0
    workflow: int = 0
    task: int = 0
    execution: int = 0
    server: int = 0
    tool: str = ""
    names: list[str] = field(default_factory=list)


async def create_owned(http: httpx.AsyncClient, owner: str) -> Owned:
    headers = token_of(owner)
    owned = Owned(owner)

    async def post(path: str, body: dict[str, Any], status: int = 201) -> Any:
        response = await http.post(path, json=body, headers=headers)
        assert response.status_code == status, response.text
        return response.json()

    owned.agent = (
        await post("/api/v1/agents/", {"name": f"{owner}-agent", "role": "r", "goal": "g"})
    )["id"]
    owned.workflow = (await post("/api/v1/workflows/", {"name": f"{owner}-workflow"}))["id"]
    owned.task = (
        await post(
            "/api/v1/tasks/",
            {"workflow_id": owned.workflow, "agent_id": owned.agent, "name": f"{owner}-task"},
        )
    )["id"]
    owned.tool = f"{owner}-tool"
    await post(
        "/api/v1/tools/",
        {"name": owned.tool, "description": "d", "http": {"url": "http://127.0.0.1:9/x"}},
    )
    server = await post(
        "/api/v1/mcp-servers/",
        {"name": f"{owner}-mcp", "url": f"http://127.0.0.1:{free_port()}/mcp"},
    )
    owned.server = server["id"]
    execution = await post(f"/api/v1/workflows/{owned.workflow}/execute", {}, status=202)
    owned.execution = execution["id"]
    http.headers.update(headers)
    try:
        await wait_for_execution(http, owned.execution)
    finally:
        for name in headers:
            http.headers.pop(name)
    owned.names = [f"{owner}-agent", f"{owner}-workflow", f"{owner}-task", owned.tool]
    return owned


HEARTBEAT_TABLES = frozenset({"workers"})


async def snapshot(app: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to prove a refused request changed nothing (but `workers`:
    the process's own heartbeat writes it on its clock, not a request)."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    async with app.state.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            if table.name in HEARTBEAT_TABLES:
                continue
            result = await connection.execute(select(table).order_by(*table.primary_key.columns))
            rows[table.name] = [tuple(row) for row in result]
    return rows
