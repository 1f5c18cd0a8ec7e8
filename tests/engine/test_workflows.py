"""Linear and parallel workflows end to end: order, context, concurrency, output, failure."""

from __future__ import annotations

from typing import Any

import httpx

from crew_platform.devtools.llm_stub import StubServer
from tests.flows import (
    API,
    calls_for,
    execute,
    for_task,
    make_agent,
    make_task,
    make_workflow,
    user_prompt,
    wait_for_status,
)
from tests.support import wait_for_execution


def scripted(*names: str) -> list[dict[str, Any]]:
    """One reply per task, recognisable in later prompts: `OUT<name>`."""
    return [for_task(name, content=f"OUT<{name}>") for name in names]


def called_order(stub: StubServer) -> list[str]:
    return [user_prompt(r).split(":")[1].strip() for r in stub.requests]


async def runs_of(client: httpx.AsyncClient, task_id: int) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = (await client.get(f"{API}/tasks/{task_id}/executions")).json()
    return runs


# -- linear ------------------------------------------------------------------------------------


async def test_linear_runs_in_order_then_priority_with_all_earlier_outputs(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(*scripted("A", "B", "C", "D"))
    agent = await make_agent(client)
    workflow = await make_workflow(client, "linear")
    wid, aid = workflow["id"], agent["id"]
    # Created out of order: execution order is `order`, then higher `priority` first, then id.
    d = await make_task(client, wid, aid, "D", order=2)
    c = await make_task(client, wid, aid, "C", order=1, priority=1)
    b = await make_task(client, wid, aid, "B", order=1, priority=5)
    a = await make_task(client, wid, aid, "A", order=0)
    run = await execute(client, wid)
    assert run["status"] == "pending"
    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "completed", done
    assert called_order(stub) == ["A", "B", "C", "D"]
    for index, name in enumerate("ABCD"):
        prompt = user_prompt(calls_for(stub, name)[0])
        for earlier in "ABCD"[:index]:
            assert f"OUT<{earlier}>" in prompt, (name, earlier)
        for later in "ABCD"[index:]:
            assert f"OUT<{later}>" not in prompt
    assert done["output_data"] == {
        "result": "OUT<D>",
        "tasks": {
            str(a["id"]): "OUT<A>",
            str(b["id"]): "OUT<B>",
            str(c["id"]): "OUT<C>",
            str(d["id"]): "OUT<D>",
        },
    }
    assert done["error_message"] is None
    assert done["completed_at"] is not None


async def test_inactive_tasks_are_left_out(client: httpx.AsyncClient, stub: StubServer) -> None:
    agent = await make_agent(client)
    workflow = await make_workflow(client)
    kept = await make_task(client, workflow["id"], agent["id"], "Kept")
    await make_task(client, workflow["id"], agent["id"], "Dropped", is_active=False)
    done = await wait_for_execution(client, (await execute(client, workflow["id"]))["id"])
    assert done["status"] == "completed"
    assert list(done["output_data"]["tasks"]) == [str(kept["id"])]
    assert calls_for(stub, "Dropped") == []


async def test_linear_failure_fails_the_execution_and_skips_later_tasks(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        for_task("A", content="OUT<A>"),
        for_task("B", status=400, body={"error": {"message": "context length exceeded"}}),
    )
    agent = await make_agent(client)
    workflow = await make_workflow(client)
    a, b, c, d = [
        await make_task(client, workflow["id"], agent["id"], n, order=i)
        for i, n in enumerate("ABCD")
    ]
    done = await wait_for_execution(client, (await execute(client, workflow["id"]))["id"])
    assert done["status"] == "failed"
    assert "context length exceeded" in done["error_message"]
    assert f"Task {b['id']} (B) failed" in done["error_message"]
    assert done["output_data"]["tasks"] == {str(a["id"]): "OUT<A>"}
    assert calls_for(stub, "C") == [] and calls_for(stub, "D") == []
    assert [r["status"] for r in await runs_of(client, a["id"])] == ["completed"]
    assert [r["status"] for r in await runs_of(client, b["id"])] == ["failed"]
    for skipped in (c, d):
        (run,) = await runs_of(client, skipped["id"])
        assert run["status"] == "skipped"
        assert run["execution_id"] == done["id"]


# -- parallel ----------------------------------------------------------------------------------


async def test_parallel_dag_passes_only_dependency_outputs(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    #   A   B
    #   |\ /
    #   | C
    #   D     (sinks: C and D)
    stub.script(*scripted("A", "B", "C", "D"))
    agent = await make_agent(client)
    workflow = await make_workflow(client, "parallel")
    wid, aid = workflow["id"], agent["id"]
    a = await make_task(client, wid, aid, "A", order=0)
    b = await make_task(client, wid, aid, "B", order=1)
    c = await make_task(client, wid, aid, "C", order=2, dependencies=[a["id"], b["id"]])
    d = await make_task(client, wid, aid, "D", order=3, dependencies=[a["id"]])
    done = await wait_for_execution(client, (await execute(client, wid))["id"])
    assert done["status"] == "completed", done
    prompt_c = user_prompt(calls_for(stub, "C")[0])
    prompt_d = user_prompt(calls_for(stub, "D")[0])
    assert "OUT<A>" in prompt_c and "OUT<B>" in prompt_c
    assert "OUT<A>" in prompt_d and "OUT<B>" not in prompt_d
    for root in ("A", "B"):
        assert "OUT<" not in user_prompt(calls_for(stub, root)[0])
    order = called_order(stub)
    assert order.index("C") > max(order.index("A"), order.index("B"))
    assert order.index("D") > order.index("A")
    assert done["output_data"]["tasks"] == {
        str(a["id"]): "OUT<A>",
        str(b["id"]): "OUT<B>",
        str(c["id"]): "OUT<C>",
        str(d["id"]): "OUT<D>",
    }
    assert done["output_data"]["result"] == "OUT<C>\n\nOUT<D>"


async def test_parallel_runs_independent_tasks_at_once_up_to_four_by_default(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    # The first four calls are held until all four are at the stub at the same time: the run
    # can only finish if four tasks really were in flight together. The other two then follow.
    stub.script(*[{"gate": "four", "quorum": 4}] * 4, {"latency": 0.1}, {"latency": 0.1})
    agent = await make_agent(client)
    workflow = await make_workflow(client, "parallel")
    for i in range(6):
        await make_task(client, workflow["id"], agent["id"], f"T{i}", order=i)
    done = await wait_for_status(
        client, (await execute(client, workflow["id"]))["id"], "completed", "failed"
    )
    assert done["status"] == "completed", done
    assert len(stub.requests) == 6
    assert stub.max_active == 4


async def test_parallel_respects_config_max_parallel(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(*[{"gate": "two", "quorum": 2, "latency": 0.1}] * 2, *[{"latency": 0.1}] * 2)
    agent = await make_agent(client)
    workflow = await make_workflow(client, "parallel", config={"max_parallel": 2})
    for i in range(4):
        await make_task(client, workflow["id"], agent["id"], f"T{i}")
    done = await wait_for_execution(client, (await execute(client, workflow["id"]))["id"])
    assert done["status"] == "completed", done
    assert stub.max_active == 2


async def test_run_config_overrides_workflow_max_parallel(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(*[{"latency": 0.1}] * 3)
    agent = await make_agent(client)
    workflow = await make_workflow(client, "parallel", config={"max_parallel": 3})
    for i in range(3):
        await make_task(client, workflow["id"], agent["id"], f"T{i}")
    run = await execute(client, workflow["id"], config={"max_parallel": 1})
    assert run["config"] == {"max_parallel": 1}
    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "completed"
    assert stub.max_active == 1


async def test_parallel_failure_skips_what_depended_on_it(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        for_task("Bad", status=422, body={"error": {"message": "nope"}}),
        for_task("Good", content="OUT<Good>"),
    )
    agent = await make_agent(client)
    workflow = await make_workflow(client, "parallel")
    bad = await make_task(client, workflow["id"], agent["id"], "Bad")
    good = await make_task(client, workflow["id"], agent["id"], "Good")
    after = await make_task(
        client, workflow["id"], agent["id"], "After", dependencies=[bad["id"], good["id"]]
    )
    done = await wait_for_execution(client, (await execute(client, workflow["id"]))["id"])
    assert done["status"] == "failed"
    assert "nope" in done["error_message"]
    assert done["output_data"]["tasks"] == {str(good["id"]): "OUT<Good>"}
    assert [r["status"] for r in await runs_of(client, after["id"])] == ["skipped"]
    assert calls_for(stub, "After") == []


# -- refused before running --------------------------------------------------------------------


async def test_inactive_workflow_is_a_409(client: httpx.AsyncClient, stub: StubServer) -> None:
    agent = await make_agent(client)
    workflow = await make_workflow(client, is_active=False)
    await make_task(client, workflow["id"], agent["id"], "T")
    response = await client.post(f"{API}/workflows/{workflow['id']}/execute", json={})
    assert response.status_code == 409
    assert response.json()["details"]["reason"] == "inactive"
    assert "inactive" in response.json()["message"]
    assert stub.requests == []


async def test_empty_workflow_is_a_422(client: httpx.AsyncClient) -> None:
    workflow = await make_workflow(client)
    response = await client.post(f"{API}/workflows/{workflow['id']}/execute", json={})
    assert response.status_code == 422
    assert response.json()["details"]["reason"] == "no_tasks"


async def test_workflow_whose_tasks_are_all_inactive_is_a_422(client: httpx.AsyncClient) -> None:
    agent = await make_agent(client)
    workflow = await make_workflow(client)
    await make_task(client, workflow["id"], agent["id"], "Off", is_active=False)
    response = await client.post(f"{API}/workflows/{workflow['id']}/execute", json={})
    assert response.status_code == 422
    assert response.json()["details"]["reason"] == "no_tasks"


async def test_task_without_agent_is_refused(client: httpx.AsyncClient) -> None:
    workflow = await make_workflow(client)
    task = await make_task(client, workflow["id"], None, "Orphan")
    response = await client.post(f"{API}/workflows/{workflow['id']}/execute", json={})
    assert response.status_code == 422
    assert response.json()["details"]["task_ids"] == [task["id"]]


async def test_execute_of_missing_workflow_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{API}/workflows/999/execute", json={})
    assert response.status_code == 404


async def test_spec_execute_response_shape(client: httpx.AsyncClient, stub: StubServer) -> None:
    agent = await make_agent(client)
    workflow = await make_workflow(client)
    await make_task(client, workflow["id"], agent["id"], "T")
    response = await client.post(
        f"{API}/workflows/{workflow['id']}/execute", json={"input_data": {"key": "value"}}
    )
    assert response.status_code == 202
    body = response.json()
    for field in (
        "id",
        "workflow_id",
        "status",
        "started_at",
        "completed_at",
        "input_data",
        "output_data",
        "error_message",
        "execution_log",
        "created_by",
    ):
        assert field in body
    assert body["workflow_id"] == workflow["id"]
    assert body["status"] == "pending"
    assert body["input_data"] == {"key": "value"}
    assert body["output_data"] is None and body["completed_at"] is None
    await wait_for_execution(client, body["id"])
