"""Helpers shared by the engine, LLM and executions tests: build things through the API, wait
on real state (stub requests, execution status, the dispatcher), and run an app with settings of
the test's own.

Nothing here patches or fakes a part: the app is the real one, the LLM is the real stub server
over HTTP, the database is the test's SQLite file or PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from crew_platform.app import create_app
from crew_platform.devtools.llm_stub import StubServer
from crew_platform.settings import Settings

API = "/api/v1"
HANG_GUARD = 30.0


async def eventually(
    check: Callable[[], Any] | Callable[[], Awaitable[Any]],
    *,
    timeout: float = HANG_GUARD,
    what: str = "condition",
) -> Any:
    """Poll `check` until it returns something truthy; the timeout only guards against hangs."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def wait_for_status(
    client: httpx.AsyncClient, execution_id: int, *statuses: str
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body: dict[str, Any] = (await client.get(f"{API}/executions/{execution_id}")).json()
        return body if body["status"] in statuses else None

    result: dict[str, Any] = await eventually(
        check, what=f"execution {execution_id} to reach {statuses}"
    )
    return result


async def wait_for_gate(stub: StubServer, gate: str, count: int = 1) -> None:
    """Until `count` model calls are being held by the stub at `gate`."""
    await eventually(lambda: stub.waiting_at(gate) >= count, what=f"{count} call(s) at {gate}")


async def idle(app: FastAPI) -> None:
    """Until the app's dispatcher runs nothing (every runner has returned)."""
    assert await app.state.dispatcher.drain(HANG_GUARD), "runners did not finish"


# -- building through the API ----------------------------------------------------------------


async def make_agent(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {
        "name": f"Agent {time.monotonic_ns()}",
        "role": "Research Specialist",
        "goal": "Gather and analyze information",
        "model": "llama3.1-8b",
    } | fields
    response = await client.post(f"{API}/agents/", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def make_workflow(
    client: httpx.AsyncClient, workflow_type: str = "linear", **fields: Any
) -> dict[str, Any]:
    body = {"name": f"Workflow {time.monotonic_ns()}", "workflow_type": workflow_type} | fields
    response = await client.post(f"{API}/workflows/", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def make_task(
    client: httpx.AsyncClient, workflow_id: int, agent_id: int | None, name: str, **fields: Any
) -> dict[str, Any]:
    body = {
        "workflow_id": workflow_id,
        "agent_id": agent_id,
        "name": name,
        "description": f"{name}: do the work",
    } | fields
    response = await client.post(f"{API}/tasks/", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def execute(
    client: httpx.AsyncClient,
    workflow_id: int,
    input_data: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"input_data": input_data or {}}
    if config is not None:
        body["config"] = config
    response = await client.post(f"{API}/workflows/{workflow_id}/execute", json=body)
    assert response.status_code == 202, response.text
    result: dict[str, Any] = response.json()
    return result


async def pipeline(
    client: httpx.AsyncClient,
    names: list[str],
    workflow_type: str = "linear",
    **agent_fields: Any,
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """One agent, one workflow, tasks named `names` in that order (`order` 0, 1, 2 ...)."""
    agent = await make_agent(client, **agent_fields)
    workflow = await make_workflow(client, workflow_type)
    tasks = [
        await make_task(client, workflow["id"], agent["id"], name, order=i)
        for i, name in enumerate(names)
    ]
    return agent, workflow, tasks


# -- reading what the stub saw ---------------------------------------------------------------


def user_prompt(request: dict[str, Any]) -> str:
    return str(next(m["content"] for m in request["messages"] if m["role"] == "user"))


def system_prompt(request: dict[str, Any]) -> str:
    return str(next(m["content"] for m in request["messages"] if m["role"] == "system"))


def task_prefix(name: str) -> str:
    """How the task prompt of the task called `name` begins (descriptions start with the name,
    see make_task); earlier outputs quoted as context further down never match it."""
    return f"Current Task: {name}:"


def for_task(name: str, **reply: Any) -> dict[str, Any]:
    """A scripted stub reply for the call of task `name` only."""
    return {"prefix": task_prefix(name), **reply}


def calls_for(stub: StubServer, name: str) -> list[dict[str, Any]]:
    """The chat requests the stub received for task `name`."""
    return [r for r in list(stub.requests) if user_prompt(r).startswith(task_prefix(name))]


# -- an app with the test's own settings -----------------------------------------------------


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield app, http
