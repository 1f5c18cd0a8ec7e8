"""Typed platform errors. Services raise them; one handler renders the spec's envelope."""

from __future__ import annotations

from typing import Any, ClassVar


class PlatformError(Exception):
    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL_ERROR"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "details": self.details}


class BadRequest(PlatformError):
    status_code = 400
    code = "BAD_REQUEST"


class InvalidJSON(BadRequest):
    code = "INVALID_JSON"


class Unauthorized(PlatformError):
    """No credential, or one that is not valid (answered with `WWW-Authenticate`)."""

    status_code = 401
    code = "UNAUTHORIZED"


class Forbidden(PlatformError):
    """A valid credential without the scope the request needs."""

    status_code = 403
    code = "FORBIDDEN"


class NotFound(PlatformError):
    status_code = 404
    code = "NOT_FOUND"

    @classmethod
    def resource(cls, kind: str, ident: object) -> NotFound:
        return cls(f"{kind} {ident} not found", {"resource": kind.lower(), "id": ident})


class Conflict(PlatformError):
    status_code = 409
    code = "CONFLICT"


class InvalidStateTransition(Conflict):
    code = "INVALID_STATE"


class ValidationFailed(PlatformError):
    status_code = 422
    code = "VALIDATION_ERROR"

    @classmethod
    def field(cls, name: str, message: str, **extra: Any) -> ValidationFailed:
        return cls(f"{name}: {message}", {"fields": {name: message}, **extra})


class DependencyCycle(ValidationFailed):
    code = "DEPENDENCY_CYCLE"


class MissingInput(ValidationFailed):
    code = "MISSING_INPUT"


class ToolNotFound(ValidationFailed):
    """Agents name tools that resolve to none: refused before a run starts."""

    code = "TOOL_NOT_FOUND"

    @classmethod
    def for_agents(cls, unknown: dict[int, list[str]], names: dict[int, str]) -> ToolNotFound:
        """`unknown`: agent id -> the tool names it gives that no tool has."""
        parts = [
            f"agent {agent_id} ({names.get(agent_id, '?')}): {', '.join(tools)}"
            for agent_id, tools in sorted(unknown.items())
        ]
        return cls(
            "Unknown tools named by " + "; ".join(parts),
            {
                "agents": [
                    {"agent_id": agent_id, "name": names.get(agent_id), "unknown_tools": tools}
                    for agent_id, tools in sorted(unknown.items())
                ],
                "unknown_tools": sorted({t for tools in unknown.values() for t in tools}),
            },
        )


class PayloadTooLarge(PlatformError):
    status_code = 413
    code = "PAYLOAD_TOO_LARGE"


class RateLimited(PlatformError):
    status_code = 429
    code = "RATE_LIMITED"


class ServiceUnavailable(PlatformError):
    status_code = 503
    code = "SERVICE_UNAVAILABLE"
