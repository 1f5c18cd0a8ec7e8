"""EXECUTOR=queue without what it needs refuses to start, `serve` and `worker` alike, with one
line naming the setting and exit code 2, before it opens anything (no service is needed to see
it). The app's own start-up (create_app's lifespan) refuses the same way, with a typed error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from asgi_lifespan import LifespanManager

from crew_platform.app import create_app
from crew_platform.settings import Settings
from crew_platform.startup import ExecutorMisconfigured, StartupFailed

POSTGRES = "postgresql://postgres@127.0.0.1:5432/crew_never_opened"
BROKER = "redis://127.0.0.1:6379/15"
QUEUE = {"EXECUTOR": "queue", "DATABASE_URL": POSTGRES, "BROKER_URL": BROKER, "REDIS_URL": BROKER}


def refusal(command: str, env: dict[str, str]) -> str:
    """Runs `crew-platform <command>`; asserts it refused (exit 2) in one line; that line."""
    done = subprocess.run(
        [sys.executable, "-m", "crew_platform.cli", command],
        env={**os.environ, "EXECUTOR": "", "BROKER_URL": "", "REDIS_URL": "", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["serve", "worker"])
@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"DATABASE_URL": "sqlite+aiosqlite:///{tmp}/crew.db"}, "DATABASE_URL"),
        ({"BROKER_URL": ""}, "BROKER_URL"),
        ({"REDIS_URL": ""}, "REDIS_URL"),
        ({"BROKER_URL": "http://127.0.0.1:6379/"}, "BROKER_URL"),
    ],
    ids=["sqlite", "no-broker", "no-redis", "unknown-broker"],
)
def test_queue_mode_without_what_it_needs_refuses_naming_the_setting(
    command: str, change: dict[str, str], named: str, tmp_path: Path
) -> None:
    env = QUEUE | {k: v.format(tmp=tmp_path) for k, v in change.items()}
    line = refusal(command, env)
    assert line.startswith("crew-platform: refusing to start: ") and named in line, line
    assert not (tmp_path / "crew.db").exists()


def test_a_worker_needs_executor_queue() -> None:
    line = refusal("worker", QUEUE | {"EXECUTOR": "inprocess"})
    assert "EXECUTOR=queue" in line, line


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"database_url": "sqlite+aiosqlite:///{tmp}/crew.db"}, "DATABASE_URL"),
        ({"broker_url": None}, "BROKER_URL"),
        ({"redis_url": None}, "REDIS_URL"),
    ],
    ids=["sqlite", "no-broker", "no-redis"],
)
async def test_the_apps_start_up_refuses_with_a_typed_error(
    change: dict[str, str | None], named: str, tmp_path: Path
) -> None:
    values: dict[str, str | None] = {
        "executor": "queue",
        "database_url": POSTGRES,
        "broker_url": BROKER,
        "redis_url": BROKER,
    }
    values |= {k: v.format(tmp=tmp_path) if v else v for k, v in change.items()}
    app = create_app(Settings(**values))
    with pytest.raises(ExecutorMisconfigured, match=named) as raised:
        async with LifespanManager(app):
            pass
    assert isinstance(raised.value, StartupFailed)
    assert not (tmp_path / "crew.db").exists()
