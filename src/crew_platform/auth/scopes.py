"""Which scope each request needs: one table of rules on the method and the path.

The first rule that matches decides. A request no rule matches needs `admin`, so a route added
without a rule is closed rather than open (and `tests/auth/test_route_table.py` fails on it).
The patterns are matched against the concrete path of a request (`/api/v1/agents/7/test`);
the tests check them against every route of the app with sample values in its parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from crew_platform.auth.principal import Scope

WEBSOCKET = "WEBSOCKET"
"""The method of a WebSocket handshake in this table."""

RESOURCES = "agents|workflows|tasks|tools|mcp-servers"
CONTROL_ACTIONS = "execute|test|pause|resume|cancel|retry|input"


@dataclass(frozen=True)
class Rule:
    methods: frozenset[str]
    path: re.Pattern[str]
    scope: Scope

    def matches(self, method: str, path: str) -> bool:
        return method in self.methods and self.path.fullmatch(path) is not None


def _rule(methods: str, pattern: str, scope: Scope) -> Rule:
    return Rule(frozenset(methods.split()), re.compile(pattern), scope)


RULES: tuple[Rule, ...] = (
    # Starting, testing and steering runs: /api/v1/<collection>/<id>/<action>.
    _rule("POST", rf"/api/v1/[^/]+/[^/]+/(?:{CONTROL_ACTIONS})", Scope.EXECUTE),
    # Creating, changing and deleting definitions (MCP server refresh included).
    _rule("POST PUT PATCH DELETE", rf"/api/v1/(?:{RESOURCES})(?:/.*)?", Scope.WRITE),
    # Reading anything, the SSE stream included.
    _rule("GET HEAD", r"/api/v1(?:/.*)?", Scope.READ),
    # Live events.
    _rule(WEBSOCKET, r"/ws/?", Scope.READ),
    # The API docs, when AUTH_DOCS_PUBLIC=false (else they are not authenticated at all).
    _rule("GET HEAD", r"/(?:docs|redoc|openapi\.json)(?:/.*)?", Scope.READ),
)


def rule_for(method: str, path: str) -> Rule | None:
    return next((rule for rule in RULES if rule.matches(method, path)), None)


def required_scope(method: str, path: str) -> Scope:
    rule = rule_for(method, path)
    return rule.scope if rule is not None else Scope.ADMIN


SSE_PATH = re.compile(r"/api/v1/executions/[^/]+/events")
"""The paths that also take the credential as `?access_token=` (EventSource cannot send
headers). Nowhere else: a token in a URL ends up in logs and browser history."""
