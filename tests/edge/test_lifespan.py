"""A start-up that fails half-way closes what it had already opened, in reverse order, and
says which step failed. Run in a fresh interpreter in development mode, where unclosed
resources and destroyed tasks are reported on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from crew_platform.devtools.llm_stub import free_port

START_UP = textwrap.dedent(
    """
    import asyncio, gc
    from asgi_lifespan import LifespanManager
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from crew_platform.app import create_app

    disposed = []
    event.listen(Engine, "engine_disposed", lambda engine: disposed.append(engine))

    async def main():
        try:
            async with LifespanManager(create_app(), startup_timeout=30):
                pass
        except Exception as exc:
            print("FAILED:", exc)
        gc.collect()
        await asyncio.sleep(0.1)
        gc.collect()
        print("DISPOSED:", bool(disposed))

    asyncio.run(main())
    """
)
LEAKS = ("Unclosed", "unclosed", "Task was destroyed", "ResourceWarning", "never awaited")


def start_up(env: dict[str, str]) -> tuple[str, str]:
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", START_UP],
        env={**os.environ, "RATE_LIMIT_API": "off", "RATE_LIMIT_WS": "off", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, done.stderr


def test_redis_unreachable_at_start_up_starts_and_stops_cleanly(
    tmp_path: Path, sqlite_template: Path
) -> None:
    """The event bus is a convenience: without Redis the service starts (events reach its own
    clients, the bus keeps trying in the background) and shuts down without leaks."""
    database = tmp_path / "crew.db"
    database.write_bytes(sqlite_template.read_bytes())
    port = free_port()  # nothing listens there
    out, err = start_up(
        {
            "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
            "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        }
    )
    assert "FAILED" not in out, out + err
    assert "DISPOSED: True" in out, out + err
    for leak in LEAKS:
        assert leak not in err, err


def test_a_database_without_schema_fails_start_up_cleanly(tmp_path: Path) -> None:
    out, err = start_up({"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"})
    assert "FAILED: start-up failed recovering executions from the database" in out, out + err
    assert "DISPOSED: True" in out, out + err
    for leak in LEAKS:
        assert leak not in err, err
