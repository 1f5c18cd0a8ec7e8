"""HTTP glue shared by the feature routers: error envelope, pagination, collection routes.

Every error response of the service is built here: the exception handlers below, and
`error_response` for the pure-ASGI middlewares (body limit, rate limit), which answer before
FastAPI's handlers could see an exception."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field, WithJsonSchema
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crew_platform.common.limits import MAX_ID, MAX_JSON_DEPTH
from crew_platform.errors import (
    InvalidJSON,
    NotFound,
    PlatformError,
    ServiceUnavailable,
    ValidationFailed,
)

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    503: "SERVICE_UNAVAILABLE",
}


class ErrorBody(BaseModel):
    """The spec's error envelope."""

    error: str = Field(examples=["NOT_FOUND"])
    message: str = Field(examples=["Agent 42 not found"])
    details: dict[str, Any] = Field(
        description="Machine-readable context; `fields` names each bad field on a 422.",
        examples=[{"resource": "agent", "id": 42}],
    )


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (400, 404, 409, 413, 422, 429, 500)
}

TOTAL_COUNT: dict[int | str, dict[str, Any]] = {
    200: {
        "headers": {
            "X-Total-Count": {
                "description": "Number of matching records before `skip`/`limit`",
                "schema": {"type": "integer", "minimum": 0},
            }
        }
    }
}
"""`responses=` of list endpoints: documents the `X-Total-Count` header they set."""


def _existing(kind: str) -> AfterValidator:
    """An id outside the 32-bit range names no row: a 404 like any other unknown id of `kind`,
    raised as-is through validation (not a ValueError, which would be a 422)."""

    def check(value: int) -> int:
        if not 1 <= value <= MAX_ID:
            raise NotFound.resource(kind, value)
        return value

    return AfterValidator(check)


_ID_SCHEMA = WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_ID})

AgentId = Annotated[int, Path(description="Agent id"), _existing("Agent"), _ID_SCHEMA]
WorkflowId = Annotated[int, Path(description="Workflow id"), _existing("Workflow"), _ID_SCHEMA]
TaskId = Annotated[int, Path(description="Task id"), _existing("Task"), _ID_SCHEMA]
ExecutionId = Annotated[int, Path(description="Execution id"), _existing("Execution"), _ID_SCHEMA]
McpServerId = Annotated[int, Path(description="MCP server id"), _existing("MCP server"), _ID_SCHEMA]

WorkflowFilter = Annotated[int | None, Query(ge=1, le=MAX_ID, description="Filter by workflow ID")]
AgentFilter = Annotated[int | None, Query(ge=1, le=MAX_ID, description="Filter by agent ID")]
"""`?workflow_id=` / `?agent_id=`: an id that names no row matches nothing; one that no row
could have (outside 1..2**31-1) is a 422 naming the parameter."""


