"""A real `crew-platform serve` killed with SIGKILL while a guardrail's judge answers, or while
the agent revises after a failed check, then restarted on the same database: the answer being
judged and the verdicts already given are kept in the task run, so the resumed run goes on from
the judge (or the revision) and no finished model call is made again (the stub's request log
says which were)."""

from __future__ import annotations

from typing import Any

import httpx

from crew_platform.devtools.llm_stub import StubServer
from tests.engine.test_durability import server_env, servers, start  # noqa: F401 (fixtures)
from tests.engine.test_guardrail import (
    REVISION,
    RULE,
    judge_calls,
    last_user,
    revision,
    verdict,
)
from tests.flows import API, eventually, for_task, make_agent, make_task, make_workflow
from tests.support import LiveServer


async def guarded(http: httpx.AsyncClient, **fields: Any) -> tuple[dict[str, Any], int]:
    """A one-task workflow whose task has the guardrail RULE, started: (task, execution id)."""
    agent = await make_agent(http)
    workflow = await make_workflow(http)
    task = await make_task(http, workflow["id"], agent["id"], "T", guardrail=RULE, **fields)
    started = await http.post(f"{API}/workflows/{workflow['id']}/execute", json={})
    assert started.status_code == 202, started.text
    return task, started.json()["id"]


async def finished(http: httpx.AsyncClient, execution_id: int) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body: dict[str, Any] = (await http.get(f"{API}/executions/{execution_id}")).json()
        return body if body["status"] in ("completed", "failed") else None

    result: dict[str, Any] = await eventually(check, what="the resumed run to finish")
    return result


def agent_calls(stub: StubServer) -> list[dict[str, Any]]:
    """The agent's calls (its answer and revisions), not the judge's."""
    judged = judge_calls(stub)
    return [r for r in stub.requests if r not in judged]


async def test_sigkill_while_the_judge_answers_judges_the_kept_answer(
    servers: list[LiveServer],  # noqa: F811
    server_env: dict[str, str],  # noqa: F811
    stub: StubServer,
) -> None:
    stub.script(
        for_task("T", content="Due on 3 May."),
        verdict(True, gate="judge"),
        for_task("T", content="Answered again."),  # taken only if the agent is asked again
        verdict(True, "mentions 3 May"),
    )
    first = start(servers, server_env)
    async with httpx.AsyncClient(base_url=first.base_url, timeout=30) as http:
        task, execution_id = await guarded(http)
        await eventually(lambda: stub.waiting_at("judge") == 1, what="the judge's call")
    first.kill()
    await eventually(lambda: stub.disconnects == 1, what="the killed server's call to drop")

    second = start(servers, server_env)
    async with httpx.AsyncClient(base_url=second.base_url, timeout=30) as http:
        done = await finished(http, execution_id)
        assert done["status"] == "completed", done
        assert done["output_data"]["result"] == "Due on 3 May."
        runs = (await http.get(f"{API}/tasks/{task['id']}/executions")).json()
        assert [(r["attempt"], r["status"]) for r in runs] == [(2, "completed"), (1, "cancelled")]
        assert runs[0]["tokens_used"] > 0  # the kept answer's tokens count
        logs = (await http.get(f"{API}/executions/{execution_id}/logs")).json()
        assert [e["event"] for e in logs if e["event"].startswith("guardrail_")] == [
            "guardrail_passed"
        ]
    assert len(agent_calls(stub)) == 1  # the agent answered once
    held, asked_again = judge_calls(stub)
    assert held["messages"] == asked_again["messages"]  # about the same, kept answer


async def test_sigkill_during_a_revision_keeps_the_failed_verdict(
    servers: list[LiveServer],  # noqa: F811
    server_env: dict[str, str],  # noqa: F811
    stub: StubServer,
) -> None:
    stub.script(
        for_task("T", content="Due soon."),
        verdict(False, "No date is given."),
        {"prefix": REVISION, "gate": "revising"},
        revision("Due on 3 May."),
        verdict(True),
    )
    first = start(servers, server_env)
    async with httpx.AsyncClient(base_url=first.base_url, timeout=30) as http:
        task, execution_id = await guarded(http, guardrail_max_retries=1)
        await eventually(lambda: stub.waiting_at("revising") == 1, what="the revision's call")
    first.kill()
    await eventually(lambda: stub.disconnects == 1, what="the killed server's call to drop")

    second = start(servers, server_env)
    async with httpx.AsyncClient(base_url=second.base_url, timeout=30) as http:
        done = await finished(http, execution_id)
        assert done["status"] == "completed", done
        assert done["output_data"]["result"] == "Due on 3 May."
        logs = (await http.get(f"{API}/executions/{execution_id}/logs")).json()
        checks = [
            (e["event"], e["data"]["attempt"], e["data"].get("retries_left"))
            for e in logs
            if e["event"].startswith("guardrail_")
        ]
        # Recorded once, before the kill; the retry it used still counts after the restart.
        assert checks == [("guardrail_failed", 1, 1), ("guardrail_passed", 2, None)]
        runs = (await http.get(f"{API}/tasks/{task['id']}/executions")).json()
        assert [(r["attempt"], r["status"]) for r in runs] == [(2, "completed"), (1, "cancelled")]
    answer, held, revised = agent_calls(stub)
    assert held["messages"] == revised["messages"]  # the revision in flight, asked again
    assert revised["messages"][-2] == {"role": "assistant", "content": "Due soon."}
    assert "No date is given." in last_user(revised)
    assert revised["messages"][: len(answer["messages"])] == answer["messages"]
    first_verdict, second_verdict = judge_calls(stub)  # the failed verdict was not asked again
    assert "Due soon." in last_user(first_verdict)
    assert "Due on 3 May." in last_user(second_verdict)
