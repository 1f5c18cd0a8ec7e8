"""What the route table and ownership give GET /api/v1/workers (added after authentication):
a read, with only the caller's own runs under each process."""

from __future__ import annotations

from typing import Any

import pytest

from crew_platform.auth.principal import Scope
from crew_platform.auth.scopes import required_scope
from crew_platform.devtools.llm_stub import StubServer
from tests.api import assert_error
from tests.auth.conftest import token_of
from tests.flows import wait_for_gate
from tests.support import wait_for_execution

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])  # credentials: one backend


async def test_workers_need_read_and_show_only_the_callers_runs(
    auth_app: Any, http: Any, stub: StubServer
) -> None:
    """GET /api/v1/workers is a read (a process has no owner); under AUTH_OWNERSHIP=on the
    executions each process holds are the caller's own only (admin: all), so the ids of other
    owners' runs do not leak."""
    assert required_scope("GET", "/api/v1/workers/") == Scope.READ
    alice = token_of("alice")

    async def post(path: str, body: dict[str, Any]) -> Any:
        response = await http.post(path, json=body, headers=alice)
        assert response.status_code in (201, 202), response.text
        return response.json()

    stub.script({"content": "done", "gate": "workers"})
    agent = await post("/api/v1/agents/", {"name": "alice-agent", "role": "r", "goal": "g"})
    workflow = await post("/api/v1/workflows/", {"name": "alice-workflow"})
    await post(
        "/api/v1/tasks/",
        {"workflow_id": workflow["id"], "agent_id": agent["id"], "name": "t"},
    )
    run = await post(f"/api/v1/workflows/{workflow['id']}/execute", {})
    await wait_for_gate(stub, "workers")
    try:
        held = {}
        for who, scopes in (("alice", "read"), ("bob", "read"), ("root", "admin")):
            response = await http.get("/api/v1/workers/", headers=token_of(who, scopes))
            assert response.status_code == 200, response.text
            workers = response.json()
            assert workers, who  # every caller sees the processes
            held[who] = [e["execution_id"] for w in workers for e in w["executions"]]
        assert held == {"alice": [run["id"]], "bob": [], "root": [run["id"]]}
        no_read = await http.get("/api/v1/workers/", headers=token_of("alice", "write execute"))
        assert assert_error(no_read, 403, "FORBIDDEN")["details"]["required_scope"] == "read"
    finally:
        stub.open_gate("workers")
    http.headers.update(alice)
    await wait_for_execution(http, run["id"])
