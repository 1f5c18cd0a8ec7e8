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
    agents, workflow, tasks = await build_crew(
        client, {"Gather": "Researcher", "Report": "Writer"}
    )
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
