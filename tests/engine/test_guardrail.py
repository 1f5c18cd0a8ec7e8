"""A task's `guardrail`, end to end on both backends: the judge call, a failed check sent back
as feedback, retries that succeed and that run out, with an output schema, and a restart while
the judge answers."""

from __future__ import annotations

from typing import Any

import httpx

from crew_platform.devtools.llm_stub import StubServer
from crew_platform.settings import Settings
from tests.flows import (
    API,
    eventually,
    execute,
    for_task,
    make_agent,
    make_task,
    make_workflow,
    running_app,
    system_prompt,
    user_prompt,
    wait_for_status,
)
from tests.support import wait_for_execution

RULE = "The answer must mention a date."
JUDGE = "guardrail_verdict"
REVISION = "Your answer did not pass this check"


def verdict(passed: bool, reason: str = "ok", **reply: Any) -> dict[str, Any]:
    return {"format": JUDGE, "json": {"pass": passed, "reason": reason}, **reply}


def revision(content: str) -> dict[str, Any]:
    return {"prefix": REVISION, "content": content}


def judge_calls(stub: StubServer) -> list[dict[str, Any]]:
    return [
        r
        for r in stub.requests
        if (r.get("response_format") or {}).get("json_schema", {}).get("name") == JUDGE
    ]


def last_user(request: dict[str, Any]) -> str:
    return str([m for m in request["messages"] if m["role"] == "user"][-1]["content"])


