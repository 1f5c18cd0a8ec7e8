"""Every route of the app has a scope rule (generated from the route table: a route added
later without a rule fails here), and the rules give the scopes the issue asks for."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from starlette.routing import Mount, Route

from crew_platform.app import create_app
from crew_platform.auth.middleware import DOCS_PATHS, OPEN_PATHS
from crew_platform.auth.principal import Scope
from crew_platform.auth.scopes import WEBSOCKET, required_scope, rule_for
from tests.auth.routes import all_routes, fill, http_routes, parameters, websocket_routes
from tests.conftest import make_settings

SAMPLES = {
    "agent_id": 7,
    "workflow_id": 7,
    "task_id": 7,
    "execution_id": 7,
    "server_id": 7,
    "name": "weather.now",
}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    path = tmp_path_factory.mktemp("routes") / "routes.db"
    return create_app(make_settings(f"sqlite+aiosqlite:///{path}"))


def concrete(path: str) -> str:
    return fill(path, {name: SAMPLES.get(name, 7) for name in parameters(path)})


def test_every_api_route_matches_a_rule_on_its_template_and_on_a_real_path(
    app: FastAPI,
) -> None:
    routes = http_routes(app)
    assert len(routes) > 30
    unmatched = [
        f"{method} {path}"
        for method, path in routes
        for candidate in (path, concrete(path))
        if rule_for(method, candidate) is None
    ]
    assert not unmatched, (
        "routes without a scope rule (they would need admin): add a rule to "
        f"crew_platform/auth/scopes.py RULES: {sorted(set(unmatched))}"
    )
    for method, path in routes:
        assert required_scope(method, path) == required_scope(method, concrete(path)), path


def test_every_websocket_route_matches_a_rule(app: FastAPI) -> None:
    paths = websocket_routes(app)
    assert paths == ["/ws", "/ws/"]
    assert all(required_scope(WEBSOCKET, path) == Scope.READ for path in paths)


def test_every_other_route_is_open_on_purpose(app: FastAPI) -> None:
    """Outside /api/v1 and the WebSocket only /health and the docs are served."""
    others = [
        str(route.path)
        for route in all_routes(app)
        if isinstance(route.original_route, Route | Mount)
        and not str(route.path).startswith("/api/v1")
    ]
    assert "/health" in others and "/openapi.json" in others
    open_paths = OPEN_PATHS + DOCS_PATHS
    stray = [p for p in others if not any(p == o or p.startswith(o + "/") for o in open_paths)]
    assert not stray, f"routes outside /api/v1 that authentication does not know of: {stray}"


EXPECTED = [
    ("GET", "/api/v1/agents/", Scope.READ),
    ("GET", "/api/v1/agents/{agent_id}", Scope.READ),
    ("POST", "/api/v1/agents/", Scope.WRITE),
    ("PUT", "/api/v1/agents/{agent_id}", Scope.WRITE),
    ("DELETE", "/api/v1/agents/{agent_id}", Scope.WRITE),
    ("POST", "/api/v1/agents/{agent_id}/test", Scope.EXECUTE),
    ("POST", "/api/v1/workflows/", Scope.WRITE),
    ("POST", "/api/v1/workflows/{workflow_id}/execute", Scope.EXECUTE),
    ("POST", "/api/v1/workflows/{workflow_id}/pause", Scope.EXECUTE),
    ("POST", "/api/v1/workflows/{workflow_id}/resume", Scope.EXECUTE),
    ("POST", "/api/v1/workflows/{workflow_id}/cancel", Scope.EXECUTE),
    ("GET", "/api/v1/workflows/{workflow_id}/executions", Scope.READ),
    ("PUT", "/api/v1/tasks/{task_id}", Scope.WRITE),
    ("POST", "/api/v1/tasks/{task_id}/execute", Scope.EXECUTE),
    ("POST", "/api/v1/tasks/{task_id}/retry", Scope.EXECUTE),
    ("GET", "/api/v1/tasks/workflow/{workflow_id}", Scope.READ),
    ("POST", "/api/v1/executions/{execution_id}/cancel", Scope.EXECUTE),
    ("POST", "/api/v1/executions/{execution_id}/input", Scope.EXECUTE),
    ("GET", "/api/v1/executions/{execution_id}/events", Scope.READ),
    ("GET", "/api/v1/executions/stats", Scope.READ),
    ("POST", "/api/v1/tools/", Scope.WRITE),
    ("PUT", "/api/v1/tools/{name}", Scope.WRITE),
    ("DELETE", "/api/v1/tools/{name}", Scope.WRITE),
    ("POST", "/api/v1/mcp-servers/", Scope.WRITE),
    ("POST", "/api/v1/mcp-servers/{server_id}/refresh", Scope.WRITE),
    ("DELETE", "/api/v1/mcp-servers/{server_id}", Scope.WRITE),
    ("GET", "/api/v1/models/", Scope.READ),
    ("GET", "/api/v1/workers/", Scope.READ),
    ("GET", "/api/v1/workers", Scope.READ),
    ("GET", "/api/v1/mcp-servers/{server_id}", Scope.READ),
    ("GET", "/api/v1/executions/{execution_id}/logs", Scope.READ),
    ("DELETE", "/api/v1/tasks/{task_id}", Scope.WRITE),
    ("HEAD", "/api/v1/agents/", Scope.READ),
    ("GET", "/openapi.json", Scope.READ),
    ("GET", "/docs/static/swagger-ui.css", Scope.READ),
]


@pytest.mark.parametrize(("method", "path", "scope"), EXPECTED)
def test_rule_gives_the_scope_of_the_issue(method: str, path: str, scope: Scope) -> None:
    assert required_scope(method, path) == scope
    assert required_scope(method, concrete(path)) == scope


UNRULED = [
    ("POST", "/api/v1/executions/{execution_id}/approve"),
    ("DELETE", "/api/v1/executions/{execution_id}"),
    ("POST", "/api/v1/admin/reset"),
    ("GET", "/metrics"),
    ("OPTIONS", "/api/v1/agents/"),
    ("PATCH", "/api/v1/models/"),
    (WEBSOCKET, "/ws/other"),
]


@pytest.mark.parametrize(("method", "path"), UNRULED)
def test_what_no_rule_covers_needs_admin(method: str, path: str) -> None:
    """The check above can fail: these match no rule, and are closed (admin) by default."""
    assert rule_for(method, path) is None
    assert required_scope(method, path) == Scope.ADMIN


def test_a_tool_named_like_an_action_is_still_a_write() -> None:
    """`/tools/{name}` takes names such as `execute`: DELETE of it is not an execution."""
    assert required_scope("DELETE", "/api/v1/tools/execute") == Scope.WRITE
    assert required_scope("PUT", "/api/v1/tools/test") == Scope.WRITE
