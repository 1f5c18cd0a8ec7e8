"""Per-IP rate limits on the API and on WebSocket handshakes, built on the `limits` library.

Counted in memory by default, in Redis when REDIS_URL is set (processes share one budget).
While Redis is unreachable each process counts in memory instead (`limits` has no fallback of
its own): the outage and its end are logged once each, and Redis is tried again every
RATE_LIMIT_STORE_RETRY_SECONDS. The client address is the socket peer; X-Forwarded-For is
believed only from TRUSTED_PROXIES.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crew_platform.common.http import error_response
from crew_platform.errors import RateLimited
from crew_platform.settings import Settings, limit_is_off

log = logging.getLogger(__name__)

EXEMPT_PREFIXES = ("/health", "/docs", "/redoc", "/openapi.json")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")


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

    def headers(self) -> dict[str, str]:
        values = {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(self.remaining),
            "x-ratelimit-reset": str(self.reset_at),
        }
        if not self.allowed:
            values["retry-after"] = str(self.retry_after)
        return values

    def refusal(self, what: str) -> RateLimited:
        return RateLimited(
            f"Too many {what}; retry in {self.retry_after} s",
            {"limit": self.limit, "retry_after": self.retry_after, "reset": self.reset_at},
        )


def _redis_options() -> dict[str, Any]:
    """One quick retry (a pooled connection may predate a Redis restart), not redis-py's default
    of ten with backoff: while Redis is down, the request that probes it should not wait
    seconds. Imported here: without REDIS_URL, redis is not loaded."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return {
        "socket_connect_timeout": 1.0,
        "socket_timeout": 1.0,
        "retry": Retry(NoBackoff(), retries=1),
    }


class RateLimits:
    def __init__(self, settings: Settings) -> None:
        self.api = parse_limit(settings.rate_limit_api)
        self.ws = parse_limit(settings.rate_limit_ws)
        self._trusted = parse_networks(settings.trusted_proxies)
        self._prefix = settings.rate_limit_key_prefix
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._shared: MovingWindowRateLimiter | None = None
        if settings.redis_url:
            storage = storage_from_string(
                "async+" + settings.redis_url,
                implementation="redispy",
                key_prefix=self._prefix,
                **_redis_options(),
            )
            self._shared = MovingWindowRateLimiter(cast(Storage, storage))
        self._retry_seconds = settings.rate_limit_store_retry_seconds
        self._shared_down = False
        self._next_try = 0.0

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
        """Counts one hit of `client` against `item`; whether it was within the budget."""
        return await self._on_store(_count, item, kind, client)

    async def spent(self, item: RateLimitItem, kind: str, client: str) -> Verdict | None:
        """The refusal's verdict when `client` has no budget of `kind` left, without counting
        anything; None while some is left."""
        return await self._on_store(_peek, item, kind, client)

    async def _on_store(
        self, operation: Callable[..., Awaitable[T]], item: RateLimitItem, kind: str, client: str
    ) -> T:
        if self._shared is not None and self._may_try_shared():
            try:
                answer = await operation(self._shared, item, self._prefix, kind, client)
            except Exception as exc:
                self._shared_failed(exc)
            else:
                self._shared_answered()
                return answer
        return await operation(self._local, item, self._prefix, kind, client)

    def _may_try_shared(self) -> bool:
        if not self._shared_down:
            return True
        now = time.monotonic()
        if now < self._next_try:
            return False
        self._next_try = now + self._retry_seconds  # one probe at a time, not every request
        return True

    def _shared_failed(self, exc: Exception) -> None:
        self._next_try = time.monotonic() + self._retry_seconds
        if not self._shared_down:
            self._shared_down = True
            log.warning("rate-limit store unreachable, counting in memory (%s)", exc)

    def _shared_answered(self) -> None:
        if self._shared_down:
            self._shared_down = False
            log.warning("rate-limit store reachable again, counting in it")


async def _count(limiter: MovingWindowRateLimiter, item: RateLimitItem, *keys: str) -> Verdict:
    allowed = await limiter.hit(item, *keys)
    return await _verdict(limiter, item, allowed, keys)


async def _peek(
    limiter: MovingWindowRateLimiter, item: RateLimitItem, *keys: str
) -> Verdict | None:
    if await limiter.test(item, *keys):
        return None
    return await _verdict(limiter, item, False, keys)


async def _verdict(
    limiter: MovingWindowRateLimiter, item: RateLimitItem, allowed: bool, keys: tuple[str, ...]
) -> Verdict:
    stats = await limiter.get_window_stats(item, *keys)
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
            await error_response(verdict.refusal("requests"), verdict.headers())(
                scope, receive, send
            )
            return
        extra = [(k.encode(), v.encode()) for k, v in verdict.headers().items()]

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
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
            refusal = error_response(verdict.refusal("WebSocket connections"), verdict.headers())
            await refusal(scope, receive, send)
        else:
            await send(
                {
                    "type": "websocket.close",
                    "code": 1008,
                    "reason": "rate limited: too many WebSocket connections",
                }
            )
