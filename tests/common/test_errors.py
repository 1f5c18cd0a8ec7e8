"""Every error, the framework's included, is the spec's envelope
{"error": CODE, "message": ..., "details": {...}}, and no stack trace reaches a client."""

from __future__ import annotations

import httpx

from tests.api import assert_error, check_each, make_agent, make_workflow
from tests.common.conftest import FailingWrites

JSON = {"content-type": "application/json"}


# -- 404 and 405 -----------------------------------------------------------------------------


UNKNOWN_ROUTES = [
    ("GET", "/"),
    ("GET", "/nope"),
    ("GET", "/api/v1/nope"),
    ("POST", "/api/v1/agents/1/unknown"),
    ("GET", "/api/v2/agents/"),
    ("DELETE", "/api/v1/tasks/workflow/1/extra"),
]
WRONG_METHODS = [
    ("PATCH", "/api/v1/agents/1", "GET, PUT, DELETE"),
    ("POST", "/api/v1/agents/1", "GET, PUT, DELETE"),
    ("DELETE", "/api/v1/agents/", "GET, POST"),
    ("PUT", "/api/v1/agents", "GET, POST"),
    ("DELETE", "/api/v1/workflows/", "GET, POST"),
    ("PATCH", "/api/v1/workflows/1", "GET, PUT, DELETE"),
    ("GET", "/api/v1/workflows/1/execute", "POST"),
    ("PUT", "/api/v1/tasks/", "GET, POST"),
    ("POST", "/api/v1/tasks/workflow/1", "GET"),
    ("PATCH", "/api/v1/tasks/1", "GET, PUT, DELETE"),
]


async def test_unknown_routes_are_404_in_the_envelope(client: httpx.AsyncClient) -> None:
    async def check(method: str, path: str) -> None:
        body = assert_error(await client.request(method, path), 404, "NOT_FOUND")
        assert path in body["message"]

    await check_each(UNKNOWN_ROUTES, check)


async def test_wrong_methods_are_405_listing_every_allowed_method(
    client: httpx.AsyncClient,
) -> None:
    async def check(method: str, path: str, allowed: str) -> None:
        response = await client.request(method, path)
        body = assert_error(response, 405, "METHOD_NOT_ALLOWED")
        assert response.headers["allow"] == allowed
        assert body["details"]["allowed_methods"] == allowed.split(", ")

    await check_each(WRONG_METHODS, check)


# -- 400: not JSON ---------------------------------------------------------------------------

MALFORMED = [
    b"{bad",
    b'{"name": "x",}',
    b"{'name': 'x'}",
    b'{"name": ',
    b'{"name": "x"} trailing',
    b"\xff\xfe{}",
    b"nul",
]


WRITES = [
    ("POST", "/api/v1/agents/"),
    ("PUT", "/api/v1/agents/1"),
    ("POST", "/api/v1/workflows"),
    ("PUT", "/api/v1/workflows/1"),
    ("POST", "/api/v1/tasks/"),
    ("PUT", "/api/v1/tasks/1"),
]


async def test_malformed_json_is_400_invalid_json(client: httpx.AsyncClient) -> None:
    async def check(payload: bytes, method: str, path: str) -> None:
        response = await client.request(method, path, content=payload, headers=JSON)
        body = assert_error(response, 400, "INVALID_JSON")
        assert "reason" in body["details"]

    await check_each([(p, m, path) for p in MALFORMED for m, path in WRITES], check)


# -- 422: JSON that is not a valid request ---------------------------------------------------


async def test_a_body_that_is_not_an_object_is_422_naming_the_body(
    client: httpx.AsyncClient,
) -> None:
    async def check(payload: bytes) -> None:
        response = await client.post("/api/v1/agents/", content=payload, headers=JSON)
        assert_error(response, 422, "VALIDATION_ERROR", fields=["body"])

    await check_each([b"[]", b"[1, 2]", b'"agent"', b"42", b"null", b"true", b""], check)


