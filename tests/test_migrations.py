"""Alembic migrations: from an empty database to head on SQLite and PostgreSQL, the ORM
metadata matches what the migrations build, and the history is one straight line."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Connection, MetaData, String, inspect, make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

import crew_platform.models  # noqa: F401  (registers the tables)
from crew_platform.db import Base
from crew_platform.migrations.runner import alembic_config, upgrade_to_head
from crew_platform.settings import Settings
from tests.conftest import PG_URL, require_service, run_coroutine

TABLES = {
    "agents",
    "workflows",
    "tasks",
    "executions",
    "task_runs",
    "execution_logs",
    "tools",
    "mcp_servers",
    "tool_calls",
    "workers",
    "api_keys",
}


async def _admin(statement: str) -> None:
    base = make_url(Settings(database_url=PG_URL).database_url)
    engine = create_async_engine(base, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
def empty_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """A database with nothing in it: a new SQLite file, or a new PostgreSQL database."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
        return
    name = f"crew_migrations_{uuid.uuid4().hex[:10]}"
    try:
        run_coroutine(lambda: _admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        require_service("PostgreSQL (CREATE DATABASE)", f"{type(exc).__name__}: {exc}")
    base = make_url(Settings(database_url=PG_URL).database_url)
    yield base.set(database=name).render_as_string(hide_password=False)
    run_coroutine(lambda: _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def on_connection(url: str, work: Any) -> Any:
    """Run `work(sync_connection)` against the database at `url`."""

    async def run() -> Any:
        engine = create_async_engine(Settings(database_url=url).database_url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(work)
        finally:
            await engine.dispose()

    return run_coroutine(run)


def tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def head() -> str:
    heads = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    assert len(heads) == 1, f"migration history has several heads: {heads}"
    return heads[0]


def test_history_is_one_line_from_base_to_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    revisions = list(script.walk_revisions("base", "heads"))
    assert revisions[0].revision == head()
    assert revisions[-1].down_revision is None
    for newer, older in pairwise(revisions):
        assert newer.down_revision == older.revision


def test_upgrade_from_empty_to_head(empty_database: str) -> None:
    assert on_connection(empty_database, tables) == set()
    upgrade_to_head(empty_database)
    assert on_connection(empty_database, tables) == TABLES | {"alembic_version"}
    assert on_connection(empty_database, revision) == head()


def test_orm_metadata_matches_the_migrations(empty_database: str) -> None:
    upgrade_to_head(empty_database)
    assert set(Base.metadata.tables) == TABLES
    assert on_connection(empty_database, differences) == []


def test_the_comparison_sees_a_model_the_migrations_do_not_build(empty_database: str) -> None:
    """The check above is not vacuous: a column the migrations lack is reported."""
    upgrade_to_head(empty_database)
    changed = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["agents"].append_column(Column("nickname", String(50)))

    def compare(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, changed))

    found = on_connection(empty_database, compare)
    assert [(d[0], d[2], d[3].name) for d in found] == [("add_column", "agents", "nickname")]


def test_upgrade_again_is_a_no_op_and_downgrade_undoes_everything(empty_database: str) -> None:
    upgrade_to_head(empty_database)
    upgrade_to_head(empty_database)
    assert on_connection(empty_database, revision) == head()

    url = Settings(database_url=empty_database).database_url
    command.downgrade(alembic_config(url), "base")
    assert on_connection(empty_database, tables) <= {"alembic_version"}
    assert on_connection(empty_database, revision) is None
    upgrade_to_head(empty_database)
    assert on_connection(empty_database, differences) == []


def test_the_migrate_command_brings_a_database_to_head(empty_database: str) -> None:
    """`crew-platform migrate`, as `make run` calls it, with DATABASE_URL as a user writes it
    (plain `postgresql://` or `sqlite:///`; the service picks the async driver)."""
    plain = empty_database.replace("+asyncpg", "").replace("+aiosqlite", "")
    result = subprocess.run(
        [sys.executable, "-m", "crew_platform.cli", "migrate"],
        env={**os.environ, "DATABASE_URL": plain, "LOG_LEVEL": "warning"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert on_connection(empty_database, tables) == TABLES | {"alembic_version"}
    assert on_connection(empty_database, revision) == head()
