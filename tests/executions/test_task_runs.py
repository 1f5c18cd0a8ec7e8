"""One task at a time: POST /tasks/{id}/execute, GET /tasks/{id}/executions and
POST /tasks/{id}/retry."""

from __future__ import annotations

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
)
from tests.support import wait_for_execution


async def runs_of(client: httpx.AsyncClient, task_id: int, **params: Any) -> list[dict[str, Any]]:
    response = await client.get(f"{API}/tasks/{task_id}/executions", params=params)
    assert response.status_code == 200, response.text
    runs: list[dict[str, Any]] = response.json()
    return runs


async def retry(client: httpx.AsyncClient, task_id: int) -> httpx.Response:
    return await client.post(f"{API}/tasks/{task_id}/retry")


# -- execute one task --------------------------------------------------------------------------


async def test_execute_task_runs_it_alone_with_its_dependencies_latest_outputs(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    agent, workflow, (a,) = await pipeline(client, ["A"], "parallel")
    b = await make_task(client, workflow["id"], agent["id"], "B", dependencies=[a["id"]])
    stub.script(
        for_task("A", content="OUT<A1>"),
        for_task("B", content="OUT<B1>"),
        for_task("A", content="OUT<A2>"),
        for_task("B", content="OUT<B-alone>"),
    )
    first = await execute(client, workflow["id"])
    assert (await wait_for_execution(client, first["id"]))["status"] == "completed"
    response = await client.post(f"{API}/tasks/{a['id']}/execute", json={})
    assert response.status_code == 202
    rerun_a = response.json()
    assert rerun_a["status"] == "pending"
    assert rerun_a["mode"] == "task"
    assert rerun_a["workflow_id"] == workflow["id"]
    assert (await wait_for_execution(client, rerun_a["id"]))["output_data"]["result"] == "OUT<A2>"

    response = await client.post(f"{API}/tasks/{b['id']}/execute")  # no body at all
    assert response.status_code == 202
    alone = await wait_for_execution(client, response.json()["id"])
    assert alone["status"] == "completed"
    assert alone["output_data"] == {
        "result": "OUT<B-alone>",
        "tasks": {str(b["id"]): "OUT<B-alone>"},
    }
    prompt = user_prompt(calls_for(stub, "B")[-1])
    assert "OUT<A2>" in prompt  # the latest output of its dependency
    assert "OUT<A1>" not in prompt
    assert len(stub.requests) == 4


async def test_execute_task_fills_placeholders_from_its_input(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    agent, workflow, _ = await pipeline(client, [])
    task = await make_task(client, workflow["id"], agent["id"], "T", description="T: on {topic}")
    response = await client.post(
        f"{API}/tasks/{task['id']}/execute", json={"input_data": {"topic": "bees"}}
    )
    assert response.status_code == 202
    assert response.json()["input_data"] == {"topic": "bees"}
    assert (await wait_for_execution(client, response.json()["id"]))["status"] == "completed"
    assert user_prompt(stub.requests[0]).startswith("Current Task: T: on bees")


async def test_execute_missing_task_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.post(f"{API}/tasks/999/execute", json={})).status_code == 404
    assert (await client.get(f"{API}/tasks/999/executions")).status_code == 404
    assert (await retry(client, 999)).status_code == 404


# -- list a task's runs ------------------------------------------------------------------------


async def test_task_executions_list_every_run_with_its_details(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        for_task("A", content="first", usage={"prompt_tokens": 30, "completion_tokens": 3}),
        for_task("A", status=400, body={"error": {"message": "bad request"}}),
        for_task("A", content="third", usage={"prompt_tokens": 40, "completion_tokens": 2}),
    )
    _, workflow, (a,) = await pipeline(client, ["A"])
    ids = []
    for expected in ("completed", "failed", "completed"):
        run = await execute(client, workflow["id"], {"round": len(ids)})
        ids.append(run["id"])
        assert (await wait_for_execution(client, run["id"]))["status"] == expected

    runs = await runs_of(client, a["id"])
    assert [r["execution_id"] for r in runs] == ids[::-1]  # newest first
    newest, failed, oldest = runs
    for run in runs:
        assert {
            "status",
            "input",
            "output",
            "error",
            "tokens_used",
            "execution_time",
            "attempt",
            "execution_id",
            "started_at",
            "completed_at",
        } <= set(run)
        assert run["attempt"] == 1
        assert run["task_id"] == a["id"]
        assert run["execution_time"] is not None and run["execution_time"] >= 0
    assert (oldest["status"], oldest["output"], oldest["error"]) == ("completed", "first", None)
    assert oldest["tokens_used"] == 33
    assert oldest["input"]["input_data"] == {"round": 0}
    assert failed["status"] == "failed" and failed["output"] is None
    assert "bad request" in failed["error"] and failed["tokens_used"] == 0
    assert (newest["output"], newest["tokens_used"]) == ("third", 42)

    page = await client.get(f"{API}/tasks/{a['id']}/executions", params={"skip": 1, "limit": 1})
    assert page.headers["X-Total-Count"] == "3"
    assert [r["execution_id"] for r in page.json()] == [ids[1]]


# -- retry -------------------------------------------------------------------------------------


async def test_retry_resumes_a_failed_execution_from_that_task_keeping_finished_outputs(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        for_task("A", content="OUT<A>"),
        for_task("B", status=400, body={"error": {"message": "transient trouble"}}),
        for_task("B", content="OUT<B>"),
        for_task("C", content="OUT<C>"),
    )
    _, workflow, (a, b, c) = await pipeline(client, ["A", "B", "C"])
    run = await execute(client, workflow["id"])
    failed = await wait_for_execution(client, run["id"])
    assert failed["status"] == "failed"
    assert [r["status"] for r in await runs_of(client, c["id"])] == ["skipped"]

    response = await retry(client, b["id"])
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["task_id"] == b["id"]
    assert body["execution_id"] == run["id"]
    assert body["attempt"] == 2
    assert body["execution"]["status"] in ("pending", "running", "completed")
    assert body["execution"]["error_message"] is None

    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "completed", done
    assert done["error_message"] is None
    assert done["output_data"]["tasks"] == {
        str(a["id"]): "OUT<A>",
        str(b["id"]): "OUT<B>",
        str(c["id"]): "OUT<C>",
    }
    assert done["output_data"]["result"] == "OUT<C>"
    assert len(calls_for(stub, "A")) == 1  # finished work is not redone
    assert len(calls_for(stub, "B")) == 2
    assert len(calls_for(stub, "C")) == 1
    assert "OUT<A>" in user_prompt(calls_for(stub, "B")[1])
    assert [(r["status"], r["attempt"]) for r in await runs_of(client, b["id"])] == [
        ("completed", 2),
        ("failed", 1),
    ]
    assert [r["status"] for r in await runs_of(client, c["id"])] == ["completed", "skipped"]

    again = await retry(client, b["id"])
    assert again.status_code == 409  # its latest run succeeded: nothing to retry


async def test_retry_resumes_a_cancelled_execution(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("A", content="OUT<A>"), for_task("B", gate="b"))
    _, workflow, (_a, b) = await pipeline(client, ["A", "B"])
    run = await execute(client, workflow["id"])
    await wait_for_gate(stub, "b")
    assert (await client.post(f"{API}/executions/{run['id']}/cancel")).status_code == 200
    await eventually(lambda: stub.disconnects == 1, what="the call abandoned")
    await idle(app)
    response = await retry(client, b["id"])
    assert response.status_code == 202, response.text
    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "completed"
    assert len(calls_for(stub, "A")) == 1
    assert len(calls_for(stub, "B")) == 2
    assert [r["status"] for r in await runs_of(client, b["id"])] == ["completed", "cancelled"]


async def test_retry_in_a_parallel_workflow_reruns_only_what_did_not_finish(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        for_task("Bad", status=400),
        for_task("Good", content="OUT<Good>"),
        for_task("Bad", content="OUT<Bad>"),
    )
    agent, workflow, (bad, good) = await pipeline(client, ["Bad", "Good"], "parallel")
    after = await make_task(
        client, workflow["id"], agent["id"], "After", dependencies=[bad["id"], good["id"]]
    )
    run = await execute(client, workflow["id"])
    assert (await wait_for_execution(client, run["id"]))["status"] == "failed"
    assert (await retry(client, bad["id"])).status_code == 202
    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "completed"
    assert len(calls_for(stub, "Good")) == 1
    assert len(calls_for(stub, "Bad")) == 2
    prompt = user_prompt(calls_for(stub, "After")[0])
    assert "OUT<Good>" in prompt and "OUT<Bad>" in prompt
    assert str(after["id"]) in done["output_data"]["tasks"]


async def test_retry_of_a_single_task_run(client: httpx.AsyncClient, stub: StubServer) -> None:
    stub.script(for_task("A", status=400), for_task("A", content="fixed"))
    _, _, (a,) = await pipeline(client, ["A"])
    response = await client.post(f"{API}/tasks/{a['id']}/execute", json={})
    run = response.json()
    assert (await wait_for_execution(client, run["id"]))["status"] == "failed"
    assert (await retry(client, a["id"])).status_code == 202
    done = await wait_for_execution(client, run["id"])
    assert (done["status"], done["output_data"]["result"]) == ("completed", "fixed")


async def test_retry_with_nothing_to_retry_is_a_409(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    _, workflow, (a,) = await pipeline(client, ["A"])
    never_ran = await retry(client, a["id"])
    assert never_ran.status_code == 409
    assert never_ran.json()["error"] == "INVALID_STATE"
    assert (await wait_for_execution(client, (await execute(client, workflow["id"]))["id"]))[
        "status"
    ] == "completed"
    succeeded = await retry(client, a["id"])
    assert succeeded.status_code == 409
    assert succeeded.json()["details"]["latest_status"] == "completed"


async def test_skipped_task_is_not_retried_on_its_own(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("A", status=400))
    _, workflow, (_a, b) = await pipeline(client, ["A", "B"])
    await wait_for_execution(client, (await execute(client, workflow["id"]))["id"])
    response = await retry(client, b["id"])
    assert response.status_code == 409
    assert response.json()["details"]["latest_status"] == "skipped"


async def test_second_retry_while_the_first_is_under_way_is_a_409(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("A", status=400), for_task("A", gate="again"))
    _, workflow, (a,) = await pipeline(client, ["A"])
    run = await execute(client, workflow["id"])
    assert (await wait_for_execution(client, run["id"]))["status"] == "failed"
    assert (await retry(client, a["id"])).status_code == 202
    await wait_for_gate(stub, "again")
    second = await retry(client, a["id"])
    assert second.status_code == 409
    stub.open_gate("again")
    assert (await wait_for_execution(client, run["id"]))["status"] == "completed"


async def test_retry_on_a_paused_workflow_waits_for_resume(
    app: FastAPI, client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("A", status=400))
    _, workflow, (a,) = await pipeline(client, ["A"])
    run = await execute(client, workflow["id"])
    assert (await wait_for_execution(client, run["id"]))["status"] == "failed"
    assert (await client.post(f"{API}/workflows/{workflow['id']}/pause")).status_code == 200
    response = await retry(client, a["id"])
    assert response.status_code == 202
    assert response.json()["execution"]["status"] == "pending"
    await idle(app)
    assert len(stub.requests) == 1
    resumed = await client.post(f"{API}/workflows/{workflow['id']}/resume")
    assert [e["id"] for e in resumed.json()["affected_executions"]] == [run["id"]]
    assert (await wait_for_execution(client, run["id"]))["status"] == "completed"


async def test_execute_of_an_inactive_task_or_a_task_of_an_inactive_workflow_is_a_409(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    agent, workflow, (a,) = await pipeline(client, ["A"])
    off = await make_task(client, workflow["id"], agent["id"], "Off", is_active=False)
    response = await client.post(f"{API}/tasks/{off['id']}/execute", json={})
    assert response.status_code == 409
    assert response.json()["details"]["reason"] == "inactive"
    update = await client.put(f"{API}/workflows/{workflow['id']}", json={"is_active": False})
    assert update.status_code == 200
    response = await client.post(f"{API}/tasks/{a['id']}/execute", json={})
    assert response.status_code == 409
    assert response.json()["details"]["reason"] == "inactive_workflow"
    assert stub.requests == []
