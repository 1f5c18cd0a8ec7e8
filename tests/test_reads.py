"""The read path of the hot GET endpoints (crew_platform.reads), on both backends."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from crew_platform.reads import PooledReads, SQLiteThreadReads
from tests.api import make_agent


async def test_a_read_sees_the_write_committed_just_before(client: httpx.AsyncClient) -> None:
    for i in range(20):
        created = await make_agent(client, f"Agent {i}")
        got = await client.get(f"/api/v1/agents/{created['id']}")
        assert got.status_code == 200, got.text
        assert got.json() == created
        renamed = await client.put(f"/api/v1/agents/{created['id']}", json={"goal": f"Goal {i}"})
        assert renamed.status_code == 200, renamed.text
        got = await client.get(f"/api/v1/agents/{created['id']}")
        assert got.json()["goal"] == f"Goal {i}"


async def test_concurrent_writes_and_reads_all_succeed(client: httpx.AsyncClient) -> None:
    """SQLite: readers on their own connections while the writer writes, no "database is
    locked" and no read answered from a half-written state."""
    first = await make_agent(client, "Shared")

    async def write(i: int) -> httpx.Response:
        if i % 2:
            return await client.put(f"/api/v1/agents/{first['id']}", json={"goal": f"Goal {i}"})
        body = {"name": f"Writer {i}", "role": "r", "goal": "g"}
        return await client.post("/api/v1/agents/", json=body)

    async def read(i: int) -> httpx.Response:
        return await client.get(f"/api/v1/agents/{first['id']}" if i % 2 else "/api/v1/agents/")

    calls: list[Any] = []
    for i in range(40):
        calls += [write(i), read(i), read(i + 1)]
    responses = await asyncio.gather(*calls)
    problems = [r.text for r in responses if r.status_code not in (200, 201)]
    assert problems == []
    listed = await client.get("/api/v1/agents/", params={"limit": 1000})
    assert len(listed.json()) == 1 + 20


async def test_sqlite_read_connections_cannot_write(app: Any, backend: str) -> None:
    reads = app.state.reads
    if backend == "postgres":
        assert isinstance(reads, PooledReads)
        return
    assert isinstance(reads, SQLiteThreadReads)
    with pytest.raises(OperationalError, match="readonly"):
        await reads.run(lambda connection: connection.execute(text("DELETE FROM agents")))
