"""Hierarchical workflows through the API, on both backends: a manager answers each task and
delegates to the crew (the agents of the workflow's tasks) through `delegate_work` and
`ask_question`, run as nested steps by the engine.

The stub scripts the manager (`delegate` replies, matched by the task's prompt) and each
coworker (replies matched by its role, as its system prompt starts "You are <role>."); what
reached the model is read back from the stub's request log.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from crew_platform.devtools.llm_stub import StubServer
from crew_platform.events.types import Event, EventType
from crew_platform.settings import Settings
from tests.api import DEFAULT_MODEL
from tests.conftest import make_settings
from tests.flows import (
    API,
    calls_for,
    for_task,
    make_agent,
    make_task,
    system_prompt,
    user_prompt,
    wait_for_status,
)
from tests.tools.conftest import LOOPBACK_ONLY

MANAGER_ROLE = "Crew Manager"


@pytest.fixture
def settings(database_url: str, stub: StubServer) -> Settings:
    return make_settings(
        database_url, stub, llm_timeout_seconds=120, tools_allowed_networks=LOOPBACK_ONLY
    )


async def build_crew(
    http: httpx.AsyncClient,
    tasks: dict[str, str | None],
    *,
    config: dict[str, Any] | None = None,
    agents: dict[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, dict[str, Any]]]:
    """A hierarchical workflow whose tasks (name -> the role of its agent, or None) run in the
    order given. Returns (agents by role, the workflow, tasks by name)."""
    by_role: dict[str, dict[str, Any]] = {}
    for role in dict.fromkeys(r for r in tasks.values() if r):
        fields = (agents or {}).get(role, {})
        by_role[role] = await make_agent(http, role=role, goal=f"Be a good {role}", **fields)
    body: dict[str, Any] = {
        "name": f"Crew {time.monotonic_ns()}",
        "workflow_type": "hierarchical",
        "config": config,
    }
    created = await http.post(f"{API}/workflows/", json=body)
    assert created.status_code == 201, created.text
    workflow = created.json()
    made = {
        name: await make_task(
            http, workflow["id"], by_role[role]["id"] if role else None, name, order=i
        )
        for i, (name, role) in enumerate(tasks.items())
    }
    return by_role, workflow, made


async def run(http: httpx.AsyncClient, workflow_id: int) -> dict[str, Any]:
    started = await http.post(f"{API}/workflows/{workflow_id}/execute", json={})
    assert started.status_code == 202, started.text
    return await wait_for_status(http, started.json()["id"], "completed", "failed", "cancelled")


async def runs_of(http: httpx.AsyncClient, task_id: int) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = (await http.get(f"{API}/tasks/{task_id}/executions")).json()
    return runs


async def logs_of(http: httpx.AsyncClient, execution_id: int) -> list[dict[str, Any]]:
    logs: list[dict[str, Any]] = (await http.get(f"{API}/executions/{execution_id}/logs")).json()
    return logs


def of_role(stub: StubServer, role: str) -> list[dict[str, Any]]:
    """The chat requests the stub received from the agent of that role."""
    return [r for r in stub.requests if system_prompt(r).startswith(f"You are {role}.")]


def tool_names(request: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in request.get("tools") or []]


def tool_messages(request: dict[str, Any]) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "tool"]


async def test_manager_delegates_each_task_to_the_coworker_it_names(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    events: list[Event] = []
    unsubscribe = app.state.bus.subscribe(events.append)
    stub.script(
        for_task(
            "Gather",
            delegate=[{"coworker": "Researcher", "task": "List three facts", "id": "d1"}],
        ),
        for_task("Gather", content="Gathered.", quote_tools=True),
        for_task(
            "Report",
            delegate=[
                {
                    "coworker": "writer",  # roles match whatever their case
                    "task": "Write the report",
                    "context": "Use the facts: F1 F2 F3",
                    "id": "d2",
                }
            ],
        ),
        for_task("Report", content="Reported.", quote_tools=True),
        {"role": "Researcher", "content": "F1 F2 F3"},
        {"role": "Writer", "content": "A report on F1 F2 F3"},
    )
    agents, workflow, tasks = await build_crew(client, {"Gather": "Researcher", "Report": "Writer"})
    try:
        done = await run(client, workflow["id"])
    finally:
        unsubscribe()
    assert done["status"] == "completed", done
    gather, report = tasks["Gather"]["id"], tasks["Report"]["id"]
    assert done["output_data"]["tasks"] == {
        str(gather): "Gathered. Tool results: d1=F1 F2 F3",
        str(report): "Reported. Tool results: d2=A report on F1 F2 F3",
    }
    # The manager (built on the default model) answers each task, offered the two tools only.
    managed = of_role(stub, MANAGER_ROLE)
    assert len(managed) == 4
    assert {r["model"] for r in managed} == {DEFAULT_MODEL}
    assert all(tool_names(r) == ["delegate_work", "ask_question"] for r in managed)
    assert "- Researcher: Be a good Researcher" in managed[0]["tools"][0]["function"]["description"]
    # Each coworker was prompted with the delegated work and context, offered no tool.
    (research,) = of_role(stub, "Researcher")
    (writing,) = of_role(stub, "Writer")
    assert user_prompt(research).startswith("Current Task: List three facts")
    assert user_prompt(writing).startswith("Current Task: Write the report")
    assert "Use the facts: F1 F2 F3" in user_prompt(writing)
    assert "tools" not in research and "tools" not in writing
    # The second task's manager saw the first task's output as context.
    assert "Gathered. Tool results: d1=F1 F2 F3" in user_prompt(calls_for(stub, "Report")[0])
    # Runs: the manager's (a built manager has no agent id), with its delegations as tool calls.
    (run_row,) = await runs_of(client, report)
    assert run_row["agent_id"] is None
    (call,) = run_row["tool_calls"]
    assert (call["call_id"], call["tool"], call["status"]) == ("d2", "delegate_work", "completed")
    assert call["result"] == "A report on F1 F2 F3"
    assert json.loads(call["arguments"])["coworker"] == "writer"
    # Events: who works, in the log and on the bus.
    delegations = [
        e for e in await logs_of(client, done["id"]) if e["event"].startswith("delegation_")
    ]
    assert [(e["event"], e["task_id"], e["data"]["agent_id"]) for e in delegations] == [
        ("delegation_started", gather, agents["Researcher"]["id"]),
        ("delegation_completed", gather, agents["Researcher"]["id"]),
        ("delegation_started", report, agents["Writer"]["id"]),
        ("delegation_completed", report, agents["Writer"]["id"]),
    ]
    last = delegations[-1]["data"]
    assert last["manager"] == MANAGER_ROLE and last["manager_agent_id"] is None
    assert (last["coworker"], last["task"], last["call_id"]) == ("Writer", "Write the report", "d2")
    assert last["result"] == "A report on F1 F2 F3"
    chunks = [e for e in events if e.type == EventType.TASK_OUTPUT_CHUNK]
    coworker_chunks = [e for e in chunks if e.agent_id == agents["Writer"]["id"]]
    assert "".join(e.data["chunk"] for e in coworker_chunks) == "A report on F1 F2 F3"
    assert {e.data["delegation_call_id"] for e in coworker_chunks} == {"d2"}
    assert {e.task_id for e in coworker_chunks} == {report}


async def test_task_options_hold_the_managers_answer(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    """In a hierarchical workflow the task options apply to the manager's answer: its prompt
    shows only the `context` tasks' outputs, its answer is held to the `output_schema` (asked
    for in that format after its tool calls), and with `human_input` it waits as a draft."""
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string"}},
        "required": ["title"],
        "additionalProperties": False,
    }
    stub.script(
        for_task("Gather", content="G-out"),
        for_task("Noise", content="N-out"),
        for_task("Report", delegate=[{"coworker": "Writer", "task": "Write it", "id": "w1"}]),
        {"role": "Writer", "content": "written"},
        for_task("Report", content="Here is the report: written"),
        {"format": "Report", "json": {"title": "written"}},
    )
    _, workflow, tasks = await build_crew(
        client, {"Gather": "Researcher", "Noise": "Researcher", "Report": "Writer"}
    )
    report = tasks["Report"]["id"]
    options = {
        "context": [tasks["Gather"]["id"]],
        "output_schema": schema,
        "human_input": True,
    }
    updated = await client.put(f"{API}/tasks/{report}", json=options)
    assert updated.status_code == 200, updated.text
    started = await client.post(f"{API}/workflows/{workflow['id']}/execute", json={})
    assert started.status_code == 202, started.text
    execution = started.json()["id"]
    await wait_for_status(client, execution, "waiting_for_input")
    (draft,) = await runs_of(client, report)
    assert (draft["status"], draft["output"]) == ("waiting_for_input", {"title": "written"})
    managed = calls_for(stub, "Report")
    assert "G-out" in user_prompt(managed[0]) and "N-out" not in user_prompt(managed[0])
    formatted = managed[-1]["response_format"]["json_schema"]
    assert (formatted["name"], formatted["schema"], formatted["strict"]) == ("Report", schema, True)
    assert "tools" not in managed[-1]
    approved = await client.post(f"{API}/executions/{execution}/input", json={"approve": True})
    assert approved.status_code == 202, approved.text
    done = await wait_for_status(client, execution, "completed", "failed")
    assert done["status"] == "completed", done
    assert done["output_data"]["tasks"][str(report)] == {"title": "written"}
    assert done["output_data"]["result"] == {"title": "written"}


async def test_ask_question_answers_from_the_coworker_and_counts_its_tokens(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    few = {"prompt_tokens": 1, "completion_tokens": 1}
    stub.script(
        for_task(
            "Check",
            usage=few,
            delegate=[
                {
                    "coworker": "Analyst",
                    "question": "Is 7 prime?",
                    "context": "We sort numbers.",
                    "id": "q1",
                }
            ],
        ),
        for_task("Check", content="Yes.", quote_tools=True, usage=few),
        {
            "role": "Analyst",
            "content": "7 is prime",
            "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        },
    )
    _, workflow, tasks = await build_crew(client, {"Check": "Analyst"})
    done = await run(client, workflow["id"])
    assert done["status"] == "completed", done
    assert done["output_data"]["result"] == "Yes. Tool results: q1=7 is prime"
    (asked,) = of_role(stub, "Analyst")
    prompt = user_prompt(asked)
    assert prompt.startswith("Current Task: Is 7 prime?")
    assert "We sort numbers." in prompt
    (run_row,) = await runs_of(client, tasks["Check"]["id"])
    assert [(c["tool"], c["result"]) for c in run_row["tool_calls"]] == [
        ("ask_question", "7 is prime")
    ]
    # The task's tokens: the manager's two calls and the coworker's answer.
    assert run_row["tokens_used"] == 2 + 2 + 15
    assert done["tokens_used"] == 19


async def test_an_unknown_coworker_is_a_tool_error_listing_the_roles(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        for_task("Plan", delegate=[{"coworker": "Astronaut", "task": "Fly", "id": "u1"}]),
        for_task("Plan", content="Done myself.", quote_tools=True),
    )
    _, workflow, tasks = await build_crew(client, {"Plan": "Planner", "Build": "Builder"})
    stub.script(for_task("Build", content="Built."))
    done = await run(client, workflow["id"])
    assert done["status"] == "completed", done
    error = "Error: unknown coworker 'Astronaut'; the coworkers are: 'Planner', 'Builder'"
    assert done["output_data"]["tasks"][str(tasks["Plan"]["id"])] == (
        f"Done myself. Tool results: u1={error}"
    )
    assert of_role(stub, "Planner") == [] and of_role(stub, "Builder") == []
    (run_row,) = await runs_of(client, tasks["Plan"]["id"])
    (call,) = run_row["tool_calls"]
    assert (call["status"], call["error"]) == ("failed", error)
    logged = {e["event"] for e in await logs_of(client, done["id"])}
    assert "tool_call_failed" in logged and "delegation_started" not in logged


async def test_max_delegations_bounds_what_the_manager_hands_out_per_task(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        for_task(
            "Big",
            delegate=[
                {"coworker": "Researcher", "task": "Part one", "id": "b1"},
                {"coworker": "Writer", "task": "Part two", "id": "b2"},
            ],
        ),
        for_task("Big", delegate=[{"coworker": "Writer", "question": "Ready?", "id": "b3"}]),
        for_task("Big", content="Finished.", quote_tools=True),
        for_task("Small", delegate=[{"coworker": "Writer", "task": "Part three", "id": "s1"}]),
        for_task("Small", content="Small done.", quote_tools=True),
        {"role": "Researcher", "content": "one"},
        {"role": "Writer", "content": "three"},
    )
    _, workflow, tasks = await build_crew(
        client, {"Big": "Researcher", "Small": "Writer"}, config={"max_delegations": 1}
    )
    done = await run(client, workflow["id"])
    assert done["status"] == "completed", done
    refused = (
        "Error: you have already delegated 1 times for this task, the most allowed "
        "(config.max_delegations): do not delegate or ask any more, give your final answer "
        "yourself from what you have"
    )
    (big,) = await runs_of(client, tasks["Big"]["id"])
    assert [(c["call_id"], c["status"], c["result"]) for c in big["tool_calls"]] == [
        ("b1", "completed", "one"),
        ("b2", "failed", refused),
        ("b3", "failed", refused),  # a question counts as a delegation
    ]
    # The bound is per task: the next task may delegate again.
    assert done["output_data"]["result"] == "Small done. Tool results: s1=three"
    assert [user_prompt(r).split("\n")[0] for r in of_role(stub, "Writer")] == [
        "Current Task: Part three"
    ]
    assert len(of_role(stub, "Researcher")) == 1


async def test_without_max_delegations_a_task_may_delegate_ten_times(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    asks = [{"coworker": "Researcher", "question": f"Fact {i}?", "id": f"q{i}"} for i in range(11)]
    stub.script(
        for_task("Many", delegate=asks),
        for_task("Many", content="Enough.", quote_tools=True),
        *({"role": "Researcher", "content": f"fact {i}"} for i in range(10)),
    )
    _, workflow, tasks = await build_crew(client, {"Many": "Researcher"})
    assert workflow["config"] is None
    done = await run(client, workflow["id"])
    assert done["status"] == "completed", done
    (many,) = await runs_of(client, tasks["Many"]["id"])
    statuses = [(c["call_id"], c["status"]) for c in many["tool_calls"]]
    assert statuses == [(f"q{i}", "completed") for i in range(10)] + [("q10", "failed")]
    assert "you have already delegated 10 times" in many["tool_calls"][-1]["result"]
    assert len(of_role(stub, "Researcher")) == 10


async def test_a_coworker_uses_its_own_tools_but_cannot_delegate_back(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    events: list[Event] = []
    unsubscribe = app.state.bus.subscribe(events.append)
    stub.script(
        for_task("Sum", delegate=[{"coworker": "Calculator", "task": "Add them", "id": "m1"}]),
        for_task("Sum", content="Sum known.", quote_tools=True),
        {
            "role": "Calculator",
            "tool_calls": [
                {"name": "calculator", "id": "c1", "arguments": {"expression": "2+3"}},
                {
                    "name": "delegate_work",
                    "id": "c2",
                    "arguments": {"coworker": "Calculator", "task": "again", "context": ""},
                },
            ],
        },
        {"role": "Calculator", "content": "The sum:", "quote_tools": True},
    )
    agents, workflow, tasks = await build_crew(
        client, {"Sum": "Calculator"}, agents={"Calculator": {"tools": ["calculator"]}}
    )
    try:
        done = await run(client, workflow["id"])
    finally:
        unsubscribe()
    assert done["status"] == "completed", done
    refused = "Error: unknown tool 'delegate_work'; the tools you may call: calculator"
    assert done["output_data"]["result"] == (
        f"Sum known. Tool results: m1=The sum: Tool results: c1=5; c2={refused}"
    )
    first, second = of_role(stub, "Calculator")
    assert tool_names(first) == tool_names(second) == ["calculator"]
    assert tool_messages(second) == ["5", refused]
    assert len(of_role(stub, MANAGER_ROLE)) == 2  # nobody delegated back to the manager
    # The coworker's tool calls are events of the task, carrying the coworker's agent id and
    # the delegation they belong to; they are stored with the run, after their delegation.
    calculator = agents["Calculator"]["id"]
    nested = [
        (e.type.value, e.data["call_id"], e.agent_id, e.data["delegation_call_id"])
        for e in events
        if e.type.value.startswith("tool_call_") and "delegation_call_id" in e.data
    ]
    assert sorted(nested) == [
        ("tool_call_completed", "c1", calculator, "m1"),
        ("tool_call_failed", "c2", calculator, "m1"),
        ("tool_call_started", "c1", calculator, "m1"),
        ("tool_call_started", "c2", calculator, "m1"),
    ]
    logged = [e for e in await logs_of(client, done["id"]) if e["event"] == "tool_call_started"]
    assert [(e["data"]["call_id"], e["data"].get("delegation_call_id")) for e in logged] == [
        ("m1", None),
        ("c1", "m1"),
        ("c2", "m1"),
    ]
    (run_row,) = await runs_of(client, tasks["Sum"]["id"])
    stored = [
        (c["call_id"], c["status"], c["iteration"], c["delegation_call_id"])
        for c in run_row["tool_calls"]
    ]
    assert stored == [
        ("m1", "completed", 1, None),
        ("c1", "completed", 1, "m1"),
        ("c2", "failed", 1, "m1"),
    ]


async def test_a_coworker_whose_model_fails_is_reported_to_the_manager(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        for_task("Try", delegate=[{"coworker": "Ghost", "task": "Boo", "id": "g1"}]),
        for_task("Try", content="Handled.", quote_tools=True),
    )
    _, workflow, _ = await build_crew(
        client, {"Try": "Ghost"}, agents={"Ghost": {"model": "no-such-model"}}
    )
    done = await run(client, workflow["id"])
    assert done["status"] == "completed", done
    result = done["output_data"]["result"]
    assert result.startswith("Handled. Tool results: g1=Error: Ghost could not answer: ")
    assert "MODEL_NOT_FOUND" in result
    completed = [
        e for e in await logs_of(client, done["id"]) if e["event"] == "delegation_completed"
    ]
    assert len(completed) == 1 and "MODEL_NOT_FOUND" in completed[0]["data"]["error"]


async def test_a_coworker_on_a_retired_model_goes_on_with_its_fallback_and_says_so(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    events: list[Event] = []
    unsubscribe = app.state.bus.subscribe(events.append)
    stub.script(
        for_task("Try", delegate=[{"coworker": "Veteran", "task": "Boo", "id": "v1"}]),
        for_task("Try", content="Handled.", quote_tools=True),
        {"role": "Veteran", "content": "Still here"},
    )
    agents, workflow, tasks = await build_crew(
        client,
        {"Try": "Veteran"},
        agents={
            "Veteran": {"model": "retired-model", "config": {"fallback_models": ["gemma-4-31b"]}}
        },
    )
    try:
        done = await run(client, workflow["id"])
    finally:
        unsubscribe()
    assert done["status"] == "completed", done
    assert done["output_data"]["result"] == "Handled. Tool results: v1=Still here"
    assert [r["model"] for r in of_role(stub, "Veteran")] == ["retired-model", "gemma-4-31b"]
    veteran = agents["Veteran"]["id"]
    logs = await logs_of(client, done["id"])
    (fallback,) = [e for e in logs if e["event"] == "model_fallback"]
    assert (fallback["task_id"], fallback["level"]) == (tasks["Try"]["id"], "warning")
    assert fallback["data"]["agent_id"] == veteran
    assert (fallback["data"]["from"], fallback["data"]["to"]) == ("retired-model", "gemma-4-31b")
    assert fallback["data"]["delegation_call_id"] == "v1"
    assert "'Veteran'" in fallback["message"] and "gemma-4-31b" in fallback["message"]
    (completed,) = [e for e in logs if e["event"] == "delegation_completed"]
    assert completed["data"]["model"] == "gemma-4-31b"
    assert [e.agent_id for e in events if e.type == EventType.MODEL_FALLBACK] == [veteran]
    # The task run is the manager's: its model is the manager's own.
    (run_row,) = await runs_of(client, tasks["Try"]["id"])
    assert run_row["model"] == DEFAULT_MODEL


async def test_a_manager_agent_answers_with_its_own_persona_and_model_but_no_tools(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    boss = await make_agent(
        client,
        role="Editor in chief",
        goal="Ship the issue",
        model="gpt-oss-120b",
        tools=["calculator"],
    )
    stub.script(
        for_task("Edit", delegate=[{"coworker": "Writer", "task": "Draft", "id": "e1"}]),
        for_task("Edit", content="Edited.", quote_tools=True),
        {"role": "Writer", "content": "draft"},
    )
    agents, workflow, tasks = await build_crew(
        client, {"Edit": "Writer"}, config={"manager_agent_id": boss["id"]}
    )
    done = await run(client, workflow["id"])
    assert done["status"] == "completed", done
    assert done["output_data"]["result"] == "Edited. Tool results: e1=draft"
    managed = of_role(stub, "Editor in chief")
    assert len(managed) == 2 and of_role(stub, MANAGER_ROLE) == []
    assert {r["model"] for r in managed} == {"gpt-oss-120b"}
    assert all(tool_names(r) == ["delegate_work", "ask_question"] for r in managed)
    assert "Ship the issue" in system_prompt(managed[0])
    (run_row,) = await runs_of(client, tasks["Edit"]["id"])
    assert run_row["agent_id"] == boss["id"]
    logs = await logs_of(client, done["id"])
    started = next(e for e in logs if e["event"] == "task_started")
    assert started["data"]["agent_id"] == boss["id"]
    delegation = next(e for e in logs if e["event"] == "delegation_started")["data"]
    assert (delegation["manager"], delegation["manager_agent_id"]) == (
        "Editor in chief",
        boss["id"],
    )
    assert delegation["agent_id"] == agents["Writer"]["id"]


async def test_a_manager_agent_assigned_to_a_task_is_not_its_own_coworker(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("Solo", content="Alone."))
    agents, workflow, _ = await build_crew(client, {"Solo": "Lead", "Help": "Helper"})
    changed = await client.put(
        f"{API}/workflows/{workflow['id']}",
        json={"config": {"manager_agent_id": agents["Lead"]["id"]}},
    )
    assert changed.status_code == 200, changed.text
    stub.script(for_task("Help", content="Helped."))
    done = await run(client, workflow["id"])
    assert done["status"] == "completed", done
    first = of_role(stub, "Lead")[0]
    description = first["tools"][0]["function"]["description"]
    assert "- Helper: " in description and "- Lead: " not in description


async def test_manager_model_builds_the_manager_on_that_model(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("Quick", content="Quick answer."))
    _, workflow, _ = await build_crew(
        client, {"Quick": "Helper"}, config={"manager_model": "llama3.1-8b"}
    )
    done = await run(client, workflow["id"])
    assert done["status"] == "completed", done
    (managed,) = of_role(stub, MANAGER_ROLE)
    assert managed["model"] == "llama3.1-8b"
    assert of_role(stub, "Helper") == []  # the manager answered by itself


async def test_tasks_need_no_agent_and_a_crew_may_be_empty(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        for_task("Alone", delegate=[{"coworker": "Anyone", "task": "Help", "id": "n1"}]),
        for_task("Alone", content="By myself.", quote_tools=True),
    )
    _, workflow, _ = await build_crew(client, {"Alone": None})
    done = await run(client, workflow["id"])
    assert done["status"] == "completed", done
    assert done["output_data"]["result"] == (
        "By myself. Tool results: n1=Error: unknown coworker 'Anyone'; this crew has no "
        "coworkers: answer the task yourself"
    )
    (managed, _) = of_role(stub, MANAGER_ROLE)
    assert "(nobody: answer every task yourself)" in managed["tools"][0]["function"]["description"]


async def test_inactive_agents_are_not_coworkers(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    agents, workflow, tasks = await build_crew(client, {"One": "Active", "Two": "Resting"})
    resting = await client.put(f"{API}/agents/{agents['Resting']['id']}", json={"is_active": False})
    assert resting.status_code == 200, resting.text
    stub.script(
        for_task("One", delegate=[{"coworker": "Resting", "task": "Wake up", "id": "r1"}]),
        for_task("One", content="One done.", quote_tools=True),
        for_task("Two", content="Two done."),
    )
    done = await run(client, workflow["id"])
    assert done["status"] == "completed", done
    assert done["output_data"]["tasks"][str(tasks["One"]["id"])] == (
        "One done. Tool results: r1=Error: unknown coworker 'Resting'; the coworkers are: 'Active'"
    )
    assert of_role(stub, "Resting") == []


async def test_a_single_task_run_is_managed_with_the_whole_crew(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        for_task("Second", delegate=[{"coworker": "First hand", "task": "Assist", "id": "t1"}]),
        for_task("Second", content="Second done.", quote_tools=True),
        {"role": "First hand", "content": "assisted"},
    )
    _, _, tasks = await build_crew(client, {"First": "First hand", "Second": None})
    started = await client.post(f"{API}/tasks/{tasks['Second']['id']}/execute", json={})
    assert started.status_code == 202, started.text
    done = await wait_for_status(client, started.json()["id"], "completed", "failed")
    assert done["status"] == "completed", done
    assert done["mode"] == "task"
    assert done["output_data"]["result"] == "Second done. Tool results: t1=assisted"


async def test_a_manager_agent_deleted_after_the_run_was_accepted_fails_it_clearly(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    boss = await make_agent(client, role="Boss")
    _, workflow, tasks = await build_crew(
        client, {"Late": "Worker"}, config={"manager_agent_id": boss["id"]}
    )
    paused = await client.post(f"{API}/workflows/{workflow['id']}/pause")
    assert paused.status_code == 200, paused.text
    started = await client.post(f"{API}/workflows/{workflow['id']}/execute", json={})
    assert started.status_code == 202, started.text
    assert (await client.delete(f"{API}/agents/{boss['id']}")).status_code == 200
    assert (await client.post(f"{API}/workflows/{workflow['id']}/resume")).status_code == 200
    done = await wait_for_status(client, started.json()["id"], "completed", "failed")
    assert done["status"] == "failed", done
    assert done["error_message"] == (
        f"TASK_NOT_RUNNABLE: the manager agent {boss['id']} no longer exists"
    )
    assert stub.requests == []
    assert await runs_of(client, tasks["Late"]["id"]) == []


async def test_bad_delegation_arguments_are_tool_errors(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    def delegate(call_id: str, arguments: Any) -> dict[str, Any]:
        return {"name": "delegate_work", "id": call_id, "arguments": arguments}

    stub.script(
        for_task(
            "Odd",
            tool_calls=[
                delegate("a1", {"task": "No coworker"}),
                delegate("a2", {"coworker": "Fixer", "task": "  "}),
                delegate("a3", {"coworker": 7, "task": "x"}),
                delegate("a4", "not json"),
                {"name": "ask_question", "id": "a5", "arguments": {"coworker": "Fixer"}},
                delegate("a6", {"coworker": "'FIXER' ", "task": "Fix", "context": {"k": [1]}}),
            ],
        ),
        for_task("Odd", content="Odd done.", quote_tools=True),
        {"role": "Fixer", "content": "fixed"},
    )
    _, workflow, tasks = await build_crew(client, {"Odd": "Fixer"}, config={"max_delegations": 1})
    done = await run(client, workflow["id"])
    assert done["status"] == "completed", done
    (run_row,) = await runs_of(client, tasks["Odd"]["id"])
    assert [(c["call_id"], c["result"]) for c in run_row["tool_calls"]] == [
        ("a1", "Error: `coworker` must be a coworker's role; the coworkers are: 'Fixer'"),
        ("a2", "Error: `task` must be a non-empty string"),
        ("a3", "Error: `coworker` must be a coworker's role; the coworkers are: 'Fixer'"),
        ("a4", "Error: the arguments of 'delegate_work' are not valid JSON: 'not json'"),
        ("a5", "Error: `question` must be a non-empty string"),
        ("a6", "fixed"),  # refused calls used no delegation; a role in quotes and case matches
    ]
    (fixer,) = of_role(stub, "Fixer")
    assert '{"k": [1]}' in user_prompt(fixer)  # a context that is not text is sent as JSON


async def test_max_delegations_zero_turns_delegation_off(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        for_task("Own", delegate=[{"coworker": "Idle", "task": "Help", "id": "z1"}]),
        for_task("Own", content="Mine.", quote_tools=True),
    )
    _, workflow, _ = await build_crew(client, {"Own": "Idle"}, config={"max_delegations": 0})
    done = await run(client, workflow["id"])
    assert done["output_data"]["result"] == (
        "Mine. Tool results: z1=Error: delegating is off in this workflow "
        "(config.max_delegations): do not delegate or ask any more, give your final answer "
        "yourself from what you have"
    )
    assert of_role(stub, "Idle") == []
