"""Pause, resume and cancel on every path, with model calls held by the stub (gates) so that
"during a call" is a fact, not a timing guess."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import FastAPI

from crew_platform.devtools.llm_stub import StubServer
from tests.flows import (
    API,
    calls_for,
    eventually,
    execute,
    for_task,
    idle,
    make_task,
    pipeline,
    user_prompt,
    wait_for_gate,
    wait_for_status,
)
from tests.support import wait_for_execution


async def runs_of(client: httpx.AsyncClient, task_id: int) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = (await client.get(f"{API}/tasks/{task_id}/executions")).json()
    return runs


async def get(client: httpx.AsyncClient, execution_id: int) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get(f"{API}/executions/{execution_id}")).json()
    return body


async def post(client: httpx.AsyncClient, path: str) -> httpx.Response:
    return await client.post(f"{API}{path}")


def hold(name: str, gate: str, content: str | None = None) -> dict[str, Any]:
    reply: dict[str, Any] = for_task(name, gate=gate)
    if content is not None:
        reply["content"] = content
    return reply


# -- pause / resume ----------------------------------------------------------------------------


async def test_pause_lets_the_call_in_flight_finish_keeps_it_and_stops_there(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(hold("A", "a", "OUT<A>"))
    _, workflow, (a, b, c) = await pipeline(client, ["A", "B", "C"])
    run = await execute(client, workflow["id"])
    await wait_for_gate(stub, "a")

    paused = await post(client, f"/workflows/{workflow['id']}/pause")
    assert paused.status_code == 200, paused.text
    body = paused.json()
    assert body["workflow_id"] == workflow["id"]
    assert body["workflow_status"] == "paused"
    assert [(e["id"], e["status"]) for e in body["affected_executions"]] == [(run["id"], "paused")]
    assert (await client.get(f"{API}/workflows/{workflow['id']}")).json()["status"] == "paused"

    stub.open_gate("a")
    await idle(app)
    assert (await get(client, run["id"]))["status"] == "paused"
    (run_a,) = await runs_of(client, a["id"])
    assert (run_a["status"], run_a["output"]) == ("completed", "OUT<A>")
    assert await runs_of(client, b["id"]) == []
    assert len(stub.requests) == 1
    status = (await client.get(f"{API}/executions/{run['id']}/status")).json()
    assert status["status"] == "paused"
    assert status["progress"]["completed"] == 1 and status["progress"]["pending"] == 2

    resumed = await post(client, f"/workflows/{workflow['id']}/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["workflow_status"] == "active"
    assert [e["id"] for e in resumed.json()["affected_executions"]] == [run["id"]]
    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "completed"
    assert len(calls_for(stub, "A")) == 1  # not run again
    assert len(calls_for(stub, "B")) == 1
    assert done["output_data"]["tasks"][str(a["id"])] == "OUT<A>"
    assert set(done["output_data"]["tasks"]) == {str(a["id"]), str(b["id"]), str(c["id"])}


async def test_pause_during_the_last_call_keeps_its_answer_and_resume_finishes_without_it(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    """The last answer of a linear run is stored with the execution's finish; a pause that
    lands during that call must still store it, and must not finish the execution."""
    stub.script(for_task("A", content="OUT<A>"), hold("B", "b", "OUT<B>"))
    _, workflow, (_, b) = await pipeline(client, ["A", "B"])
    run = await execute(client, workflow["id"])
    await wait_for_gate(stub, "b")
    assert (await post(client, f"/workflows/{workflow['id']}/pause")).status_code == 200

    stub.open_gate("b")
    await idle(app)
    assert (await get(client, run["id"]))["status"] == "paused"
    (run_b,) = await runs_of(client, b["id"])
    assert (run_b["status"], run_b["output"]) == ("completed", "OUT<B>")
    events = [e["event"] for e in (await client.get(f"{API}/executions/{run['id']}/logs")).json()]
    assert events.count("task_completed") == 2 and "workflow_completed" not in events

    assert (await post(client, f"/workflows/{workflow['id']}/resume")).status_code == 200
    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "completed"
    assert len(stub.requests) == 2  # nothing ran again
    assert done["output_data"]["result"] == "OUT<B>"


async def test_new_executions_of_a_paused_workflow_wait_pending_and_resume_runs_them_all(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(hold("A", "a"))
    _, workflow, _ = await pipeline(client, ["A", "B"])
    first = await execute(client, workflow["id"])
    await wait_for_gate(stub, "a")
    assert (await post(client, f"/workflows/{workflow['id']}/pause")).status_code == 200
    second = await execute(client, workflow["id"])
    third = await execute(client, workflow["id"])
    assert second["status"] == third["status"] == "pending"
    stub.open_gate("a")
    await idle(app)
    assert [(await get(client, e["id"]))["status"] for e in (first, second, third)] == [
        "paused",
        "pending",
        "pending",
    ]
    assert len(stub.requests) == 1

    # Pausing again is refused; the listing shows who waits.
    again = await post(client, f"/workflows/{workflow['id']}/pause")
    assert again.status_code == 409
    assert again.json()["error"] == "INVALID_STATE"

    resumed = await post(client, f"/workflows/{workflow['id']}/resume")
    assert resumed.status_code == 200
    assert [e["id"] for e in resumed.json()["affected_executions"]] == [
        first["id"],
        second["id"],
        third["id"],
    ]
    for execution in (first, second, third):
        assert (await wait_for_execution(client, execution["id"]))["status"] == "completed"
    assert len(stub.requests) == 1 + 1 + 2 + 2


async def test_resume_before_the_call_in_flight_returns_continues_without_rerunning(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(hold("A", "a", "OUT<A>"))
    _, workflow, (a, _b) = await pipeline(client, ["A", "B"])
    run = await execute(client, workflow["id"])
    await wait_for_gate(stub, "a")
    assert (await post(client, f"/workflows/{workflow['id']}/pause")).status_code == 200
    assert (await post(client, f"/workflows/{workflow['id']}/resume")).status_code == 200
    stub.open_gate("a")
    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "completed", done
    assert len(calls_for(stub, "A")) == 1
    assert len(calls_for(stub, "B")) == 1
    assert [r["status"] for r in await runs_of(client, a["id"])] == ["completed"]


async def test_pause_of_a_parallel_run_lets_all_calls_in_flight_finish(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(hold("A", "ab", "OUT<A>"), hold("B", "ab", "OUT<B>"))
    agent, workflow, (a, b) = await pipeline(client, ["A", "B"], "parallel")
    c = await make_task(client, workflow["id"], agent["id"], "C", dependencies=[a["id"], b["id"]])
    run = await execute(client, workflow["id"])
    await wait_for_gate(stub, "ab", 2)
    assert (await post(client, f"/workflows/{workflow['id']}/pause")).status_code == 200
    stub.open_gate("ab")
    await idle(app)
    assert (await get(client, run["id"]))["status"] == "paused"
    assert [r["status"] for r in await runs_of(client, a["id"])] == ["completed"]
    assert [r["status"] for r in await runs_of(client, b["id"])] == ["completed"]
    assert await runs_of(client, c["id"]) == []
    assert (await post(client, f"/workflows/{workflow['id']}/resume")).status_code == 200
    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "completed"
    assert len(stub.requests) == 3
    prompt_c = user_prompt(calls_for(stub, "C")[0])
    assert "OUT<A>" in prompt_c and "OUT<B>" in prompt_c


async def test_resume_of_a_workflow_that_is_not_paused_is_a_409(
    client: httpx.AsyncClient,
) -> None:
    _, workflow, _ = await pipeline(client, ["A"])
    response = await post(client, f"/workflows/{workflow['id']}/resume")
    assert response.status_code == 409
    assert response.json()["error"] == "INVALID_STATE"
    assert (await post(client, "/workflows/999/pause")).status_code == 404


async def test_pause_with_nothing_running_pauses_the_workflow(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    _, workflow, _ = await pipeline(client, ["A"])
    response = await post(client, f"/workflows/{workflow['id']}/pause")
    assert response.status_code == 200
    assert response.json() == {
        "workflow_id": workflow["id"],
        "workflow_status": "paused",
        "affected_executions": [],
    }
    run = await execute(client, workflow["id"])
    await idle(app)
    assert (await get(client, run["id"]))["status"] == "pending"
    assert stub.requests == []
    assert (await post(client, f"/workflows/{workflow['id']}/resume")).status_code == 200
    assert (await wait_for_execution(client, run["id"]))["status"] == "completed"


# -- cancel ------------------------------------------------------------------------------------


async def test_cancel_execution_during_a_call_aborts_it_at_once(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(hold("B", "b"))
    _, workflow, (a, b, c) = await pipeline(client, ["A", "B", "C"])
    run = await execute(client, workflow["id"])
    await wait_for_gate(stub, "b")

    response = await post(client, f"/executions/{run['id']}/cancel")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["workflow_id"] == workflow["id"]
    assert body["workflow_status"] == "active"
    (affected,) = body["affected_executions"]
    assert (affected["id"], affected["status"]) == (run["id"], "cancelled")
    assert affected["completed_at"] is not None
    # The gate was never opened: the call can only have ended because the platform hung up.
    await eventually(lambda: stub.disconnects == 1, what="the stub to see the call abandoned")
    await idle(app)
    assert stub.waiting_at("b") == 0
    assert [r["status"] for r in await runs_of(client, a["id"])] == ["completed"]
    (run_b,) = await runs_of(client, b["id"])
    assert run_b["status"] == "cancelled"
    assert run_b["completed_at"] is not None
    assert await runs_of(client, c["id"]) == []
    final = await get(client, run["id"])
    assert final["status"] == "cancelled"
    assert calls_for(stub, "C") == []
    status = (await client.get(f"{API}/executions/{run['id']}/status")).json()
    assert status["progress"]["cancelled"] == 1 and status["running_tasks"] == []

    again = await post(client, f"/executions/{run['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["error"] == "INVALID_STATE"


async def test_cancel_of_parallel_run_aborts_every_call_in_flight(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(hold("A", "ab"), hold("B", "ab"))
    _, workflow, (a, b) = await pipeline(client, ["A", "B"], "parallel")
    run = await execute(client, workflow["id"])
    await wait_for_gate(stub, "ab", 2)
    assert (await post(client, f"/executions/{run['id']}/cancel")).status_code == 200
    await eventually(lambda: stub.disconnects == 2, what="both calls abandoned")
    await idle(app)
    for task in (a, b):
        assert [r["status"] for r in await runs_of(client, task["id"])] == ["cancelled"]
    assert (await get(client, run["id"]))["status"] == "cancelled"


async def test_cancel_workflow_cancels_running_paused_and_pending_executions(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(hold("A", "a"))
    _, workflow, (a, _b) = await pipeline(client, ["A", "B"])
    first = await execute(client, workflow["id"])
    await wait_for_gate(stub, "a")
    assert (await post(client, f"/workflows/{workflow['id']}/pause")).status_code == 200
    second = await execute(client, workflow["id"])

    response = await post(client, f"/workflows/{workflow['id']}/cancel")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["workflow_status"] == "paused"
    assert [(e["id"], e["status"]) for e in body["affected_executions"]] == [
        (first["id"], "cancelled"),
        (second["id"], "cancelled"),
    ]
    await eventually(lambda: stub.disconnects == 1, what="the paused run's call abandoned")
    await idle(app)
    assert [r["status"] for r in await runs_of(client, a["id"])] == ["cancelled"]

    nothing = await post(client, f"/workflows/{workflow['id']}/cancel")
    assert nothing.status_code == 409
    # Resuming afterwards runs nothing that was cancelled.
    resumed = await post(client, f"/workflows/{workflow['id']}/resume")
    assert resumed.status_code == 200
    assert resumed.json()["affected_executions"] == []
    await idle(app)
    assert len(stub.requests) == 1


async def test_cancel_workflow_while_running(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(hold("A", "a"))
    _, workflow, _ = await pipeline(client, ["A"])
    run = await execute(client, workflow["id"])
    await wait_for_gate(stub, "a")
    response = await post(client, f"/workflows/{workflow['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["workflow_status"] == "active"
    assert [e["id"] for e in response.json()["affected_executions"]] == [run["id"]]
    await eventually(lambda: stub.disconnects == 1, what="the call abandoned")
    await idle(app)
    assert (await get(client, run["id"]))["status"] == "cancelled"


async def test_cancel_a_pending_execution(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    _, workflow, (a,) = await pipeline(client, ["A"])
    assert (await post(client, f"/workflows/{workflow['id']}/pause")).status_code == 200
    run = await execute(client, workflow["id"])
    response = await post(client, f"/executions/{run['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["workflow_status"] == "paused"
    assert response.json()["affected_executions"][0]["status"] == "cancelled"
    assert (await post(client, f"/workflows/{workflow['id']}/resume")).status_code == 200
    await idle(app)
    assert (await get(client, run["id"]))["status"] == "cancelled"
    assert await runs_of(client, a["id"]) == []
    assert stub.requests == []


async def test_cancel_when_nothing_is_unfinished_is_a_409(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    _, workflow, _ = await pipeline(client, ["A"])
    nothing_yet = await post(client, f"/workflows/{workflow['id']}/cancel")
    assert nothing_yet.status_code == 409
    run = await execute(client, workflow["id"])
    assert (await wait_for_execution(client, run["id"]))["status"] == "completed"
    assert (await post(client, f"/workflows/{workflow['id']}/cancel")).status_code == 409
    finished = await post(client, f"/executions/{run['id']}/cancel")
    assert finished.status_code == 409
    assert finished.json()["details"]["status"] == "completed"
    assert (await get(client, run["id"]))["status"] == "completed"
    assert (await post(client, "/executions/999/cancel")).status_code == 404


async def test_failed_execution_cannot_be_cancelled(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script({"status": 400})
    _, workflow, _ = await pipeline(client, ["A"])
    run = await execute(client, workflow["id"])
    assert (await wait_for_status(client, run["id"], "failed"))["status"] == "failed"
    response = await post(client, f"/executions/{run['id']}/cancel")
    assert response.status_code == 409
    assert (await get(client, run["id"]))["status"] == "failed"


# -- the things an execution depends on change under it -----------------------------------------


async def test_task_deleted_while_its_execution_waits_fails_the_run_clearly(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    _, workflow, (a, b, c) = await pipeline(client, ["A", "B", "C"])
    assert (await post(client, f"/workflows/{workflow['id']}/pause")).status_code == 200
    run = await execute(client, workflow["id"])
    assert (await client.delete(f"{API}/tasks/{b['id']}")).status_code == 200
    assert (await post(client, f"/workflows/{workflow['id']}/resume")).status_code == 200
    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "failed"
    assert done["error_message"] == (
        f"Task {b['id']} failed: TASK_NOT_RUNNABLE: "
        "the task was deleted after this execution was accepted"
    )
    assert list(done["output_data"]["tasks"]) == [str(a["id"])]
    assert [r["status"] for r in await runs_of(client, c["id"])] == ["skipped"]
    assert calls_for(stub, "C") == []
    logs = (await client.get(f"{API}/executions/{run['id']}/logs")).json()
    failed = next(e for e in logs if e["event"] == "task_failed")
    assert failed["task_id"] == b["id"] and failed["level"] == "error"


async def test_deleting_a_workflow_aborts_its_running_execution(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("A", gate="a"))
    _, workflow, _ = await pipeline(client, ["A", "B"])
    run = await execute(client, workflow["id"])
    await wait_for_gate(stub, "a")
    assert (await client.delete(f"{API}/workflows/{workflow['id']}")).status_code == 200
    await eventually(lambda: stub.disconnects == 1, what="the call to be aborted")
    await idle(app)
    assert (await client.get(f"{API}/executions/{run['id']}")).status_code == 404
    assert len(stub.requests) == 1


async def test_concurrent_pauses_one_wins_the_other_is_a_409(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    _, workflow, _ = await pipeline(client, ["A"])
    path = f"/workflows/{workflow['id']}"
    for _ in range(3):
        answers = await asyncio.gather(*[post(client, f"{path}/pause") for _ in range(4)])
        assert sorted(r.status_code for r in answers) == [200, 409, 409, 409]
        answers = await asyncio.gather(*[post(client, f"{path}/resume") for _ in range(4)])
        assert sorted(r.status_code for r in answers) == [200, 409, 409, 409]
