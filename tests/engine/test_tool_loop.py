"""The tool loop of a step, through the API, on both backends: the model (the stub) asks for
tool calls in streamed deltas, the engine runs them, records them and asks again.

The tools are a small `Toolbox` of this file's own (a sum, a meeting point for concurrent
calls, a call that never returns by itself), given to the app as the registry would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx
import jsonschema
import pytest
from asgi_lifespan import LifespanManager

from crew_platform.app import create_app
from crew_platform.devtools.llm_stub import StubServer
from crew_platform.settings import Settings
from crew_platform.tools.base import ToolError, ToolSource, ToolSpec
from tests.conftest import make_settings
from tests.flows import (
    API,
    calls_for,
    eventually,
    execute,
    for_task,
    pipeline,
    wait_for_status,
)


def _spec(name: str, properties: dict[str, Any]) -> ToolSpec:
    schema = {
        "type": "object",
        "properties": properties,
        "required": sorted(properties),
        "additionalProperties": False,
    }
    return ToolSpec(name, f"The {name} tool", schema, ToolSource.BUILTIN)


class LabTools:
    """`add` sums; `meet` returns once `parties` calls are inside it at the same time (a lone
    call gives up with an error); `block` waits until cancelled (or returns at once when
    `block_returns`)."""

    def __init__(self, parties: int = 2) -> None:
        self.specs = {
            s.name: s
            for s in (
                _spec("add", {"a": {"type": "number"}, "b": {"type": "number"}}),
                _spec("meet", {"who": {"type": "string"}}),
                _spec("block", {}),
            )
        }
        self.invocations: list[str] = []
        self.cancelled = 0
        self._parties = parties
        self._inside = 0
        self._met = asyncio.Event()
        self.blocking = asyncio.Event()
        self.block_returns = False

    async def resolve(self, names: Sequence[str]) -> tuple[list[ToolSpec], list[str]]:
        return [self.specs[n] for n in names if n in self.specs], [
            n for n in names if n not in self.specs
        ]

    async def call(self, name: str, arguments: Mapping[str, Any], *, timeout: float) -> str:
        try:
            jsonschema.validate(dict(arguments), dict(self.specs[name].parameters))
        except jsonschema.ValidationError as exc:
            raise ToolError(f"invalid arguments for {name}: {exc.message}") from None
        self.invocations.append(name)
        if name == "add":
            return str(arguments["a"] + arguments["b"])
        if name == "meet":
            self._inside += 1
            if self._inside >= self._parties:
                self._met.set()
            try:
                await asyncio.wait_for(self._met.wait(), 10)
            except TimeoutError:
                raise ToolError(f"{arguments['who']} waited alone") from None
            return f"{arguments['who']} met"
        self.blocking.set()
        if self.block_returns:
            return "unblocked"
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        raise AssertionError("unreachable")


@pytest.fixture
def lab() -> LabTools:
    return LabTools()


@contextlib.asynccontextmanager
async def app_with(settings: Settings, lab: LabTools) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, toolbox=lab)
    async with LifespanManager(app, startup_timeout=30, shutdown_timeout=30):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


@pytest.fixture
async def http(settings: Settings, lab: LabTools) -> AsyncIterator[httpx.AsyncClient]:
    async with app_with(settings, lab) as client:
        yield client


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


async def test_a_tool_call_then_an_answer_quoting_its_result(
    http: httpx.AsyncClient, stub: StubServer, lab: LabTools
) -> None:
    stub.script(
        for_task("T", content="Let me add.", tool_calls=[call("add", "c1", {"a": 2, "b": 3})]),
        for_task("T", content="The sum is in.", quote_tools=True),
    )
    done, task = await run_task(http, "T", ["add"])
    assert done["status"] == "completed", done
    assert done["output_data"]["result"] == "The sum is in. Tool results: c1=5"
    assert lab.invocations == ["add"]

    first, second = calls_for(stub, "T")
    assert first["tool_choice"] == "auto" and "parallel_tool_calls" not in first
    assert first["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "add",
                "description": "The add tool",
                "parameters": dict(lab.specs["add"].parameters),
                "strict": True,
            },
        }
    ]
    assistant, tool = second["messages"][-2:]
    assert assistant["role"] == "assistant" and assistant["content"] == "Let me add."
    assert assistant["tool_calls"][0]["function"] == {
        "name": "add",
        "arguments": '{"a": 2, "b": 3}',
    }
    assert tool == {"role": "tool", "tool_call_id": "c1", "content": "5"}

    (run,) = await runs_of(http, task["id"])
    (recorded,) = run["tool_calls"]
    assert recorded["call_id"] == "c1" and recorded["tool"] == "add"
    assert json.loads(recorded["arguments"]) == {"a": 2, "b": 3}
    assert (recorded["status"], recorded["result"], recorded["error"]) == ("completed", "5", None)
    assert recorded["started_at"] <= recorded["completed_at"]

    started, completed = await events_of(http, done["id"])
    assert started["event"] == "tool_call_started" and completed["event"] == "tool_call_completed"
    assert started["data"]["call_id"] == completed["data"]["call_id"] == "c1"
    assert started["data"]["tool"] == "add" and completed["data"]["result"] == "5"
    assert started["seq"] < completed["seq"]

    stats = (await http.get(f"{API}/executions/stats")).json()
    assert (stats["total_tool_calls"], stats["tool_errors"]) == (1, 0)


async def test_the_calls_of_one_answer_run_concurrently(
    http: httpx.AsyncClient, stub: StubServer, lab: LabTools
) -> None:
    """`meet` only returns when both calls are inside it at once."""
    stub.script(
        for_task(
            "T", tool_calls=[call("meet", "x", {"who": "X"}), call("meet", "y", {"who": "Y"})]
        ),
        for_task("T", quote_tools=True),
    )
    done, _ = await run_task(http, "T", ["meet"])
    assert done["status"] == "completed", done
    assert done["output_data"]["result"] == "Tool results: x=X met; y=Y met"


async def test_max_iter_bounds_the_model_calls_then_asks_for_a_final_answer(
    http: httpx.AsyncClient, stub: StubServer, lab: LabTools
) -> None:
    stub.script(
        for_task("T", tool_calls=[call("add", "c1", {"a": 1, "b": 1})]),
        for_task("T", tool_calls=[call("add", "c2", {"a": 2, "b": 2})]),
        for_task("T", content="Final answer without tools."),
    )
    done, task = await run_task(http, "T", ["add"], config={"max_iter": 2})
    assert done["status"] == "completed", done
    assert done["output_data"]["result"] == "Final answer without tools."
    requests = calls_for(stub, "T")
    assert [("tools" in r) for r in requests] == [True, True, False]
    assert requests[-1]["messages"][-2]["content"] == "4"  # the second call's result
    assert lab.invocations == ["add", "add"]
    (run,) = await runs_of(http, task["id"])
    assert [c["call_id"] for c in run["tool_calls"]] == ["c1", "c2"]


async def test_bad_arguments_and_unknown_tools_are_errors_the_model_recovers_from(
    http: httpx.AsyncClient, stub: StubServer, lab: LabTools
) -> None:
    stub.script(
        for_task(
            "T",
            tool_calls=[
                call("add", "c1", '{"a": 1, "b": '),  # not JSON
                call("add", "c2", {"a": "one", "b": 2}),  # not the schema
                call("launch", "c3", {}),  # no such tool
                call("block", "c4", {}),  # a tool the agent does not name
            ],
        ),
        for_task("T", tool_calls=[call("add", "c5", {"a": 1, "b": 2})]),
        for_task("T", content="Recovered.", quote_tools=True),
    )
    done, task = await run_task(http, "T", ["add"])
    assert done["status"] == "completed", done
    results = {m["tool_call_id"]: m["content"] for m in calls_for(stub, "T")[1]["messages"][3:]}
    assert "not valid JSON" in results["c1"]
    assert "invalid arguments for add" in results["c2"]
    assert "unknown tool 'launch'" in results["c3"] and "add" in results["c3"]
    assert "unknown tool 'block'" in results["c4"]
    assert done["output_data"]["result"].endswith("c5=3")
    assert lab.invocations == ["add"]  # c2 reached the tool and was refused; c5 ran
    (run,) = await runs_of(http, task["id"])
    assert [c["status"] for c in run["tool_calls"]] == ["failed"] * 4 + ["completed"]
    failed = [e for e in await events_of(http, done["id"]) if e["event"] == "tool_call_failed"]
    assert {e["data"]["call_id"] for e in failed} == {"c1", "c2", "c3", "c4"}
    stats = (await http.get(f"{API}/executions/stats")).json()
    assert (stats["total_tool_calls"], stats["tool_errors"]) == (5, 4)


async def test_a_tool_that_times_out_gives_the_model_an_error(
    database_url: str, stub: StubServer, lab: LabTools
) -> None:
    settings = make_settings(database_url, stub, tool_timeout_seconds=0.2)
    stub.script(
        for_task("T", tool_calls=[call("block", "c1", {})]),
        for_task("T", content="It hung.", quote_tools=True),
    )
    async with app_with(settings, lab) as http:
        done, task = await run_task(http, "T", ["block"])
        assert done["status"] == "completed", done
        assert "timed out after 0.2s (TOOL_TIMEOUT_SECONDS)" in done["output_data"]["result"]
        (run,) = await runs_of(http, task["id"])
        assert run["tool_calls"][0]["status"] == "failed"
        assert "timed out" in run["tool_calls"][0]["error"]
    assert lab.cancelled == 1


async def test_cancel_aborts_a_tool_call_in_flight(
    http: httpx.AsyncClient, stub: StubServer, lab: LabTools
) -> None:
    stub.script(for_task("T", tool_calls=[call("block", "c1", {})]))
    _, workflow, (task,) = await pipeline(http, ["T"], tools=["block"])
    started = await execute(http, workflow["id"])
    await eventually(lab.blocking.is_set, what="the tool to be running")
    cancel = await http.post(f"{API}/executions/{started['id']}/cancel")
    assert cancel.status_code == 200, cancel.text
    await eventually(lambda: lab.cancelled == 1, what="the tool call to be aborted")
    done = await wait_for_status(http, started["id"], "cancelled")
    assert done["status"] == "cancelled"
    (run,) = await runs_of(http, task["id"])
    assert run["status"] == "cancelled"
    assert run["tool_calls"][0]["status"] == "cancelled"
    assert len(calls_for(stub, "T")) == 1


async def test_the_agent_test_endpoint_runs_the_same_loop(
    http: httpx.AsyncClient, stub: StubServer, lab: LabTools
) -> None:
    agent, _, _ = await pipeline(http, [], tools=["add"])
    stub.script(
        {"prefix": "Sum", "tool_calls": [call("add", "c1", {"a": 20, "b": 22})]},
        {"prefix": "Sum", "content": "Done.", "quote_tools": True},
    )
    response = await http.post(f"{API}/agents/{agent['id']}/test", json={"input": "Sum them"})
    assert response.status_code == 200, response.text
    assert response.json()["output"] == "Done. Tool results: c1=42"
    assert lab.invocations == ["add"]


async def test_a_restart_replays_finished_calls_and_repeats_the_model_call_in_flight(
    database_url: str, settings: Settings, stub: StubServer
) -> None:
    """The process stops while the model call after a finished tool call is in flight; the next
    process resumes the run from the recorded conversation without running the tool again."""
    stub.script(
        for_task("T", tool_calls=[call("add", "c1", {"a": 1, "b": 2})]),
        for_task("T", gate="after-tool"),
        for_task("T", content="Resumed.", quote_tools=True),
    )
    first, second = LabTools(), LabTools()
    async with app_with(settings, first) as http:
        _, workflow, (task,) = await pipeline(http, ["T"], tools=["add"])
        started = await execute(http, workflow["id"])
        await eventually(lambda: stub.waiting_at("after-tool") == 1, what="the second model call")
    assert first.invocations == ["add"]
    async with app_with(settings, second) as http:
        done = await wait_for_status(http, started["id"], "completed", "failed")
        assert done["status"] == "completed", done
        assert done["output_data"]["result"] == "Resumed. Tool results: c1=3"
        interrupted, resumed = reversed(await runs_of(http, task["id"]))
        assert (interrupted["status"], resumed["status"]) == ("cancelled", "completed")
        for run in (interrupted, resumed):
            assert [(c["call_id"], c["status"], c["result"]) for c in run["tool_calls"]] == [
                ("c1", "completed", "3")
            ]
    assert second.invocations == []
    final = calls_for(stub, "T")[-1]
    assert final["messages"][-1] == {"role": "tool", "tool_call_id": "c1", "content": "3"}
    assert final["messages"][-2]["tool_calls"][0]["id"] == "c1"


async def test_a_restart_runs_again_a_call_that_was_in_flight(
    settings: Settings, stub: StubServer
) -> None:
    stub.script(
        for_task("T", tool_calls=[call("add", "c1", {"a": 1, "b": 2}), call("block", "c2", {})]),
        for_task("T", quote_tools=True),
    )
    first, second = LabTools(), LabTools()
    second.block_returns = True
    async with app_with(settings, first) as http:
        _, workflow, (task,) = await pipeline(http, ["T"], tools=["add", "block"])
        started = await execute(http, workflow["id"])
        await eventually(first.blocking.is_set, what="the blocking call")
        await eventually(
            lambda: _statuses(http, task["id"], [("c1", "completed"), ("c2", "running")]),
            what="c1 stored while c2 runs",
        )
    assert first.cancelled == 1
    async with app_with(settings, second) as http:
        done = await wait_for_status(http, started["id"], "completed", "failed")
        assert done["status"] == "completed", done
        assert done["output_data"]["result"] == "Tool results: c1=3; c2=unblocked"
        assert await _statuses(http, task["id"], [("c1", "completed"), ("c2", "completed")])
    assert second.invocations == ["block"]
    assert len(calls_for(stub, "T")) == 2


async def _statuses(http: httpx.AsyncClient, task_id: int, expected: list[tuple[str, str]]) -> bool:
    latest = (await runs_of(http, task_id))[0]
    return [(c["call_id"], c["status"]) for c in latest["tool_calls"]] == expected
