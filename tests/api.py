"""Helpers for the API tests of agents, workflows and tasks: creating resources over HTTP and
checking the error envelope."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from crew_platform.db import Base
from crew_platform.devtools.llm_stub import StubServer
from tests.conftest import run_coroutine
from tests.support import LiveServer, live_server

UTC_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
DEFAULT_MODEL = "llama-4-maverick-17b-128e-instruct"


async def make_agent(client: httpx.AsyncClient, name: str = "Researcher", **fields: Any) -> Any:
    body = {"name": name, "role": "Research Specialist", "goal": "Gather information", **fields}
    response = await client.post("/api/v1/agents/", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def make_workflow(client: httpx.AsyncClient, name: str = "Pipeline", **fields: Any) -> Any:
    response = await client.post("/api/v1/workflows/", json={"name": name, **fields})
    assert response.status_code == 201, response.text
    return response.json()


async def make_task(
    client: httpx.AsyncClient, workflow_id: int, name: str = "Task", **fields: Any
) -> Any:
    response = await client.post(
        "/api/v1/tasks/", json={"workflow_id": workflow_id, "name": name, **fields}
    )
    assert response.status_code == 201, response.text
    return response.json()


def assert_error(
    response: httpx.Response,
    status: int,
    code: str | None = None,
    fields: Iterable[str] = (),
) -> dict[str, Any]:
    """The spec's envelope, exactly: {"error", "message", "details"}, and nothing that looks
    like a stack trace. `fields` must each be named in details.fields (a field or an element
    of it: `capabilities.0` names `capabilities`)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "message", "details"}, body
    assert isinstance(body["error"], str) and body["error"].isupper(), body
    assert isinstance(body["message"], str) and body["message"], body
    assert isinstance(body["details"], dict), body
    assert "Traceback" not in response.text and 'File "' not in response.text
    if code is not None:
        assert body["error"] == code, body
    wanted = list(fields)
    if wanted:
        named = body["details"].get("fields", {})
        for field in wanted:
            assert any(n == field or n.startswith(field + ".") for n in named), (field, body)
    return body


def assert_utc(value: Any) -> None:
    assert isinstance(value, str) and UTC_TIMESTAMP.match(value), value


@asynccontextmanager
async def refusing_trigger(
    engine: AsyncEngine, backend: str, table: str, event: str
) -> AsyncIterator[None]:
    """While inside, every `event` (INSERT, UPDATE, DELETE) on `table` fails in the database
    itself (a BEFORE trigger), as a crash or a constraint would in the middle of a request."""
    name = f"refuse_{event.lower()}_{table}"
    if backend == "postgres":
        create = [
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused by test trigger'; END $$",
            f"CREATE TRIGGER {name} BEFORE {event} ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {name}()",
        ]
        drop = [f"DROP TRIGGER IF EXISTS {name} ON {table}", f"DROP FUNCTION IF EXISTS {name}"]
    else:
        create = [
            f"CREATE TRIGGER {name} BEFORE {event} ON {table} "
            "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END"
        ]
        drop = [f"DROP TRIGGER IF EXISTS {name}"]
    async with engine.begin() as conn:
        for statement in create:
            await conn.execute(text(statement))
    try:
        yield
    finally:
        async with engine.begin() as conn:
            for statement in drop:
                await conn.execute(text(statement))


async def check_each(cases: Iterable[Any], check: Callable[..., Awaitable[None]]) -> None:
    """Run `check(*case)` for every case (one app for the whole table) and report every case
    that fails, not only the first."""
    failures = []
    for case in cases:
        args = case if isinstance(case, tuple) else (case,)
        try:
            await check(*args)
        except AssertionError as exc:
            failures.append(f"{args!r}: {exc}")
    assert not failures, f"{len(failures)} case(s) failed:\n" + "\n".join(failures)


# -- a live server (`crew-platform serve`) on a database of its own, per backend -------------


def live_env(database_url: str, stub: StubServer) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "CEREBRAS_API_KEY": "test-key",
        "CEREBRAS_BASE_URL": stub.base_url,
        "LLM_MAX_RETRIES": "0",
        "RATE_LIMIT_API": "off",
        "RATE_LIMIT_WS": "off",
        "LOG_LEVEL": "warning",
        # A killed server's runs are taken over this soon by the next one (default 15 s).
        "LEASE_SECONDS": "2",
    }


@contextmanager
def module_live_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, stub: StubServer
) -> Iterator[tuple[LiveServer, str]]:
    """For a module-scoped fixture parametrized by backend: one server process for the module
    (starting one costs seconds); `wipe(url)` empties its database between tests."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('live') / 'live.db'}"
    else:
        url = request.getfixturevalue("postgres_migrated")
        wipe(url)  # other tests' rows
    with live_server(live_env(url, stub)) as server:
        yield server, url


def wipe(url: str) -> None:
    """Empty every table; ids start again at 1 (SQLite reuses them, PostgreSQL restarts)."""

    async def run() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    names = ", ".join(t.name for t in Base.metadata.sorted_tables)
                    await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
                else:
                    for table in reversed(Base.metadata.sorted_tables):
                        await conn.execute(table.delete())
        finally:
            await engine.dispose()

    run_coroutine(run)
