"""The scripts of examples/ run as a user runs them (a subprocess, against a real server process
answered by the LLM stub), twice in a row: the second run reuses what the first created and
reads its own execution."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from crew_platform.devtools.llm_stub import StubServer, free_port
from tests.api import module_live_server, wipe
from tests.support import LiveServer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# example -> (its workflow's name, its number of tasks, text only its final task's prompt has)
CASES = {
    "content_pipeline": ("Content Pipeline", 1, "Write a blog article about AI in Healthcare"),
    "research_dag": ("Research Brief", 3, "Write a one-page brief on solid-state batteries"),
    "report_with_expected_output": (
        "Quarterly Report",
        2,
        "Write a report on Acme Corp in Q3 2026 for the board of directors",
    ),
}


@pytest.fixture(scope="module", params=["sqlite"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, stub: StubServer
) -> Iterator[tuple[LiveServer, str]]:
    with module_live_server(request, tmp_path_factory, stub) as running:
        yield running


@pytest.fixture
def base(live: tuple[LiveServer, str]) -> str:
    server, url = live
    wipe(url)
    return server.base_url


def run_example(name: str, base_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), "--base-url", base_url, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_runs_twice_reusing_what_it_created(name: str, base: str, stub: StubServer) -> None:
    workflow_name, task_count, final_prompt = CASES[name]
    for attempt in (1, 2):
        answer = f"{name} final answer number {attempt}"
        stub.script({"match": final_prompt, "content": answer})
        done = run_example(name, base)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == answer, (done.stdout, done.stderr)

    workflows = httpx.get(f"{base}/api/v1/workflows/", params={"active_only": False}).json()
    assert [w["name"] for w in workflows] == [workflow_name]
    workflow_id = workflows[0]["id"]
    tasks = httpx.get(f"{base}/api/v1/tasks/workflow/{workflow_id}").json()
    assert len(tasks) == task_count
    executions = httpx.get(f"{base}/api/v1/workflows/{workflow_id}/executions").json()
    assert sorted(e["status"] for e in executions) == ["completed", "completed"]


def test_a_failed_first_run_does_not_spoil_the_second(base: str, stub: StubServer) -> None:
    """The README walkthrough used to read execution 1 again after a failed first run."""
    stub.script({"status": 401, "body": {"error": {"message": "invalid api key"}}})
    failed = run_example("content_pipeline", base)
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert "failed" in failed.stderr and "401" in failed.stderr, failed.stderr

    stub.script({"content": "the article, at last"})
    second = run_example("content_pipeline", base)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "the article, at last"


def test_an_api_error_is_printed_with_its_envelope(base: str) -> None:
    done = run_example("research_dag", base, "--model", " ")
    assert done.returncode == 1
    assert "POST /api/v1/agents/ answered 422" in done.stderr, done.stderr
    assert '"error": "VALIDATION_ERROR"' in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unreachable_server_is_a_clear_error() -> None:
    done = run_example("report_with_expected_output", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 1
    assert "cannot reach http://127.0.0.1:" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
