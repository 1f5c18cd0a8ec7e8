"""PostgreSQL without `pool_pre_ping`: connections the server closed are replaced on checkout."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from crew_platform.settings import Settings
from tests.api import make_agent


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