def envelope(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": code, "message": message, "details": details or {}}
    return JSONResponse(body, status_code=status, headers=headers)


def error_response(error: PlatformError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The envelope of a typed error. Also an ASGI app: a middleware answers with
    `await error_response(error)(scope, receive, send)`, on HTTP or as a WebSocket denial."""
    return envelope(
        error.status_code, error.code, error.message, error.details, dict(headers or {})
    )


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _message(err: Any) -> str:
    """Pydantic's message without its "Value error, " prefix for our own validators."""
    if err.get("type") == "extra_forbidden":
        return "unknown field"
    return str(err.get("msg", "invalid value")).removeprefix("Value error, ")


async def _validation_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(err.get("type") == "json_invalid" for err in errors):
        err = next(e for e in errors if e.get("type") == "json_invalid")
        reason = str(err.get("ctx", {}).get("error", "invalid JSON"))
        return error_response(InvalidJSON("Request body is not valid JSON", {"reason": reason}))
    fields: dict[str, str] = {}
    for err in errors:
        name = _field_name(tuple(err.get("loc", ())))
        fields.setdefault(name, _message(err))
    problems = "; ".join(f"{k}: {v}" for k, v in fields.items())
    return error_response(
        ValidationFailed(
            f"Invalid request: {problems}",
            {
                "fields": fields,
                "errors": [
                    {
                        "field": _field_name(tuple(e.get("loc", ()))),
                        "message": _message(e),
                        "type": e.get("type"),
                    }
                    for e in errors
                ],
            },
        )
    )


async def _platform_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PlatformError)
    return error_response(exc)


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
    if isinstance(exc.__cause__, RecursionError):
        # The JSON parser recurses once per level: a body nested ~1000 deep stops it.
        return envelope(
            400,
            "INVALID_JSON",
            "Request body nests objects and arrays too deeply to be parsed",
            {"reason": "nesting too deep", "max_depth": MAX_JSON_DEPTH},
        )
    if exc.status_code == 404 and exc.detail == "Not Found":
        message = f"No route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"Method {request.method} not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    headers = dict(exc.headers or {})
    details: dict[str, Any] = {}
    if exc.status_code == 405:
        # Starlette names only the first route matching the path; list every method it serves.
        allowed = _allowed_methods(request)
        headers["Allow"] = ", ".join(allowed)
        details["allowed_methods"] = allowed
    return envelope(exc.status_code, code, message, details, headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allowed_methods(request: Request) -> list[str]:
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def _internal_error() -> PlatformError:
    return PlatformError("The server hit an unexpected error")


DATABASE_RETRY_AFTER_SECONDS = 1
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57P")
"""PostgreSQL's connection exceptions, insufficient resources (too many clients, out of
memory or disk) and operator intervention (the server shutting down or starting)."""


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot serve now (not that the request was wrong): the
    pool or a connection timed out, the server refused or dropped the connection, or SQLite's
    lock stayed taken past its busy timeout."""
    if isinstance(exc, sa_exc.TimeoutError):
        return True
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    sqlstate = str(getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", "") or "")
    if sqlstate.startswith(_UNAVAILABLE_SQLSTATE_CLASSES):
        return True
    cause = exc.orig.__cause__ if exc.orig is not None else None
    if isinstance(cause, OSError):
        return True  # refused, reset, unreachable
    return isinstance(exc, sa_exc.OperationalError) and "database is locked" in str(exc.orig)


def _unexpected_error(exc: BaseException) -> PlatformError:
    if database_unavailable(exc):
        return ServiceUnavailable(
            "The database is unavailable right now; try again shortly",
            {"retry_after": DATABASE_RETRY_AFTER_SECONDS},
        )
    return _internal_error()


def _unexpected_response(exc: BaseException) -> JSONResponse:
    error = _unexpected_error(exc)
    headers = (
        {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)}
        if isinstance(error, ServiceUnavailable)
        else None
    )
    return error_response(error, headers)


async def _unexpected_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _unexpected_response(exc)


class StartTracking:
    """A `send` that notes whether the response has started (after that, nothing else can be
    answered in its place)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)


class UnhandledErrorMiddleware:
    """Answers an exception that escaped a route with the 500 envelope, and ends it there.

    Starlette's `ServerErrorMiddleware` also answers 500, but then re-raises to the server, and
    uvicorn closes the client's keep-alive connection on it; the client's next request on that
    connection then fails. An exception raised after the response started cannot be answered
    and still propagates (the server has to cut that response short)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracking_send = StartTracking(send)
        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if tracking_send.started:
                raise
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            await _unexpected_response(exc)(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Exception handlers, and the innermost middleware: call it before `add_middleware`, so
    that a route's unexpected error is answered inside the other middlewares (a 500 still
    carries rate-limit headers); the `Exception` handler covers what fails outside it."""
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(PlatformError, _platform_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(Exception, _unexpected_handler)
    app.add_middleware(UnhandledErrorMiddleware)


@dataclass(frozen=True)
class Page:
    skip: int
    limit: int


async def page_params(
    skip: Annotated[int, Query(ge=0, le=MAX_ID, description="Number of records to skip")] = 0,
    limit: Annotated[
        int, Query(ge=1, le=1000, description="Maximum number of records to return")
    ] = 100,
) -> Page:
    """`skip`/`limit` query parameters with the spec's defaults and our bounds (async: FastAPI
    would run a plain function or class in its thread pool, one thread hop per request)."""
    return Page(skip, limit)


PageDep = Annotated[Page, Depends(page_params)]
