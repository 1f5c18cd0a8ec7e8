"""Bodies over MAX_BODY_BYTES (1 MiB) are refused with 413 in the envelope, whether the client
declares their size (Content-Length) or streams them (chunked, no Content-Length)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.api import assert_error

LIMIT = 1024 * 1024
JSON = {"content-type": "application/json"}


def agent_json(size: int, name: str = "Padded") -> bytes:
    """A valid create-agent body padded with whitespace to exactly `size` bytes."""
    body = json.dumps({"name": name, "role": "r", "goal": "g"}).encode()
    return body[:-1] + b" " * (size - len(body)) + b"}"


async def chunks(payload: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(payload), size):
        yield payload[start : start + size]


async def test_a_body_of_exactly_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/agents/", content=agent_json(LIMIT), headers=JSON)
    assert response.status_code == 201, response.text


async def test_a_declared_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/agents/", content=agent_json(LIMIT + 1), headers=JSON)
    body = assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert body["details"] == {"max_bytes": LIMIT}
    assert (await client.get("/api/v1/agents/")).json() == []


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/v1/workflows/"), ("PUT", "/api/v1/tasks/1"), ("POST", "/api/v1/tasks")],
)
async def test_a_streamed_body_over_the_limit_is_413(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    request = client.build_request(method, path, content=chunks(agent_json(LIMIT + 1)))
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    response = await client.send(request)
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


async def test_a_streamed_body_within_the_limit_is_read_whole(client: httpx.AsyncClient) -> None:
    request = client.build_request(
        "POST", "/api/v1/agents/", content=chunks(agent_json(LIMIT), size=1000), headers=JSON
    )
    assert "content-length" not in request.headers
    response = await client.send(request)
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "Padded"
