"""Rate limits outlive a Redis outage: each process counts in memory while Redis is unreachable,
says so once, and counts in Redis again once it is back. The Redis here is a server of the
test's own, killed and started again on the same port."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import redis
from asgi_lifespan import LifespanManager

from crew_platform.app import create_app
from crew_platform.devtools.llm_stub import free_port
from tests.conftest import make_settings, require_service

PREFIX = "crew_outage_test"
EPHEMERAL = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no")


class RedisProcess:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisProcess:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), *EPHEMERAL],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            finally:
                client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def keys(self) -> list[bytes]:
        with redis.Redis.from_url(self.url) as client:
            return list(client.scan_iter(f"{PREFIX}*"))


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    target = tmp_path / "crew.db"
    target.write_bytes(sqlite_template.read_bytes())
    return f"sqlite+aiosqlite:///{target}"


def outage_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "crew_platform.edge.ratelimit"]


async def test_limits_count_in_memory_while_redis_is_down_then_in_redis_again(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    require_service("redis-server", None if shutil.which("redis-server") else "not installed")
    store = RedisProcess(free_port()).start()
    settings = make_settings(
        sqlite_url,
        redis_url=store.url,
        rate_limit_api="100/minute",
        rate_limit_key_prefix=PREFIX,
        rate_limit_store_retry_seconds=0.2,
    )
    caplog.set_level(logging.INFO, logger="crew_platform.edge.ratelimit")
    app = create_app(settings)
    try:
        async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
                assert (await http.get("/api/v1/agents/")).status_code == 200
                assert store.keys(), "counted in Redis while it runs"

                store.kill()
                codes = [(await http.get("/api/v1/agents/")).status_code for _ in range(150)]
                assert codes == [200] * 100 + [429] * 50
                lines = outage_lines(caplog)
                assert len(lines) == 1 and "counting in memory" in lines[0], lines

                store.start()  # empty, on the same port
                deadline = time.monotonic() + 15
                while (await http.get("/api/v1/agents/")).status_code == 429:
                    assert time.monotonic() < deadline, "never counted in Redis again"
                    await asyncio.sleep(0.05)
                assert store.keys(), "counted in the new Redis"
                lines = outage_lines(caplog)
                assert len(lines) == 2 and "reachable again" in lines[1], lines
    finally:
        store.kill()
