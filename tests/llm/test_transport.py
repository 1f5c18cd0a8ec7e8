"""The model call as the provider sees it, and how transport failures are survived or reported.

Every test runs a real workflow against the stub over HTTP and reads what the stub received.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from crew_platform.devtools.llm_stub import StubServer
from crew_platform.events.types import Event, EventType
from tests.conftest import make_settings
from tests.flows import (
    API,
    eventually,
    execute,
    make_workflow,
    pipeline,
    running_app,
    wait_for_status,
)
from tests.support import wait_for_execution


async def run_one(client: httpx.AsyncClient, **agent_fields: Any) -> dict[str, Any]:
    """A one-task workflow, executed to its end."""
    _, workflow, _ = await pipeline(client, ["Only"], **agent_fields)
    run = await execute(client, workflow["id"])
    return await wait_for_execution(client, run["id"])


async def task_runs(client: httpx.AsyncClient, task_id: int) -> list[dict[str, Any]]:
    response = await client.get(f"{API}/tasks/{task_id}/executions")
    assert response.status_code == 200
    runs: list[dict[str, Any]] = response.json()
    return runs


async def test_agent_parameters_and_key_reach_every_call(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    _, workflow, _ = await pipeline(
        client,
        ["First", "Second"],
        model="gpt-oss-120b",
        temperature="0.25",
        top_p="0.5",
        max_tokens=321,
    )
    done = await wait_for_execution(client, (await execute(client, workflow["id"]))["id"])
    assert done["status"] == "completed", done
    assert len(stub.requests) == 2
    for request in stub.requests:
        assert request["model"] == "gpt-oss-120b"
        assert request["temperature"] == 0.25
        assert request["top_p"] == 0.5
        assert request["max_tokens"] == 321
        assert request["stream"] is True
        assert request["stream_options"] == {"include_usage": True}
        assert request["_auth"] == "Bearer test-key"


async def test_output_is_streamed_and_each_chunk_published(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    events: list[Event] = []
    unsubscribe = app.state.bus.subscribe(events.append)
    content = "one two three four five six seven eight nine ten eleven"
    stub.state.chunk_words = 2
    stub.script({"content": content})
    try:
        done = await run_one(client)
    finally:
        unsubscribe()
    assert done["status"] == "completed"
    assert done["output_data"]["result"] == content
    chunks = [e for e in events if e.type == EventType.TASK_OUTPUT_CHUNK]
    assert len(chunks) == 6  # 11 words, 2 per chunk
    assert "".join(e.data["chunk"] for e in chunks) == content
    assert [e.data["index"] for e in chunks] == [1, 2, 3, 4, 5, 6]
    assert {e.execution_id for e in chunks} == {done["id"]}


async def test_tokens_come_from_the_providers_usage_report(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        {"content": "short answer", "usage": {"prompt_tokens": 1234, "completion_tokens": 56}}
    )
    _agent, workflow, tasks = await pipeline(client, ["Counted"])
    done = await wait_for_execution(client, (await execute(client, workflow["id"]))["id"])
    assert done["tokens_used"] == 1290
    (run,) = await task_runs(client, tasks[0]["id"])
    assert run["tokens_used"] == 1290


async def test_429_with_retry_after_is_waited_out_then_succeeds(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        {
            "status": 429,
            "headers": {"retry-after": "1.2"},
            "body": {"error": {"message": "rate limited"}},
        },
        {"content": "after the wait"},
    )
    done = await run_one(client)
    assert done["status"] == "completed", done
    assert done["output_data"]["result"] == "after the wait"
    first, second = stub.requests
    # The client waited at least what the server asked for (a lower bound, never flaky);
    # without Retry-After the SDK's first backoff is at most 0.5 s.
    assert second["received_at"] - first["received_at"] >= 1.2


async def test_500_is_retried_then_succeeds(client: httpx.AsyncClient, stub: StubServer) -> None:
    stub.script({"status": 500}, {"status": 503}, {"content": "third time lucky"})
    done = await run_one(client)
    assert done["status"] == "completed", done
    assert done["output_data"]["result"] == "third time lucky"
    assert len(stub.requests) == 3


async def test_connection_dropped_mid_stream_is_retried_from_scratch(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    events: list[Event] = []
    unsubscribe = app.state.bus.subscribe(events.append)
    stub.script(
        {"content": "partial words that will never all arrive here", "fault": "drop"},
        {"content": "the complete answer"},
    )
    try:
        done = await run_one(client)
    finally:
        unsubscribe()
    assert done["status"] == "completed", done
    assert done["output_data"]["result"] == "the complete answer"  # no half of the first
    assert len(stub.requests) == 2
    # Chunks already published say which call they came from, so a listener can drop the
    # first call's when the second starts.
    chunks = [e.data for e in events if e.type == EventType.TASK_OUTPUT_CHUNK]
    first = [c["chunk"] for c in chunks if c["call_attempt"] == 1]
    second = [c["chunk"] for c in chunks if c["call_attempt"] == 2]
    assert first and "".join(first) in "partial words that will never all arrive here"
    assert "".join(second) == "the complete answer"


async def test_malformed_stream_is_retried(client: httpx.AsyncClient, stub: StubServer) -> None:
    stub.script(
        {"content": "this stream breaks into garbage half way through", "fault": "malformed"},
        {"content": "clean answer"},
    )
    done = await run_one(client)
    assert done["status"] == "completed", done
    assert done["output_data"]["result"] == "clean answer"
    assert len(stub.requests) == 2


async def test_body_that_is_not_a_stream_is_retried_not_taken_as_empty_answer(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script({"status": 200, "body": {"unexpected": "shape"}}, {"content": "real answer"})
    done = await run_one(client)
    assert done["status"] == "completed", done
    assert done["output_data"]["result"] == "real answer"
    assert len(stub.requests) == 2


async def test_timeout_is_retried_then_succeeds(database_url: str, stub: StubServer) -> None:
    settings = make_settings(database_url, stub, llm_timeout_seconds=0.3, llm_max_retries=1)
    stub.script({"fault": "hang"}, {"content": "on time"})
    async with running_app(settings) as (_, client):
        done = await run_one(client)
    assert done["status"] == "completed", done
    assert done["output_data"]["result"] == "on time"
    assert len(stub.requests) == 2
    await eventually(lambda: stub.requests[0].get("_disconnected"), what="timed-out hang up")


async def test_timeouts_exhausted_fail_the_task_with_a_clear_error(
    database_url: str, stub: StubServer
) -> None:
    settings = make_settings(database_url, stub, llm_timeout_seconds=0.3, llm_max_retries=1)
    stub.script({"fault": "hang"}, {"fault": "hang"})
    async with running_app(settings) as (_, client):
        done = await run_one(client)
    assert done["status"] == "failed"
    assert "LLM_ERROR" in done["error_message"]
    assert "timed out" in done["error_message"].lower()
    assert len(stub.requests) == 2


async def test_server_errors_exhausted_fail_the_task_with_a_clear_error(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    # llm_max_retries is 2 in the test settings: three calls in all.
    stub.script(*[{"status": 500, "body": {"error": {"message": "upstream exploded"}}}] * 3)
    _agent, workflow, tasks = await pipeline(client, ["Doomed"])
    done = await wait_for_execution(client, (await execute(client, workflow["id"]))["id"])
    assert done["status"] == "failed"
    assert len(stub.requests) == 3
    assert "LLM_ERROR" in done["error_message"]
    assert "500" in done["error_message"]
    assert "upstream exploded" in done["error_message"]
    (run,) = await task_runs(client, tasks[0]["id"])
    assert run["status"] == "failed"
    assert "500" in run["error"]


async def test_drops_exhausted_fail_the_task_with_a_clear_error(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(*[{"content": "a b c d e f g h i j k l", "fault": "drop"}] * 3)
    done = await run_one(client)
    assert done["status"] == "failed"
    assert len(stub.requests) == 3
    assert "after 3 attempt(s)" in done["error_message"]


async def test_client_errors_are_not_retried(client: httpx.AsyncClient, stub: StubServer) -> None:
    stub.script({"status": 400, "body": {"error": {"message": "frequency_penalty unsupported"}}})
    done = await run_one(client)
    assert done["status"] == "failed"
    assert len(stub.requests) == 1
    assert "400" in done["error_message"]
    assert "frequency_penalty unsupported" in done["error_message"]


async def test_unknown_model_fails_with_model_not_found_naming_served_models(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    done = await run_one(client, model="llama-3.3-70b")
    assert done["status"] == "failed"
    message = done["error_message"]
    assert "MODEL_NOT_FOUND" in message
    assert "llama-3.3-70b" in message
    for served in stub.state.models:
        assert served in message


async def test_without_a_key_runs_fail_fast_and_everything_else_is_served(
    database_url: str, stub: StubServer
) -> None:
    settings = make_settings(database_url, None)
    assert settings.cerebras_api_key is None
    async with running_app(settings) as (_, client):
        assert (await client.get("/health")).status_code == 200
        agent, workflow, _tasks = await pipeline(client, ["Never"])
        assert (await client.get(f"{API}/agents/{agent['id']}")).status_code == 200
        assert (await client.get(f"{API}/tasks/workflow/{workflow['id']}")).status_code == 200
        run = await execute(client, workflow["id"])
        done = await wait_for_execution(client, run["id"])
        assert done["status"] == "failed"
        assert done["error_message"].startswith("LLM_NOT_CONFIGURED")
        assert "CEREBRAS_API_KEY" in done["error_message"]
        models = await client.get(f"{API}/models")
        assert models.status_code == 200
        cerebras = next(p for p in models.json()["providers"] if p["name"] == "cerebras")
        assert cerebras["configured"] is False
        assert "CEREBRAS_API_KEY" in cerebras["error"]
        assert (await client.get(f"{API}/executions/stats")).status_code == 200
    assert stub.requests == []


async def test_models_lists_what_the_provider_serves_and_caches_it(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.state.models = ["gpt-oss-120b", "gemma-4-31b"]
    response = await client.get(f"{API}/models")
    assert response.status_code == 200
    body = response.json()
    assert [m["id"] for m in body["models"]] == ["gpt-oss-120b", "gemma-4-31b"]
    assert {m["provider"] for m in body["models"]} == {"cerebras"}
    assert body["default_model"] == "llama-4-maverick-17b-128e-instruct"
    stub.state.models = ["something-new"]
    cached = (await client.get(f"{API}/models")).json()
    assert [m["id"] for m in cached["models"]] == ["gpt-oss-120b", "gemma-4-31b"]


async def test_models_cache_expires(database_url: str, stub: StubServer) -> None:
    settings = make_settings(database_url, stub, models_cache_seconds=0)
    async with running_app(settings) as (_, client):
        stub.state.models = ["first-model"]
        assert [m["id"] for m in (await client.get(f"{API}/models")).json()["models"]] == [
            "first-model"
        ]
        stub.state.models = ["second-model"]
        assert [m["id"] for m in (await client.get(f"{API}/models")).json()["models"]] == [
            "second-model"
        ]


async def test_provider_prefixed_model_goes_to_openai_base_url(
    database_url: str, stub: StubServer, other_stub: StubServer
) -> None:
    other_stub.state.models = ["gpt-4o-mini"]
    settings = make_settings(
        database_url, stub, openai_api_key="other-key", openai_base_url=other_stub.base_url
    )
    other_stub.script({"content": "from the other provider"})
    async with running_app(settings) as (_, client):
        done = await run_one(client, model="openai:gpt-4o-mini")
        listed = (await client.get(f"{API}/models")).json()
    assert done["status"] == "completed", done
    assert done["output_data"]["result"] == "from the other provider"
    assert stub.requests == []
    (request,) = other_stub.requests
    assert request["model"] == "gpt-4o-mini"
    assert request["_auth"] == "Bearer other-key"
    assert "openai:gpt-4o-mini" in [m["id"] for m in listed["models"]]


async def test_llm_max_concurrency_caps_calls_in_flight(
    database_url: str, stub: StubServer
) -> None:
    settings = make_settings(database_url, stub, llm_max_concurrency=2)
    # The first two calls wait for each other (so two do overlap); the rest take a little while,
    # so that without the cap all four would be at the stub at once.
    stub.script(
        {"gate": "pair", "quorum": 2, "latency": 0.2},
        {"gate": "pair", "quorum": 2, "latency": 0.2},
        {"latency": 0.2},
        {"latency": 0.2},
    )
    async with running_app(settings) as (_, client):
        _, workflow, _ = await pipeline(client, ["A", "B", "C", "D"], "parallel")
        run = await execute(client, workflow["id"], config={"max_parallel": 4})
        done = await wait_for_status(client, run["id"], "completed", "failed")
    assert done["status"] == "completed", done
    assert len(stub.requests) == 4
    assert stub.max_active == 2


async def test_prefixed_model_without_its_key_fails_naming_openai_api_key(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    """`openai:` without OPENAI_API_KEY fails that run only, naming OPENAI_API_KEY."""
    workflow = await make_workflow(client)
    assert workflow["status"] == "active"
    done = await run_one(client, model="openai:gpt-4o-mini")
    assert done["status"] == "failed"
    assert "LLM_NOT_CONFIGURED" in done["error_message"]
    assert "OPENAI_API_KEY" in done["error_message"]
    assert (await run_one(client))["status"] == "completed"


async def test_unreachable_provider_fails_naming_where_it_was_looked_for(
    database_url: str,
) -> None:
    settings = make_settings(
        database_url,
        None,
        cerebras_api_key="k",
        cerebras_base_url="http://127.0.0.1:9/v1",
        llm_max_retries=1,
    )
    async with running_app(settings) as (_, client):
        done = await run_one(client)
        listed = (await client.get(f"{API}/models")).json()
    assert done["status"] == "failed"
    assert "LLM_ERROR" in done["error_message"]
    assert "http://127.0.0.1:9/v1" in done["error_message"]
    cerebras = next(p for p in listed["providers"] if p["name"] == "cerebras")
    assert cerebras["configured"] is True
    assert cerebras["error"]
    assert listed["models"] == []
