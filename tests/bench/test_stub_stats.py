"""The stub counts the chat requests it answers at once, for the concurrency benchmark."""

from __future__ import annotations

import asyncio

import httpx

from crew_platform.devtools.llm_stub import StubServer
from tests.flows import wait_for_gate


async def test_stats_show_calls_in_flight_and_the_peak_until_reset(stub: StubServer) -> None:
    stub.script(*({"content": "held", "gate": "g", "quorum": 3} for _ in range(3)))
    admin = stub.base_url.removesuffix("/v1")
    body = {"model": "llama3.1-8b", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=admin, timeout=30) as client:
        calls = [asyncio.create_task(client.post("/v1/chat/completions", json=body))]
        await wait_for_gate(stub, "g")
        assert (await client.get("/_stats")).json() == {"active": 1, "peak": 1}
        calls += [
            asyncio.create_task(client.post("/v1/chat/completions", json=body)) for _ in range(2)
        ]
        answers = await asyncio.gather(*calls)
        assert [a.json()["choices"][0]["message"]["content"] for a in answers] == ["held"] * 3
        assert (await client.get("/_stats")).json() == {"active": 0, "peak": 3}
        assert (await client.post("/_stats/reset")).json() == {"active": 0, "peak": 0}
        await client.post("/v1/chat/completions", json=body)
        assert (await client.get("/_stats")).json() == {"active": 0, "peak": 1}
