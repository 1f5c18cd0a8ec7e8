"""A real server process per module and helpers to build workflows and read WebSocket events."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from crew_platform.devtools.llm_stub import StubServer
from tests.support import LiveServer


@pytest.fixture(scope="module")
def realtime_server(
    stub: StubServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    db = tmp_path_factory.mktemp("realtime") / "crew.db"
    server = LiveServer(
        {
            "DATABASE_URL": f"sqlite+aiosqlite:///{db}",
            "CEREBRAS_API_KEY": "test-key",
            "CEREBRAS_BASE_URL": stub.base_url,
            "RATE_LIMIT_API": "off",
            "RATE_LIMIT_WS": "off",
            "WS_QUEUE_SIZE": "64",
            "LLM_MAX_RETRIES": "0",
        }
    ).start()
    yield server
    server.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def build_workflow(
    http: httpx.AsyncClient,
    tasks: list[dict[str, Any]],
    workflow_type: str = "linear",
) -> dict[str, Any]:
    """Create an agent, a workflow and its tasks; `depends_on` names earlier task indexes."""
    agent = (
        await http.post(
            "/api/v1/agents/",
            json={"name": unique("agent"), "role": "Writer", "goal": "Write well"},
        )
    ).json()
    workflow = (
        await http.post(
            "/api/v1/workflows/", json={"name": unique("wf"), "workflow_type": workflow_type}
        )
    ).json()
    ids: list[int] = []
    for index, spec in enumerate(tasks):
        body = {
            "workflow_id": workflow["id"],
            "agent_id": spec.get("agent_id", agent["id"]),
            "name": spec.get("name", f"task {index}"),
            "description": spec.get("description", f"Step {index} of the job"),
            "order": index,
            "dependencies": [ids[i] for i in spec.get("depends_on", [])],
        }
        created = await http.post("/api/v1/tasks/", json=body)
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    return {"agent": agent, "workflow": workflow, "task_ids": ids}


async def ws_request(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(message))
    return await next_message(ws)


async def next_message(ws: ClientConnection, timeout: float = 15.0) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), timeout)))


async def collect_until(
    ws: ClientConnection, final: str = "workflow_completed", timeout: float = 20.0
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        message = await next_message(ws, timeout)
        if message["type"] == "ping":
            continue
        events.append(message)
        if message["type"] == final:
            return events


def ws_url(server: LiveServer, path: str = "/ws/") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


@pytest.fixture
async def http(realtime_server: LiveServer) -> Any:
    async with httpx.AsyncClient(base_url=realtime_server.base_url, timeout=30) as client:
        yield client


def sqlite_file(tmp: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp / 'crew.db'}"


__all__ = [
    "build_workflow",
    "collect_until",
    "connect",
    "next_message",
    "unique",
    "ws_request",
    "ws_url",
]
