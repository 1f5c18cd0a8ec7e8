"""Hierarchical workflows at the API: the type, the manager's config keys, and the checks made
when such a workflow is created, updated and executed (each refusal a 422 in the envelope)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api import assert_error, check_each, make_agent, make_task, make_workflow
from tests.support import wait_for_execution

WORKFLOWS = "/api/v1/workflows"


async def execute(client: httpx.AsyncClient, workflow_id: int) -> httpx.Response:
    return await client.post(f"{WORKFLOWS}/{workflow_id}/execute", json={})


async def test_hierarchical_workflows_are_accepted_with_their_config(
    client: httpx.AsyncClient,
) -> None:
    boss = await make_agent(client, "Boss")
    config = {"manager_agent_id": boss["id"], "max_delegations": 0, "other": [1]}
    workflow = await make_workflow(client, workflow_type="hierarchical", config=config)
    assert (workflow["workflow_type"], workflow["config"]) == ("hierarchical", config)
    built = await make_workflow(
        client, "Built", workflow_type="hierarchical", config={"manager_model": "llama3.1-8b"}
    )
    assert built["config"] == {"manager_model": "llama3.1-8b"}
    plain = await make_workflow(client, "Plain", workflow_type="hierarchical")
    assert plain["config"] is None


async def test_bad_manager_config_values_are_422_on_create_and_update(
    client: httpx.AsyncClient,
) -> None:
    workflow = await make_workflow(client, workflow_type="hierarchical")

    async def check(config: dict[str, Any]) -> None:
        body = {"name": "Bad", "workflow_type": "hierarchical", "config": config}
        created = await client.post(f"{WORKFLOWS}/", json=body)
        assert_error(created, 422, "VALIDATION_ERROR", fields=["config"])
        updated = await client.put(f"{WORKFLOWS}/{workflow['id']}", json={"config": config})
        assert_error(updated, 422, "VALIDATION_ERROR", fields=["config"])

    await check_each(
        [
            {"max_delegations": -1},
            {"max_delegations": 101},
            {"max_delegations": "3"},
            {"max_delegations": True},
            {"max_delegations": 2.5},
            {"max_delegations": None},
            {"manager_agent_id": 0},
            {"manager_agent_id": "1"},
            {"manager_agent_id": True},
            {"manager_agent_id": 2**31},
            {"manager_agent_id": None},
            {"manager_model": ""},
            {"manager_model": "   "},
            {"manager_model": "m" * 201},
            {"manager_model": 5},
            {"manager_agent_id": 1, "manager_model": "llama3.1-8b"},
        ],
        check,
    )
    assert (await client.get(f"{WORKFLOWS}/{workflow['id']}")).json() == workflow


async def test_an_unknown_or_inactive_manager_agent_is_422_on_create_and_update(
    client: httpx.AsyncClient,
) -> None:
    idle = await make_agent(client, "Idle", is_active=False)
    workflow = await make_workflow(client, workflow_type="hierarchical")
    linear = await make_workflow(client, "Linear", config={"manager_agent_id": 999})

    async def check(agent_id: int, reason: str) -> None:
        config = {"manager_agent_id": agent_id}
        body = {"name": "Managed", "workflow_type": "hierarchical", "config": config}
        for response in (
            await client.post(f"{WORKFLOWS}/", json=body),
            await client.put(f"{WORKFLOWS}/{workflow['id']}", json={"config": config}),
        ):
            error = assert_error(
                response, 422, "VALIDATION_ERROR", fields=["config.manager_agent_id"]
            )
            assert error["message"] == f"config.manager_agent_id: agent {agent_id} {reason}"
            assert error["details"]["agent_id"] == agent_id

    await check_each([(999, "does not exist"), (idle["id"], "is inactive")], check)
    # A linear workflow does not use the key; turning it hierarchical checks it.
    assert linear["config"] == {"manager_agent_id": 999}
    turned = await client.put(f"{WORKFLOWS}/{linear['id']}", json={"workflow_type": "hierarchical"})
    assert_error(turned, 422, "VALIDATION_ERROR", fields=["config.manager_agent_id"])
    assert (await client.get(f"{WORKFLOWS}/{linear['id']}")).json()["workflow_type"] == "linear"


async def test_execute_checks_the_manager_again(client: httpx.AsyncClient) -> None:
    boss = await make_agent(client, "Boss")
    workflow = await make_workflow(
        client, workflow_type="hierarchical", config={"manager_agent_id": boss["id"]}
    )
    await make_task(client, workflow["id"], "Job")
    retired = await client.put(f"/api/v1/agents/{boss['id']}", json={"is_active": False})
    assert retired.status_code == 200, retired.text
    error = assert_error(
        await execute(client, workflow["id"]),
        422,
        "VALIDATION_ERROR",
        fields=["config.manager_agent_id"],
    )
    assert error["message"] == f"config.manager_agent_id: agent {boss['id']} is inactive"
    assert (await client.get(f"{WORKFLOWS}/{workflow['id']}/executions")).json() == []


async def test_tasks_without_agents_run_in_hierarchical_workflows_only(
    client: httpx.AsyncClient,
) -> None:
    managed = await make_workflow(client, workflow_type="hierarchical")
    linear = await make_workflow(client, "Linear")
    for workflow in (managed, linear):
        await make_task(client, workflow["id"], "Unassigned")
    accepted = await execute(client, managed["id"])
    assert accepted.status_code == 202, accepted.text
    assert_error(await execute(client, linear["id"]), 422, "VALIDATION_ERROR", fields=["agent_id"])
    # The manager answers the unassigned task itself (the crew is empty).
    finished = await wait_for_execution(client, accepted.json()["id"])
    assert finished["status"] == "completed", finished


async def test_coworkers_must_have_distinct_roles(client: httpx.AsyncClient) -> None:
    one = await make_agent(client, "One", role="Writer")
    two = await make_agent(client, "Two", role=" writer ")
    workflow = await make_workflow(client, workflow_type="hierarchical")
    await make_task(client, workflow["id"], "A", agent_id=one["id"])
    await make_task(client, workflow["id"], "B", agent_id=two["id"])
    error = assert_error(
        await execute(client, workflow["id"]), 422, "VALIDATION_ERROR", fields=["role"]
    )
    assert error["details"]["shared_roles"] == {"writer": [one["id"], two["id"]]}
    # An inactive agent is not in the crew: the clash is gone.
    assert (await client.put(f"/api/v1/agents/{two['id']}", json={"is_active": False})).is_success
    assert (await execute(client, workflow["id"])).status_code == 202


async def test_unknown_tools_of_the_crew_are_422_before_anything_runs(
    client: httpx.AsyncClient,
) -> None:
    helper = await make_agent(client, "Helper", tools=["no_such_tool"])
    workflow = await make_workflow(client, workflow_type="hierarchical")
    task = await make_task(client, workflow["id"], "Job", agent_id=helper["id"])
    for response in (
        await execute(client, workflow["id"]),
        await client.post(f"/api/v1/tasks/{task['id']}/execute", json={}),
    ):
        error = assert_error(response, 422, "TOOL_NOT_FOUND")
        assert error["details"]["unknown_tools"] == ["no_such_tool"]
