"""Model fallbacks in a run, on both backends: the stub answers 404 `model_not_found` for any
model it does not serve (as Cerebras does), and the run goes on with the next model of the
chain: the agent's `config.fallback_models`, then MODEL_FALLBACKS' entry, then its `*`.

The stub serves llama-4-maverick-17b-128e-instruct, llama3.1-8b, gpt-oss-120b and gemma-4-31b;
the `retired-*` models below are not served.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from crew_platform.devtools.llm_stub import StubServer
from crew_platform.settings import Settings
from tests.conftest import make_settings
from tests.flows import API, execute, for_task, pipeline, running_app
from tests.support import wait_for_execution

RULES = "retired-exact=gemma-4-31b,*=gpt-oss-120b"


@pytest.fixture
def settings(database_url: str, stub: StubServer) -> Settings:
    return make_settings(database_url, stub, llm_timeout_seconds=120, model_fallbacks=RULES)


async def run_tasks(
    client: httpx.AsyncClient, names: list[str], **agent: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run a linear workflow of `names` with one agent to its end: (execution, tasks)."""
    _, workflow, tasks = await pipeline(client, names, **agent)
    started = await execute(client, workflow["id"])
    return await wait_for_execution(client, started["id"]), tasks


async def logs_of(client: httpx.AsyncClient, execution_id: int, event: str) -> list[dict[str, Any]]:
    logs: list[dict[str, Any]] = (await client.get(f"{API}/executions/{execution_id}/logs")).json()
    return [entry for entry in logs if entry["event"] == event]


async def latest_run(client: httpx.AsyncClient, task_id: int) -> dict[str, Any]:
    response = await client.get(f"{API}/tasks/{task_id}/executions")
    assert response.status_code == 200, response.text
    run: dict[str, Any] = response.json()[0]
    return run


def called(stub: StubServer) -> list[str]:
    return [request["model"] for request in stub.requests]