async def test_a_json_body_sent_as_another_content_type_is_refused(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/api/v1/agents/",
        content=b'{"name": "A", "role": "r", "goal": "g"}',
        headers={"content-type": "text/plain"},
    )
    assert_error(response, 422, "VALIDATION_ERROR")
    assert (await client.get("/api/v1/agents/")).json() == []


UNSTORABLE = [
    (b'{"name": "A", "role": "r", "goal": "g", "config": {"x": NaN}}', "config"),
    (b'{"name": "A", "role": "r", "goal": "g", "config": {"x": [Infinity]}}', "config"),
    (b'{"name": "A", "role": "r", "goal": "g", "temperature": NaN}', "temperature"),
    (b'{"name": "A", "role": "r", "goal": "g", "top_p": -Infinity}', "top_p"),
    (b'{"name": "A\\ud800", "role": "r", "goal": "g"}', "name"),
    (b'{"name": "A", "role": "r", "goal": "g", "config": {"\\udc00": 1}}', "config"),
    (b'{"name": "A", "role": "r", "goal": "g", "tools": ["t\\u0000"]}', "tools"),
    (b'{"name": "A", "role": "r\\u0000", "goal": "g"}', "role"),
]


async def test_values_json_cannot_carry_or_the_database_cannot_store_are_422(
    client: httpx.AsyncClient,
) -> None:
    async def check(payload: bytes, field: str) -> None:
        response = await client.post("/api/v1/agents/", content=payload, headers=JSON)
        assert_error(response, 422, "VALIDATION_ERROR", fields=[field])

    await check_each(UNSTORABLE, check)
    assert (await client.get("/api/v1/agents/")).json() == []


async def test_validation_errors_name_every_bad_field_of_path_query_and_body(
    client: httpx.AsyncClient,
) -> None:
    response = await client.put(
        "/api/v1/agents/abc", json={"name": "", "temperature": 9, "max_tokens": "many"}
    )
    body = assert_error(
        response, 422, "VALIDATION_ERROR", fields=["agent_id", "name", "temperature", "max_tokens"]
    )
    assert body["message"].startswith("Invalid request: ")
    for entry in body["details"]["errors"]:
        assert set(entry) == {"field", "message", "type"}
    listed = await client.get("/api/v1/tasks/", params={"limit": 0, "skip": -1, "status": "x"})
    assert_error(listed, 422, fields=["limit", "skip", "status"])


# -- 409 and 500 -----------------------------------------------------------------------------


async def test_conflicts_are_409_in_the_envelope(client: httpx.AsyncClient) -> None:
    await make_agent(client, "Dup")
    response = await client.post("/api/v1/agents/", json={"name": "Dup", "role": "r", "goal": "g"})
    body = assert_error(response, 409, "CONFLICT")
    assert body["details"] == {"field": "name", "value": "Dup"}


async def test_an_unexpected_failure_is_a_500_envelope_without_internals(
    client: httpx.AsyncClient, failing_writes: FailingWrites
) -> None:
    async with failing_writes("agents", "INSERT"):
        response = await client.post(
            "/api/v1/agents/", json={"name": "Doomed", "role": "r", "goal": "g"}
        )
    body = assert_error(response, 500, "INTERNAL_ERROR")
    assert body["details"] == {}
    for leak in ("refused by test trigger", "sqlalchemy", "INSERT INTO", "agents"):
        assert leak not in response.text
    # Nothing was written, and the service carries on.
    assert (await client.get("/api/v1/agents/", params={"active_only": False})).json() == []
    assert (await make_agent(client, "Doomed"))["name"] == "Doomed"


async def test_a_failed_update_writes_nothing(
    client: httpx.AsyncClient, failing_writes: FailingWrites
) -> None:
    workflow = await make_workflow(client, description="Before")
    async with failing_writes("workflows", "UPDATE"):
        response = await client.put(
            f"/api/v1/workflows/{workflow['id']}",
            json={"description": "After", "workflow_type": "parallel"},
        )
    assert_error(response, 500, "INTERNAL_ERROR")
    assert (await client.get(f"/api/v1/workflows/{workflow['id']}")).json() == workflow
