"""A real `crew-platform serve` killed while executions wait for input (and while a draft is
being revised), restarted on the same database: what waited still waits, nothing finished is
redone, and the answers given before the kill still count."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from crew_platform.devtools.llm_stub import StubServer
from tests.api import live_env
from tests.engine.test_durability import api, runs_of, start
from tests.flows import (
    API,
    calls_for,
    eventually,
    execute,
    for_task,
    make_agent,
    make_task,
    make_workflow,
    wait_for_gate,
    wait_for_status,
)
from tests.support import LiveServer


@pytest.fixture
def server_env(database_url: str, stub: StubServer) -> dict[str, str]:
    return live_env(database_url, stub)


@pytest.fixture
def servers() -> Iterator[list[LiveServer]]:
    started: list[LiveServer] = []
    yield started
    for server in started:
        server.kill()


async def reviewed(
    http: httpx.AsyncClient, names: list[str], reviewed: set[str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    agent = await make_agent(http)
    workflow = await make_workflow(http)
    tasks = [
        await make_task(http, workflow["id"], agent["id"], n, order=i, human_input=n in reviewed)
        for i, n in enumerate(names)
    ]
    return workflow, tasks


async def first_sse_event(http: httpx.AsyncClient, execution_id: int, kind: str) -> dict[str, Any]:
    """The first frame of `kind` the execution's event stream sends (replayed or live)."""
    async with http.stream("GET", f"{API}/executions/{execution_id}/events") as response:
        assert response.status_code == 200
        event = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == kind:
                data: dict[str, Any] = json.loads(line.removeprefix("data: "))
                return data
    raise AssertionError(f"the stream ended without {kind}")


def messages_of(request: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in request["messages"]]


async def test_waiting_and_revising_executions_survive_a_kill(
    servers: list[LiveServer], server_env: dict[str, str], stub: StubServer
) -> None:
    stub.script(
        for_task("A", content="OUT<A>"),
        for_task("B", content="DRAFT<B>"),
        for_task("C", content="OUT<C>"),
        for_task("R", content="DRAFT<R1>"),
        {"match": "Revise please", "gate": "revising"},
        {"match": "Revise please", "content": "DRAFT<R2>"},
    )
    first = start(servers, server_env)
    async with api(first) as http:
        linear, (a, b, c) = await reviewed(http, ["A", "B", "C"], {"B"})
        waiting_run = await execute(http, linear["id"])
        single, (r,) = await reviewed(http, ["R"], {"R"})
        revising_run = await execute(http, single["id"])
        await wait_for_status(http, waiting_run["id"], "waiting_for_input")
        await wait_for_status(http, revising_run["id"], "waiting_for_input")
        sent = await http.post(
            f"{API}/executions/{revising_run['id']}/input", json={"feedback": "Revise please"}
        )
        assert sent.status_code == 202, sent.text
        await wait_for_gate(stub, "revising")
    first.kill()
    await eventually(lambda: stub.disconnects == 1, what="the killed server's call to drop")

    second = start(servers, server_env)
    async with api(second) as http:
        # The revision in flight at the kill runs again, from the stored draft and feedback.
        await wait_for_status(http, revising_run["id"], "waiting_for_input")
        runs = await runs_of(http, r["id"])
        assert [(x["attempt"], x["status"], x["output"], x["feedback"]) for x in runs] == [
            (1, "changes_requested", "DRAFT<R1>", "Revise please"),
            (2, "cancelled", None, None),
            (3, "waiting_for_input", "DRAFT<R2>", None),
        ]
        _, interrupted, retried = calls_for(stub, "R")
        assert messages_of(retried) == messages_of(interrupted)
        assert ("assistant", "DRAFT<R1>") in messages_of(retried)

        # The execution that waited still waits, and tells a new client what it waits for.
        assert (await http.get(f"{API}/executions/{waiting_run['id']}")).json()["status"] == (
            "waiting_for_input"
        )
        asked = await first_sse_event(http, waiting_run["id"], "input_required")
        assert (asked["task_id"], asked["draft"]) == (b["id"], "DRAFT<B>")
        assert isinstance(asked["seq"], int)

        approved = await http.post(
            f"{API}/executions/{waiting_run['id']}/input", json={"approve": True}
        )
        assert approved.status_code == 202, approved.text
        done = await wait_for_status(http, waiting_run["id"], "completed", "failed")
        assert done["status"] == "completed", done
        assert done["output_data"]["tasks"] == {
            str(a["id"]): "OUT<A>",
            str(b["id"]): "DRAFT<B>",
            str(c["id"]): "OUT<C>",
        }
        assert (
            await http.post(f"{API}/executions/{revising_run['id']}/input", json={"approve": True})
        ).status_code == 202
        revised = await wait_for_status(http, revising_run["id"], "completed", "failed")
        assert revised["output_data"]["tasks"] == {str(r["id"]): "DRAFT<R2>"}
        logs = (await http.get(f"{API}/executions/{waiting_run['id']}/logs")).json()
        assert [e["seq"] for e in logs] == list(range(1, len(logs) + 1))
        # The start-up left it alone: asked once, resumed only by the input.
        kinds = [e["event"] for e in logs]
        assert kinds.count("input_required") == 1
        assert [e["data"]["reason"] for e in logs if e["event"] == "workflow_resumed"] == ["input"]
    counts = {name: len(calls_for(stub, name)) for name in ("A", "B", "C", "R")}
    assert counts == {"A": 1, "B": 1, "C": 1, "R": 3}