async def one_task(
    client: httpx.AsyncClient, **fields: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    agent = await make_agent(client)
    workflow = await make_workflow(client)
    task = await make_task(client, workflow["id"], agent["id"], "T", guardrail=RULE, **fields)
    return workflow, task


async def events(client: httpx.AsyncClient, execution_id: int, prefix: str) -> list[dict[str, Any]]:
    logs = (await client.get(f"{API}/executions/{execution_id}/logs")).json()
    return [e for e in logs if e["event"].startswith(prefix)]


async def runs_of(client: httpx.AsyncClient, task_id: int) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = (await client.get(f"{API}/tasks/{task_id}/executions")).json()
    return runs


async def test_a_passing_check_keeps_the_answer(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("T", content="Due on 3 May."), verdict(True, "mentions 3 May"))
    workflow, task = await one_task(client)
    run = await execute(client, workflow["id"])
    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "completed", done
    assert done["output_data"]["tasks"] == {str(task["id"]): "Due on 3 May."}
    answer, judged = stub.requests
    assert "response_format" not in answer
    assert judged["model"] == answer["model"]  # the agent's model judges
    assert judged["response_format"]["json_schema"]["strict"] is True
    assert "strict reviewer" in system_prompt(judged)
    assert RULE in user_prompt(judged) and "Due on 3 May." in user_prompt(judged)
    assert "tools" not in judged
    (passed,) = await events(client, run["id"], "guardrail_")
    assert passed["event"] == "guardrail_passed" and passed["data"]["attempt"] == 1
    (stored,) = await runs_of(client, task["id"])
    assert stored["tokens_used"] > 0


async def test_a_failed_check_sends_its_reason_back_and_the_revision_passes(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        for_task("T", content="Due soon."),
        verdict(False, "No date is given."),
        revision("Due on 3 May."),
        verdict(True),
    )
    workflow, task = await one_task(client)
    run = await execute(client, workflow["id"])
    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "completed", done
    assert done["output_data"]["tasks"][str(task["id"])] == "Due on 3 May."
    answer, _, revised, judged = stub.requests
    assert revised["messages"][: len(answer["messages"])] == answer["messages"]
    assert revised["messages"][-2] == {"role": "assistant", "content": "Due soon."}
    assert RULE in last_user(revised) and "No date is given." in last_user(revised)
    assert "Due on 3 May." in user_prompt(judged)
    failed, passed = await events(client, run["id"], "guardrail_")
    assert failed["event"] == "guardrail_failed" and failed["level"] == "warning"
    assert failed["data"]["attempt"] == 1
    assert failed["data"]["reason"] == "No date is given." and failed["data"]["retries_left"] == 2
    assert passed["event"] == "guardrail_passed" and passed["data"]["attempt"] == 2


async def test_a_check_that_keeps_failing_fails_the_task_after_its_retries(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        for_task("T", content="Soon."),
        verdict(False, "No date."),
        revision("Later."),
        verdict(False, "Still no date."),
    )
    workflow, task = await one_task(client, guardrail_max_retries=1)
    run = await execute(client, workflow["id"])
    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "failed", done
    assert len(stub.requests) == 4
    (failed_run,) = await runs_of(client, task["id"])
    assert failed_run["error"] == "GUARDRAIL_FAILED: Still no date."
    assert failed_run["tokens_used"] > 0
    assert "GUARDRAIL_FAILED: Still no date." in done["error_message"]
    checks = [
        (e["data"]["attempt"], e["data"]["retries_left"])
        for e in await events(client, run["id"], "guardrail_failed")
    ]
    assert checks == [(1, 1), (2, 0)]


async def test_by_default_two_revisions_are_judged_before_the_task_fails(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        for_task("T", content="Soon."),
        verdict(False, "No date."),
        revision("Later."),
        verdict(False, "Still no date."),
        revision("Eventually."),
        verdict(False, "Never a date."),
    )
    workflow, task = await one_task(client)
    assert task["guardrail_max_retries"] == 2
    run = await execute(client, workflow["id"])
    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "failed", done
    assert len(stub.requests) == 6 and len(judge_calls(stub)) == 3
    assert "The answer:\nEventually." in last_user(judge_calls(stub)[-1])
    (failed_run,) = await runs_of(client, task["id"])
    assert failed_run["error"] == "GUARDRAIL_FAILED: Never a date."
    checks = [
        (e["data"]["attempt"], e["data"]["retries_left"])
        for e in await events(client, run["id"], "guardrail_failed")
    ]
    assert checks == [(1, 2), (2, 1), (3, 0)]


async def test_no_retries_fails_at_the_first_failed_check(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("T", content="Soon."), verdict(False, "No date."))
    workflow, _ = await one_task(client, guardrail_max_retries=0)
    done = await wait_for_execution(client, (await execute(client, workflow["id"]))["id"])
    assert done["status"] == "failed", done
    assert len(stub.requests) == 2
    assert done["error_message"].endswith("GUARDRAIL_FAILED: No date.")


async def test_an_unreadable_verdict_fails_the_task_without_retrying(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(for_task("T", content="Soon."), {"format": JUDGE, "content": "looks fine to me"})
    workflow, _ = await one_task(client)
    done = await wait_for_execution(client, (await execute(client, workflow["id"]))["id"])
    assert done["status"] == "failed", done
    assert len(stub.requests) == 2
    assert "GUARDRAIL_FAILED: the judge gave no readable verdict" in done["error_message"]


async def test_a_revision_is_held_to_the_output_schema_before_it_is_judged(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    schema = {
        "type": "object",
        "properties": {"due": {"type": "string"}},
        "required": ["due"],
        "additionalProperties": False,
    }
    stub.script(
        {"format": "T", "json": {"due": "soon"}},
        verdict(False, "Give a date."),
        {"format": "T", "content": "3 May"},  # the revision does not fit: sent back once
        {"format": "T", "json": {"due": "3 May"}},
        verdict(True),
    )
    workflow, task = await one_task(client, output_schema=schema)
    run = await execute(client, workflow["id"])
    done = await wait_for_execution(client, run["id"])
    assert done["status"] == "completed", done
    assert done["output_data"]["tasks"][str(task["id"])] == {"due": "3 May"}
    answers = [r for r in stub.requests if r not in judge_calls(stub)]
    assert len(answers) == 3 and len(judge_calls(stub)) == 2
    assert all(r["response_format"]["json_schema"]["name"] == "T" for r in answers)
    assert '{"due": "3 May"}' in user_prompt(judge_calls(stub)[-1])
    invalid = await events(client, run["id"], "output_validation_failed")
    assert [e["data"]["attempt"] for e in invalid] == [2]


async def test_a_restart_while_the_judge_answers_judges_the_same_answer_again(
    settings: Settings, stub: StubServer
) -> None:
    """The answer being judged is kept in the task run before the judge is asked: the resumed
    run asks the judge again about it, not the agent for a new one (see
    `test_guardrail_durability.py` for a SIGKILL)."""
    stub.script(
        for_task("T", content="First."),
        verdict(True, gate="judge"),
        for_task("T", content="Second."),
        verdict(True),
    )
    async with running_app(settings) as (_, http):
        workflow, task = await one_task(http)
        started = await execute(http, workflow["id"])
        await eventually(lambda: stub.waiting_at("judge") == 1, what="the judge's call")
    async with running_app(settings) as (_, http):
        done = await wait_for_status(http, started["id"], "completed", "failed")
        assert done["status"] == "completed", done
        assert done["output_data"]["tasks"][str(task["id"])] == "First."
        interrupted, resumed = reversed(await runs_of(http, task["id"]))
        assert (interrupted["status"], resumed["status"]) == ("cancelled", "completed")
        assert resumed["attempt"] == 2
        assert resumed["tokens_used"] > 0
    answers = [r for r in stub.requests if r not in judge_calls(stub)]
    assert len(answers) == 1 and len(judge_calls(stub)) == 2
    assert "First." in user_prompt(judge_calls(stub)[-1])
