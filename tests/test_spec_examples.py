"""The examples of the API specification, verbatim, against a real server process
(`crew-platform serve`): the curl steps of the complete workflow example, the Python SDK
example (with `requests`, as written there) and the JavaScript one (the same requests fetch()
sends), and the shapes of the documented responses."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from crew_platform.devtools.llm_stub import StubServer
from tests.api import DEFAULT_MODEL, assert_utc, module_live_server, wipe
from tests.support import LiveServer

# The request bodies of the "Complete Workflow Example", byte for byte as `curl -d` sends them.
CURL_STEPS = [
    (
        "/api/v1/agents/",
        """{
    "name": "Content Writer",
    "role": "Content Creator",
    "goal": "Create engaging content",
    "model": "llama-4-maverick-17b-128e-instruct"
  }""",
    ),
    (
        "/api/v1/workflows/",
        """{
    "name": "Content Pipeline",
    "description": "Automated content creation",
    "workflow_type": "linear"
  }""",
    ),
    (
        "/api/v1/tasks/",
        """{
    "workflow_id": 1,
    "agent_id": 1,
    "name": "Write Article",
    "description": "Write a blog article about AI",
    "task_type": "ai_task"
  }""",
    ),
]
STEP_4 = """{
    "input_data": {
      "topic": "AI in Healthcare",
      "length": "1000 words"
    }
  }"""

# Field names of the spec's response examples.
AGENT_EXAMPLE_FIELDS = {
    "id", "name", "role", "goal", "backstory", "model", "temperature", "max_tokens", "top_p",
    "is_active", "created_at", "updated_at", "created_by", "config", "capabilities", "tools",
}  # fmt: skip
EXECUTION_EXAMPLE_FIELDS = {
    "id", "workflow_id", "status", "started_at", "completed_at", "input_data", "output_data",
    "error_message", "execution_log", "created_by",
}  # fmt: skip
AGENT_TEST_EXAMPLE_FIELDS = {
    "agent_id", "input", "output", "execution_time", "tokens_used", "success", "error",
}  # fmt: skip
STATS_EXAMPLE_FIELDS = {
    "total_executions", "successful_executions", "failed_executions", "running_executions",
    "success_rate", "average_execution_time", "total_tokens_used", "executions_by_day",
    "top_workflows", "error_breakdown",
}  # fmt: skip


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, stub: StubServer
) -> Iterator[tuple[LiveServer, str]]:
    with module_live_server(request, tmp_path_factory, stub) as running:
        yield running


@pytest.fixture
def base(live: tuple[LiveServer, str], stub: StubServer) -> str:
    """http://127.0.0.1:PORT of a server whose database is empty (ids start at 1)."""
    server, url = live
    wipe(url)
    return server.base_url


def curl_post(url: str, data: str) -> requests.Response:
    """`curl -X POST URL -H "Content-Type: application/json" -d DATA`."""
    return requests.post(
        url, data=data.encode(), headers={"Content-Type": "application/json"}, timeout=30
    )


