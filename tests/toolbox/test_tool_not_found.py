"""Agents may name unknown tools, but nothing runs with them: execute and agent test answer
422 TOOL_NOT_FOUND naming the agents and the unknown names."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api import assert_error, make_agent, make_task, make_workflow


async def setup(client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    good = await make_agent(client, "Counter", tools=["calculator", "current_time"])
    bad = await make_agent(client, "Dreamer", tools=["calculator", "search_tool", "x.y"])
    workflow = await make_workflow(client)
    tasks = [
        await make_task(client, workflow["id"], "Count", description="Count", agent_id=good["id"]),
        await make_task(client, workflow["id"], "Dream", description="Dream", agent_id=bad["id"]),
    ]
    return bad, workflow, tasks


def assert_names_the_unknown_tools(response: httpx.Response, agent: dict[str, Any]) -> None:
    body = assert_error(response, 422, "TOOL_NOT_FOUND")
    assert body["details"]["agents"] == [
        {"agent_id": agent["id"], "name": "Dreamer", "unknown_tools": ["search_tool", "x.y"]}
    ]
    assert body["details"]["unknown_tools"] == ["search_tool", "x.y"]
    assert "Dreamer" in body["message"] and "search_tool" in body["message"]


async def test_execute_and_test_refuse_unknown_tools_before_anything_runs(
    client: httpx.AsyncClient,
) -> None:
    bad, workflow, tasks = await setup(client)
    assert_names_the_unknown_tools(
        await client.post(f"/api/v1/workflows/{workflow['id']}/execute"), bad
    )
    assert_names_the_unknown_tools(
        await client.post(f"/api/v1/tasks/{tasks[1]['id']}/execute"), bad
    )
    assert_names_the_unknown_tools(
        await client.post(f"/api/v1/agents/{bad['id']}/test", json={"input": "hi"}), bad
    )
    assert (await client.get("/api/v1/executions/")).json() == []


async def test_agents_naming_real_tools_run(client: httpx.AsyncClient) -> None:
    _, workflow, tasks = await setup(client)
    started = await client.post(f"/api/v1/tasks/{tasks[0]['id']}/execute")
    assert started.status_code == 202, started.text
    await client.put(f"/api/v1/tasks/{tasks[1]['id']}", json={"is_active": False})
    assert (await client.post(f"/api/v1/workflows/{workflow['id']}/execute")).status_code == 202
    tested = await client.post(f"/api/v1/agents/{tasks[0]['agent_id']}/test", json={"input": "hi"})
    assert tested.status_code == 200, tested.text
