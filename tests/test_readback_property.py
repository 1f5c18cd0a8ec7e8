"""Property: whatever the API accepts it can read back, on both backends.

Generated agent, workflow and task bodies (deep and wide JSON, strings around their limits,
any unicode, NaN, stray fields) are POSTed, and the task body also PUT over an existing task.
Every 2xx must be readable with 200, alone and in the list that contains it; every refusal
must be a 4xx in the error envelope. Nothing may ever answer 500.
"""

from __future__ import annotations

import json
from itertools import count
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from crew_platform.common.limits import (
    MAX_JSON_DEPTH,
    NAME_LENGTH,
    REQUIRED_TEXT_LENGTH,
    TASK_TYPE_LENGTH,
)
from tests.api import make_task, make_workflow

API = "/api/v1"
_unique = count()


def _nest(depth: int, shape: int) -> dict[str, Any]:
    """An object `depth` levels deep; the bits of `shape` choose object or array per level."""
    value: Any = 1
    for level in range(depth - 1):
        value = {"k": value} if (shape >> (level % 16)) & 1 else [value]
    return {"k": value}


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["\x00", "\ud800", "é" * 3, "🦀"])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=40,
)
deep_objects = st.builds(
    _nest,
    st.integers(MAX_JSON_DEPTH - 2, MAX_JSON_DEPTH + 2) | st.integers(1, 400),
    st.integers(0, 2**16 - 1),
)
free_form = (
    st.none()
    | st.dictionaries(st.text(max_size=8), json_values, max_size=6)
    | deep_objects
    | json_values
)


def around(limit: int, char: str = "é") -> st.SearchStrategy[str]:
    """Strings one or two characters either side of `limit` (multi-byte: characters count)."""
    return st.integers(limit - 2, limit + 2).map(lambda n: char * n)


def unique(texts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Texts made unique by a numeric prefix, keeping their length (a repeated name is a 409,
    which teaches little)."""
    return texts.map(lambda t: f"{next(_unique)}{t}"[: len(t)])


names = unique(st.text(min_size=1, max_size=20) | around(NAME_LENGTH)) | st.text(max_size=2)
stray_fields = st.just({}) | st.dictionaries(
    st.sampled_from(["id", "created_at", "status", "task_count", "temprature", "created_by"]),
    scalars,
    max_size=2,
)
labels = st.lists(st.text(min_size=1, max_size=8), max_size=3)

agent_bodies = st.fixed_dictionaries(
    {
        "name": names,
        "role": st.text(min_size=1, max_size=10) | around(REQUIRED_TEXT_LENGTH),
        "goal": st.text(min_size=1, max_size=10),
    },
    optional={
        "backstory": st.none() | st.text(),
        "model": st.none() | around(NAME_LENGTH, "m"),
        "temperature": st.floats(0, 2) | st.floats() | st.text(max_size=5),
        "max_tokens": st.integers(1, 10**6) | st.integers() | st.booleans(),
        "config": free_form,
        "capabilities": labels | st.lists(around(NAME_LENGTH), max_size=2),
        "tools": labels | json_values,
        "is_active": st.booleans() | st.integers(0, 1),
    },
)
workflow_bodies = st.fixed_dictionaries(
    {"name": names},
    optional={
        "description": st.none() | st.text(),
        "workflow_type": st.sampled_from(["linear", "parallel", "dag"]),
        "config": free_form | st.builds(lambda n: {"max_parallel": n}, st.integers() | st.floats()),
        "is_active": st.booleans(),
    },
)
task_bodies = st.fixed_dictionaries(
    {"name": names},
    optional={
        "task_type": around(TASK_TYPE_LENGTH, "t") | around(TASK_TYPE_LENGTH) | st.text(max_size=5),
        "description": st.none() | st.text(),
        "priority": st.integers(-(10**6), 10**6) | st.integers(),
        "order": st.integers(-3, 3),
        "input_data": free_form,
        "config": free_form,
        "dependencies": st.just([]) | st.lists(st.integers(), max_size=2),
    },
)


def assert_refusal(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()) == {"error", "message", "details"}, response.text


async def send(client: httpx.AsyncClient, method: str, path: str, body: Any) -> httpx.Response:
    """The body as Python's json writes it: NaN stays NaN, lone surrogates stay escaped."""
    content = json.dumps(body)
    headers = {"content-type": "application/json"}
    return await client.request(method, API + path, content=content, headers=headers)


async def assert_readable(
    client: httpx.AsyncClient, response: httpx.Response, collection: str, **filters: Any
) -> None:
    """The resource answered by a 2xx reads back as answered, alone and in its list."""
    assert response.status_code in (200, 201), response.text
    written = response.json()
    alone = await client.get(f"{API}{collection}{written['id']}")
    assert alone.status_code == 200, alone.text
    assert alone.json() == written
    listed = await client.get(API + collection, params={"limit": 1000, **filters})
    assert listed.status_code == 200, listed.text
    assert written["id"] in [item["id"] for item in listed.json()]


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],  # a failure is reported unshrunk, within timeout
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    agent=agent_bodies,
    workflow=workflow_bodies,
    task=task_bodies,
    strays=stray_fields,
)
async def test_every_accepted_body_reads_back(
    client: httpx.AsyncClient,
    agent: dict[str, Any],
    workflow: dict[str, Any],
    task: dict[str, Any],
    strays: dict[str, Any],
) -> None:
    home = await make_workflow(client, name=f"Home {next(_unique)}")
    existing = await make_task(client, home["id"], name="Existing")

    created = await send(client, "POST", "/agents/", agent | strays)
    event(f"agent {created.status_code}")
    if created.is_success:
        await assert_readable(client, created, "/agents/", active_only=False)
        task["agent_id"] = created.json()["id"]
    else:
        assert_refusal(created)

    created = await send(client, "POST", "/workflows/", workflow | strays)
    event(f"workflow {created.status_code}")
    if created.is_success:
        await assert_readable(client, created, "/workflows/", active_only=False)
        owner = created.json()["id"]
    else:
        assert_refusal(created)
        owner = home["id"]

    created = await send(client, "POST", "/tasks/", task | strays | {"workflow_id": owner})
    event(f"task {created.status_code}")
    if created.is_success:
        await assert_readable(client, created, "/tasks/", workflow_id=owner)
    else:
        assert_refusal(created)

    updated = await send(client, "PUT", f"/tasks/{existing['id']}", task | strays)
    event(f"task update {updated.status_code}")
    if updated.is_success:
        await assert_readable(client, updated, "/tasks/", workflow_id=home["id"])
    else:
        assert_refusal(updated)
