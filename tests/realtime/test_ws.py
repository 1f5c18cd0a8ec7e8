"""Real WebSocket clients against a running server process."""

from __future__ import annotations

import asyncio
import json
import re
import socket

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from crew_platform.devtools.llm_stub import StubServer
from tests.realtime.conftest import (
    build_workflow,
    collect_until,
    next_message,
    ws_request,
    ws_url,
)
from tests.support import LiveServer, wait_for_execution

ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


async def test_ping_answers_pong_with_server_time(realtime_server: LiveServer) -> None:
    async with connect(ws_url(realtime_server)) as ws:
        pong = await ws_request(ws, {"type": "ping", "timestamp": "2024-01-15T10:30:00Z"})
    assert pong["type"] == "pong"
    assert ISO_Z.match(pong["timestamp"])
    assert pong["timestamp"] != "2024-01-15T10:30:00Z"
    assert pong["client_timestamp"] == "2024-01-15T10:30:00Z"


async def test_both_paths_and_spec_subscriptions(
    realtime_server: LiveServer, http: httpx.AsyncClient
) -> None:
    built = await build_workflow(http, [{}])
    workflow_id, agent_id = built["workflow"]["id"], built["agent"]["id"]
    for path in ("/ws/", "/ws"):
        async with connect(ws_url(realtime_server, path)) as ws:
            subscribed = await ws_request(
                ws, {"type": "subscribe_workflow", "workflow_id": workflow_id}
            )
            assert subscribed == {
                "type": "subscribed",
                "channel": "workflow",
                "workflow_id": workflow_id,
                "stream": False,
            }
            subscribed = await ws_request(ws, {"type": "subscribe_agent", "agent_id": agent_id})
            assert subscribed["type"] == "subscribed" and subscribed["agent_id"] == agent_id
            gone = await ws_request(ws, {"type": "unsubscribe_agent", "agent_id": agent_id})
            assert gone == {"type": "unsubscribed", "channel": "agent", "agent_id": agent_id}


async def test_linear_run_events_in_order_with_spec_fields(
    realtime_server: LiveServer, http: httpx.AsyncClient, stub: StubServer
) -> None:
    built = await build_workflow(http, [{}, {}, {}])
    workflow_id, task_ids = built["workflow"]["id"], built["task_ids"]
    async with connect(ws_url(realtime_server)) as ws:
        await ws_request(ws, {"type": "subscribe_workflow", "workflow_id": workflow_id})
        run = (await http.post(f"/api/v1/workflows/{workflow_id}/execute", json={})).json()
        events = await collect_until(ws)
    kinds = [(e["type"], e["task_id"]) for e in events]
    expected = [("workflow_started", None)]
    for task_id in task_ids:
        expected += [("task_started", task_id), ("task_completed", task_id)]
    expected.append(("workflow_completed", None))
    assert kinds == expected
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    for event in events:
        assert event["workflow_id"] == workflow_id
        assert event["execution_id"] == run["id"]
        assert ISO_Z.match(event["timestamp"])
    assert events[0]["status"] == "running"
    assert events[-1]["status"] == "completed"
    completed = [e for e in events if e["type"] == "task_completed"]
    assert all(
        e["status"] == "completed" and e["agent_id"] == built["agent"]["id"] for e in completed
    )
    assert all(e["output"] for e in completed)
    assert not any(e["type"] == "task_output_chunk" for e in events)


