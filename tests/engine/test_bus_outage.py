"""The event bus only carries live news: the execution log is written in the run's own
transactions, so a bus that goes away mid-run must not fail or stall the run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from websockets.asyncio.client import connect

from crew_platform.devtools.llm_stub import StubServer, free_port
from crew_platform.realtime import sse
from tests.conftest import make_settings
from tests.flows import (
    API,
    HANG_GUARD,
    eventually,
    execute,
    for_task,
    pipeline,
    running_app,
    wait_for_gate,
)
from tests.realtime.conftest import build_workflow, collect_until, ws_request, ws_url
from tests.support import LiveServer, wait_for_execution


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


async def test_a_streamed_run_finishes_while_redis_is_frozen(
    database_url: str,
    stub: StubServer,
    own_redis: tuple[subprocess.Popen[bytes], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every chunk and event is published while Redis does not answer (SIGSTOP): the run does
    not wait on it (it used to take 5 s per event). The outage is logged once, and its end."""
    caplog.set_level(logging.WARNING, logger="crew_platform.events.outbox")
    process, url = own_redis
    settings = make_settings(database_url, stub, redis_url=url, llm_timeout_seconds=120)
    stub.state.chunk_words = 1
    words = [f"w{i}" for i in range(20)]
    stub.script(for_task("A", gate="a", content=" ".join(words)))
    async with running_app(settings) as (app, client):
        _, workflow, (a,) = await pipeline(client, ["A"])
        run = await execute(client, workflow["id"])
        await wait_for_gate(stub, "a")
        process.send_signal(signal.SIGSTOP)
        try:
            stub.open_gate("a")
            # A hang guard far below the 25 events x 5 s the run took before.
            done = await wait_for_execution(client, run["id"], timeout=15)
            assert done["status"] == "completed", done
            assert done["output_data"]["tasks"] == {str(a["id"]): " ".join(words)}
            outbox = app.state.bus.outbox
            await eventually(lambda: outbox.dropped_total.chunks == len(words), what="drops")
            assert outbox.is_down
            assert outbox.dropped_total.events >= 2  # task_completed, workflow_completed
        finally:
            process.send_signal(signal.SIGCONT)
        await eventually(lambda: not outbox.is_down, what="the bus to be back")
        process.kill()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("event bus unreachable")
    assert warnings[1].startswith("event bus back")
    assert f"{len(words)} chunk(s)" in warnings[1]


async def test_local_websocket_clients_get_events_while_redis_is_down(
    tmp_path: Path, stub: StubServer, own_redis: tuple[subprocess.Popen[bytes], str]
) -> None:
    process, url = own_redis
    server = LiveServer(
        {
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'crew.db'}",
            "CEREBRAS_API_KEY": "test-key",
            "CEREBRAS_BASE_URL": stub.base_url,
            "RATE_LIMIT_API": "off",
            "RATE_LIMIT_WS": "off",
            "REDIS_URL": url,
        }
    ).start()
    try:
        process.kill()
        process.wait(timeout=10)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            built = await build_workflow(http, [{}, {}])
            wf = built["workflow"]["id"]
            async with connect(ws_url(server)) as ws:
                await ws_request(ws, {"type": "subscribe_workflow", "workflow_id": wf})
                run = (await http.post(f"{API}/workflows/{wf}/execute", json={})).json()
                events = await collect_until(ws)
    finally:
        server.stop()
    assert [e["type"] for e in events] == [
        "workflow_started",
        "task_started",
        "task_completed",
        "task_started",
        "task_completed",
        "workflow_completed",
    ]
    assert {e["execution_id"] for e in events} == {run["id"]}


async def test_an_sse_stream_of_another_process_ends_although_redis_died_mid_run(
    tmp_path: Path,
    sqlite_template: Path,
    stub: StubServer,
    own_redis: tuple[subprocess.Popen[bytes], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The final event never crosses the dead bus; the stream, quiet for a while, finds it in
    the log and ends."""
    monkeypatch.setattr(sse, "CATCH_UP_SECONDS", 0.2)
    process, url = own_redis
    shutil.copyfile(sqlite_template, tmp_path / "crew.db")
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'crew.db'}", stub, redis_url=url)
    stub.script(for_task("A", gate="a"))
    async with running_app(settings) as (_, runner), running_app(settings) as (_, watcher):
        _, workflow, _ = await pipeline(runner, ["A"])
        run = await execute(runner, workflow["id"])
        await wait_for_gate(stub, "a")
        stream = asyncio.create_task(watcher.get(f"{API}/executions/{run['id']}/events"))
        process.kill()
        process.wait(timeout=10)
        stub.open_gate("a")
        assert (await wait_for_execution(runner, run["id"]))["status"] == "completed"
        response = await asyncio.wait_for(stream, timeout=HANG_GUARD)
    events = [line.removeprefix("event: ") for line in response.text.splitlines()]
    assert [e for e in events if e.startswith("workflow_")][-1] == "workflow_completed"
