"""A real `crew-platform serve` killed with SIGKILL while a manager's delegations run, then
restarted on the same database: the delegation that had answered is not asked again, the one in
flight is, and `max_delegations` counts the delegations of both attempts. Inside the delegation
in flight, the coworker's finished tool calls are not made again (the test MCP server counts its
invocations, the local site records its requests), nor its model answer that asked for them."""

from __future__ import annotations

from typing import Any

import httpx

from crew_platform.devtools.llm_stub import StubServer
from tests.engine.test_durability import server_env, servers, start  # noqa: F401 (fixtures)
from tests.engine.test_tool_durability import add_tools, site  # noqa: F401 (fixture)
from tests.flows import API, calls_for, eventually, for_task, make_agent, make_task
from tests.support import LiveServer
from tests.tools.conftest import LocalSite, McpTestServer

REFUSED = (
    "Error: you have already delegated 2 times for this task, the most allowed "
    "(config.max_delegations): do not delegate or ask any more, give your final answer "
    "yourself from what you have"
)


def of_role(stub: StubServer, role: str) -> list[dict[str, Any]]:
    return [r for r in stub.requests if r["messages"][0]["content"].startswith(f"You are {role}.")]


async def calls_of(http: httpx.AsyncClient, task_id: int) -> list[tuple[str, str]]:
    runs = (await http.get(f"{API}/tasks/{task_id}/executions")).json()
    return [(c["call_id"], c["status"]) for r in runs for c in r["tool_calls"]]


async def test_sigkill_during_a_delegation_asks_only_the_unfinished_one_again(
    servers: list[LiveServer],  # noqa: F811
    server_env: dict[str, str],  # noqa: F811
    stub: StubServer,
) -> None:
    stub.script(
        for_task(
            "K",
            delegate=[
                {"coworker": "Researcher", "task": "Find", "id": "d1"},
                {"coworker": "Writer", "task": "Draft", "id": "d2"},
                {"coworker": "Researcher", "task": "Find more", "id": "d3"},
            ],
        ),
        {"role": "Researcher", "content": "found"},
        {"role": "Writer", "gate": "writing"},
        {"role": "Writer", "content": "drafted"},
        for_task("K", delegate=[{"coworker": "Writer", "task": "Polish", "id": "d4"}]),
        {"role": "Writer", "content": "polished"},
        for_task("K", content="K done.", quote_tools=True),
        for_task("Other", content="Other done."),
    )
    first = start(servers, server_env)
    async with httpx.AsyncClient(base_url=first.base_url, timeout=30) as http:
        researcher = await make_agent(http, role="Researcher")
        writer = await make_agent(http, role="Writer")
        created = await http.post(
            f"{API}/workflows/",
            json={
                "name": "Managed",
                "workflow_type": "hierarchical",
                "config": {"max_delegations": 2},
            },
        )
        workflow = created.json()
        task = await make_task(http, workflow["id"], researcher["id"], "K", order=0)
        await make_task(http, workflow["id"], writer["id"], "Other", order=1)
        started = (await http.post(f"{API}/workflows/{workflow['id']}/execute", json={})).json()

        async def first_answered() -> bool:
            return stub.waiting_at("writing") == 1 and await calls_of(http, task["id"]) == [
                ("d1", "completed"),
                ("d2", "running"),
                ("d3", "failed"),
            ]

        await eventually(first_answered, what="d1 stored, d3 refused, d2 held at the stub")
    first.kill()
    await eventually(lambda: stub.disconnects == 1, what="the killed server's call to drop")

    second = start(servers, server_env)
    async with httpx.AsyncClient(base_url=second.base_url, timeout=30) as http:

        async def finished() -> dict[str, Any] | None:
            body: dict[str, Any] = (await http.get(f"{API}/executions/{started['id']}")).json()
            return body if body["status"] in ("completed", "failed") else None

        done = await eventually(finished, what="the resumed run to finish")
        assert done["status"] == "completed", done
        assert done["output_data"]["tasks"][str(task["id"])] == (
            f"K done. Tool results: d1=found; d2=drafted; d3={REFUSED}; d4={REFUSED}"
        )
        runs = (await http.get(f"{API}/tasks/{task['id']}/executions")).json()
        assert [(r["attempt"], r["status"]) for r in runs] == [(2, "completed"), (1, "cancelled")]
        assert [(c["call_id"], c["status"]) for c in runs[0]["tool_calls"]] == [
            ("d1", "completed"),
            ("d2", "completed"),
            ("d3", "failed"),
            ("d4", "failed"),  # the budget counts d1 and d2 across the restart
        ]
        logs = (await http.get(f"{API}/executions/{started['id']}/logs")).json()
        delegations = [
            (e["event"], e["data"]["call_id"]) for e in logs if e["event"].startswith("delegation")
        ]
        # Before the kill, d1 and d2 ran at once (their events in either order); after it,
        # d2 alone was asked again. d3 was refused: no delegation.
        assert sorted(delegations[:3]) == [
            ("delegation_completed", "d1"),
            ("delegation_started", "d1"),
            ("delegation_started", "d2"),
        ]
        assert delegations[3:] == [("delegation_started", "d2"), ("delegation_completed", "d2")]
    # The stub's log: the finished delegation was never asked again, the one in flight was.
    assert [m["messages"][-1]["content"][:19] for m in of_role(stub, "Researcher")] == [
        "Current Task: Find\n"
    ]
    assert len(of_role(stub, "Writer")) == 2
    manager = calls_for(stub, "K")
    assert len(manager) == 3
    assert [m["content"] for m in manager[-1]["messages"] if m["role"] == "tool"] == [
        "found",
        "drafted",
        REFUSED,
        REFUSED,
    ]