async def test_parallel_run_events_respect_the_dag(
    realtime_server: LiveServer, http: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.state.latency = 0.05
    built = await build_workflow(http, [{}, {}, {"depends_on": [0, 1]}], workflow_type="parallel")
    a, b, c = built["task_ids"]
    async with connect(ws_url(realtime_server)) as ws:
        await ws_request(ws, {"type": "subscribe_workflow", "workflow_id": built["workflow"]["id"]})
        await http.post(f"/api/v1/workflows/{built['workflow']['id']}/execute", json={})
        events = await collect_until(ws)
    position = {(e["type"], e["task_id"]): i for i, e in enumerate(events)}
    assert events[0]["type"] == "workflow_started"
    assert events[-1]["type"] == "workflow_completed"
    for task in (a, b, c):
        assert position[("task_started", task)] < position[("task_completed", task)]
    assert position[("task_started", c)] > position[("task_completed", a)]
    assert position[("task_started", c)] > position[("task_completed", b)]
    # a and b are independent: both start before either finishes.
    assert max(position[("task_started", a)], position[("task_started", b)]) < min(
        position[("task_completed", a)], position[("task_completed", b)]
    )


async def test_streamed_chunks_join_up_to_the_stored_output(
    realtime_server: LiveServer, http: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.state.chunk_words = 2
    built = await build_workflow(http, [{}, {}])
    workflow_id = built["workflow"]["id"]
    async with (
        connect(ws_url(realtime_server)) as streaming,
        connect(ws_url(realtime_server)) as plain,
    ):
        await ws_request(
            streaming, {"type": "subscribe_workflow", "workflow_id": workflow_id, "stream": True}
        )
        await ws_request(plain, {"type": "subscribe_workflow", "workflow_id": workflow_id})
        run = (await http.post(f"/api/v1/workflows/{workflow_id}/execute", json={})).json()
        streamed = await collect_until(streaming)
        quiet = await collect_until(plain)
    assert not any(e["type"] == "task_output_chunk" for e in quiet)
    runs = {}
    for task_id in built["task_ids"]:
        (latest,) = (await http.get(f"/api/v1/tasks/{task_id}/executions")).json()
        runs[task_id] = latest["output"]
    for task_id, stored in runs.items():
        chunks = [
            e for e in streamed if e["type"] == "task_output_chunk" and e["task_id"] == task_id
        ]
        assert len(chunks) > 1
        assert [c["index"] for c in chunks] == list(range(1, len(chunks) + 1))
        assert "".join(c["chunk"] for c in chunks) == stored
        completed = next(
            e for e in streamed if e["type"] == "task_completed" and e["task_id"] == task_id
        )
        assert completed["output"] == stored
    assert run["id"] == streamed[0]["execution_id"]


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("not json at all", "INVALID_JSON"),
        ("[" * 100_000, "INVALID_JSON"),
        ('["a", "list"]', "INVALID_MESSAGE"),
        ('{"type": "dance"}', "UNKNOWN_TYPE"),
        ('{"type": "subscribe_workflow"}', "INVALID_MESSAGE"),
        ('{"type": "subscribe_workflow", "workflow_id": "1"}', "INVALID_MESSAGE"),
        ('{"type": "subscribe_agent", "agent_id": true}', "INVALID_MESSAGE"),
        ('{"type": "subscribe_execution", "execution_id": 1.5}', "INVALID_MESSAGE"),
        ('{"type": "subscribe_workflow", "workflow_id": 999999}', "NOT_FOUND"),
        ('{"type": "subscribe_agent", "agent_id": 999999}', "NOT_FOUND"),
        ('{"type": "subscribe_execution", "execution_id": 999999}', "NOT_FOUND"),
        ('{"type": "subscribe_workflow", "workflow_id": 99999999999999999999999}', "NOT_FOUND"),
        ('{"type": "subscribe_workflow", "workflow_id": -1}', "NOT_FOUND"),
    ],
)
async def test_bad_messages_get_an_error_and_the_connection_stays_open(
    realtime_server: LiveServer, message: str, code: str
) -> None:
    async with connect(ws_url(realtime_server)) as ws:
        await ws.send(message)
        error = await next_message(ws)
        assert error["type"] == "error"
        assert error["error"] == code
        assert error["message"]
        pong = await ws_request(ws, {"type": "ping"})
        assert pong["type"] == "pong"


async def test_unknown_ids_are_worded_as_the_http_404s(realtime_server: LiveServer) -> None:
    async with connect(ws_url(realtime_server)) as ws:
        for channel, ident in (("workflow", 0), ("agent", 999_999), ("execution", 2**31)):
            field = f"{channel}_id"
            error = await ws_request(ws, {"type": f"subscribe_{channel}", field: ident})
            assert error == {
                "type": "error",
                "error": "NOT_FOUND",
                "message": f"{channel.capitalize()} {ident} not found",
                "field": field,
                "details": {"resource": channel, "id": ident},
            }


