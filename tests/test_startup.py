"""Start-up stays lean: what a fresh server process loads, and what it leaves for later.

Each check runs in a fresh interpreter (the test process has long since imported everything).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crew_platform.app import rate_limited
from crew_platform.edge.ratelimit import parse_limit
from crew_platform.settings import Settings


def _run(code: str, env: dict[str, str] | None = None) -> dict[str, object]:
    """Runs `code` in a fresh interpreter; its last stdout line is JSON."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    target = tmp_path / "crew.db"
    target.write_bytes(sqlite_template.read_bytes())
    return f"sqlite+aiosqlite:///{target}"


@pytest.mark.parametrize(
    ("api", "ws", "expected"),
    [
        ("off", "off", False),
        ("OFF", " none ", False),
        ("disabled", "", False),
        ("100/minute", "off", True),
        ("off", "5/minute", True),
    ],
)
def test_rate_limited_reads_off_as_parse_limit_does(api: str, ws: str, expected: bool) -> None:
    settings = Settings(rate_limit_api=api, rate_limit_ws=ws)
    assert rate_limited(settings) is expected
    assert rate_limited(settings) is (parse_limit(api) is not None or parse_limit(ws) is not None)


def test_serving_with_limits_off_loads_neither_limits_nor_the_sdk(
    sqlite_url: str,
) -> None:
    loaded = _run(
        """
        import asyncio, json, sys
        import httpx
        from asgi_lifespan import LifespanManager
        from crew_platform.app import create_app

        async def main():
            app = create_app()
            async with LifespanManager(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                    assert (await http.get("/api/v1/agents/")).status_code == 200
                    assert (await http.get("/openapi.json")).status_code == 200
                return {m: m in sys.modules for m in ("limits", "openai")}

        print(json.dumps(asyncio.run(main())))
        """,
        {"DATABASE_URL": sqlite_url, "RATE_LIMIT_API": "off", "RATE_LIMIT_WS": "off"},
    )
    assert loaded == {"limits": False, "openai": False}


def test_serve_imports_the_app_once_with_gc_frozen_and_tuned() -> None:
    state = _run(
        """
        import gc, json, sys
        from crew_platform import cli
        cli._load_app()
        import crew_platform.app
        print(json.dumps({
            "loaded": "crew_platform.app" in sys.modules,
            "enabled": gc.isenabled(),
            "frozen": gc.get_freeze_count() > 10_000,
            "threshold": gc.get_threshold()[0],
        }))
        """
    )
    assert state == {
        "loaded": True,
        "enabled": True,
        "frozen": True,
        "threshold": 10_000,
    }
