"""What the scale-out tests do through the API of a deployment (tests/scale/procs.py), and what
they read back: the stub's request log by (task, run), who holds what (GET /workers), and the
persisted event log."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from typing import Any

import httpx

from crew_platform.devtools.llm_stub import StubServer
from tests.flows import eventually, for_task, user_prompt
from tests.scale.procs import CONCURRENCY, Deployment

RUN_COUNT = 40
"""Runs of the "each run exactly once" scenario (the issue's 200, cut to keep the suite short)."""

_TASK = re.compile(r"^Current Task: (\w+):")
_TOPIC = re.compile(r'"topic": "(topic-\d+)"')


def topic(index: int) -> str:
    return f"topic-{index:03d}"


async def crew(http: httpx.AsyncClient, names: list[str]) -> tuple[int, dict[str, int]]:
    """An agent and a linear workflow of tasks called `names`; (workflow id, task ids by name)."""
    unique = uuid.uuid4().hex[:8]
    agent = await http.post(
        "/agents/", json={"name": f"Scaler {unique}", "role": "Writer", "goal": "Write"}
    )
    assert agent.status_code == 201, agent.text
    workflow = await http.post("/workflows/", json={"name": f"Scale-out {unique}"})
    assert workflow.status_code == 201, workflow.text
    ids: dict[str, int] = {}
    for order, name in enumerate(names):
        task = await http.post(
            "/tasks/",
            json={
                "workflow_id": workflow.json()["id"],
                "agent_id": agent.json()["id"],
                "name": name,
                "description": f"{name}: write about the topic",
                "order": order,
            },
        )
        assert task.status_code == 201, task.text
        ids[name] = task.json()["id"]
    return workflow.json()["id"], ids


async def start_runs(
    deployment: Deployment, workflow_id: int, count: int, first: int = 0
) -> dict[int, str]:
    """`count` runs of the workflow, sent to the API processes in turn, concurrently; their
    topics by execution id."""
    clients = [deployment.api(i) for i in range(len(deployment.apis))]
    sending = asyncio.Semaphore(8)

    async def send(i: int) -> httpx.Response:
        async with sending:
            return await clients[i % len(clients)].post(
                f"/workflows/{workflow_id}/execute",
                json={"input_data": {"topic": topic(first + i)}},
            )

    try:
        responses = await asyncio.gather(*(send(i) for i in range(count)))
    finally:
        for client in clients:
            await client.aclose()
    for response in responses:
        assert response.status_code == 202, response.text
    return {r.json()["id"]: r.json()["input_data"]["topic"] for r in responses}


async def statuses(http: httpx.AsyncClient, workflow_id: int) -> dict[int, dict[str, Any]]:
    response = await http.get("/executions/", params={"workflow_id": workflow_id, "limit": 1000})
    assert response.status_code == 200, response.text
    return {e["id"]: e for e in response.json()}


async def wait_until_finished(
    http: httpx.AsyncClient, workflow_id: int, count: int, timeout: float = 60.0
) -> dict[int, dict[str, Any]]:
    async def finished() -> dict[int, dict[str, Any]] | None:
        seen = await statuses(http, workflow_id)
        done = [e for e in seen.values() if e["status"] in ("completed", "failed", "cancelled")]
        return seen if len(done) == count else None

    result: dict[int, dict[str, Any]] = await eventually(
        finished, timeout=timeout, what=f"{count} runs of workflow {workflow_id} to finish"
    )
    return result


def calls(stub: StubServer) -> Counter[tuple[str, str]]:
    """Chat requests the stub received, by (task name, run topic)."""
    counted: Counter[tuple[str, str]] = Counter()
    for request in list(stub.requests):
        prompt = user_prompt(request)
        task, run = _TASK.match(prompt), _TOPIC.search(prompt)
        if task and run:
            counted[task.group(1), run.group(1)] += 1
    return counted


def requests_of(stub: StubServer, task: str, run: str) -> list[dict[str, Any]]:
    return [
        r
        for r in list(stub.requests)
        if (m := _TASK.match(user_prompt(r)))
        and m.group(1) == task
        and (t := _TOPIC.search(user_prompt(r)))
        and t.group(1) == run
    ]


async def held(deployment: Deployment, execution_ids: set[int]) -> dict[int, set[int]]:
    """Of `execution_ids`, those each live process holds (GET /workers), by pid."""
    async with deployment.api() as http:
        response = await http.get("/workers")
    assert response.status_code == 200, response.text
    return {
        w["pid"]: {e["execution_id"] for e in w["executions"]} & execution_ids
        for w in response.json()
    }


async def fill_both_workers(
    deployment: Deployment, stub: StubServer, workflow_id: int, gated_task: str, gate: str
) -> tuple[dict[int, str], dict[int, set[int]]]:
    """Start twice CONCURRENCY runs whose `gated_task` call waits at `gate`: each worker takes
    at most CONCURRENCY, so each ends up holding exactly that many, their calls held by the
    stub. Returns the runs' topics by id and what each worker holds, by pid."""
    total = 2 * CONCURRENCY
    stub.script(*(for_task(gated_task, gate=gate) for _ in range(total)))
    runs = await start_runs(deployment, workflow_id, total)
    await eventually(lambda: stub.waiting_at(gate) == total, what=f"{total} calls at {gate}")
    holders = await held(deployment, set(runs))
    pids = {w.pid for w in deployment.workers}
    assert {pid: len(ids) for pid, ids in holders.items() if pid in pids} == dict.fromkeys(
        pids, CONCURRENCY
    ), holders
    return runs, {pid: holders[pid] for pid in pids}


async def event_log(http: httpx.AsyncClient, execution_id: int) -> list[dict[str, Any]]:
    response = await http.get(f"/executions/{execution_id}/logs", params={"limit": 1000})
    assert response.status_code == 200, response.text
    logs: list[dict[str, Any]] = response.json()
    return logs


async def runs_spread_and_complete_once(deployment: Deployment, stub: StubServer) -> None:
    """RUN_COUNT runs of two tasks, sent through every API process. Both workers run some: the
    first 2 x CONCURRENCY wait at a gate until each worker holds CONCURRENCY of them. Every run
    completes; the stub saw exactly one call per task and run; each run's log has one start,
    one end, and no takeover."""
    async with deployment.api() as http:
        workflow, _ = await crew(http, ["A", "B"])
    gate = f"spread-{workflow}"
    _, holders = await fill_both_workers(deployment, stub, workflow, "A", gate)
    assert all(holders.values()), holders
    await start_runs(deployment, workflow, RUN_COUNT - 2 * CONCURRENCY, first=2 * CONCURRENCY)
    stub.open_gate(gate)
    async with deployment.api(len(deployment.apis) - 1) as http:
        finished = await wait_until_finished(http, workflow, RUN_COUNT)
        assert {e["status"] for e in finished.values()} == {"completed"}
        for execution_id in finished:
            events = [e["event"] for e in await event_log(http, execution_id)]
            assert events.count("workflow_started") == 1, events
            assert events.count("workflow_completed") == 1, events
            assert "workflow_resumed" not in events and "task_cancelled" not in events, events
    topics = {e["input_data"]["topic"] for e in finished.values()}
    assert len(topics) == RUN_COUNT
    assert calls(stub) == {(name, t): 1 for name in "AB" for t in topics}