async def test_failure_pause_resume_and_cancel_events(
    realtime_server: LiveServer, http: httpx.AsyncClient, stub: StubServer
) -> None:
    failing = await build_workflow(http, [{"description": "explode please"}, {}])
    stub.script(
        {"match": "explode please", "status": 400, "body": {"error": {"message": "bad request"}}}
    )
    slow = await build_workflow(http, [{"description": "slow step"}, {}])
    async with connect(ws_url(realtime_server)) as ws:
        await ws_request(
            ws, {"type": "subscribe_workflow", "workflow_id": failing["workflow"]["id"]}
        )
        await http.post(f"/api/v1/workflows/{failing['workflow']['id']}/execute", json={})
        events = await collect_until(ws, final="workflow_failed")
        failed_task = next(e for e in events if e["type"] == "task_failed")
        assert failed_task["task_id"] == failing["task_ids"][0]
        assert "400" in failed_task["error"]
        assert "task_skipped" in [e["type"] for e in events]
        assert events[-1]["status"] == "failed" and events[-1]["error"]

        wf = slow["workflow"]["id"]
        await ws_request(ws, {"type": "subscribe_workflow", "workflow_id": wf})
        stub.script({"match": "slow step", "latency": 0.6})
        await http.post(f"/api/v1/workflows/{wf}/execute", json={})
        await collect_until(ws, final="task_started")
        assert (await http.post(f"/api/v1/workflows/{wf}/pause")).status_code == 200
        paused = await collect_until(ws, final="workflow_paused")
        assert paused[-1]["status"] == "paused"
        assert (await http.post(f"/api/v1/workflows/{wf}/resume")).status_code == 200
        resumed = await collect_until(ws, final="workflow_resumed")
        assert resumed[-1]["workflow_id"] == wf
        await collect_until(ws, final="workflow_completed")

        stub.script({"match": "slow step", "latency": 5})
        run = (await http.post(f"/api/v1/workflows/{wf}/execute", json={})).json()
        await collect_until(ws, final="task_started")
        cancel = await http.post(f"/api/v1/executions/{run['id']}/cancel")
        assert cancel.status_code == 200, cancel.text
        cancelled = await collect_until(ws, final="workflow_cancelled")
        assert cancelled[-1]["status"] == "cancelled"
        assert any(e["type"] == "task_cancelled" for e in cancelled)


async def test_agent_subscribers_get_their_agents_task_events_and_tests(
    realtime_server: LiveServer, http: httpx.AsyncClient, stub: StubServer
) -> None:
    built = await build_workflow(http, [{}])
    other = await build_workflow(http, [{}])
    agent_id = built["agent"]["id"]
    async with connect(ws_url(realtime_server)) as ws:
        await ws_request(ws, {"type": "subscribe_agent", "agent_id": agent_id})
        await http.post(f"/api/v1/workflows/{other['workflow']['id']}/execute", json={})
        await http.post(f"/api/v1/workflows/{built['workflow']['id']}/execute", json={})
        events = await collect_until(ws, final="task_completed")
        assert {e["agent_id"] for e in events} == {agent_id}
        assert [e["type"] for e in events] == ["task_started", "task_completed"]
        tested = await http.post(f"/api/v1/agents/{agent_id}/test", json={"input": "hello"})
        assert tested.json()["success"] is True
        result = await collect_until(ws, final="agent_test_completed")
        assert result[-1]["agent_id"] == agent_id
        assert result[-1]["output"] == tested.json()["output"]


async def test_execution_subscription_gets_only_that_execution(
    realtime_server: LiveServer, http: httpx.AsyncClient, stub: StubServer
) -> None:
    built = await build_workflow(http, [{}])
    wf = built["workflow"]["id"]
    await http.post(f"/api/v1/workflows/{wf}/pause")
    first = (await http.post(f"/api/v1/workflows/{wf}/execute", json={})).json()
    second = (await http.post(f"/api/v1/workflows/{wf}/execute", json={})).json()
    async with connect(ws_url(realtime_server)) as ws:
        await ws_request(ws, {"type": "subscribe_execution", "execution_id": second["id"]})
        await http.post(f"/api/v1/workflows/{wf}/resume")
        events = await collect_until(ws)
    assert {e["execution_id"] for e in events} == {second["id"]}
    assert first["id"] != second["id"]


async def test_a_client_that_stops_reading_is_dropped_without_slowing_others(
    realtime_server: LiveServer, http: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.state.chunk_words = 1
    long_answer = " ".join(f"word{i:06d}-{'x' * 40}" for i in range(60_000))
    built = await build_workflow(http, [{"description": "long stream"}])
    wf = built["workflow"]["id"]
    stub.script({"match": "long stream", "content": long_answer})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", realtime_server.port))
    async with (
        connect(ws_url(realtime_server), sock=sock, max_queue=1, max_size=None) as slow,
        connect(ws_url(realtime_server), max_size=None) as healthy,
    ):
        await ws_request(slow, {"type": "subscribe_workflow", "workflow_id": wf, "stream": True})
        await ws_request(healthy, {"type": "subscribe_workflow", "workflow_id": wf})
        run = (await http.post(f"/api/v1/workflows/{wf}/execute", json={})).json()
        # `slow` reads nothing from here on; `healthy` sees the whole run.
        events = await collect_until(healthy, timeout=60)
        assert events[-1]["type"] == "workflow_completed"
        done = await wait_for_execution(http, run["id"])
        assert done["status"] == "completed"
        assert done["output_data"]["result"] == long_answer
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(slow.recv(), 30)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4008


async def test_messages_are_json_objects(realtime_server: LiveServer) -> None:
    async with connect(ws_url(realtime_server)) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        raw = await asyncio.wait_for(ws.recv(), 5)
    assert isinstance(json.loads(raw), dict)
