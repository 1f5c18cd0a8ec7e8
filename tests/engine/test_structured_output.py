"""A task's `output_schema`, end to end on both backends: what the model is sent, how its answer
is checked and retried, and where the parsed object shows (execution, task runs, events, the
next task's prompt, a run resumed after a restart)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from crew_platform.devtools.llm_stub import StubServer
from crew_platform.settings import Settings
from tests.flows import (
    API,
    calls_for,
    eventually,
    execute,
    for_task,
    make_agent,
    make_task,
    make_workflow,
    running_app,
    user_prompt,
    wait_for_status,
)
from tests.support import wait_for_execution

STRICT = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "score": {"type": "integer"}},
    "required": ["title", "score"],
    "additionalProperties": False,
}
OPEN = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}
VALID = {"title": "Héllo", "score": 7}


async def runs_of(client: httpx.AsyncClient, task_id: int) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = (await client.get(f"{API}/tasks/{task_id}/executions")).json()
    return runs


async def logs_of(client: httpx.AsyncClient, execution_id: int) -> list[dict[str, Any]]:
    logs: list[dict[str, Any]] = (await client.get(f"{API}/executions/{execution_id}/logs")).json()
    return logs


def last_user(request: dict[str, Any]) -> str:
    return str([m for m in request["messages"] if m["role"] == "user"][-1]["content"])


async def test_a_json_answer_is_the_tasks_output_everywhere(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script({"format": "Extract", "json": VALID}, for_task("Use", content="used"))
    agent = await make_agent(client)
    workflow = await make_workflow(client)
    extract = await make_task(
        client, workflow["id"], agent["id"], "Extract", order=0, output_schema=STRICT
    )
    use = await make_task(client, workflow["id"], agent["id"], "Use", order=1)
    run = await execute(client, workflow["id"])
    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "completed", done

    (sent,) = calls_for(stub, "Extract")
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Extract", "schema": STRICT, "strict": True},
    }
    # The prompt names the schema too, as written (its properties in their order).
    assert json.dumps(STRICT) in user_prompt(sent)
    assert "response_format" not in calls_for(stub, "Use")[0]

    assert done["output_data"]["tasks"] == {str(extract["id"]): VALID, str(use["id"]): "used"}
    (stored,) = await runs_of(client, extract["id"])
    assert stored["output"] == VALID
    (plain,) = await runs_of(client, use["id"])
    assert plain["output"] == "used"
    completed = [e for e in await logs_of(client, run["id"]) if e["event"] == "task_completed"]
    assert completed[0]["task_id"] == extract["id"] and completed[0]["data"]["output"] == VALID
    # The next task's prompt has it as JSON text.
    assert json.dumps(VALID, ensure_ascii=False) in user_prompt(calls_for(stub, "Use")[0])


async def test_the_last_tasks_json_is_the_result(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script({"format": "Only", "json": VALID})
    agent = await make_agent(client)
    workflow = await make_workflow(client)
    await make_task(client, workflow["id"], agent["id"], "Only", output_schema=STRICT)
    done = await wait_for_execution(client, (await execute(client, workflow["id"]))["id"])
    assert done["output_data"]["result"] == VALID


async def test_a_schema_unfit_for_strict_mode_is_sent_without_strict(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script({"format": "Loose", "json": {"title": "t", "extra": [1]}})
    agent = await make_agent(client)
    workflow = await make_workflow(client)
    task = await make_task(client, workflow["id"], agent["id"], "Loose", output_schema=OPEN)
    done = await wait_for_execution(client, (await execute(client, workflow["id"]))["id"])
    assert done["status"] == "completed", done
    (sent,) = calls_for(stub, "Loose")
    assert sent["response_format"]["json_schema"] == {"name": "Loose", "schema": OPEN}
    assert done["output_data"]["tasks"][str(task["id"])] == {"title": "t", "extra": [1]}


async def test_an_answer_that_does_not_fit_is_sent_back_once_then_accepted(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        {"format": "Extract", "content": "Sure! Here it is: title Hello"},
        {"format": "Extract", "json": VALID},
    )
    agent = await make_agent(client)
    workflow = await make_workflow(client)
    task = await make_task(client, workflow["id"], agent["id"], "Extract", output_schema=STRICT)
    run = await execute(client, workflow["id"])
    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "completed", done
    assert done["output_data"]["tasks"][str(task["id"])] == VALID
    first, second = stub.requests
    assert second["response_format"] == first["response_format"]
    assert second["messages"][:2] == first["messages"]
    assert second["messages"][2] == {
        "role": "assistant",
        "content": "Sure! Here it is: title Hello",
    }
    assert "not valid JSON" in last_user(second)
    failed = [
        e for e in await logs_of(client, run["id"]) if e["event"] == "output_validation_failed"
    ]
    assert len(failed) == 1
    assert failed[0]["level"] == "warning" and failed[0]["data"]["attempt"] == 1
    assert "not valid JSON" in failed[0]["data"]["error"]
    (stored,) = await runs_of(client, task["id"])
    assert stored["tokens_used"] > 0 and stored["status"] == "completed"


async def test_an_answer_that_never_fits_fails_the_task(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        {"format": "Extract", "json": {"title": "x", "score": "high"}},
        {"format": "Extract", "json": {"title": "x"}},
    )
    agent = await make_agent(client)
    workflow = await make_workflow(client)
    task = await make_task(client, workflow["id"], agent["id"], "Extract", output_schema=STRICT)
    after = await make_task(client, workflow["id"], agent["id"], "After", order=1)
    done = await wait_for_execution(client, (await execute(client, workflow["id"]))["id"])
    assert done["status"] == "failed", done
    assert len(stub.requests) == 2
    assert "'high' is not of type 'integer'" in last_user(stub.requests[1])
    (failed,) = await runs_of(client, task["id"])
    assert failed["status"] == "failed"
    assert failed["error"] == "OUTPUT_VALIDATION_FAILED: 'score' is a required property"
    assert failed["output"] is None and failed["tokens_used"] > 0
    assert f"Task {task['id']} (Extract) failed: OUTPUT_VALIDATION_FAILED" in done["error_message"]
    assert [r["status"] for r in await runs_of(client, after["id"])] == ["skipped"]


async def test_an_agent_with_tools_uses_them_then_answers_in_the_schema(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    """Tools first (calls without `response_format`), then the model is asked for its answer
    in the schema's form in a call without tools."""
    stub.script(
        for_task(
            "T", tool_calls=[{"name": "calculator", "id": "c1", "arguments": {"expression": "3+4"}}]
        ),
        for_task("T", content="The score is 7."),
        {"format": "T", "json": VALID},
    )
    agent = await make_agent(client, tools=["calculator"])
    workflow = await make_workflow(client)
    task = await make_task(client, workflow["id"], agent["id"], "T", output_schema=STRICT)
    done = await wait_for_execution(client, (await execute(client, workflow["id"]))["id"])
    assert done["status"] == "completed", done
    assert done["output_data"]["tasks"][str(task["id"])] == VALID
    first, second, third = stub.requests
    for with_tools in (first, second):
        assert "tools" in with_tools and "response_format" not in with_tools
    assert "tools" not in third and third["response_format"]["json_schema"]["name"] == "T"
    # The formatting call goes on from the whole conversation, tool result included.
    assert {"role": "tool", "tool_call_id": "c1", "content": "7"} in third["messages"]
    assert third["messages"][-2] == {"role": "assistant", "content": "The score is 7."}


