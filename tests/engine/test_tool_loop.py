"""The tool loop of a step, through the API, on both backends: the model (the stub) asks for
tool calls in streamed deltas, the engine runs them, records them and asks again.

The tools are the real ones: the built-ins (`calculator`, `current_time`) and the test MCP
server's tools, registered as the server `lab` through `POST /api/v1/mcp-servers` (so the
model sees `lab__add`, `lab__meet`, `lab__slow`). The MCP server counts each invocation:
that is how a test sees whether, and how often, a tool ran.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from crew_platform.devtools.llm_stub import StubServer
from crew_platform.settings import Settings
from crew_platform.tools import mcp_client
from tests.conftest import make_settings
from tests.flows import (
    API,
    calls_for,
    eventually,
    execute,
    for_task,
    pipeline,
    running_app,
    wait_for_status,
)
from tests.tools.conftest import LOOPBACK_ONLY, McpTestServer


@pytest.fixture
def settings(database_url: str, stub: StubServer) -> Settings:
    """The test MCP server listens on loopback: allowed, as a user would allow it."""
    return make_settings(
        database_url, stub, llm_timeout_seconds=120, tools_allowed_networks=LOOPBACK_ONLY
    )


async def add_lab_server(http: httpx.AsyncClient, url: str) -> None:
    response = await http.post(f"{API}/mcp-servers/", json={"name": "lab", "url": url})
    assert response.status_code == 201, response.text
    assert response.json()["reachable"] is True, response.text


@pytest.fixture
async def lab(client: httpx.AsyncClient, mcp_server: McpTestServer) -> McpTestServer:
    """The session's MCP test server, registered as `lab` (its counts at zero)."""
    await add_lab_server(client, mcp_server.url)
    return mcp_server


def call(name: str, call_id: str, arguments: Any) -> dict[str, Any]:
    return {"name": name, "id": call_id, "arguments": arguments}


