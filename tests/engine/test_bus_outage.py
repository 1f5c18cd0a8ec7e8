"""The event bus only carries live news: the execution log is written in the run's own
transactions, so a bus that goes away mid-run must not fail or stall the run."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
import redis

from crew_platform.devtools.llm_stub import StubServer, free_port
from tests.conftest import make_settings
from tests.flows import API, execute, for_task, pipeline, running_app, wait_for_gate
from tests.support import wait_for_execution


@pytest.fixture
def own_redis() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A Redis server of this test's own, so that the test may kill it."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(redis.ConnectionError):
            if redis.Redis.from_url(url).ping():
                break
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    yield process, url
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


async def test_a_run_finishes_when_the_bus_dies_under_it(
    database_url: str, stub: StubServer, own_redis: tuple[subprocess.Popen[bytes], str]
) -> None:
    process, url = own_redis
    settings = make_settings(database_url, stub, redis_url=url, llm_timeout_seconds=120)
    stub.script(for_task("A", gate="a", content="OUT<A>"), for_task("B", content="OUT<B>"))
    async with running_app(settings) as (_, client):
        _, workflow, (a, b) = await pipeline(client, ["A", "B"])
        run = await execute(client, workflow["id"])
        await wait_for_gate(stub, "a")
        process.kill()
        process.wait(timeout=10)
        stub.open_gate("a")
        done = await wait_for_execution(client, run["id"])
        assert done["status"] == "completed", done
        assert done["output_data"]["tasks"] == {str(a["id"]): "OUT<A>", str(b["id"]): "OUT<B>"}
        logs = (await client.get(f"{API}/executions/{run['id']}/logs")).json()
        assert [e["event"] for e in logs][-1] == "workflow_completed"


async def test_agent_test_answers_when_the_bus_is_down(
    database_url: str, stub: StubServer, own_redis: tuple[subprocess.Popen[bytes], str]
) -> None:
    process, url = own_redis
    async with running_app(make_settings(database_url, stub, redis_url=url)) as (_, client):
        agent = (await pipeline(client, []))[0]
        process.kill()
        process.wait(timeout=10)
        response = await client.post(f"{API}/agents/{agent['id']}/test", json={"input": "hi"})
    assert response.status_code == 200
    assert response.json()["success"] is True
