"""The app's route table, as the authentication tests walk it: every HTTP route under
/api/v1, every WebSocket route, with sample values for their path parameters."""

from __future__ import annotations

import re
from typing import Any

from fastapi.routing import APIRoute, APIWebSocketRoute, RouteContext, iter_route_contexts
from starlette.routing import WebSocketRoute

PARAMETER = re.compile(r"\{(\w+)(?::\w+)?\}")
API_PREFIX = "/api/v1"


def all_routes(app: Any) -> list[RouteContext]:
    """Every route the app serves, those of included routers with their prefix."""
    return list(iter_route_contexts(app.routes))


def http_routes(app: Any) -> list[tuple[str, str]]:
    """(method, path template) of every HTTP route under /api/v1, hidden aliases included."""
    found = {
        (method, str(route.path))
        for route in all_routes(app)
        if isinstance(route.original_route, APIRoute) and str(route.path).startswith(API_PREFIX)
        for method in route.methods or ()
    }
    return sorted(found, key=lambda item: (item[1], item[0]))


def websocket_routes(app: Any) -> list[str]:
    return sorted(
        str(route.path)
        for route in all_routes(app)
        if isinstance(route.original_route, APIWebSocketRoute | WebSocketRoute)
    )


def parameters(path: str) -> list[str]:
    return PARAMETER.findall(path)


def fill(path: str, values: dict[str, Any]) -> str:
    """The template with each `{parameter}` replaced by its value in `values`."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise AssertionError(
                f"no sample value for path parameter {{{name}}} of {path}: add one to the "
                "authentication tests' sample values"
            )
        return str(values[name])

    return PARAMETER.sub(value, path)
