"""Tasks with `human_input`: the agent's answer is a draft the execution waits on
(`waiting_for_input`, no runner held) until `POST /executions/{id}/input` approves it or sends
feedback that the agent revises with. On both databases, with the real stub."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from fastapi import FastAPI

from crew_platform.devtools.llm_stub import StubServer
from crew_platform.engine.review import FEEDBACK_PROMPT
from crew_platform.events.types import Event
from tests.api import assert_error, check_each
from tests.flows import (
    API,
    calls_for,
    execute,
    for_task,
    idle,
    make_agent,
    make_task,
    make_workflow,
    user_prompt,
    wait_for_gate,
    wait_for_status,
)
from tests.support import wait_for_execution


async def reviewed_pipeline(
    client: httpx.AsyncClient, names: list[str], reviewed: set[str], workflow_type: str = "linear"
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """One agent, one workflow, tasks `names` in order; those in `reviewed` have human_input."""
    agent = await make_agent(client)
    workflow = await make_workflow(client, workflow_type)
    tasks = [
        await make_task(
            client, workflow["id"], agent["id"], name, order=i, human_input=name in reviewed
        )
        for i, name in enumerate(names)
    ]
    return agent, workflow, tasks


async def give(client: httpx.AsyncClient, execution_id: int, **body: Any) -> httpx.Response:
    return await client.post(f"{API}/executions/{execution_id}/input", json=body)


async def runs_of(client: httpx.AsyncClient, task_id: int) -> list[dict[str, Any]]:
    """The task's runs, oldest first."""
    runs: list[dict[str, Any]] = (await client.get(f"{API}/tasks/{task_id}/executions")).json()
    return runs[::-1]


async def logs_of(client: httpx.AsyncClient, execution_id: int) -> list[dict[str, Any]]:
    logs: list[dict[str, Any]] = (await client.get(f"{API}/executions/{execution_id}/logs")).json()
    return logs


async def waiting(app: FastAPI, client: httpx.AsyncClient, execution_id: int) -> dict[str, Any]:
    """Until the execution waits for input and its runner has ended."""
    body = await wait_for_status(client, execution_id, "waiting_for_input", "failed", "completed")
    assert body["status"] == "waiting_for_input", body
    await idle(app)
    return body


def feedback_message(feedback: str) -> dict[str, str]:
    return {"role": "user", "content": FEEDBACK_PROMPT.format(feedback=feedback)}


def conversation(request: dict[str, Any]) -> list[dict[str, Any]]:
    """A model request's messages after the system prompt, as role and content."""
    return [{"role": m["role"], "content": m["content"]} for m in request["messages"][1:]]


