from __future__ import annotations

import httpx

from tests.support import wait_for_execution


async def test_spec_complete_example_runs_end_to_end(client: httpx.AsyncClient, stub) -> None:
    agent = await client.post(
        "/api/v1/agents/",
        json={
            "name": "Content Writer",
            "role": "Content Creator",
            "goal": "Create engaging content",
            "model": "llama-4-maverick-17b-128e-instruct",
        },
    )
    assert agent.status_code == 201, agent.text
    workflow = await client.post(
        "/api/v1/workflows/",
        json={
            "name": "Content Pipeline",
            "description": "Automated content creation",
            "workflow_type": "linear",
        },
    )
    assert workflow.status_code == 201
    task = await client.post(
        "/api/v1/tasks/",
        json={
            "workflow_id": 1,
            "agent_id": 1,
            "name": "Write Article",
            "description": "Write a blog article about AI",
            "task_type": "ai_task",
        },
    )
    assert task.status_code == 201, task.text
    run = await client.post(
        "/api/v1/workflows/1/execute",
        json={"input_data": {"topic": "AI in Healthcare", "length": "1000 words"}},
    )
    assert run.status_code == 202, run.text
    assert run.json()["status"] == "pending"
    done = await wait_for_execution(client, run.json()["id"])
    assert done["status"] == "completed", done
    assert "Write a blog article about AI" in done["output_data"]["result"]
    assert done["output_data"]["tasks"] == {"1": done["output_data"]["result"]}