def wait_until_finished(base: str, execution_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        execution: dict[str, Any] = requests.get(
            f"{base}/api/v1/executions/{execution_id}", timeout=30
        ).json()
        if execution["status"] in ("completed", "failed", "cancelled"):
            return execution
        assert time.monotonic() < deadline, execution
        time.sleep(0.05)


def test_complete_workflow_example_steps_1_to_4(base: str) -> None:
    agent, workflow, task = (curl_post(base + path, data) for path, data in CURL_STEPS)
    assert agent.status_code == 201, agent.text
    assert workflow.status_code == 201, workflow.text
    assert task.status_code == 201, task.text

    assert agent.json()["id"] == 1
    assert agent.json()["name"] == "Content Writer"
    assert agent.json()["model"] == "llama-4-maverick-17b-128e-instruct"
    assert set(agent.json()) == AGENT_EXAMPLE_FIELDS
    assert workflow.json()["id"] == 1
    assert workflow.json()["workflow_type"] == "linear"
    assert task.json()["workflow_id"] == 1
    assert task.json()["agent_id"] == 1
    assert task.json()["task_type"] == "ai_task"
    assert task.json()["status"] == "pending"

    started = curl_post(f"{base}/api/v1/workflows/1/execute", STEP_4)
    assert started.status_code == 202, started.text
    execution = started.json()
    assert set(execution) >= EXECUTION_EXAMPLE_FIELDS
    assert execution["workflow_id"] == 1
    assert execution["status"] == "pending"
    assert_utc(execution["started_at"])
    assert execution["input_data"] == {"topic": "AI in Healthcare", "length": "1000 words"}
    for field in ("completed_at", "output_data", "error_message", "execution_log", "created_by"):
        assert execution[field] is None, field

    done = wait_until_finished(base, execution["id"])
    assert done["status"] == "completed", done
    assert "Write a blog article about AI" in done["output_data"]["result"]
    tasks = requests.get(f"{base}/api/v1/tasks/workflow/1", timeout=30).json()
    assert [t["status"] for t in tasks] == ["completed"]


def test_python_sdk_example(base: str) -> None:
    # Get all agents
    response = requests.get(f"{base}/api/v1/agents/")
    agents = response.json()
    assert response.status_code == 200
    assert agents == []

    # Create new agent
    agent_data = {
        "name": "Python Agent",
        "role": "Python Developer",
        "goal": "Write Python code",
        "model": "llama-4-maverick-17b-128e-instruct",
    }
    response = requests.post(f"{base}/api/v1/agents/", json=agent_data)
    assert response.status_code == 201, response.text
    created = response.json()
    assert {k: created[k] for k in agent_data} == agent_data
    assert requests.get(f"{base}/api/v1/agents/").json() == [created]


def test_javascript_sdk_example(base: str) -> None:
    # fetch('http://localhost:8000/api/v1/agents/').then(response => response.json())
    agents = requests.get(f"{base}/api/v1/agents/", timeout=30).json()
    assert agents == []

    agent_data = {
        "name": "JS Agent",
        "role": "JavaScript Developer",
        "goal": "Write JavaScript code",
        "model": "llama-4-maverick-17b-128e-instruct",
    }
    # fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json'},
    #             body: JSON.stringify(agentData)})
    response = requests.post(
        f"{base}/api/v1/agents/",
        data=json.dumps(agent_data, separators=(",", ":")),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    agent = response.json()
    assert agent["name"] == "JS Agent"
    assert agent["role"] == "JavaScript Developer"
    assert agent["temperature"] == "0.6"
    assert agent["top_p"] == "0.9"
    assert agent["max_tokens"] == 32768


def test_list_query_parameters_have_the_documented_defaults(base: str) -> None:
    """skip 0, limit 100, active_only true."""
    session = requests.Session()
    for index in range(101):
        body = {"name": f"Agent {index:03}", "role": "r", "goal": "g", "is_active": index != 0}
        assert session.post(f"{base}/api/v1/agents/", json=body, timeout=30).status_code == 201
    default = session.get(f"{base}/api/v1/agents/", timeout=30)
    assert len(default.json()) == 100
    assert default.headers["X-Total-Count"] == "100"
    assert default.json()[0]["name"] == "Agent 001"
    everything = session.get(f"{base}/api/v1/agents/?active_only=false", timeout=30)
    assert len(everything.json()) == 100
    assert everything.headers["X-Total-Count"] == "101"
    assert everything.json()[0]["name"] == "Agent 000"


def test_documented_responses_have_the_documented_fields(base: str) -> None:
    agent = requests.post(
        f"{base}/api/v1/agents/",
        json={"name": "Researcher", "role": "Research Specialist", "goal": "Gather",
              "capabilities": ["Web Search"], "tools": ["web_search"]},
        timeout=30,
    ).json()  # fmt: skip
    assert set(agent) == AGENT_EXAMPLE_FIELDS
    assert agent["model"] == DEFAULT_MODEL
    listed = requests.get(f"{base}/api/v1/agents/", timeout=30).json()
    assert [set(a) for a in listed] == [AGENT_EXAMPLE_FIELDS]

    tested = requests.post(
        f"{base}/api/v1/agents/{agent['id']}/test",
        json={"input": "Test input for the agent", "context": {"additional": "context data"}},
        timeout=30,
    )
    assert tested.status_code == 200, tested.text
    # The spec's fields, and the model that answered (issue 12's model fallbacks).
    assert set(tested.json()) == AGENT_TEST_EXAMPLE_FIELDS | {"model"}
    assert tested.json()["agent_id"] == agent["id"]
    assert tested.json()["input"] == "Test input for the agent"
    assert tested.json()["success"] is True
    assert tested.json()["error"] is None

    stats = requests.get(f"{base}/api/v1/executions/stats", timeout=30)
    assert stats.status_code == 200
    # The spec's fields, and the tool counts issue 11 added.
    assert set(stats.json()) == STATS_EXAMPLE_FIELDS | {"total_tool_calls", "tool_errors"}


def test_interactive_docs_are_served(base: str) -> None:
    """ "For more detailed API documentation, visit: http://localhost:8000/docs"."""
    docs = requests.get(f"{base}/docs", timeout=30)
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    schema = requests.get(f"{base}/openapi.json", timeout=30).json()
    for path in ("/api/v1/agents/", "/api/v1/workflows/", "/api/v1/tasks/"):
        assert set(schema["paths"][path]) == {"get", "post"}
    assert "/api/v1/tasks/workflow/{workflow_id}" in schema["paths"]