async def test_the_agents_fallback_comes_first_and_the_run_records_it(
    client: httpx.AsyncClient, stub: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    stub.script(for_task("Only", content="answered"))
    caplog.set_level(logging.WARNING, logger="crew_platform.llm.fallback")
    done, (task,) = await run_tasks(
        client, ["Only"], model="retired-a", config={"fallback_models": ["llama3.1-8b"]}
    )
    assert done["status"] == "completed", done
    assert done["output_data"]["result"] == "answered"
    assert called(stub) == ["retired-a", "llama3.1-8b"]

    (fallback,) = await logs_of(client, done["id"], "model_fallback")
    assert fallback["level"] == "warning"
    assert fallback["task_id"] == task["id"]
    data = fallback["data"]
    assert (data["from"], data["to"], data["remembered"]) == ("retired-a", "llama3.1-8b", False)
    assert "MODEL_NOT_FOUND" not in data["reason"]  # the provider's words, not the code
    assert "'retired-a' is not served by cerebras" in data["reason"]
    assert "retired-a" in fallback["message"] and "llama3.1-8b" in fallback["message"]
    (completed,) = await logs_of(client, done["id"], "task_completed")
    assert completed["data"]["model"] == "llama3.1-8b"
    assert fallback["seq"] < completed["seq"]

    run = await latest_run(client, task["id"])
    assert (run["status"], run["model"]) == ("completed", "llama3.1-8b")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("retired-a is not served, falling back to llama3.1-8b" in w for w in warnings)


async def test_model_fallbacks_exact_entry_wins_over_the_wildcard(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    done, (task,) = await run_tasks(client, ["Only"], model="retired-exact")
    assert done["status"] == "completed", done
    assert called(stub) == ["retired-exact", "gemma-4-31b"]
    assert done["output_data"]["result"].startswith("[gemma-4-31b] answer to:")
    assert (await latest_run(client, task["id"]))["model"] == "gemma-4-31b"


async def test_the_wildcard_catches_any_other_model(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    done, (task,) = await run_tasks(client, ["Only"], model="retired-b")
    assert done["status"] == "completed", done
    assert called(stub) == ["retired-b", "gpt-oss-120b"]
    (fallback,) = await logs_of(client, done["id"], "model_fallback")
    assert (fallback["data"]["from"], fallback["data"]["to"]) == ("retired-b", "gpt-oss-120b")
    assert (await latest_run(client, task["id"]))["model"] == "gpt-oss-120b"


async def test_a_chain_of_two_fallbacks(client: httpx.AsyncClient, stub: StubServer) -> None:
    done, (task,) = await run_tasks(
        client, ["Only"], model="retired-c", config={"fallback_models": ["retired-d"]}
    )
    assert done["status"] == "completed", done
    assert called(stub) == ["retired-c", "retired-d", "gpt-oss-120b"]
    moves = [
        (e["data"]["from"], e["data"]["to"])
        for e in await logs_of(client, done["id"], "model_fallback")
    ]
    assert moves == [("retired-c", "retired-d"), ("retired-d", "gpt-oss-120b")]
    assert (await latest_run(client, task["id"]))["model"] == "gpt-oss-120b"


async def test_without_a_fallback_the_run_fails_with_model_not_found(
    database_url: str, stub: StubServer
) -> None:
    async with running_app(make_settings(database_url, stub)) as (_, client):
        done, (task,) = await run_tasks(client, ["Only"], model="retired-e")
        assert done["status"] == "failed"
        assert "MODEL_NOT_FOUND" in done["error_message"]
        assert "retired-e" in done["error_message"]
        assert await logs_of(client, done["id"], "model_fallback") == []
        run = await latest_run(client, task["id"])
        assert (run["status"], run["model"]) == ("failed", "retired-e")
    assert called(stub) == ["retired-e"]


async def test_a_chain_that_runs_out_fails_naming_every_model_tried_once(
    database_url: str, stub: StubServer
) -> None:
    settings = make_settings(
        database_url, stub, model_fallbacks="retired-f=retired-g,retired-g=retired-f,*=retired-f"
    )
    async with running_app(settings) as (_, client):
        done, (task,) = await run_tasks(client, ["Only"], model="retired-f")
        assert done["status"] == "failed"
        assert "MODEL_NOT_FOUND" in done["error_message"]
        assert "tried retired-f, retired-g" in done["error_message"]
        run = await latest_run(client, task["id"])
        assert (run["status"], run["model"]) == ("failed", "retired-g")
    assert called(stub) == ["retired-f", "retired-g"]


async def test_retired_wording_on_400_and_410_falls_back_but_other_400s_do_not(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    stub.script(
        {
            "model": "llama3.1-8b",
            "status": 400,
            "body": {
                "error": {
                    "message": "The model `llama3.1-8b` has been decommissioned and is no "
                    "longer supported.",
                    "type": "invalid_request_error",
                    "code": "model_decommissioned",
                }
            },
        },
        {
            "model": "gemma-4-31b",
            "status": 410,
            "body": {"error": {"message": "Model gemma-4-31b was retired on 2026-05-27"}},
        },
    )
    done, _ = await run_tasks(
        client, ["Only"], model="llama3.1-8b", config={"fallback_models": ["gemma-4-31b"]}
    )
    assert done["status"] == "completed", done
    assert called(stub) == ["llama3.1-8b", "gemma-4-31b", "gpt-oss-120b"]
    first, second = await logs_of(client, done["id"], "model_fallback")
    assert "has been decommissioned" in first["data"]["reason"]
    assert "was retired on 2026-05-27" in second["data"]["reason"]

    stub.reset()
    stub.script({"status": 400, "body": {"error": {"message": "frequency_penalty unsupported"}}})
    done, _ = await run_tasks(
        client,
        ["Other"],
        model="llama-4-maverick-17b-128e-instruct",
        config={"fallback_models": ["gpt-oss-120b"]},
    )
    assert called(stub) == ["llama-4-maverick-17b-128e-instruct"]
    assert done["status"] == "failed"
    assert "LLM_ERROR" in done["error_message"]
    assert await logs_of(client, done["id"], "model_fallback") == []


async def test_a_missing_model_is_remembered_so_later_tasks_skip_its_404(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    done, tasks = await run_tasks(client, ["First", "Second"], model="retired-h")
    assert done["status"] == "completed", done
    assert called(stub) == ["retired-h", "gpt-oss-120b", "gpt-oss-120b"]
    first, second = await logs_of(client, done["id"], "model_fallback")
    assert (first["task_id"], first["data"]["remembered"]) == (tasks[0]["id"], False)
    assert (second["task_id"], second["data"]["remembered"]) == (tasks[1]["id"], True)
    assert second["data"]["to"] == "gpt-oss-120b"
    for task in tasks:
        assert (await latest_run(client, task["id"]))["model"] == "gpt-oss-120b"


async def test_a_tool_loop_stays_on_the_fallback_for_its_later_calls(
    database_url: str, stub: StubServer
) -> None:
    """Nothing remembered across steps here (MODELS_CACHE_SECONDS=0): the step's own chain
    keeps the model that answered."""
    settings = make_settings(
        database_url, stub, model_fallbacks="*=gpt-oss-120b", models_cache_seconds=0
    )
    stub.script(
        for_task(
            "Sum",
            tool_calls=[{"name": "calculator", "id": "c1", "arguments": {"expression": "2+3"}}],
        ),
        for_task("Sum", content="The sum is", quote_tools=True),
    )
    async with running_app(settings) as (_, client):
        done, (task,) = await run_tasks(client, ["Sum"], model="retired-i", tools=["calculator"])
        assert done["status"] == "completed", done
        assert done["output_data"]["result"] == "The sum is Tool results: c1=5"
        assert len(await logs_of(client, done["id"], "model_fallback")) == 1
        assert (await latest_run(client, task["id"]))["model"] == "gpt-oss-120b"
    assert called(stub) == ["retired-i", "gpt-oss-120b", "gpt-oss-120b"]


async def test_runs_of_a_served_model_record_it_and_send_no_fallback(
    client: httpx.AsyncClient, stub: StubServer
) -> None:
    done, (task,) = await run_tasks(client, ["Only"], model="gemma-4-31b")
    assert done["status"] == "completed", done
    assert called(stub) == ["gemma-4-31b"]
    assert await logs_of(client, done["id"], "model_fallback") == []
    assert (await latest_run(client, task["id"]))["model"] == "gemma-4-31b"