async def test_sigkill_inside_a_delegation_does_not_call_the_coworkers_finished_tools_again(
    servers: list[LiveServer],  # noqa: F811
    server_env: dict[str, str],  # noqa: F811
    stub: StubServer,
    site: LocalSite,  # noqa: F811
    mcp_server: McpTestServer,
) -> None:
    stub.script(
        for_task("K", delegate=[{"coworker": "Researcher", "task": "Find", "id": "d1"}]),
        {
            "role": "Researcher",
            "tool_calls": [
                {"name": "lab__add", "id": "c1", "arguments": {"a": 2, "b": 3}},
                {"name": "counter", "id": "c2", "arguments": {"n": 1}},
            ],
        },
        {"role": "Researcher", "gate": "after-tools"},
        {"role": "Researcher", "content": "found", "quote_tools": True},
        for_task("K", content="K done.", quote_tools=True),
    )
    env = server_env | {"TOOLS_ALLOWED_NETWORKS": "127.0.0.1/32"}
    first = start(servers, env)
    async with httpx.AsyncClient(base_url=first.base_url, timeout=30) as http:
        await add_tools(http, mcp_server.url, site.route("/count", "counted"))
        researcher = await make_agent(http, role="Researcher", tools=["lab.add", "counter"])
        created = await http.post(
            f"{API}/workflows/", json={"name": "Managed", "workflow_type": "hierarchical"}
        )
        workflow = created.json()
        task = await make_task(http, workflow["id"], researcher["id"], "K", order=0)
        started = (await http.post(f"{API}/workflows/{workflow['id']}/execute", json={})).json()

        async def tools_returned() -> bool:
            logs = (await http.get(f"{API}/executions/{started['id']}/logs")).json()
            returned = {e["data"]["call_id"] for e in logs if e["event"] == "tool_call_completed"}
            return stub.waiting_at("after-tools") == 1 and returned == {"c1", "c2"}

        await eventually(tools_returned, what="the coworker's calls stored, its next call held")
    first.kill()
    await eventually(lambda: stub.disconnects == 1, what="the killed server's call to drop")
    assert mcp_server.counts() == {"add": 1}
    assert site.paths() == ["/count"]

    second = start(servers, env)
    async with httpx.AsyncClient(base_url=second.base_url, timeout=30) as http:

        async def finished() -> dict[str, Any] | None:
            body: dict[str, Any] = (await http.get(f"{API}/executions/{started['id']}")).json()
            return body if body["status"] in ("completed", "failed") else None

        done = await eventually(finished, what="the resumed run to finish")
        assert done["status"] == "completed", done
        assert done["output_data"]["result"] == (
            "K done. Tool results: d1=found Tool results: c1=5; c2=counted"
        )
        runs = (await http.get(f"{API}/tasks/{task['id']}/executions")).json()
        assert [(r["attempt"], r["status"]) for r in runs] == [(2, "completed"), (1, "cancelled")]
        assert [
            (c["call_id"], c["status"], c["delegation_call_id"]) for c in runs[0]["tool_calls"]
        ] == [("d1", "completed", None), ("c1", "completed", "d1"), ("c2", "completed", "d1")]
        logs = (await http.get(f"{API}/executions/{started['id']}/logs")).json()
        tool_events = [
            (e["event"], e["data"]["call_id"])
            for e in logs
            if e["event"].startswith("tool_call_") and e["data"].get("delegation_call_id")
        ]
        assert sorted(tool_events) == sorted(
            [(f"tool_call_{kind}", c) for kind in ("started", "completed") for c in ("c1", "c2")]
        )  # once each: before the kill only
    # Each tool ran once; the coworker was not asked again for the calls it had asked for: its
    # call in flight (after the tools) was made again, with the stored results.
    assert mcp_server.counts() == {"add": 1}
    assert site.paths() == ["/count"]
    researcher_calls = of_role(stub, "Researcher")
    assert len(researcher_calls) == 3
    assert researcher_calls[1]["messages"] == researcher_calls[2]["messages"]
    assert [m["content"] for m in researcher_calls[2]["messages"] if m["role"] == "tool"] == [
        "5",
        "counted",
    ]
    assert len(calls_for(stub, "K")) == 2  # the manager's call that delegated was not redone
