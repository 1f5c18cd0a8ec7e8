"""Authentication of every request but `/health` (and the docs, by AUTH_DOCS_PUBLIC), before
routing: a refused request reaches no route, reads no body and changes nothing.

HTTP: `Authorization: Bearer <token or key>` (the scheme in any case) or `X-API-Key: <key>`;
on the SSE stream also `?access_token=` (EventSource cannot send headers). A request with two
different credentials is refused (401, reason `ambiguous`). `access_token` is taken out of the
query string of every request and WebSocket handshake before anything else sees it, uvicorn's
access log included (it prints the same scope); it is never a WebSocket's credential.
WebSocket: the same headers, or, when there are none, a first message
`{"type": "auth", "token": ...}` within WS_AUTH_SECONDS; a socket that fails is accepted and
closed with 4401 (4403 without the scope, 4429 over the failure budget, 1013 when the JWKS
cannot be read), which browsers see. A JWKS that cannot be read answers HTTP 503: the token may
well be valid, so it does not count as a failed authentication.

A stream (the WebSocket, the SSE stream) re-checks its credential every STREAM_RECHECK_SECONDS
(at least API_KEY_CACHE_SECONDS): a revoked key or an expired token ends it (WebSocket close
4401, the SSE stream's end), as it would refuse the next request.

A presented credential that fails counts against the client IP's RATE_LIMIT_AUTH_FAILURES; an
IP past it gets 429 on every request until the window frees up, valid credentials included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crew_platform.auth.authenticator import Authenticator
from crew_platform.auth.principal import Caller, Principal, calling_as
from crew_platform.auth.scopes import SSE_PATH, WEBSOCKET, required_scope
from crew_platform.common.http import StartTracking, error_response
from crew_platform.edge.ratelimit import RateLimits, Verdict, parse_limit
from crew_platform.errors import Forbidden, PlatformError, ServiceUnavailable, Unauthorized
from crew_platform.settings import Settings

log = logging.getLogger(__name__)

OPEN_PATHS = ("/health",)
DOCS_PATHS = ("/docs", "/redoc", "/openapi.json")
QUERY_TOKEN = "access_token"
REALM = 'Bearer realm="crew-platform"'
FAILURES = "auth-failures"
"""The rate-limit key kind of failed authentications."""

WS_AUTH_SECONDS = 5.0
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_MANY_FAILURES = 4429
CLOSE_TRY_AGAIN_LATER = 1013
"""The keys to verify tokens with (JWT_JWKS_URL) could not be read: not the client's fault."""
STREAM_RECHECK_SECONDS = 1.0


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in prefixes)


def presented_credentials(scope: Scope, query_token: str | None = None) -> list[str]:
    """The distinct credentials a request carries: every `Authorization: Bearer` and
    `X-API-Key` header and (on the SSE stream) `access_token`, surrounding spaces taken off;
    `""` stands for an Authorization header that is not `Bearer <something>`. More than one is
    refused: which of two different credentials counted would be a guess."""
    found: list[str] = []
    for name, raw in scope.get("headers", ()):
        if name == b"authorization":
            kind, _, token = bytes(raw).decode("latin-1").strip().partition(" ")
            found.append(token.strip() if kind.lower() == "bearer" and token.strip() else "")
        elif name == b"x-api-key":
            found.append(bytes(raw).decode("latin-1").strip())
    if query_token is not None:
        found.append(query_token.strip())
    return list(dict.fromkeys(found))


def take_query_token(scope: Scope) -> str | None:
    """Removes `access_token` from the request's query string (in place: the server's access
    log reads the same scope) and returns its value."""
    raw: bytes = scope.get("query_string", b"")
    if QUERY_TOKEN.encode() not in raw:
        return None
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    token = next((value for name, value in pairs if name == QUERY_TOKEN), None)
    scope["query_string"] = urlencode([(n, v) for n, v in pairs if n != QUERY_TOKEN]).encode()
    return token


def unauthorized_headers(error: Unauthorized) -> dict[str, str]:
    if error.details.get("reason") == "missing":
        return {"WWW-Authenticate": REALM}
    return {"WWW-Authenticate": f'{REALM}, error="invalid_token"'}


class AuthMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, limits: RateLimits | None) -> None:
        self.app = app
        self.ownership = settings.auth_ownership
        self.open_paths = OPEN_PATHS + (DOCS_PATHS if settings.auth_docs_public else ())
        self.failure_limit = parse_limit(settings.rate_limit_auth_failures)
        self.limits = limits if self.failure_limit is not None else None
        self.recheck_seconds = max(STREAM_RECHECK_SECONDS, settings.api_key_cache_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # -- shared ------------------------------------------------------------------------------

    def _client(self, scope: Scope) -> str:
        if self.limits is None:
            return str((scope.get("client") or ("unknown", 0))[0])
        return self.limits.client_ip(scope)

    async def _locked_out(self, client: str) -> Verdict | None:
        if self.limits is None or self.failure_limit is None:
            return None
        return await self.limits.spent(self.failure_limit, FAILURES, client)

    async def _authenticate(
        self, scope: Scope, credentials: list[str], client: str, method: str
    ) -> Principal:
        if not credentials:
            raise Unauthorized(
                "Authentication required: send Authorization: Bearer <token> or X-API-Key",
                {"reason": "missing"},
            )
        authenticator: Authenticator = scope["app"].state.authenticator
        try:
            if len(credentials) > 1:
                raise Unauthorized(
                    "Invalid credential: the request carries two different credentials "
                    "(Authorization, X-API-Key, access_token); send one",
                    {"reason": "ambiguous"},
                )
            if not credentials[0]:
                raise Unauthorized(
                    "Invalid credential: the Authorization header must be 'Bearer <token>'",
                    {"reason": "malformed"},
                )
            return await authenticator.authenticate(credentials[0])
        except Unauthorized as exc:
            log.info(
                "authentication failed: %s %s from %s (%s)",
                method,
                scope["path"],
                client,
                exc.details.get("reason"),
            )
            if self.limits is not None and self.failure_limit is not None:
                await self.limits.check(self.failure_limit, FAILURES, client)
            raise

    @staticmethod
    def _authorize(principal: Principal, method: str, path: str) -> None:
        needed = required_scope(method, path)
        if not principal.allows(needed):
            raise Forbidden(
                f"This credential lacks the '{needed.value}' scope that {method} {path} needs",
                {"required_scope": needed.value, "scopes": sorted(principal.scopes)},
            )

    # -- HTTP --------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        query_token = take_query_token(scope)
        path, method = scope["path"], scope["method"]
        if _under(path, self.open_paths):
            await self.app(scope, receive, send)
            return
        client = self._client(scope)
        verdict = await self._locked_out(client)
        if verdict is not None:
            refusal = verdict.refusal("failed authentications")
            await error_response(refusal, verdict.headers())(scope, receive, send)
            return
        sse = SSE_PATH.fullmatch(path) is not None
        credentials = presented_credentials(scope, query_token if sse else None)
        try:
            principal = await self._authenticate(scope, credentials, client, method)
            self._authorize(principal, method, path)
        except Unauthorized as exc:
            await error_response(exc, unauthorized_headers(exc))(scope, receive, send)
            return
        except Forbidden as exc:
            scope_needed = exc.details["required_scope"]
            challenge = f'{REALM}, error="insufficient_scope", scope="{scope_needed}"'
            await error_response(exc, {"WWW-Authenticate": challenge})(scope, receive, send)
            return
        except PlatformError as exc:  # the JWKS unreachable: 503, not a failed credential
            await error_response(exc, _retry_after(exc))(scope, receive, send)
            return
        with calling_as(Caller(principal, self.ownership)):
            if sse:
                await self._sse_while_valid(scope, receive, send, credentials[0])
            else:
                await self.app(scope, receive, send)

    async def _sse_while_valid(
        self, scope: Scope, receive: Receive, send: Send, credential: str
    ) -> None:
        tracking_send = StartTracking(send)

        async def end(refusal: Unauthorized) -> None:
            if tracking_send.started:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                await error_response(refusal, unauthorized_headers(refusal))(scope, receive, send)

        await self._while_valid(scope, credential, self.app(scope, receive, tracking_send), end)

    async def _while_valid(
        self,
        scope: Scope,
        credential: str,
        stream: Awaitable[None],
        end: Callable[[Unauthorized], Awaitable[None]],
    ) -> None:
        """Runs `stream` while `credential` stays valid; when it stops being valid, the stream
        is stopped and `end` closes what the client sees."""
        authenticator: Authenticator = scope["app"].state.authenticator
        serving = asyncio.ensure_future(stream)
        try:
            while True:
                done, _ = await asyncio.wait({serving}, timeout=self.recheck_seconds)
                if done:
                    return serving.result()
                try:
                    await authenticator.authenticate(credential)
                except Unauthorized as refusal:
                    log.info(
                        "a stream on %s ends: its credential is no longer valid (%s)",
                        scope["path"],
                        refusal.details.get("reason"),
                    )
                    await _stopped(serving)
                    await end(refusal)
                    return
                except Exception as exc:  # the key store unreachable: check again next time
                    log.warning(
                        "could not re-check the credential of a stream on %s (%s: %s)",
                        scope["path"],
                        type(exc).__name__,
                        exc,
                    )
        finally:
            await _stopped(serving)

    # -- WebSocket ---------------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = self._client(scope)
        if await self._locked_out(client) is not None:
            await _refuse(receive, send, CLOSE_TOO_MANY_FAILURES, "too many failed authentications")
            return
        take_query_token(scope)  # never a credential here (the URL ends up in logs): dropped
        credentials = presented_credentials(scope)
        if not credentials:
            await self._ws_first_message(scope, client, receive, send)
            return
        principal = await self._ws_principal(scope, credentials, client)
        if isinstance(principal, Principal):
            stream = self.app(scope, receive, send)
            with calling_as(Caller(principal, self.ownership)):
                await self._ws_while_valid(scope, credentials[0], stream, send)
        else:
            await _refuse(receive, send, *principal)

    async def _ws_principal(
        self, scope: Scope, credentials: list[str], client: str
    ) -> Principal | tuple[int, str]:
        """The principal, or the close code and reason of the refusal."""
        try:
            principal = await self._authenticate(scope, credentials, client, WEBSOCKET)
            self._authorize(principal, WEBSOCKET, scope["path"])
        except PlatformError as exc:
            return _close_code(exc), exc.message
        return principal

    async def _ws_first_message(
        self, scope: Scope, client: str, receive: Receive, send: Send
    ) -> None:
        """Accept, then wait for `{"type": "auth", "token": ...}`; the app then sees the
        handshake as if it came now (its own accept is not sent twice)."""
        connect = await receive()
        if connect["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        try:
            first = await asyncio.wait_for(receive(), WS_AUTH_SECONDS)
        except TimeoutError:
            reason = f"authentication required within {WS_AUTH_SECONDS:g} s"
            await _close(send, CLOSE_UNAUTHORIZED, reason)
            return
        if first["type"] != "websocket.receive":
            return  # the client left
        token = _auth_message_token(first)
        if token is None:
            message = 'the first message must be {"type": "auth", "token": "..."}'
            await _close(send, CLOSE_UNAUTHORIZED, message)
            return
        principal = await self._ws_principal(scope, [token.strip()], client)
        if not isinstance(principal, Principal):
            await _close(send, *principal)
            return
        await send(
            {
                "type": "websocket.send",
                "text": json.dumps(
                    {
                        "type": "authenticated",
                        "subject": principal.subject,
                        "scopes": sorted(principal.scopes),
                    }
                ),
            }
        )
        pending: list[Message] = [connect]

        async def replay_receive() -> Message:
            return pending.pop() if pending else await receive()

        async def send_once_accepted(message: Message) -> None:
            if message["type"] != "websocket.accept":
                await send(message)

        with calling_as(Caller(principal, self.ownership)):
            stream = self.app(scope, replay_receive, send_once_accepted)
            await self._ws_while_valid(scope, token.strip(), stream, send)

    async def _ws_while_valid(
        self, scope: Scope, credential: str, stream: Awaitable[None], send: Send
    ) -> None:
        async def end(refusal: Unauthorized) -> None:
            with contextlib.suppress(Exception):  # the client may be gone already
                await _close(send, CLOSE_UNAUTHORIZED, refusal.message)

        await self._while_valid(scope, credential, stream, end)


def _close_code(refusal: PlatformError) -> int:
    if isinstance(refusal, Forbidden):
        return CLOSE_FORBIDDEN
    if isinstance(refusal, ServiceUnavailable):
        return CLOSE_TRY_AGAIN_LATER
    return CLOSE_UNAUTHORIZED


def _retry_after(error: PlatformError) -> dict[str, str] | None:
    seconds = error.details.get("retry_after")
    return {"Retry-After": str(seconds)} if isinstance(seconds, int) else None


def _auth_message_token(message: Message) -> str | None:
    raw = message.get("text")
    if raw is None:
        raw = (message.get("bytes") or b"").decode("utf-8", "replace")
    try:
        body: Any = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(body, dict) or body.get("type") != "auth":
        return None
    token = body.get("token")
    return token if isinstance(token, str) else None


async def _refuse(receive: Receive, send: Send, code: int, reason: str) -> None:
    """Close a socket with `code`, accepting it first if it is still a handshake: a close
    before the accept would be an HTTP 403, and the client would never see the code."""
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.accept"})
    elif message["type"] == "websocket.disconnect":
        return
    await _close(send, code, reason)


async def _stopped(task: asyncio.Future[None]) -> None:
    if task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close(send: Send, code: int, reason: str) -> None:
    await send({"type": "websocket.close", "code": code, "reason": reason[:120]})
