"""A provider's error text reaches users, the database, events and logs without credentials."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import httpx
import pytest

from crew_platform.devtools.llm_stub import StubServer
from crew_platform.events.types import Event, EventType
from crew_platform.llm.errors import LLMError
from crew_platform.llm.gateway import LLMGateway
from crew_platform.settings import Settings
from tests.conftest import make_settings
from tests.flows import API, execute, make_agent, pipeline, running_app
from tests.support import wait_for_execution

ECHOED_KEY = "sk-abc123def456ghi789jkl"
CONFIGURED_KEY = "plain-configured-secret-42"


def unauthorized(key: str) -> dict[str, Any]:
    return {
        "status": 401,
        "body": {
            "error": {
                "message": f"Incorrect API key provided: {key}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
        },
    }


async def test_agent_test_answers_a_401_without_the_key(
    client: httpx.AsyncClient, stub: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="crew_platform")
    agent = await make_agent(client)
    stub.script(unauthorized(ECHOED_KEY))
    response = await client.post(f"{API}/agents/{agent['id']}/test", json={"input": "hi"})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is False
    assert ECHOED_KEY not in response.text
    assert "401" in body["error"]
    assert "authentication failed" in body["error"]
    assert "CEREBRAS_API_KEY" in body["error"]
    assert "Incorrect API key provided: [REDACTED]" in body["error"]
    assert ECHOED_KEY not in caplog.text
    assert len(stub.requests) == 1  # a 401 is not retried


async def test_a_run_failing_with_the_configured_key_echoed_stores_and_tells_no_key(
    database_url: str, stub: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="crew_platform")
    settings = make_settings(database_url, stub, cerebras_api_key=CONFIGURED_KEY)
    stub.script(
        {
            "status": 400,
            "body": {"error": {"message": f"request signed with {CONFIGURED_KEY} is malformed"}},
        },
    )
    events: list[Event] = []
    async with running_app(settings) as (app, client):
        unsubscribe = app.state.bus.subscribe(events.append)
        try:
            _, workflow, tasks = await pipeline(client, ["Leaky"])
            run = await execute(client, workflow["id"])
            done = await wait_for_execution(client, run["id"])
        finally:
            unsubscribe()
        task_runs = await client.get(f"{API}/tasks/{tasks[0]['id']}/executions")
        logs = await client.get(f"{API}/executions/{run['id']}/logs")
    assert stub.requests[0]["_auth"] == f"Bearer {CONFIGURED_KEY}"  # the key was sent...
    assert done["status"] == "failed"
    answers = {
        "execution": str(done),
        "task runs": task_runs.text,
        "logs": logs.text,
        "events": repr([e.to_message() for e in events]),
        "server log": caplog.text,
    }
    for where, text in answers.items():  # ...and nowhere else
        assert CONFIGURED_KEY not in text, where
    assert "400" in done["error_message"]
    assert "request signed with [REDACTED] is malformed" in done["error_message"]
    (task_run,) = task_runs.json()
    assert "400" in task_run["error"] and "[REDACTED]" in task_run["error"]
    (failed,) = [e for e in events if e.type == EventType.TASK_FAILED]
    assert "[REDACTED]" in failed.data["error"]
    assert failed.data["model"] and failed.data["model"] == task_run["model"]


async def test_a_run_failing_with_a_401_stores_the_status_not_the_key(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(unauthorized(ECHOED_KEY))
    _, workflow, tasks = await pipeline(client, ["Denied"])
    done = await wait_for_execution(client, (await execute(client, workflow["id"]))["id"])
    task_runs = await client.get(f"{API}/tasks/{tasks[0]['id']}/executions")
    assert done["status"] == "failed"
    assert ECHOED_KEY not in str(done) and ECHOED_KEY not in task_runs.text
    assert "401" in done["error_message"]
    assert "authentication failed" in done["error_message"]


async def test_a_key_in_a_broken_stream_is_redacted_too(
    client: httpx.AsyncClient, stub: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A provider error that arrives mid-stream (a chunk carrying `error`) is retried, then
    reported: the retry's log line and the final error hold no key."""
    caplog.set_level(logging.DEBUG, logger="crew_platform")
    leak = {"content": "a b c d e f g h", "fault": "error", "error": f"key {ECHOED_KEY} revoked"}
    stub.script(*[leak] * 3)
    agent = await make_agent(client)
    response = await client.post(f"{API}/agents/{agent['id']}/test", json={"input": "hi"})
    body = response.json()
    assert body["success"] is False
    assert "after 3 attempt(s)" in body["error"]
    assert "mid-stream: key [REDACTED] revoked" in body["error"]
    assert ECHOED_KEY not in response.text
    assert "model call to cerebras attempt 1/3 failed" in caplog.text
    assert ECHOED_KEY not in caplog.text


async def test_a_logged_traceback_of_the_error_holds_no_key(
    settings: Settings, stub: StubServer
) -> None:
    """The typed error does not chain the SDK's exception, whose text is the provider's raw
    answer: `log.exception` anywhere up the stack cannot print the key."""
    gateway = LLMGateway(settings)
    stub.script(unauthorized(ECHOED_KEY))
    try:
        with pytest.raises(LLMError) as caught:
            await gateway.complete(
                model="llama3.1-8b",
                messages=[{"role": "user", "content": "hi"}],
                temperature=0.5,
                top_p=1.0,
                max_tokens=16,
            )
    finally:
        await gateway.aclose()
    printed = "".join(traceback.format_exception(caught.value))
    assert "401" in printed
    assert ECHOED_KEY not in printed
