"""Server-sent events: live stream, replay from Last-Event-ID, end after the final event."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx

from crew_platform.devtools.llm_stub import StubServer
from tests.realtime.conftest import build_workflow
from tests.support import LiveServer, wait_for_execution


async def read_sse(
    http: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Read a stream to its end; each frame as {"id", "event", "data"}."""
    async with http.stream("GET", path, headers=headers or {}) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        return await all_frames(response)


async def all_frames(response: httpx.Response) -> list[dict[str, Any]]:
    return [frame async for frame in sse_frames(response)]


async def sse_frames(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The stream's frames as they come, each as {"id", "event", "data"}."""
    current: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in current:
                yield current
            current = {}
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        current[key] = json.loads(value) if key == "data" else value


async def test_live_stream_from_pending_to_final_event(
    realtime_server: LiveServer, http: httpx.AsyncClient, stub: StubServer
) -> None:
    built = await build_workflow(http, [{}, {}])
    wf = built["workflow"]["id"]
    await http.post(f"/api/v1/workflows/{wf}/pause")
    run = (await http.post(f"/api/v1/workflows/{wf}/execute", json={})).json()
    assert run["status"] == "pending"

    reader = asyncio.create_task(read_sse(http, f"/api/v1/executions/{run['id']}/events"))
    await asyncio.sleep(0.3)
    assert not reader.done()
    await http.post(f"/api/v1/workflows/{wf}/resume")
    frames = await reader
    kinds = [f["event"] for f in frames]
    assert kinds[0] == "workflow_started"
    assert kinds[-1] == "workflow_completed"
    assert kinds.count("task_completed") == 2
    assert [int(f["id"]) for f in frames] == [f["data"]["seq"] for f in frames]
    assert [f["data"]["seq"] for f in frames] == sorted(f["data"]["seq"] for f in frames)


async def test_last_event_id_replays_what_was_missed(
    realtime_server: LiveServer, http: httpx.AsyncClient, stub: StubServer
) -> None:
    built = await build_workflow(http, [{}, {}])
    run = (await http.post(f"/api/v1/workflows/{built['workflow']['id']}/execute", json={})).json()
    await wait_for_execution(http, run["id"])
    everything = await read_sse(http, f"/api/v1/executions/{run['id']}/events")
    assert [f["event"] for f in everything] == [
        "workflow_started",
        "task_started",
        "task_completed",
        "task_started",
        "task_completed",
        "workflow_completed",
    ]
    missed = await read_sse(http, f"/api/v1/executions/{run['id']}/events", {"Last-Event-ID": "3"})
    assert [f["data"] for f in missed] == [f["data"] for f in everything[3:]]
    logs = (await http.get(f"/api/v1/executions/{run['id']}/logs")).json()
    assert [entry["seq"] for entry in logs] == [f["data"]["seq"] for f in everything]
    assert [entry["event"] for entry in logs] == [f["event"] for f in everything]
    nothing = await read_sse(
        http,
        f"/api/v1/executions/{run['id']}/events",
        {"Last-Event-ID": str(everything[-1]["data"]["seq"])},
    )
    assert nothing == []


async def test_chunks_only_when_asked(
    realtime_server: LiveServer, http: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.state.chunk_words = 1
    built = await build_workflow(http, [{}])
    wf = built["workflow"]["id"]
    await http.post(f"/api/v1/workflows/{wf}/pause")
    run = (await http.post(f"/api/v1/workflows/{wf}/execute", json={})).json()
    reader = asyncio.create_task(
        read_sse(http, f"/api/v1/executions/{run['id']}/events?stream=true")
    )
    await asyncio.sleep(0.3)
    await http.post(f"/api/v1/workflows/{wf}/resume")
    frames = await reader
    chunks = [f for f in frames if f["event"] == "task_output_chunk"]
    completed = next(f for f in frames if f["event"] == "task_completed")
    assert chunks and all("id" not in f for f in chunks)
    assert "".join(f["data"]["chunk"] for f in chunks) == completed["data"]["output"]


async def test_unknown_execution_is_a_404_envelope(
    realtime_server: LiveServer, http: httpx.AsyncClient
) -> None:
    response = await http.get("/api/v1/executions/987654/events")
    assert response.status_code == 404
    assert response.json()["error"] == "NOT_FOUND"


CHUNKS = 30_000
"""More than the stream's live queue (10,000) plus what the sockets' buffers absorb."""


async def test_a_reader_that_falls_behind_gets_every_event_and_the_end(
    realtime_server: LiveServer, http: httpx.AsyncClient, stub: StubServer
) -> None:
    """The client opens the stream of a 30,000-chunk run and reads nothing until the run is
    over: its live queue overflows, and the stream catches it up from the log instead of
    dropping events (the final one included) and never ending."""
    stub.state.chunk_words = 1
    stub.script({"content": " ".join(f"w{i}" for i in range(CHUNKS))})
    built = await build_workflow(http, [{}])
    wf = built["workflow"]["id"]
    await http.post(f"/api/v1/workflows/{wf}/pause")
    run = (await http.post(f"/api/v1/workflows/{wf}/execute", json={})).json()
    # A small receive buffer, so the kernel cannot hold the whole stream for the client.
    transport = httpx.AsyncHTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 262_144)]
    )
    async with httpx.AsyncClient(
        base_url=realtime_server.base_url, transport=transport, timeout=30
    ) as slow:
        path = f"/api/v1/executions/{run['id']}/events?stream=true"
        async with slow.stream("GET", path) as response:
            assert response.status_code == 200
            await http.post(f"/api/v1/workflows/{wf}/resume")
            await wait_for_execution(http, run["id"])
            frames = await asyncio.wait_for(all_frames(response), timeout=20)
    persisted = [f for f in frames if "id" in f]
    logs = (await http.get(f"/api/v1/executions/{run['id']}/logs")).json()
    assert [f["data"]["seq"] for f in persisted] == [entry["seq"] for entry in logs]
    assert [f["event"] for f in persisted] == [entry["event"] for entry in logs]
    assert frames[-1]["event"] == "workflow_completed"


async def test_replay_of_a_retried_execution_goes_on_to_its_latest_final_event(
    realtime_server: LiveServer, http: httpx.AsyncClient, stub: StubServer
) -> None:
    built = await build_workflow(http, [{"name": "flaky"}])
    (task_id,) = built["task_ids"]
    stub.script({"status": 400, "body": {"error": {"message": "transient trouble"}}})
    run = (await http.post(f"/api/v1/workflows/{built['workflow']['id']}/execute", json={})).json()
    assert (await wait_for_execution(http, run["id"]))["status"] == "failed"
    retried = await http.post(f"/api/v1/tasks/{task_id}/retry")
    assert retried.status_code == 202, retried.text
    assert (await wait_for_execution(http, run["id"]))["status"] == "completed"

    frames = await read_sse(http, f"/api/v1/executions/{run['id']}/events")
    kinds = [f["event"] for f in frames]
    assert "workflow_failed" in kinds
    assert kinds[-1] == "workflow_completed"
    logs = (await http.get(f"/api/v1/executions/{run['id']}/logs")).json()
    assert [f["data"]["seq"] for f in frames] == [entry["seq"] for entry in logs]
