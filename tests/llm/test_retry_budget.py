"""One model call sends at most LLM_MAX_RETRIES + 1 requests, whatever fails, and a call
waiting out its backoff does not hold an LLM_MAX_CONCURRENCY slot.

The test settings have LLM_MAX_RETRIES=2: three requests at most.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import pytest

from crew_platform.devtools.llm_stub import StubServer
from tests.conftest import make_settings
from tests.flows import API, HANG_GUARD, eventually, make_agent, running_app, user_prompt

PLENTY = 10
"""More failures scripted than any call may use: what is left unused shows the budget held."""


async def agent_test(client: httpx.AsyncClient, agent_id: int, text: str) -> dict[str, Any]:
    response = await client.post(f"{API}/agents/{agent_id}/test", json={"input": text})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


FAILURES = {
    "500": {"status": 500, "body": {"error": {"message": "upstream exploded"}}},
    "429": {"status": 429, "headers": {"retry-after": "0"}},
    "drop": {"content": "a b c d e f g h i j k l", "fault": "drop"},
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
async def test_a_provider_failing_every_request_gets_max_retries_plus_one(
    client: httpx.AsyncClient, stub: StubServer, failure: str
) -> None:
    stub.script(*[FAILURES[failure]] * PLENTY)
    agent = await make_agent(client)
    body = await agent_test(client, agent["id"], "hi")
    assert body["success"] is False
    assert len(stub.requests) == 3
    assert "3 attempt(s)" in body["error"]


async def test_stream_and_status_failures_share_one_budget(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    """A broken stream followed by server errors: three requests in all, not three per kind."""
    stub.script(FAILURES["drop"], *[FAILURES["500"]] * PLENTY)
    agent = await make_agent(client)
    body = await agent_test(client, agent["id"], "hi")
    assert body["success"] is False
    assert len(stub.requests) == 3
    assert "500" in body["error"] and "upstream exploded" in body["error"]


async def test_no_retries_means_one_request(database_url: str, stub: StubServer) -> None:
    stub.script(*[FAILURES["500"]] * PLENTY)
    async with running_app(make_settings(database_url, stub, llm_max_retries=0)) as (_, client):
        agent = await make_agent(client)
        body = await agent_test(client, agent["id"], "hi")
    assert body["success"] is False
    assert len(stub.requests) == 1


async def test_a_call_in_backoff_lets_another_call_through(
    database_url: str, stub: StubServer
) -> None:
    """With one slot, the first call is told to come back in 30 s; the second call reaches the
    stub and is answered meanwhile (holding the slot, it would wait the 30 s out first)."""
    settings = make_settings(database_url, stub, llm_max_concurrency=1)
    stub.script(
        {"match": "first", "status": 429, "headers": {"retry-after": "30"}},
        {"match": "second", "content": "second answered"},
    )
    async with running_app(settings) as (_, client):
        agent = await make_agent(client)
        first = asyncio.create_task(agent_test(client, agent["id"], "first call"))
        try:
            await eventually(lambda: len(stub.requests) == 1, what="the first call's request")
            second = await asyncio.wait_for(
                agent_test(client, agent["id"], "second call"), HANG_GUARD
            )
            assert second["output"] == "second answered"
            assert [user_prompt(r) for r in stub.requests] == ["first call", "second call"]
            assert not first.done()  # still waiting out its Retry-After
        finally:
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
