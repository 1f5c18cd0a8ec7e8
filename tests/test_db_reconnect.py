"""PostgreSQL without `pool_pre_ping`: connections the server closed are replaced on checkout;
a database that refuses connections is a 503, not a 500."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from crew_platform.app import create_app
from crew_platform.settings import Settings
from tests.api import assert_error, make_agent
from tests.conftest import make_settings


@pytest.mark.parametrize("backend", ["postgres"])
async def test_requests_after_the_server_closed_every_connection_succeed(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    agent = await make_agent(client)
    for _ in range(3):  # leave idle connections in the pool
        assert (await client.get(f"/api/v1/agents/{agent['id']}")).status_code == 200
        assert (await client.get("/api/v1/agents/")).status_code == 200

    admin = create_async_engine(settings.database_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            killed = await connection.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
    finally:
        await admin.dispose()
    assert killed

    got = await client.get(f"/api/v1/agents/{agent['id']}")
    assert got.status_code == 200, got.text
    created = await client.post("/api/v1/agents/", json={"name": "After", "role": "r", "goal": "g"})
    assert created.status_code == 201, created.text
    listed = await client.get("/api/v1/agents/")
    assert [a["name"] for a in listed.json()] == ["Researcher", "After"]


@pytest.mark.parametrize("backend", ["postgres"])
async def test_a_database_refusing_connections_is_a_503_in_the_envelope(
    database_url: str, stub: Any
) -> None:
    """PostgreSQL out of connections (here: a role whose connection limit drops to 0) answers
    503 SERVICE_UNAVAILABLE with Retry-After, not a 500; the same request succeeds after."""
    role = f"crew_limited_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE ROLE "{role}" LOGIN'))
            for grant in (
                f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"',
                f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{role}"',
            ):
                await connection.execute(text(grant))
        limited_url = make_url(database_url).set(username=role)
        app = create_app(make_settings(limited_url.render_as_string(False), stub))
        async with (
            LifespanManager(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://testserver"
            ) as client,
        ):
            await make_agent(client)
            async with admin.connect() as connection:
                await connection.execute(text(f'ALTER ROLE "{role}" CONNECTION LIMIT 0'))
                await connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                        f"WHERE usename = '{role}'"
                    )
                )
            agent = {"name": "N", "role": "r", "goal": "g"}
            refused = await client.post("/api/v1/agents/", json=agent)
            body = assert_error(refused, 503, "SERVICE_UNAVAILABLE")
            assert refused.headers["retry-after"] == "1"
            assert "Traceback" not in refused.text and body["details"]["retry_after"] == 1
            async with admin.connect() as connection:
                await connection.execute(text(f'ALTER ROLE "{role}" CONNECTION LIMIT -1'))
            again = await client.post("/api/v1/agents/", json=agent)
            assert again.status_code == 201, again.text
    finally:
        async with admin.connect() as connection:
            await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                    f"WHERE usename = '{role}'"
                )
            )
            await connection.execute(text(f'DROP OWNED BY "{role}"'))
            await connection.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        await admin.dispose()