async def test_the_draft_waits_holding_nothing_and_approve_makes_it_the_output(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    events: list[Event] = []
    app.state.bus.subscribe(events.append)
    stub.script(
        for_task("A", content="OUT<A>"),
        for_task("B", content="DRAFT<B>"),
        for_task("C", content="OUT<C>"),
    )
    _, workflow, (a, b, c) = await reviewed_pipeline(client, ["A", "B", "C"], {"B"})
    assert (a["human_input"], b["human_input"]) == (False, True)
    run = await execute(client, workflow["id"])

    await waiting(app, client, run["id"])
    # Held while waiting: no runner, no model call, no database connection.
    assert app.state.dispatcher.running_ids() == []
    assert stub.state.active == 0
    assert app.state.engine.pool.checkedout() == 0
    assert calls_for(stub, "C") == []
    (draft,) = await runs_of(client, b["id"])
    assert (draft["status"], draft["output"], draft["feedback"]) == (
        "waiting_for_input",
        "DRAFT<B>",
        None,
    )
    logs = await logs_of(client, run["id"])
    (required,) = [e for e in logs if e["event"] == "input_required"]
    assert required["task_id"] == b["id"]
    assert required["data"]["draft"] == "DRAFT<B>"
    published = [e for e in events if e.type == "input_required"]
    assert [(e.task_id, e.seq, e.data["draft"]) for e in published] == [
        (b["id"], required["seq"], "DRAFT<B>")
    ]
    status = (await client.get(f"{API}/executions/{run['id']}/status")).json()
    assert status["status"] == "waiting_for_input"
    assert status["progress"]["completed"] == 1
    assert status["progress"]["waiting_for_input"] == 1
    assert status["progress"]["pending"] == 1
    assert [(w["task_id"], w["run_id"], w["draft"]) for w in status["waiting_tasks"]] == [
        (b["id"], draft["id"], "DRAFT<B>")
    ]
    listed = (await client.get(f"{API}/executions/", params={"status": "waiting_for_input"})).json()
    assert [e["id"] for e in listed] == [run["id"]]
    task_b = (await client.get(f"{API}/tasks/{b['id']}")).json()
    assert task_b["status"] == "waiting_for_input"

    approved = await give(client, run["id"], approve=True)
    assert approved.status_code == 202, approved.text
    assert approved.json()["id"] == run["id"]
    assert approved.json()["status"] == "pending"
    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "completed", done
    assert done["output_data"]["tasks"] == {
        str(a["id"]): "OUT<A>",
        str(b["id"]): "DRAFT<B>",
        str(c["id"]): "OUT<C>",
    }
    assert done["output_data"]["result"] == "OUT<C>"
    assert "DRAFT<B>" in user_prompt(calls_for(stub, "C")[0])
    assert [len(calls_for(stub, name)) for name in "ABC"] == [1, 1, 1]
    (approved_run,) = await runs_of(client, b["id"])
    assert (approved_run["status"], approved_run["output"]) == ("completed", "DRAFT<B>")
    kinds = [e["event"] for e in await logs_of(client, run["id"])]
    after_input = kinds[kinds.index("input_required") + 1 :]
    assert after_input[:3] == ["input_received", "task_completed", "workflow_resumed"]
    assert kinds[-1] == "workflow_completed"
    seqs = [e["seq"] for e in await logs_of(client, run["id"])]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_feedback_goes_back_to_the_model_with_its_draft_and_it_asks_again(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        for_task("Write", content="DRAFT-1"),
        {"match": "Make it shorter", "content": "DRAFT-2"},
        {"match": "Add a title", "content": "DRAFT-3"},
    )
    _, workflow, (write,) = await reviewed_pipeline(client, ["Write"], {"Write"})
    run = await execute(client, workflow["id"])
    await waiting(app, client, run["id"])

    sent = await give(client, run["id"], feedback="  Make it shorter ")
    assert sent.status_code == 202, sent.text
    assert sent.json()["status"] == "pending"
    await wait_for_status(client, run["id"], "waiting_for_input")
    await idle(app)
    assert (await give(client, run["id"], approve=False, feedback="Add a title")).status_code == 202
    await wait_for_status(client, run["id"], "waiting_for_input")
    await idle(app)

    first, second, third = calls_for(stub, "Write")
    task_message = conversation(first)
    assert conversation(second) == [
        *task_message,
        {"role": "assistant", "content": "DRAFT-1"},
        feedback_message("Make it shorter"),
    ]
    assert conversation(third) == [
        *conversation(second),
        {"role": "assistant", "content": "DRAFT-2"},
        feedback_message("Add a title"),
    ]
    runs = await runs_of(client, write["id"])
    assert [(r["attempt"], r["status"], r["output"], r["feedback"]) for r in runs] == [
        (1, "changes_requested", "DRAFT-1", "Make it shorter"),
        (2, "changes_requested", "DRAFT-2", "Add a title"),
        (3, "waiting_for_input", "DRAFT-3", None),
    ]
    asked = [e for e in await logs_of(client, run["id"]) if e["event"] == "input_required"]
    assert [e["data"]["draft"] for e in asked] == ["DRAFT-1", "DRAFT-2", "DRAFT-3"]

    assert (await give(client, run["id"], approve=True)).status_code == 202
    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "completed", done
    assert done["output_data"]["tasks"] == {str(write["id"]): "DRAFT-3"}
    assert len(stub.requests) == 3
    assert done["tokens_used"] == sum(r["tokens_used"] for r in await runs_of(client, write["id"]))


async def test_a_body_that_is_neither_approve_nor_feedback_is_a_422(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    _, workflow, (only,) = await reviewed_pipeline(client, ["Only"], {"Only"})
    run = await execute(client, workflow["id"])
    await waiting(app, client, run["id"])
    url = f"{API}/executions/{run['id']}/input"

    async def refused(body: Any, field: str) -> None:
        response = await client.post(url, json=body)
        assert_error(response, 422, "VALIDATION_ERROR", [field])

    await check_each(
        [
            ({}, "feedback"),
            ({"approve": False}, "feedback"),
            ({"approve": True, "feedback": "also this"}, "feedback"),
            ({"approve": "true"}, "approve"),
            ({"approve": 1}, "approve"),
            ({"approve": None}, "approve"),
            ({"feedback": 5}, "feedback"),
            ({"feedback": "   "}, "feedback"),
            ({"feedback": "x" * 100_001}, "feedback"),
            ({"feedback": "bad \u0000 text"}, "feedback"),
            ({"approve": True, "note": "typo"}, "note"),
            ({"approve": True, "task_id": "1"}, "task_id"),
            ({"approve": True, "task_id": 0}, "task_id"),
            ({"approve": True, "task_id": only["id"] + 1000}, "task_id"),
            ([True], "body"),
        ],
        refused,
    )
    malformed = await client.post(
        url, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(malformed, 400, "INVALID_JSON")
    # Nothing of that reached the execution.
    assert (await client.get(f"{API}/executions/{run['id']}")).json()["status"] == (
        "waiting_for_input"
    )
    assert [r["status"] for r in await runs_of(client, only["id"])] == ["waiting_for_input"]
    assert len(stub.requests) == 1


async def test_input_to_an_execution_that_does_not_wait_is_a_409_and_unknown_ids_a_404(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("Held", gate="held"))
    _, workflow, _ = await reviewed_pipeline(client, ["Held"], {"Held"})
    run = await execute(client, workflow["id"])
    await wait_for_gate(stub, "held")
    body = assert_error(await give(client, run["id"], approve=True), 409, "INVALID_STATE")
    assert body["details"]["status"] == "running"
    assert body["details"]["allowed_from"] == ["waiting_for_input"]
    assert "is running" in body["message"]
    stub.open_gate("held")
    await waiting(app, client, run["id"])

    assert (await give(client, run["id"], approve=True)).status_code == 202
    await wait_for_execution(client, run["id"])
    again = assert_error(await give(client, run["id"], feedback="too late"), 409, "INVALID_STATE")
    assert again["details"]["status"] == "completed"
    assert again["details"]["intent"] == "request_changes"

    _, plain, _ = await reviewed_pipeline(client, ["Plain"], set())
    plain_run = await execute(client, plain["id"])
    await wait_for_execution(client, plain_run["id"])
    assert_error(await give(client, plain_run["id"], approve=True), 409, "INVALID_STATE")

    assert_error(await give(client, 999_999, approve=True), 404, "NOT_FOUND")
    assert_error(await give(client, 2**31, approve=True), 404, "NOT_FOUND")
    assert_error(
        await client.post(f"{API}/executions/abc/input", json={"approve": True}),
        422,
        "VALIDATION_ERROR",
    )


async def test_cancel_while_waiting_keeps_finished_outputs_and_closes_the_draft(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("A", content="OUT<A>"), for_task("B", content="DRAFT<B>"))
    _, workflow, (a, b, c) = await reviewed_pipeline(client, ["A", "B", "C"], {"B"})
    run = await execute(client, workflow["id"])
    await waiting(app, client, run["id"])

    cancelled = await client.post(f"{API}/executions/{run['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    (execution,) = cancelled.json()["affected_executions"]
    assert execution["status"] == "cancelled"
    assert execution["completed_at"] is not None
    assert execution["output_data"] == {"result": "OUT<A>", "tasks": {str(a["id"]): "OUT<A>"}}
    (draft,) = await runs_of(client, b["id"])
    assert (draft["status"], draft["output"]) == ("cancelled", "DRAFT<B>")
    assert await runs_of(client, c["id"]) == []
    assert_error(await give(client, run["id"], approve=True), 409, "INVALID_STATE")
    await idle(app)
    assert len(stub.requests) == 2

    # A workflow's cancel takes its waiting executions too.
    second = await execute(client, workflow["id"])
    await waiting(app, client, second["id"])
    response = await client.post(f"{API}/workflows/{workflow['id']}/cancel")
    assert response.status_code == 200, response.text
    assert [(e["id"], e["status"]) for e in response.json()["affected_executions"]] == [
        (second["id"], "cancelled")
    ]


async def test_pause_and_resume_leave_a_waiting_execution_waiting(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("A", content="DRAFT<A>"), for_task("B", content="OUT<B>"))
    _, workflow, (a, b) = await reviewed_pipeline(client, ["A", "B"], {"A"})
    run = await execute(client, workflow["id"])
    await waiting(app, client, run["id"])

    paused = await client.post(f"{API}/workflows/{workflow['id']}/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["workflow_status"] == "paused"
    assert paused.json()["affected_executions"] == []
    resumed = await client.post(f"{API}/workflows/{workflow['id']}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["affected_executions"] == []
    await idle(app)
    assert (await client.get(f"{API}/executions/{run['id']}")).json()["status"] == (
        "waiting_for_input"
    )
    assert len(stub.requests) == 1

    # Input given while the workflow is paused is kept; the run goes on at the resume.
    assert (await client.post(f"{API}/workflows/{workflow['id']}/pause")).status_code == 200
    answered = await give(client, run["id"], approve=True)
    assert answered.status_code == 202
    await idle(app)
    assert (await client.get(f"{API}/executions/{run['id']}")).json()["status"] == "pending"
    assert [r["status"] for r in await runs_of(client, a["id"])] == ["completed"]
    assert calls_for(stub, "B") == []
    assert (await client.post(f"{API}/workflows/{workflow['id']}/resume")).status_code == 200
    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "completed", done
    assert done["output_data"]["tasks"] == {str(a["id"]): "DRAFT<A>", str(b["id"]): "OUT<B>"}
    assert len(stub.requests) == 2


async def test_a_draft_answered_while_paused_waits_and_the_resume_asks_without_a_model_call(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("A", gate="a", content="DRAFT<A>"))
    _, workflow, (a,) = await reviewed_pipeline(client, ["A"], {"A"})
    run = await execute(client, workflow["id"])
    await wait_for_gate(stub, "a")
    assert (await client.post(f"{API}/workflows/{workflow['id']}/pause")).status_code == 200
    stub.open_gate("a")
    await idle(app)
    assert (await client.get(f"{API}/executions/{run['id']}")).json()["status"] == "paused"
    assert [(r["status"], r["output"]) for r in await runs_of(client, a["id"])] == [
        ("waiting_for_input", "DRAFT<A>")
    ]
    assert_error(await give(client, run["id"], approve=True), 409, "INVALID_STATE")

    assert (await client.post(f"{API}/workflows/{workflow['id']}/resume")).status_code == 200
    await waiting(app, client, run["id"])
    assert len(stub.requests) == 1
    asked = [e for e in await logs_of(client, run["id"]) if e["event"] == "input_required"]
    assert [e["data"]["draft"] for e in asked] == ["DRAFT<A>", "DRAFT<A>"]
    assert (await give(client, run["id"], approve=True)).status_code == 202
    done = await wait_for_execution(client, run["id"])
    assert done["output_data"]["tasks"] == {str(a["id"]): "DRAFT<A>"}
    assert len(stub.requests) == 1


async def test_several_drafts_of_a_parallel_run_are_answered_one_by_one_by_task_id(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        for_task("Left", gate="both", content="DRAFT<L>"),
        for_task("Right", gate="both", content="DRAFT<R>"),
        {"match": "Fix the right one", "content": "DRAFT<R2>"},
    )
    agent, workflow, (left, right) = await reviewed_pipeline(
        client, ["Left", "Right"], {"Left", "Right"}, "parallel"
    )
    join = await make_task(
        client, workflow["id"], agent["id"], "Join", dependencies=[left["id"], right["id"]]
    )
    run = await execute(client, workflow["id"])
    await wait_for_gate(stub, "both", 2)
    stub.open_gate("both")
    await waiting(app, client, run["id"])
    status = (await client.get(f"{API}/executions/{run['id']}/status")).json()
    assert sorted(w["task_id"] for w in status["waiting_tasks"]) == [left["id"], right["id"]]

    unnamed = assert_error(await give(client, run["id"], approve=True), 422, fields=["task_id"])
    assert sorted(unnamed["details"]["waiting_task_ids"]) == [left["id"], right["id"]]
    assert_error(
        await give(client, run["id"], approve=True, task_id=join["id"]), 422, fields=["task_id"]
    )

    assert (await give(client, run["id"], approve=True, task_id=left["id"])).status_code == 202
    await waiting(app, client, run["id"])  # Right still waits: asked again, no model call
    assert len(stub.requests) == 2
    sent = await give(client, run["id"], feedback="Fix the right one", task_id=right["id"])
    assert sent.status_code == 202
    await waiting(app, client, run["id"])
    assert (await give(client, run["id"], approve=True)).status_code == 202  # the only one
    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "completed", done
    assert done["output_data"]["tasks"][str(left["id"])] == "DRAFT<L>"
    assert done["output_data"]["tasks"][str(right["id"])] == "DRAFT<R2>"
    prompt = user_prompt(calls_for(stub, "Join")[0])
    assert "DRAFT<L>" in prompt and "DRAFT<R2>" in prompt
    assert [len(calls_for(stub, n)) for n in ("Left", "Right", "Join")] == [1, 2, 1]


async def test_a_task_retry_is_refused_while_its_execution_waits(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    _, workflow, (only,) = await reviewed_pipeline(client, ["Only"], {"Only"})
    run = await execute(client, workflow["id"])
    await waiting(app, client, run["id"])
    assert_error(await client.post(f"{API}/tasks/{only['id']}/retry"), 409, "INVALID_STATE")


async def test_of_two_answers_given_at_once_one_is_taken_and_the_other_is_a_409(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("Only", content="DRAFT"), {"match": "Other way", "content": "REVISED"})
    _, workflow, (only,) = await reviewed_pipeline(client, ["Only"], {"Only"})
    run = await execute(client, workflow["id"])
    await waiting(app, client, run["id"])
    answers = await asyncio.gather(
        give(client, run["id"], approve=True), give(client, run["id"], feedback="Other way")
    )
    assert sorted(r.status_code for r in answers) == [202, 409]
    (taken,) = [r for r in answers if r.status_code == 202]
    await wait_for_status(client, run["id"], "completed", "waiting_for_input")
    await idle(app)
    runs = await runs_of(client, only["id"])
    if json.loads(taken.request.content) == {"approve": True}:
        assert [r["status"] for r in runs] == ["completed"]
        assert len(stub.requests) == 1
    else:
        assert [r["status"] for r in runs] == ["changes_requested", "waiting_for_input"]
        assert len(stub.requests) == 2


async def test_input_after_the_waiting_task_was_deleted_fails_the_execution_saying_so(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    _, workflow, (a, _b) = await reviewed_pipeline(client, ["A", "B"], {"A"})
    run = await execute(client, workflow["id"])
    await waiting(app, client, run["id"])
    assert (await client.delete(f"{API}/tasks/{a['id']}")).status_code == 200
    answered = await give(client, run["id"], approve=True)
    assert answered.status_code == 202, answered.text
    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "failed"
    assert "TASK_NOT_RUNNABLE" in done["error_message"]
    assert calls_for(stub, "B") == []