async def test_an_agent_with_tools_whose_answer_already_fits_makes_no_extra_call(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("T", content=json.dumps(VALID)))
    agent = await make_agent(client, tools=["calculator"])
    workflow = await make_workflow(client)
    task = await make_task(client, workflow["id"], agent["id"], "T", output_schema=STRICT)
    done = await wait_for_execution(client, (await execute(client, workflow["id"]))["id"])
    assert done["output_data"]["tasks"][str(task["id"])] == VALID
    assert len(stub.requests) == 1


async def test_a_json_output_survives_a_restart_and_reaches_the_next_task(
    settings: Settings, stub: StubServer
) -> None:
    """The process stops while the task after a structured one is in flight; the resumed run
    reads the stored object back (not its text) for the next prompt and the result."""
    stub.script(
        {"format": "A", "json": VALID}, for_task("B", gate="b"), for_task("B", content="B done")
    )
    async with running_app(settings) as (_, http):
        agent = await make_agent(http)
        workflow = await make_workflow(http)
        a = await make_task(http, workflow["id"], agent["id"], "A", order=0, output_schema=STRICT)
        await make_task(http, workflow["id"], agent["id"], "B", order=1)
        started = await execute(http, workflow["id"])
        await eventually(lambda: stub.waiting_at("b") == 1, what="B's call in flight")
    async with running_app(settings) as (_, http):
        done = await wait_for_status(http, started["id"], "completed", "failed")
        assert done["status"] == "completed", done
        assert done["output_data"]["tasks"][str(a["id"])] == VALID
    assert len(calls_for(stub, "A")) == 1
    resumed = calls_for(stub, "B")[-1]
    assert json.dumps(VALID, ensure_ascii=False) in user_prompt(resumed)
