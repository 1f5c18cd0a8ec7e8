"""CrewAI semantics of the prompts, read from the requests the stub received."""

from __future__ import annotations

import json

import httpx

from crew_platform.devtools.llm_stub import StubServer
from tests.flows import (
    API,
    calls_for,
    execute,
    for_task,
    make_agent,
    make_task,
    make_workflow,
    system_prompt,
    user_prompt,
)
from tests.support import wait_for_execution


async def test_system_prompt_carries_role_goal_and_backstory(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    agent = await make_agent(
        client,
        role="Senior Data Researcher",
        goal="Uncover cutting-edge developments",
        backstory="A seasoned researcher with a knack for the latest trends.",
    )
    workflow = await make_workflow(client)
    await make_task(client, workflow["id"], agent["id"], "Research")
    done = await wait_for_execution(client, (await execute(client, workflow["id"]))["id"])
    assert done["status"] == "completed"
    (request,) = stub.requests
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    system = system_prompt(request)
    assert "Senior Data Researcher" in system
    assert "Uncover cutting-edge developments" in system
    assert "A seasoned researcher with a knack for the latest trends." in system


async def test_task_prompt_carries_description_expected_output_and_input_data(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    agent = await make_agent(client)
    workflow = await make_workflow(client)
    await make_task(
        client,
        workflow["id"],
        agent["id"],
        "Write",
        description="Write an article on {topic} of {length}",
        expected_output="A {length} article in markdown",
        input_data={"tone": "friendly"},
    )
    inputs = {"topic": "AI in Healthcare", "length": "1000 words"}
    done = await wait_for_execution(client, (await execute(client, workflow["id"], inputs))["id"])
    assert done["status"] == "completed"
    prompt = user_prompt(stub.requests[0])
    assert "Write an article on AI in Healthcare of 1000 words" in prompt
    assert "A 1000 words article in markdown" in prompt
    assert "{topic}" not in prompt and "{length}" not in prompt
    # The task's own input_data and the run's input_data are both given to the model.
    assert json.dumps({"tone": "friendly"} | inputs, indent=2) in prompt


async def test_run_input_overrides_task_input_and_braces_that_are_not_placeholders_stay(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    agent = await make_agent(client)
    workflow = await make_workflow(client)
    await make_task(
        client,
        workflow["id"],
        agent["id"],
        "Format",
        description='Answer about {topic} as JSON like {"a": 1}; keep {{literal}} braces',
        input_data={"topic": "from the task"},
    )
    run = await execute(client, workflow["id"], {"topic": "from the run"})
    assert (await wait_for_execution(client, run["id"]))["status"] == "completed"
    prompt = user_prompt(stub.requests[0])
    assert 'Answer about from the run as JSON like {"a": 1}; keep {literal} braces' in prompt


async def test_task_input_data_fills_placeholders_without_run_input(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    agent = await make_agent(client)
    workflow = await make_workflow(client)
    await make_task(
        client,
        workflow["id"],
        agent["id"],
        "Own",
        description="Summarise {doc}",
        input_data={"doc": "the annual report"},
    )
    run = await execute(client, workflow["id"])
    assert (await wait_for_execution(client, run["id"]))["status"] == "completed"
    assert "Summarise the annual report" in user_prompt(stub.requests[0])


async def test_missing_placeholders_are_a_422_before_anything_runs(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    agent = await make_agent(client)
    workflow = await make_workflow(client)
    first = await make_task(
        client, workflow["id"], agent["id"], "One", description="About {topic} for {audience}"
    )
    second = await make_task(
        client,
        workflow["id"],
        agent["id"],
        "Two",
        description="Shorten it",
        expected_output="At most {length}",
    )
    response = await client.post(
        f"{API}/workflows/{workflow['id']}/execute", json={"input_data": {"topic": "AI"}}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "MISSING_INPUT"
    assert body["details"]["missing"] == ["audience", "length"]
    assert "audience" in body["message"] and "length" in body["message"]
    assert body["details"]["tasks"] == {"audience": [first["id"]], "length": [second["id"]]}
    executions = await client.get(f"{API}/executions/", params={"workflow_id": workflow["id"]})
    assert executions.json() == []
    assert stub.requests == []


async def test_missing_placeholder_on_single_task_execute_is_a_422(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    agent = await make_agent(client)
    workflow = await make_workflow(client)
    task = await make_task(client, workflow["id"], agent["id"], "T", description="On {subject}")
    response = await client.post(f"{API}/tasks/{task['id']}/execute", json={"input_data": {}})
    assert response.status_code == 422
    assert response.json()["error"] == "MISSING_INPUT"
    assert response.json()["details"]["missing"] == ["subject"]
    assert (await client.get(f"{API}/tasks/{task['id']}/executions")).json() == []
    assert stub.requests == []


async def test_dependency_outputs_are_given_as_context(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        for_task("Gather", content="FACTS: the sky is blue"),
        for_task("Draft", content="DRAFT: blue sky article"),
    )
    agent = await make_agent(client)
    workflow = await make_workflow(client)
    await make_task(client, workflow["id"], agent["id"], "Gather", order=0)
    await make_task(client, workflow["id"], agent["id"], "Draft", order=1)
    run = await execute(client, workflow["id"])
    assert (await wait_for_execution(client, run["id"]))["status"] == "completed"
    (draft,) = calls_for(stub, "Draft")
    assert "FACTS: the sky is blue" in user_prompt(draft)
    (gather,) = calls_for(stub, "Gather")
    assert "context" not in user_prompt(gather).lower()
