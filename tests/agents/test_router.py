"""Agents API: every endpoint, field format, default and validation rule of the spec."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.api import (
    DEFAULT_MODEL,
    assert_error,
    assert_utc,
    check_each,
    make_agent,
    make_task,
    make_workflow,
)

SPEC_CREATE_BODY = {
    "name": "New Agent",
    "role": "Agent Role",
    "goal": "Agent goal description",
    "backstory": "Agent backstory (optional)",
    "model": "llama-4-maverick-17b-128e-instruct",
    "temperature": "0.6",
    "max_tokens": 32768,
    "top_p": "0.9",
    "is_active": True,
    "config": {},
    "capabilities": ["Capability 1", "Capability 2"],
    "tools": ["tool1", "tool2"],
}
READ_FIELDS = {
    "id", "name", "role", "goal", "backstory", "model", "temperature", "max_tokens", "top_p",
    "is_active", "created_at", "updated_at", "created_by", "config", "capabilities", "tools",
}  # fmt: skip


# -- create ----------------------------------------------------------------------------------


async def test_create_with_required_fields_only_applies_the_spec_defaults(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/api/v1/agents/", json={"name": "Writer", "role": "Author", "goal": "Write"}
    )
    assert response.status_code == 201, response.text
    agent = response.json()
    assert set(agent) == READ_FIELDS
    assert isinstance(agent["id"], int)
    assert agent["model"] == DEFAULT_MODEL
    assert agent["temperature"] == "0.6"
    assert agent["max_tokens"] == 32768
    assert agent["top_p"] == "0.9"
    assert agent["is_active"] is True
    assert agent["capabilities"] == []
    assert agent["tools"] == []
    assert agent["config"] is None
    assert agent["backstory"] is None
    assert agent["created_by"] is None
    assert_utc(agent["created_at"])
    assert_utc(agent["updated_at"])
    explicit_null = await make_agent(client, "No model", model=None)
    assert explicit_null["model"] == DEFAULT_MODEL


async def test_create_accepts_the_spec_request_body_verbatim(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/agents/", json=SPEC_CREATE_BODY)
    assert response.status_code == 201, response.text
    agent = response.json()
    for field, value in SPEC_CREATE_BODY.items():
        assert agent[field] == value, field
    fetched = await client.get(f"/api/v1/agents/{agent['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == agent


@pytest.mark.parametrize("path", ["/api/v1/agents/", "/api/v1/agents"])
async def test_create_answers_with_and_without_trailing_slash(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.post(path, json={"name": "A", "role": "r", "goal": "g"})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "A"


NUMBER_FORMATS = [
    ("temperature", 0.6, "0.6"),
    ("temperature", "0.6", "0.6"),
    ("temperature", " 1.25 ", "1.25"),
    ("temperature", 1, "1.0"),
    ("temperature", "2", "2.0"),
    ("temperature", 0, "0.0"),
    ("temperature", 0.00001, "0.00001"),
    ("top_p", 0.9, "0.9"),
    ("top_p", "0.95", "0.95"),
    ("top_p", 1, "1.0"),
    ("top_p", "0", "0.0"),
]


async def test_temperature_and_top_p_accept_numbers_or_strings_and_answer_strings(
    client: httpx.AsyncClient,
) -> None:
    async def check(field: str, sent: Any, returned: str) -> None:
        agent = await make_agent(client, f"{field}={sent!r}", **{field: sent})
        assert agent[field] == returned
        assert (await client.get(f"/api/v1/agents/{agent['id']}")).json()[field] == returned

    await check_each(NUMBER_FORMATS, check)


async def test_boundary_values_are_accepted(client: httpx.AsyncClient) -> None:
    agent = await make_agent(
        client, name="N" * 200, temperature=2, top_p=0, max_tokens=1, capabilities=["c" * 200]
    )
    assert agent["name"] == "N" * 200
    assert (agent["temperature"], agent["top_p"], agent["max_tokens"]) == ("2.0", "0.0", 1)


async def test_config_is_an_object_or_null_and_lists_keep_their_order(
    client: httpx.AsyncClient,
) -> None:
    config = {"nested": {"list": [1, 2.5, "x", None, True]}, "empty": {}}
    agent = await make_agent(client, config=config, capabilities=["b", "a"], tools=["t2", "t1"])
    assert agent["config"] == config
    assert agent["capabilities"] == ["b", "a"]
    assert agent["tools"] == ["t2", "t1"]
    assert (await make_agent(client, name="Other", config=None))["config"] is None


async def test_config_keys_the_engine_reads_are_checked_and_kept(
    client: httpx.AsyncClient,
) -> None:
    config = {"max_iter": 3, "fallback_models": [" gpt-oss-120b ", "openai:gpt-4o-mini"], "x": 1}
    agent = await make_agent(client, config=config)
    assert agent["config"] == {
        "max_iter": 3,
        "fallback_models": ["gpt-oss-120b", "openai:gpt-4o-mini"],
        "x": 1,
    }
    assert (await client.get(f"/api/v1/agents/{agent['id']}")).json()["config"] == agent["config"]
    changed = await client.put(
        f"/api/v1/agents/{agent['id']}", json={"config": {"fallback_models": []}}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["config"] == {"fallback_models": []}
    refused = await client.post(
        "/api/v1/agents/",
        json={"name": "Bad", "role": "r", "goal": "g", "config": {"max_iter": 0}},
    )
    message = assert_error(refused, 422, "VALIDATION_ERROR", fields=["config"])["message"]
    assert "max_iter must be an integer of at least 1" in message
    refused = await client.put(
        f"/api/v1/agents/{agent['id']}", json={"config": {"fallback_models": ["a", 2]}}
    )
    message = assert_error(refused, 422, "VALIDATION_ERROR", fields=["config"])["message"]
    assert "fallback_models must be a list of model ids" in message


async def test_read_only_fields_are_ignored(client: httpx.AsyncClient) -> None:
    agent = await make_agent(client, id=999, created_by="mallory", updated_at="x")
    assert agent["id"] != 999
    assert agent["created_by"] is None


async def test_unknown_fields_are_refused_naming_them(client: httpx.AsyncClient) -> None:
    body = {"name": "Typo", "role": "r", "goal": "g", "temprature": 0.1}
    refused = await client.post("/api/v1/agents/", json=body)
    details = assert_error(refused, 422, "VALIDATION_ERROR", fields=["temprature"])["details"]
    assert details["fields"] == {"temprature": "unknown field"}
    agent = await make_agent(client)
    refused = await client.put(f"/api/v1/agents/{agent['id']}", json={"temprature": 0.1})
    assert_error(refused, 422, "VALIDATION_ERROR", fields=["temprature"])


# -- validation ------------------------------------------------------------------------------

INVALID_FIELDS: list[tuple[str, Any]] = [
    ("name", ""),
    ("name", "   "),
    ("name", "x" * 201),
    ("name", None),
    ("name", 5),
    ("name", ["a"]),
    ("name", "nul\x00char"),
    ("role", ""),
    ("role", "  \t "),
    ("role", None),
    ("goal", ""),
    ("goal", None),
    ("model", ""),
    ("model", "m" * 201),
    ("temperature", -0.1),
    ("temperature", 2.01),
    ("temperature", "2.5"),
    ("temperature", "warm"),
    ("temperature", "1e-1"),
    ("temperature", True),
    ("temperature", None),
    ("temperature", [0.5]),
    ("top_p", -0.01),
    ("top_p", 1.01),
    ("top_p", "1.5"),
    ("top_p", False),
    ("top_p", {}),
    ("max_tokens", 0),
    ("max_tokens", -1),
    ("max_tokens", 1_000_001),
    ("max_tokens", True),
    ("max_tokens", "100"),
    ("max_tokens", 1.5),
    ("max_tokens", None),
    ("max_tokens", [1]),
    ("is_active", "yes"),
    ("is_active", 1),
    ("is_active", None),
    ("capabilities", "Web Search"),
    ("capabilities", [1, 2]),
    ("capabilities", None),
    ("capabilities", ["c" * 201]),
    ("tools", {"a": 1}),
    ("tools", [None]),
    ("config", []),
    ("config", "text"),
    ("config", 5),
    ("config", {"bad": "nul\x00"}),
    ("config", {"max_iter": 0}),
    ("config", {"max_iter": -3}),
    ("config", {"max_iter": "5"}),
    ("config", {"max_iter": True}),
    ("config", {"max_iter": 1.5}),
    ("config", {"max_iter": None}),
    ("config", {"fallback_models": "gpt-oss-120b"}),
    ("config", {"fallback_models": None}),
    ("config", {"fallback_models": {"a": "b"}}),
    ("config", {"fallback_models": [""]}),
    ("config", {"fallback_models": ["gpt-oss-120b", "  "]}),
    ("config", {"fallback_models": [1]}),
    ("config", {"fallback_models": [None]}),
    ("config", {"fallback_models": [["gpt-oss-120b"]]}),
    ("config", {"fallback_models": ["m" * 201]}),
    ("backstory", 7),
    ("backstory", "x" * 100_001),
]


async def test_create_rejects_each_invalid_field_with_422_naming_it(
    client: httpx.AsyncClient,
) -> None:
    async def check(field: str, value: Any) -> None:
        body = {"name": "Valid", "role": "r", "goal": "g", field: value}
        response = await client.post("/api/v1/agents/", json=body)
        assert_error(response, 422, "VALIDATION_ERROR", fields=[field])

    await check_each(INVALID_FIELDS, check)
    assert (await client.get("/api/v1/agents/", params={"active_only": False})).json() == []


async def test_every_missing_required_field_is_named(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/agents/", json={})
    body = assert_error(response, 422, "VALIDATION_ERROR", fields=["name", "role", "goal"])
    assert "name" in body["message"]


async def test_every_bad_field_is_named_at_once(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/agents/",
        json={"name": "", "role": "r", "goal": "g", "temperature": 3, "top_p": -1,
              "max_tokens": 0},
    )  # fmt: skip
    assert_error(
        response, 422, "VALIDATION_ERROR", fields=["name", "temperature", "top_p", "max_tokens"]
    )


# -- get and list ----------------------------------------------------------------------------


async def test_get_unknown_agent_is_404(client: httpx.AsyncClient) -> None:
    body = assert_error(await client.get("/api/v1/agents/42"), 404, "NOT_FOUND")
    assert body["details"] == {"resource": "agent", "id": 42}


async def test_ids_outside_the_id_range_are_404_and_non_integers_422(
    client: httpx.AsyncClient,
) -> None:
    async def not_found(agent_id: str) -> None:
        for method in ("GET", "PUT", "DELETE"):
            response = await client.request(method, f"/api/v1/agents/{agent_id}", json={})
            assert_error(response, 404, "NOT_FOUND")

    async def invalid(agent_id: str) -> None:
        for method in ("GET", "PUT", "DELETE"):
            response = await client.request(method, f"/api/v1/agents/{agent_id}", json={})
            assert_error(response, 422, "VALIDATION_ERROR", fields=["agent_id"])

    await check_each(["0", "-1", "2147483648", "99999999999999999999"], not_found)
    await check_each(["abc", "1.5"], invalid)


@pytest.mark.parametrize("path", ["/api/v1/agents/", "/api/v1/agents"])
async def test_list_answers_with_and_without_trailing_slash_and_counts(
    client: httpx.AsyncClient, path: str
) -> None:
    for name in ("A", "B", "C"):
        await make_agent(client, name)
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["X-Total-Count"] == "3"
    assert [a["name"] for a in response.json()] == ["A", "B", "C"]


async def test_list_pages_with_skip_and_limit(client: httpx.AsyncClient) -> None:
    for index in range(5):
        await make_agent(client, f"Agent {index}")
    page = await client.get("/api/v1/agents/", params={"skip": 1, "limit": 2})
    assert [a["name"] for a in page.json()] == ["Agent 1", "Agent 2"]
    assert page.headers["X-Total-Count"] == "5"
    past_end = await client.get("/api/v1/agents/", params={"skip": 10})
    assert past_end.json() == []
    assert past_end.headers["X-Total-Count"] == "5"
    largest = await client.get("/api/v1/agents/", params={"limit": 1000})
    assert len(largest.json()) == 5


async def test_list_shows_only_active_agents_unless_asked(client: httpx.AsyncClient) -> None:
    await make_agent(client, "On")
    await make_agent(client, "Off", is_active=False)
    default = await client.get("/api/v1/agents/")
    assert [a["name"] for a in default.json()] == ["On"]
    assert default.headers["X-Total-Count"] == "1"
    explicit = await client.get("/api/v1/agents/", params={"active_only": "true"})
    assert [a["name"] for a in explicit.json()] == ["On"]
    everything = await client.get("/api/v1/agents/", params={"active_only": "false"})
    assert [a["name"] for a in everything.json()] == ["On", "Off"]
    assert everything.headers["X-Total-Count"] == "2"


BAD_LIST_PARAMS = [
    ({"limit": 0}, "limit"),
    ({"limit": 1001}, "limit"),
    ({"limit": -5}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"limit": "true"}, "limit"),
    ({"skip": -1}, "skip"),
    ({"skip": "x"}, "skip"),
    ({"skip": 2**40}, "skip"),
    ({"active_only": "maybe"}, "active_only"),
]


async def test_list_rejects_bad_query_parameters(client: httpx.AsyncClient) -> None:
    async def check(params: dict[str, Any], field: str) -> None:
        response = await client.get("/api/v1/agents/", params=params)
        assert_error(response, 422, "VALIDATION_ERROR", fields=[field])

    await check_each(BAD_LIST_PARAMS, check)


# -- update ----------------------------------------------------------------------------------


async def test_update_changes_only_the_fields_sent(client: httpx.AsyncClient) -> None:
    agent = await make_agent(client, backstory="Old", capabilities=["x"], config={"a": 1})
    response = await client.put(f"/api/v1/agents/{agent['id']}", json={"temperature": 1.5})
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["temperature"] == "1.5"
    unchanged = {k: v for k, v in updated.items() if k not in ("temperature", "updated_at")}
    assert unchanged == {k: v for k, v in agent.items() if k not in ("temperature", "updated_at")}
    assert updated["updated_at"] >= agent["updated_at"]
    assert_utc(updated["updated_at"])
    assert (await client.get(f"/api/v1/agents/{agent['id']}")).json() == updated


async def test_update_with_every_field_replaces_them(client: httpx.AsyncClient) -> None:
    agent = await make_agent(client)
    body = {**SPEC_CREATE_BODY, "name": "Renamed", "temperature": 0.1, "top_p": "0.5",
            "max_tokens": 100, "is_active": False, "config": {"k": "v"}, "tools": []}  # fmt: skip
    updated = (await client.put(f"/api/v1/agents/{agent['id']}", json=body)).json()
    expected = {**body, "temperature": "0.1", "top_p": "0.5"}
    for field, value in expected.items():
        assert updated[field] == value, field


async def test_update_with_an_empty_body_changes_nothing(client: httpx.AsyncClient) -> None:
    agent = await make_agent(client)
    response = await client.put(f"/api/v1/agents/{agent['id']}", json={})
    assert response.status_code == 200
    assert {k: v for k, v in response.json().items() if k != "updated_at"} == {
        k: v for k, v in agent.items() if k != "updated_at"
    }


REQUIRED = ["name", "role", "goal", "model", "temperature", "max_tokens", "top_p", "is_active",
            "capabilities", "tools"]  # fmt: skip


async def test_update_rejects_explicit_null_on_each_required_field(
    client: httpx.AsyncClient,
) -> None:
    agent = await make_agent(client)

    async def check(field: str) -> None:
        response = await client.put(f"/api/v1/agents/{agent['id']}", json={field: None})
        assert_error(response, 422, "VALIDATION_ERROR", fields=[field])

    await check_each(REQUIRED, check)
    assert (await client.get(f"/api/v1/agents/{agent['id']}")).json() == agent


async def test_update_accepts_null_on_the_nullable_fields(client: httpx.AsyncClient) -> None:
    agent = await make_agent(client, backstory="Story", config={"a": 1})
    response = await client.put(
        f"/api/v1/agents/{agent['id']}", json={"backstory": None, "config": None}
    )
    assert response.status_code == 200, response.text
    assert (response.json()["backstory"], response.json()["config"]) == (None, None)


async def test_update_rejects_each_invalid_field_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    agent = await make_agent(client)

    async def check(field: str, value: Any) -> None:
        response = await client.put(
            f"/api/v1/agents/{agent['id']}", json={"role": "Changed", field: value}
        )
        assert_error(response, 422, "VALIDATION_ERROR", fields=[field])

    await check_each(INVALID_FIELDS, check)
    assert (await client.get(f"/api/v1/agents/{agent['id']}")).json() == agent


async def test_update_unknown_agent_is_404(client: httpx.AsyncClient) -> None:
    assert_error(await client.put("/api/v1/agents/7", json={"role": "x"}), 404, "NOT_FOUND")


# -- unique names ----------------------------------------------------------------------------


async def test_duplicate_name_on_create_is_409(client: httpx.AsyncClient) -> None:
    await make_agent(client, "Twin")
    response = await client.post("/api/v1/agents/", json={"name": "Twin", "role": "r", "goal": "g"})
    body = assert_error(response, 409, "CONFLICT")
    assert body["details"]["field"] == "name"
    assert (await client.get("/api/v1/agents/")).headers["X-Total-Count"] == "1"


async def test_duplicate_name_on_update_is_409_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    await make_agent(client, "First")
    second = await make_agent(client, "Second")
    response = await client.put(
        f"/api/v1/agents/{second['id']}", json={"name": "First", "role": "Changed"}
    )
    assert_error(response, 409, "CONFLICT")
    assert (await client.get(f"/api/v1/agents/{second['id']}")).json() == second


async def test_renaming_an_agent_to_its_own_name_is_fine(client: httpx.AsyncClient) -> None:
    agent = await make_agent(client, "Same")
    response = await client.put(f"/api/v1/agents/{agent['id']}", json={"name": "Same"})
    assert response.status_code == 200


async def test_concurrent_creates_of_one_name_let_exactly_one_win(
    client: httpx.AsyncClient,
) -> None:
    body = {"name": "Racer", "role": "r", "goal": "g"}
    responses = await asyncio.gather(
        *(client.post("/api/v1/agents/", json=body) for _ in range(20))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 19, statuses
    for response in responses:
        if response.status_code == 409:
            assert_error(response, 409, "CONFLICT")
    listed = await client.get("/api/v1/agents/")
    assert [a["name"] for a in listed.json()] == ["Racer"]


async def test_concurrent_renames_to_one_name_let_exactly_one_win(
    client: httpx.AsyncClient,
) -> None:
    agents = [await make_agent(client, f"Agent {i}") for i in range(10)]
    responses = await asyncio.gather(
        *(client.put(f"/api/v1/agents/{a['id']}", json={"name": "Taken"}) for a in agents)
    )
    assert sorted(r.status_code for r in responses) == [200] + [409] * 9
    names = [a["name"] for a in (await client.get("/api/v1/agents/")).json()]
    assert names.count("Taken") == 1


# -- delete ----------------------------------------------------------------------------------


async def test_delete_removes_the_agent(client: httpx.AsyncClient) -> None:
    agent = await make_agent(client)
    response = await client.delete(f"/api/v1/agents/{agent['id']}")
    assert response.status_code == 200
    assert response.json() == {
        "id": agent["id"],
        "deleted": True,
        "message": f"Agent {agent['id']} deleted",
    }
    assert_error(await client.get(f"/api/v1/agents/{agent['id']}"), 404, "NOT_FOUND")
    assert_error(await client.delete(f"/api/v1/agents/{agent['id']}"), 404, "NOT_FOUND")
    # The name is free again.
    await make_agent(client, agent["name"])


async def test_delete_of_an_agent_that_tasks_use_is_409_with_their_ids(
    client: httpx.AsyncClient,
) -> None:
    agent = await make_agent(client)
    other = await make_agent(client, "Other")
    first = await make_workflow(client, "First")
    second = await make_workflow(client, "Second")
    t1 = await make_task(client, first["id"], "T1", agent_id=agent["id"])
    await make_task(client, first["id"], "T2", agent_id=other["id"])
    t3 = await make_task(client, second["id"], "T3", agent_id=agent["id"])
    response = await client.delete(f"/api/v1/agents/{agent['id']}")
    body = assert_error(response, 409, "CONFLICT")
    assert body["details"]["task_ids"] == [t1["id"], t3["id"]]
    assert (await client.get(f"/api/v1/agents/{agent['id']}")).status_code == 200
    # Once no task uses it, it goes.
    await client.put(f"/api/v1/tasks/{t1['id']}", json={"agent_id": None})
    await client.delete(f"/api/v1/tasks/{t3['id']}")
    assert (await client.delete(f"/api/v1/agents/{agent['id']}")).status_code == 200


async def test_a_delete_racing_a_new_task_for_the_agent_is_never_a_500(
    client: httpx.AsyncClient,
) -> None:
    """Either the task is created first (the delete is a 409 naming it) or the agent is gone
    first (the task is a 422 naming agent_id); never a foreign-key failure in between."""
    workflow = await make_workflow(client)
    for round_ in range(10):
        agent = await make_agent(client, f"Agent {round_}")
        deleted, created = await asyncio.gather(
            client.delete(f"/api/v1/agents/{agent['id']}"),
            client.post(
                "/api/v1/tasks/",
                json={"workflow_id": workflow["id"], "agent_id": agent["id"], "name": "T"},
            ),
        )
        if deleted.status_code == 200:
            assert_error(created, 422, "VALIDATION_ERROR", fields=["agent_id"])
        else:
            assert created.status_code == 201, created.text
            body = assert_error(deleted, 409, "CONFLICT")
            assert body["details"]["task_ids"] == [created.json()["id"]]
