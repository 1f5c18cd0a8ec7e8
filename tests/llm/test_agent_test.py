"""POST /agents/{id}/test: one inline call, answered in the spec's shape, never a 5xx."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from crew_platform.devtools.llm_stub import StubServer
from crew_platform.events.types import Event, EventType
from tests.conftest import make_settings
from tests.flows import API, make_agent, running_app, system_prompt, user_prompt


async def test_agent_test_answers_in_the_spec_shape(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    agent = await make_agent(
        client,
        role="Content Creator",
        goal="Create engaging content",
        temperature="0.6",
        top_p="0.9",
        max_tokens=512,
    )
    stub.script(
        {"content": "Agent response", "usage": {"prompt_tokens": 140, "completion_tokens": 10}}
    )
    response = await client.post(
        f"{API}/agents/{agent['id']}/test",
        json={"input": "Test input for the agent", "context": {"additional": "context data"}},
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "agent_id",
        "input",
        "output",
        "execution_time",
        "tokens_used",
        "success",
        "error",
        "model",
    }
    assert body["agent_id"] == agent["id"]
    assert body["input"] == "Test input for the agent"
    assert body["output"] == "Agent response"
    assert body["tokens_used"] == 150
    assert body["success"] is True
    assert body["error"] is None
    assert body["model"] == "llama3.1-8b"
    assert isinstance(body["execution_time"], float) and body["execution_time"] >= 0
    (request,) = stub.requests
    assert "Content Creator" in system_prompt(request)
    assert "Test input for the agent" in user_prompt(request)
    assert '"additional": "context data"' in user_prompt(request)
    assert (request["temperature"], request["top_p"], request["max_tokens"]) == (0.6, 0.9, 512)


async def test_agent_test_model_failure_is_success_false(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    agent = await make_agent(client)
    stub.script(*[{"status": 500, "body": {"error": {"message": "overloaded"}}}] * 3)
    response = await client.post(f"{API}/agents/{agent['id']}/test", json={"input": "hi"})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is False
    assert body["output"] is None
    assert body["tokens_used"] == 0
    assert "LLM_ERROR" in body["error"] and "overloaded" in body["error"]


async def test_agent_test_with_unknown_model_names_it(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    agent = await make_agent(client, model="retired-model-1")
    response = await client.post(f"{API}/agents/{agent['id']}/test", json={"input": "hi"})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is False
    assert "MODEL_NOT_FOUND" in body["error"]
    assert "retired-model-1" in body["error"]
    assert "gpt-oss-120b" in body["error"]


async def test_agent_test_goes_on_with_the_agents_fallback_model(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    agent = await make_agent(
        client, model="retired-model-1", config={"fallback_models": ["gpt-oss-120b"]}
    )
    events: list[Event] = []
    unsubscribe = app.state.bus.subscribe(events.append)
    try:
        response = await client.post(f"{API}/agents/{agent['id']}/test", json={"input": "hi"})
    finally:
        unsubscribe()
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True, body
    assert body["model"] == "gpt-oss-120b"
    assert body["output"] == "[gpt-oss-120b] answer to: hi"
    assert [r["model"] for r in stub.requests] == ["retired-model-1", "gpt-oss-120b"]
    (fallback,) = [e for e in events if e.type == EventType.MODEL_FALLBACK]
    assert fallback.agent_id == agent["id"] and fallback.execution_id is None
    assert (fallback.data["from"], fallback.data["to"]) == ("retired-model-1", "gpt-oss-120b")
    assert "retired-model-1" in fallback.data["reason"]


async def test_agent_test_goes_on_with_model_fallbacks(database_url: str, stub: StubServer) -> None:
    settings = make_settings(database_url, stub, model_fallbacks="*=gemma-4-31b")
    async with running_app(settings) as (_, client):
        agent = await make_agent(client, model="retired-model-2")
        response = await client.post(f"{API}/agents/{agent['id']}/test", json={"input": "hi"})
    assert response.status_code == 200
    assert (response.json()["success"], response.json()["model"]) == (True, "gemma-4-31b")


async def test_agent_test_when_the_stream_keeps_breaking(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    agent = await make_agent(client)
    stub.script(*[{"content": "a b c d e f g h i j", "fault": "drop"}] * 3)
    response = await client.post(f"{API}/agents/{agent['id']}/test", json={"input": "hi"})
    assert response.status_code == 200
    assert response.json()["success"] is False
    assert "after 3 attempt(s)" in response.json()["error"]


async def test_agent_test_without_a_key(database_url: str) -> None:
    async with running_app(make_settings(database_url, None)) as (_, client):
        agent = await make_agent(client)
        response = await client.post(f"{API}/agents/{agent['id']}/test", json={"input": "hi"})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is False
    assert body["error"].startswith("LLM_NOT_CONFIGURED")
    assert "CEREBRAS_API_KEY" in body["error"]


async def test_agent_test_of_missing_agent_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{API}/agents/999/test", json={"input": "hi"})
    assert response.status_code == 404
    assert response.json()["error"] == "NOT_FOUND"
