"""Shared fixtures: real SQLite files, the real PostgreSQL, a real HTTP LLM stub.

Every API test runs once per backend (`backend` parameter). PostgreSQL is taken from
TEST_DATABASE_URL (default: the local server, database `test`); under CI=true it must be there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from crew_platform.app import create_app
from crew_platform.db import Base
from crew_platform.devtools.llm_stub import StubServer
from crew_platform.migrations.runner import upgrade_to_head
from crew_platform.settings import Settings
from tests.support import live_server, wait_for_execution

__all__ = ["live_server", "wait_for_execution"]

PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() == "true"


def run_coroutine(factory: Any) -> Any:
    """asyncio.run(factory()) even when called from inside a running loop (session fixtures)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, factory()).result()


def _normalise(url: str) -> str:
    return Settings(database_url=url).database_url


async def _postgres_reachable(url: str) -> str | None:
    engine = create_async_engine(_normalise(url))
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await engine.dispose()


def require_service(name: str, problem: str | None) -> None:
    """Skip with a one-line reason outside CI; fail under CI=true, where services must run."""
    if problem is None:
        return
    message = f"{name} unavailable ({problem.splitlines()[0][:150]})"
    if IN_CI:
        pytest.fail(message + " and CI=true requires it")
    pytest.skip(message)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade_to_head(f"sqlite+aiosqlite:///{path}")
    return path


@contextlib.contextmanager
def fresh_postgres() -> Iterator[str]:
    """A migrated database of our own (parallel runs never collide), dropped afterwards;
    falls back to TEST_DATABASE_URL itself, emptied, where we may not create databases."""
    problem = run_coroutine(lambda: _postgres_reachable(PG_URL))
    require_service("PostgreSQL", problem)
    base = make_url(_normalise(PG_URL))
    name = f"crew_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    async def _admin(statement: str) -> None:
        engine = create_async_engine(base, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(statement))
        finally:
            await engine.dispose()

    try:
        run_coroutine(lambda: _admin(f'CREATE DATABASE "{name}"'))
        url = base.set(database=name).render_as_string(hide_password=False)
        created = True
    except Exception:
        url, created = base.render_as_string(hide_password=False), False
        run_coroutine(lambda: _drop_all(url))
    upgrade_to_head(url)
    try:
        yield url
    finally:
        if created:
            run_coroutine(lambda: _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_migrated() -> Iterator[str]:
    """A database of our own for this pytest session (see `fresh_postgres`)."""
    with fresh_postgres() as url:
        yield url


async def _drop_all(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all)
        await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    await engine.dispose()


async def truncate_postgres(url: str) -> None:
    engine = create_async_engine(url)
    names = ", ".join(t.name for t in Base.metadata.sorted_tables)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    await engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "crew.db"
        shutil.copyfile(template, target)
        return f"sqlite+aiosqlite:///{target}"
    url: str = request.getfixturevalue("postgres_migrated")
    await truncate_postgres(url)
    return url


@pytest.fixture(scope="session")
def stub() -> Iterator[StubServer]:
    server = StubServer().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_stub(request: pytest.FixtureRequest) -> None:
    if "stub" in request.fixturenames:
        request.getfixturevalue("stub").reset()


def make_settings(database_url: str, stub: StubServer | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "cerebras_api_key": "test-key" if stub else None,
        "cerebras_base_url": stub.base_url if stub else "http://127.0.0.1:9/v1",
        "llm_max_retries": 2,
        "llm_timeout_seconds": 5.0,
        "rate_limit_api": "off",
        "rate_limit_ws": "off",
        "redis_url": None,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(database_url: str, stub: StubServer) -> Settings:
    return make_settings(database_url, stub)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Any]:
    application = create_app(settings)
    async with LifespanManager(application, startup_timeout=30, shutdown_timeout=30):
        yield application


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
