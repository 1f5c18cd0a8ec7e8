"""A task's `context`: which earlier outputs its prompt shows, on both backends.

Linear and parallel workflows, a single-task run, and a context that became invalid after it
was written (the workflow's type changed): refused when the run is asked for.
"""

from __future__ import annotations

from typing import Any

import httpx

from crew_platform.devtools.llm_stub import StubServer
from tests.api import assert_error
from tests.flows import (
    API,
    calls_for,
    eventually,
    execute,
    for_task,
    make_agent,
    make_task,
    make_workflow,
    pipeline,
    user_prompt,
    wait_for_gate,
)
from tests.support import wait_for_execution


def outputs(*names: str) -> list[dict[str, Any]]:
    return [for_task(name, content=f"OUT<{name}>") for name in names]


async def runs_of(client: httpx.AsyncClient, task_id: int) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = (await client.get(f"{API}/tasks/{task_id}/executions")).json()
    return runs


async def _completed(client: httpx.AsyncClient, task_id: int) -> bool:
    return [r["status"] for r in await runs_of(client, task_id)] == ["completed"]


async def test_a_linear_task_reads_only_the_outputs_its_context_names(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(*outputs("A", "B", "C", "D"))
    agent, workflow, (a, _, c) = await pipeline(client, ["A", "B", "C"])
    d = await make_task(
        client, workflow["id"], agent["id"], "D", order=3, context=[a["id"], c["id"]]
    )
    assert d["context"] == [a["id"], c["id"]]
    done = await wait_for_execution(client, (await execute(client, workflow["id"]))["id"])
    assert done["status"] == "completed", done
    prompt_d = user_prompt(calls_for(stub, "D")[0])
    assert "OUT<A>" in prompt_d and "OUT<C>" in prompt_d and "OUT<B>" not in prompt_d
    prompt_c = user_prompt(calls_for(stub, "C")[0])
    assert "OUT<A>" in prompt_c and "OUT<B>" in prompt_c  # no context: every earlier output
    (run,) = await runs_of(client, d["id"])
    assert run["input"]["context_task_ids"] == [a["id"], c["id"]]
    assert done["output_data"]["result"] == "OUT<D>"


async def test_an_empty_context_shows_no_earlier_output(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(*outputs("A", "B"))
    agent, workflow, _ = await pipeline(client, ["A"])
    b = await make_task(client, workflow["id"], agent["id"], "B", order=1, context=[])
    assert b["context"] == []
    done = await wait_for_execution(client, (await execute(client, workflow["id"]))["id"])
    assert done["status"] == "completed", done
    assert "OUT<A>" not in user_prompt(calls_for(stub, "B")[0])


async def test_a_parallel_task_waits_for_its_context_like_a_dependency(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    """C names A as context but has no dependency on it: it may only start once A answered,
    or its prompt could not hold A's output. A is held until B has finished."""
    stub.script(for_task("A", gate="a", content="OUT<A>"), *outputs("B", "C"))
    agent = await make_agent(client)
    workflow = await make_workflow(client, "parallel")
    wid, aid = workflow["id"], agent["id"]
    a = await make_task(client, wid, aid, "A", order=0)
    b = await make_task(client, wid, aid, "B", order=1)
    c = await make_task(client, wid, aid, "C", order=2, dependencies=[b["id"]], context=[a["id"]])
    run = await execute(client, wid)
    await wait_for_gate(stub, "a")
    await eventually(lambda: _completed(client, b["id"]), what="B to finish while A is held")
    stub.open_gate("a")
    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "completed", done
    prompt_c = user_prompt(calls_for(stub, "C")[0])
    assert "OUT<A>" in prompt_c
    assert "OUT<B>" not in prompt_c  # its context replaces the dependencies' outputs
    # A is consumed by C, so only C is a sink of the run.
    assert done["output_data"]["result"] == "OUT<C>"
    assert set(done["output_data"]["tasks"]) == {str(a["id"]), str(b["id"]), str(c["id"])}


async def test_a_context_made_invalid_by_a_type_change_is_refused_at_execute(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    """In a parallel workflow A may read B though B comes later in the order; once the
    workflow is linear, A would run before B: executing it is a 422 naming both."""
    agent = await make_agent(client)
    workflow = await make_workflow(client, "parallel")
    b = await make_task(client, workflow["id"], agent["id"], "B", order=1)
    a = await make_task(client, workflow["id"], agent["id"], "A", order=0, context=[b["id"]])
    changed = await client.put(
        f"{API}/workflows/{workflow['id']}", json={"workflow_type": "linear"}
    )
    assert changed.status_code == 200, changed.text
    response = await client.post(f"{API}/workflows/{workflow['id']}/execute", json={})
    body = assert_error(response, 422, "VALIDATION_ERROR", ["context"])
    assert body["details"]["later_task_ids"] == {str(a["id"]): [b["id"]]}
    assert stub.requests == []


async def test_an_inactive_context_task_is_left_out_of_the_run(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(*outputs("B"))
    agent, workflow, (a,) = await pipeline(client, ["A"])
    await client.put(f"{API}/tasks/{a['id']}", json={"is_active": False})
    await make_task(client, workflow["id"], agent["id"], "B", order=1, context=[a["id"]])
    done = await wait_for_execution(client, (await execute(client, workflow["id"]))["id"])
    assert done["status"] == "completed", done
    assert calls_for(stub, "A") == []
    assert "Output of task" not in user_prompt(calls_for(stub, "B")[0])


async def test_a_single_task_run_reads_its_context_tasks_latest_outputs(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(*outputs("A", "B", "C"))
    agent = await make_agent(client)
    workflow = await make_workflow(client, "parallel")
    a = await make_task(client, workflow["id"], agent["id"], "A")
    b = await make_task(client, workflow["id"], agent["id"], "B")
    c = await make_task(
        client, workflow["id"], agent["id"], "C", dependencies=[b["id"]], context=[a["id"]]
    )
    first = await wait_for_execution(client, (await execute(client, workflow["id"]))["id"])
    assert first["status"] == "completed", first
    stub.script(for_task("C", content="again"))
    started = await client.post(f"{API}/tasks/{c['id']}/execute", json={})
    assert started.status_code == 202, started.text
    again = await wait_for_execution(client, started.json()["id"])
    assert again["status"] == "completed", again
    prompt = user_prompt(calls_for(stub, "C")[-1])
    assert "OUT<A>" in prompt and "OUT<B>" not in prompt
