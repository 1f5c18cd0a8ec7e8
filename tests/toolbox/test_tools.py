"""`/api/v1/tools`: built-in tools listed, HTTP tools created, changed and deleted by name."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api import assert_error, check_each, make_agent

BUILTINS = {"calculator", "current_time", "fetch_url", "web_search"}
SECRET_VALUE = "s3cret-from-the-environment"
WEATHER = {
    "name": "weather",
    "description": "Current weather of a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "http": {
        "method": "GET",
        "url": "https://weather.example.com/now",
        "headers": {"Authorization": "Bearer ${WEATHER_TOKEN}"},
    },
}


async def make_tool(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/tools/", json={**WEATHER, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_lists_the_builtin_tools_and_shows_one(client: httpx.AsyncClient) -> None:
    listed = await client.get("/api/v1/tools/")
    assert listed.status_code == 200
    by_name = {tool["name"]: tool for tool in listed.json()}
    assert set(by_name) >= BUILTINS
    assert listed.headers["X-Total-Count"] == str(len(by_name))
    calculator = by_name["calculator"]
    assert calculator["source"] == "builtin"
    assert calculator["server"] is None and calculator["available"] is True
    assert calculator["parameters"]["type"] == "object"
    shown = await client.get("/api/v1/tools/calculator")
    assert shown.status_code == 200
    assert shown.json() == calculator


async def test_an_unknown_tool_is_a_404(client: httpx.AsyncClient) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = await client.request(
            method, "/api/v1/tools/nope", json={} if method == "PUT" else None
        )
        body = assert_error(response, 404, "NOT_FOUND")
        assert body["message"] == "Tool nope not found"


async def test_an_http_tool_is_created_listed_and_shown(client: httpx.AsyncClient) -> None:
    created = await make_tool(client)
    assert created == {**WEATHER, "source": "http", "server": None, "available": True}
    listed = {t["name"]: t for t in (await client.get("/api/v1/tools")).json()}
    assert listed["weather"] == created
    assert (await client.get("/api/v1/tools/weather")).json() == created


async def test_defaults_of_an_http_tool(client: httpx.AsyncClient) -> None:
    body = {"name": "ping", "description": "Ping", "http": {"url": "http://ping.example.com/"}}
    response = await client.post("/api/v1/tools/", json=body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["parameters"] == {"type": "object", "properties": {}}
    assert created["http"] == {"method": "POST", "url": "http://ping.example.com/", "headers": {}}


async def test_secret_references_are_never_resolved_in_answers(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEATHER_TOKEN", SECRET_VALUE)
    answers = [
        await client.post("/api/v1/tools/", json=WEATHER),
        await client.get("/api/v1/tools/"),
        await client.get("/api/v1/tools/weather"),
        await client.put("/api/v1/tools/weather", json={"description": "Weather now"}),
    ]
    for answer in answers:
        assert answer.status_code in (200, 201), answer.text
        assert SECRET_VALUE not in answer.text
        assert "Bearer ${WEATHER_TOKEN}" in answer.text


async def test_a_bad_parameters_schema_is_a_422_naming_parameters(
    client: httpx.AsyncClient,
) -> None:
    async def check(parameters: Any) -> None:
        response = await client.post("/api/v1/tools/", json={**WEATHER, "parameters": parameters})
        assert_error(response, 422, "VALIDATION_ERROR", fields=["parameters"])

    await check_each(
        [
            {"type": "string"},
            {"properties": {"city": {"type": "string"}}},
            {"type": "object", "properties": {"city": {"type": "no-such-type"}}},
            {"type": "object", "properties": ["city"]},
            {"type": "object", "required": "city"},
            ["type", "object"],
        ],
        check,
    )
    assert (await client.get("/api/v1/tools/weather")).status_code == 404


async def test_bad_names_methods_and_urls_are_422s(client: httpx.AsyncClient) -> None:
    async def check(change: dict[str, Any], field: str) -> None:
        response = await client.post("/api/v1/tools/", json={**WEATHER, **change})
        assert_error(response, 422, "VALIDATION_ERROR", fields=[field])

    http = WEATHER["http"]
    await check_each(
        [
            ({"name": "has space"}, "name"),
            ({"name": ""}, "name"),
            ({"name": "x" * 65}, "name"),
            ({"name": "a." * 22 + "b"}, "name"),  # 45 characters, 87 once dots become "__"
            ({"name": "ünïcode"}, "name"),
            ({"description": ""}, "description"),
            ({"http": {**http, "method": "TRACE"}}, "http.method"),
            ({"http": {**http, "url": "ftp://example.com/x"}}, "http.url"),
            ({"http": {**http, "url": "file:///etc/passwd"}}, "http.url"),
            ({"http": {**http, "url": "http://"}}, "http.url"),
            ({"http": {**http, "headers": {"X-Number": 5}}}, "http.headers"),
            ({"http": {**http, "body": "x"}}, "http.body"),
            ({"http": None}, "http"),
            ({"unknown": 1}, "unknown"),
        ],
        check,
    )


async def test_names_are_unique_across_every_source(client: httpx.AsyncClient) -> None:
    await make_tool(client)
    for name in ("weather", "calculator"):
        response = await client.post("/api/v1/tools/", json={**WEATHER, "name": name})
        body = assert_error(response, 409, "CONFLICT")
        assert body["details"] == {"field": "name", "value": name}
        assert repr(name) in body["message"]


async def test_put_changes_the_fields_sent(client: httpx.AsyncClient) -> None:
    await make_tool(client)
    partial = await client.put("/api/v1/tools/weather", json={"description": "Weather now"})
    assert partial.status_code == 200, partial.text
    assert partial.json() == {
        **WEATHER,
        "description": "Weather now",
        "source": "http",
        "server": None,
        "available": True,
    }
    shown = (await client.get("/api/v1/tools/weather")).json()
    assert shown["description"] == "Weather now"
    # A body read from the API can be sent back (read-only fields are ignored), renamed.
    renamed = await client.put(
        "/api/v1/tools/weather",
        json={**shown, "name": "weather.now", "http": {"url": "https://w.example.com/"}},
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "weather.now"
    assert renamed.json()["http"] == {
        "method": "POST",
        "url": "https://w.example.com/",
        "headers": {},
    }
    assert (await client.get("/api/v1/tools/weather")).status_code == 404
    assert (await client.get("/api/v1/tools/weather.now")).status_code == 200


async def test_put_refuses_bad_values_and_taken_names(client: httpx.AsyncClient) -> None:
    await make_tool(client)
    await make_tool(client, name="other")
    taken = await client.put("/api/v1/tools/other", json={"name": "weather"})
    assert_error(taken, 409, "CONFLICT")
    builtin_name = await client.put("/api/v1/tools/other", json={"name": "fetch_url"})
    assert_error(builtin_name, 409, "CONFLICT")
    bad = await client.put("/api/v1/tools/other", json={"parameters": {"type": "array"}})
    assert_error(bad, 422, "VALIDATION_ERROR", fields=["parameters"])
    null = await client.put("/api/v1/tools/other", json={"http": None})
    assert_error(null, 422, "VALIDATION_ERROR", fields=["http"])
    assert (await client.get("/api/v1/tools/other")).json()["name"] == "other"


async def test_builtin_tools_cannot_be_changed_or_deleted(client: httpx.AsyncClient) -> None:
    changed = await client.put("/api/v1/tools/calculator", json={"description": "mine"})
    body = assert_error(changed, 409, "CONFLICT")
    assert "built-in" in body["message"]
    assert body["details"] == {"tool": "calculator", "source": "builtin", "intent": "update"}
    deleted = await client.delete("/api/v1/tools/calculator")
    assert assert_error(deleted, 409, "CONFLICT")["details"]["intent"] == "delete"
    assert (await client.get("/api/v1/tools/calculator")).status_code == 200


async def test_delete_is_refused_while_agents_name_the_tool(client: httpx.AsyncClient) -> None:
    await make_tool(client)
    user = await make_agent(client, "Forecaster", tools=["calculator", "weather"])
    await make_agent(client, "Bystander", tools=["calculator"])
    refused = await client.delete("/api/v1/tools/weather")
    body = assert_error(refused, 409, "CONFLICT")
    assert body["details"]["agents"] == [
        {"id": user["id"], "name": "Forecaster", "tools": ["weather"]}
    ]
    assert "Forecaster" in body["message"]
    assert (await client.get("/api/v1/tools/weather")).status_code == 200

    await client.put(f"/api/v1/agents/{user['id']}", json={"tools": ["calculator"]})
    deleted = await client.delete("/api/v1/tools/weather")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"name": "weather", "deleted": True, "message": "Tool weather deleted"}
    assert (await client.get("/api/v1/tools/weather")).status_code == 404
