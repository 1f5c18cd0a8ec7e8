"""Per-IP rate limits on the API and on WebSocket handshakes, built on the `limits` library.

Counted in memory by default, in Redis when REDIS_URL is set (processes share one budget).
The client address is the socket peer; X-Forwarded-For is believed only from TRUSTED_PROXIES.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import cast

from limits import RateLimitItem, parse
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crew_platform.settings import Settings, limit_is_off

log = logging.getLogger(__name__)

EXEMPT_PREFIXES = ("/health", "/docs", "/redoc", "/openapi.json")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_limit(value: str) -> RateLimitItem | None:
    """`100/minute` -> a limit; `off` (or empty) -> no limit."""
    if limit_is_off(value):
        return None
    return parse(value.strip())


def parse_networks(value: str) -> list[Network]:
    networks: list[Network] = []
    for part in value.replace(";", ",").split(","):
        if part.strip():
            networks.append(ipaddress.ip_network(part.strip(), strict=False))
    return networks


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_at: int
    retry_after: int

    def headers(self) -> list[tuple[bytes, bytes]]:
        values = [
            (b"x-ratelimit-limit", str(self.limit)),
            (b"x-ratelimit-remaining", str(self.remaining)),
            (b"x-ratelimit-reset", str(self.reset_at)),
        ]
        if not self.allowed:
            values.append((b"retry-after", str(self.retry_after)))
        return [(k, v.encode()) for k, v in values]


class RateLimits:
    def __init__(self, settings: Settings) -> None:
        self.api = parse_limit(settings.rate_limit_api)
        self.ws = parse_limit(settings.rate_limit_ws)
        self._trusted = parse_networks(settings.trusted_proxies)
        self._prefix = settings.rate_limit_key_prefix
        self.storage = cast(
            Storage,
            (
                storage_from_string(
                    "async+" + settings.redis_url, implementation="redispy", key_prefix=self._prefix
                )
                if settings.redis_url
                else storage_from_string("async+memory://")
            ),
        )
        self._limiter = MovingWindowRateLimiter(self.storage)

    def client_ip(self, scope: Scope) -> str:
        peer = (scope.get("client") or ("unknown", 0))[0]
        if not self._trusted or not self._is_trusted(peer):
            return str(peer)
        forwarded = _header(scope, b"x-forwarded-for")
        if not forwarded:
            return str(peer)
        # Walk from the nearest hop outwards; the first address we do not trust is the client.
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            if not self._is_trusted(hop):
                return hop
        return str(peer)

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    async def check(self, item: RateLimitItem, kind: str, client: str) -> Verdict:
        try:
            allowed = await self._limiter.hit(item, self._prefix, kind, client)
            stats = await self._limiter.get_window_stats(item, self._prefix, kind, client)
        except Exception:
            # The limiter's store being down must not take the API down with it.
            log.warning("rate limit store unavailable; letting the request through", exc_info=True)
            return Verdict(True, item.amount, item.amount, int(time.time()), 0)
        reset_at = math.ceil(stats.reset_time)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        return Verdict(allowed, item.amount, max(0, stats.remaining), reset_at, retry_after)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _is_exempt(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in EXEMPT_PREFIXES)


def _refusal_body(verdict: Verdict, what: str) -> bytes:
    return json.dumps(
        {
            "error": "RATE_LIMITED",
            "message": f"Too many {what}; retry in {verdict.retry_after} s",
            "details": {
                "limit": verdict.limit,
                "retry_after": verdict.retry_after,
                "reset": verdict.reset_at,
            },
        }
    ).encode()


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, limits: RateLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.limits.api and not _is_exempt(scope["path"]):
            await self._http(scope, receive, send, self.limits.api)
        elif scope["type"] == "websocket" and self.limits.ws:
            await self._websocket(scope, receive, send, self.limits.ws)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send, item: RateLimitItem) -> None:
        verdict = await self.limits.check(item, "api", self.limits.client_ip(scope))
        if not verdict.allowed:
            body = _refusal_body(verdict, "requests")
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        *verdict.headers(),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *verdict.headers()]
            await send(message)

        await self.app(scope, receive, with_headers)

    async def _websocket(
        self, scope: Scope, receive: Receive, send: Send, item: RateLimitItem
    ) -> None:
        verdict = await self.limits.check(item, "ws", self.limits.client_ip(scope))
        if verdict.allowed:
            await self.app(scope, receive, send)
            return
        message = await receive()  # websocket.connect
        if message["type"] != "websocket.connect":
            return
        if "websocket.http.response" in scope.get("extensions", {}):
            body = _refusal_body(verdict, "WebSocket connections")
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": 429,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        *verdict.headers(),
                    ],
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send(
                {
                    "type": "websocket.close",
                    "code": 1008,
                    "reason": "rate limited: too many WebSocket connections",
                }
            )