async def run_task(
    http: httpx.AsyncClient, name: str, tools: list[str], **agent: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run a one-task workflow whose agent has `tools`; (the finished execution, the task)."""
    _, workflow, (task,) = await pipeline(http, [name], tools=tools, **agent)
    started = await execute(http, workflow["id"])
    done = await wait_for_status(http, started["id"], "completed", "failed", "cancelled")
    return done, task


async def runs_of(http: httpx.AsyncClient, task_id: int) -> list[dict[str, Any]]:
    response = await http.get(f"{API}/tasks/{task_id}/executions")
    assert response.status_code == 200, response.text
    runs: list[dict[str, Any]] = response.json()
    return runs


async def events_of(http: httpx.AsyncClient, execution_id: int) -> list[dict[str, Any]]:
    logs: list[dict[str, Any]] = (await http.get(f"{API}/executions/{execution_id}/logs")).json()
    return [e for e in logs if e["event"].startswith("tool_call_")]


async def _statuses(http: httpx.AsyncClient, task_id: int, expected: list[tuple[str, str]]) -> bool:
    runs = await runs_of(http, task_id)
    return bool(runs) and [(c["call_id"], c["status"]) for c in runs[0]["tool_calls"]] == expected


async def test_a_tool_call_then_an_answer_quoting_its_result(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        for_task(
            "T",
            content="Let me compute.",
            tool_calls=[call("calculator", "c1", {"expression": "2+3"})],
        ),
        for_task("T", content="The sum is in.", quote_tools=True),
    )
    done, task = await run_task(client, "T", ["calculator"])
    assert done["status"] == "completed", done
    assert done["output_data"]["result"] == "The sum is in. Tool results: c1=5"

    calculator = (await client.get(f"{API}/tools/calculator")).json()
    first, second = calls_for(stub, "T")
    assert first["tool_choice"] == "auto" and "parallel_tool_calls" not in first
    assert first["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "calculator",
                "description": calculator["description"],
                "parameters": calculator["parameters"],
                "strict": True,
            },
        }
    ]
    assistant, tool = second["messages"][-2:]
    assert assistant["role"] == "assistant" and assistant["content"] == "Let me compute."
    assert assistant["tool_calls"][0]["function"] == {
        "name": "calculator",
        "arguments": '{"expression": "2+3"}',
    }
    assert tool == {"role": "tool", "tool_call_id": "c1", "content": "5"}

    (run,) = await runs_of(client, task["id"])
    (recorded,) = run["tool_calls"]
    assert recorded["call_id"] == "c1" and recorded["tool"] == "calculator"
    assert json.loads(recorded["arguments"]) == {"expression": "2+3"}
    assert (recorded["status"], recorded["result"], recorded["error"]) == ("completed", "5", None)
    assert recorded["started_at"] <= recorded["completed_at"]

    started, completed = await events_of(client, done["id"])
    assert started["event"] == "tool_call_started" and completed["event"] == "tool_call_completed"
    assert started["data"]["call_id"] == completed["data"]["call_id"] == "c1"
    assert started["data"]["tool"] == "calculator" and completed["data"]["result"] == "5"
    assert started["seq"] < completed["seq"]

    stats = (await client.get(f"{API}/executions/stats")).json()
    assert (stats["total_tool_calls"], stats["tool_errors"]) == (1, 0)


async def test_strict_only_for_schemas_that_strict_mode_accepts(
    client: httpx.AsyncClient, stub: StubServer, lab: McpTestServer
) -> None:
    """`calculator` is closed and requires its one property; `current_time`'s `timezone` is
    optional and the MCP tools' schemas leave `additionalProperties` open: those two go
    without `strict`, their schemas as given."""
    stub.script(for_task("T", content="No tools needed."))
    done, _ = await run_task(client, "T", ["calculator", "current_time", "lab.add"])
    assert done["status"] == "completed", done
    (request,) = calls_for(stub, "T")
    offered = {tool["function"]["name"]: tool["function"] for tool in request["tools"]}
    assert offered["calculator"]["strict"] is True
    assert "strict" not in offered["current_time"] and "strict" not in offered["lab__add"]
    listed = {t["name"]: t for t in (await client.get(f"{API}/tools")).json()}
    assert offered["current_time"]["parameters"] == listed["current_time"]["parameters"]
    assert offered["lab__add"]["parameters"] == listed["lab.add"]["parameters"]


async def test_the_calls_of_one_answer_run_concurrently(
    client: httpx.AsyncClient, stub: StubServer, lab: McpTestServer
) -> None:
    """`meet` only returns when both calls are inside it at once (alone, it gives up)."""
    meet = {"parties": 2}
    stub.script(
        for_task(
            "T",
            tool_calls=[
                call("lab__meet", "x", {"who": "X", **meet}),
                call("lab__meet", "y", {"who": "Y", **meet}),
            ],
        ),
        for_task("T", quote_tools=True),
    )
    done, _ = await run_task(client, "T", ["lab.meet"])
    assert done["status"] == "completed", done
    assert done["output_data"]["result"] == "Tool results: x=X met; y=Y met"
    assert lab.counts() == {"meet": 2}


async def test_max_iter_bounds_the_model_calls_then_asks_for_a_final_answer(
    client: httpx.AsyncClient, stub: StubServer, lab: McpTestServer
) -> None:
    stub.script(
        for_task("T", tool_calls=[call("lab__add", "c1", {"a": 1, "b": 1})]),
        for_task("T", tool_calls=[call("lab__add", "c2", {"a": 2, "b": 2})]),
        for_task("T", content="Final answer without tools."),
    )
    done, task = await run_task(client, "T", ["lab.add"], config={"max_iter": 2})
    assert done["status"] == "completed", done
    assert done["output_data"]["result"] == "Final answer without tools."
    requests = calls_for(stub, "T")
    assert [("tools" in r) for r in requests] == [True, True, False]
    assert requests[-1]["messages"][-2]["content"] == "4"  # the second call's result
    assert lab.counts() == {"add": 2}
    (run,) = await runs_of(client, task["id"])
    assert [c["call_id"] for c in run["tool_calls"]] == ["c1", "c2"]


async def test_bad_arguments_and_unknown_tools_are_errors_the_model_recovers_from(
    client: httpx.AsyncClient, stub: StubServer, lab: McpTestServer
) -> None:
    stub.script(
        for_task(
            "T",
            tool_calls=[
                call("lab__add", "c1", '{"a": 1, "b": '),  # not JSON
                call("lab__add", "c2", {"a": "one", "b": 2}),  # not the schema
                call("launch", "c3", {}),  # no such tool
                call("lab__echo", "c4", {"text": "hi"}),  # a tool the agent does not name
            ],
        ),
        for_task("T", tool_calls=[call("lab__add", "c5", {"a": 1, "b": 2})]),
        for_task("T", content="Recovered.", quote_tools=True),
    )
    done, task = await run_task(client, "T", ["lab.add"])
    assert done["status"] == "completed", done
    results = {m["tool_call_id"]: m["content"] for m in calls_for(stub, "T")[1]["messages"][3:]}
    assert "not valid JSON" in results["c1"]
    assert "invalid arguments for lab.add" in results["c2"]
    assert "unknown tool 'launch'" in results["c3"] and "lab__add" in results["c3"]
    assert "unknown tool 'lab__echo'" in results["c4"]
    assert done["output_data"]["result"].endswith("c5=3")
    assert lab.counts() == {"add": 1}  # only c5 reached the server
    (run,) = await runs_of(client, task["id"])
    assert [c["status"] for c in run["tool_calls"]] == ["failed"] * 4 + ["completed"]
    failed = [e for e in await events_of(client, done["id"]) if e["event"] == "tool_call_failed"]
    assert {e["data"]["call_id"] for e in failed} == {"c1", "c2", "c3", "c4"}
    stats = (await client.get(f"{API}/executions/stats")).json()
    assert (stats["total_tool_calls"], stats["tool_errors"]) == (5, 4)


async def test_a_tool_that_times_out_gives_the_model_an_error(
    settings: Settings, stub: StubServer, mcp_server: McpTestServer
) -> None:
    """The server is registered under the usual time-out (listing it is bounded by it too),
    then the app runs with TOOL_TIMEOUT_SECONDS short."""
    async with running_app(settings) as (_, http):
        await add_lab_server(http, mcp_server.url)
    stub.script(
        for_task("T", tool_calls=[call("lab__slow", "c1", {"seconds": 30})]),
        for_task("T", content="It hung.", quote_tools=True),
    )
    short = settings.model_copy(update={"tool_timeout_seconds": 0.5})
    async with running_app(short) as (_, http):
        done, task = await run_task(http, "T", ["lab.slow"])
        assert done["status"] == "completed", done
        assert "timed out after 0.5" in done["output_data"]["result"]
        (run,) = await runs_of(http, task["id"])
        assert run["tool_calls"][0]["status"] == "failed"
        assert "timed out" in run["tool_calls"][0]["error"]


async def test_cancel_aborts_a_tool_call_in_flight(
    client: httpx.AsyncClient, stub: StubServer, lab: McpTestServer
) -> None:
    stub.script(for_task("T", tool_calls=[call("lab__slow", "c1", {"seconds": 60})]))
    _, workflow, (task,) = await pipeline(client, ["T"], tools=["lab.slow"])
    started = await execute(client, workflow["id"])
    await eventually(lambda: lab.counts().get("slow") == 1, what="the slow tool to be running")
    cancel = await client.post(f"{API}/executions/{started['id']}/cancel")
    assert cancel.status_code == 200, cancel.text
    done = await wait_for_status(client, started["id"], "cancelled")
    assert done["status"] == "cancelled"
    (run,) = await runs_of(client, task["id"])
    assert run["status"] == "cancelled"
    assert run["tool_calls"][0]["status"] == "cancelled"
    assert len(calls_for(stub, "T")) == 1


async def test_the_agent_test_endpoint_runs_the_same_loop(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    agent, _, _ = await pipeline(client, [], tools=["calculator"])
    stub.script(
        {"prefix": "Sum", "tool_calls": [call("calculator", "c1", {"expression": "20+22"})]},
        {"prefix": "Sum", "content": "Done.", "quote_tools": True},
    )
    response = await client.post(f"{API}/agents/{agent['id']}/test", json={"input": "Sum them"})
    assert response.status_code == 200, response.text
    assert response.json()["output"] == "Done. Tool results: c1=42"
    assert len(stub.requests) == 2


async def test_a_restart_replays_finished_calls_and_repeats_the_model_call_in_flight(
    settings: Settings, stub: StubServer, mcp_server: McpTestServer
) -> None:
    """The process stops while the model call after a finished tool call is in flight; the next
    process resumes the run from the recorded conversation without running the tool again."""
    stub.script(
        for_task("T", tool_calls=[call("lab__add", "c1", {"a": 1, "b": 2})]),
        for_task("T", gate="after-tool"),
        for_task("T", content="Resumed.", quote_tools=True),
    )
    async with running_app(settings) as (_, http):
        await add_lab_server(http, mcp_server.url)
        _, workflow, (task,) = await pipeline(http, ["T"], tools=["lab.add"])
        started = await execute(http, workflow["id"])
        await eventually(lambda: stub.waiting_at("after-tool") == 1, what="the second model call")
    assert mcp_server.counts() == {"add": 1}
    async with running_app(settings) as (_, http):
        done = await wait_for_status(http, started["id"], "completed", "failed")
        assert done["status"] == "completed", done
        assert done["output_data"]["result"] == "Resumed. Tool results: c1=3"
        interrupted, resumed = reversed(await runs_of(http, task["id"]))
        assert (interrupted["status"], resumed["status"]) == ("cancelled", "completed")
        for run in (interrupted, resumed):
            assert [(c["call_id"], c["status"], c["result"]) for c in run["tool_calls"]] == [
                ("c1", "completed", "3")
            ]
    assert mcp_server.counts() == {"add": 1}
    final = calls_for(stub, "T")[-1]
    assert final["messages"][-1] == {"role": "tool", "tool_call_id": "c1", "content": "3"}
    assert final["messages"][-2]["tool_calls"][0]["id"] == "c1"


async def test_a_restart_runs_again_a_call_that_was_in_flight(
    settings: Settings, stub: StubServer, idle_mcp_server: McpTestServer
) -> None:
    """c1 has returned while c2 (`meet`, waiting for a second party) runs when the process
    stops. The MCP server of this test's own is restarted too, so the call it was still
    serving is gone; after the restart c2 runs again, and the test is its second party."""
    server = idle_mcp_server.start()
    stub.script(
        for_task(
            "T",
            tool_calls=[
                call("lab__add", "c1", {"a": 1, "b": 2}),
                call("lab__meet", "c2", {"who": "Y", "parties": 2}),
            ],
        ),
        for_task("T", quote_tools=True),
    )
    async with running_app(settings) as (_, http):
        await add_lab_server(http, server.url)
        _, workflow, (task,) = await pipeline(http, ["T"], tools=["lab.add", "lab.meet"])
        started = await execute(http, workflow["id"])
        await eventually(
            lambda: _statuses(http, task["id"], [("c1", "completed"), ("c2", "running")]),
            what="c1 stored while c2 runs",
        )
    assert server.counts() == {"add": 1, "meet": 1}
    server.stop()
    server.start()
    async with running_app(settings) as (_, http):
        await eventually(lambda: server.counts().get("meet") == 2, what="c2 to run again")
        joined = await mcp_client.call_tool(
            server.url,
            {},
            "meet",
            {"who": "the test", "parties": 2},
            timeout=30,
            allowed_networks=LOOPBACK_ONLY,
        )
        assert joined == "the test met"
        done = await wait_for_status(http, started["id"], "completed", "failed")
        assert done["status"] == "completed", done
        assert done["output_data"]["result"] == "Tool results: c1=3; c2=Y met"
        assert await _statuses(http, task["id"], [("c1", "completed"), ("c2", "completed")])
    assert server.counts() == {"add": 1, "meet": 3}
    assert len(calls_for(stub, "T")) == 2
