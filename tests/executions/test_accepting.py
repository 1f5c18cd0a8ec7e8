"""What POST .../execute refuses before anything runs: tasks whose agent is missing or
inactive are named, for a workflow and for a single task."""

from __future__ import annotations

import httpx

from crew_platform.devtools.llm_stub import StubServer
from tests.api import assert_error
from tests.flows import API, make_agent, make_task, pipeline


async def test_tasks_without_an_active_agent_are_named_and_nothing_runs(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    agent, workflow, (ready,) = await pipeline(client, ["ready"])
    resting = await make_agent(client)
    no_agent = await make_task(client, workflow["id"], None, "no agent", order=1)
    inactive = await make_task(client, workflow["id"], resting["id"], "inactive agent", order=2)
    await make_task(client, workflow["id"], agent["id"], "inactive task", order=3, is_active=False)
    switched = await client.put(f"{API}/agents/{resting['id']}", json={"is_active": False})
    assert switched.status_code == 200, switched.text

    response = await client.post(f"{API}/workflows/{workflow['id']}/execute", json={})
    body = assert_error(response, 422, "VALIDATION_ERROR", fields=["agent_id"])
    assert body["details"]["task_ids"] == sorted([no_agent["id"], inactive["id"]])

    alone = await client.post(f"{API}/tasks/{inactive['id']}/execute", json={})
    body = assert_error(alone, 422, "VALIDATION_ERROR", fields=["agent_id"])
    assert body["details"]["task_ids"] == [inactive["id"]]
    assert (await client.post(f"{API}/tasks/{ready['id']}/execute", json={})).status_code == 202
    runs = await client.get(f"{API}/executions/", params={"workflow_id": workflow["id"]})
    assert len(runs.json()) == 1
