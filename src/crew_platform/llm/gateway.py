"""The one way the platform talks to models: the OpenAI-compatible chat API, per provider.

Each provider has one pooled HTTP client (`httpx2`, as many connections as
`LLM_MAX_CONCURRENCY` lets calls run at once); requests are plain JSON and the streamed answer
is parsed here. The openai SDK is not used: building its request options and response objects
per call cost more CPU than the rest of a call.

Retries are ours alone, so one call sends at most
`LLM_MAX_RETRIES + 1` requests whatever fails: 408/409/429 (honouring Retry-After) and 5xx
answers, timeouts, refused connections, and a stream that breaks after it started (dropped,
malformed, truncated) all spend the same budget. A call waiting out its backoff gives its
`LLM_MAX_CONCURRENCY` slot back meanwhile.

Whatever a provider says is passed through `redact` before it becomes an error or a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import math
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx2

from crew_platform.llm.errors import LLMError, LLMNotConfigured, ModelNotFound
from crew_platform.llm.fallback import ModelFallbacks, parse_model_fallbacks
from crew_platform.llm.redact import redact
from crew_platform.llm.registry import (
    ModelRef,
    ProviderConfig,
    configured_keys,
    provider_configs,
    resolve,
)
from crew_platform.settings import Settings

log = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
"""Where `openai:` models go when OPENAI_BASE_URL is not set."""


RETIRED_CODES = frozenset({"model_not_found", "model_decommissioned", "model_deprecated"})
"""Error codes of a 400/410 that mean the model is gone (Groq says `model_decommissioned`)."""
RETIRED_WORDING = re.compile(
    r"\bmodel\b.{0,120}?\b(?:does not exist|doesn't exist|not found"
    r"|no longer (?:supported|available|served)"
    r"|(?:has been|was|is) (?:decommissioned|deprecated|retired|discontinued))",
    re.IGNORECASE,
)
"""How a 400/410 says the model is gone when it has no such code: the model is named first,
so e.g. "`functions` is deprecated for this model" does not count."""
RETIRED_STATUSES = frozenset({400, 410})
RETRYABLE_STATUSES = frozenset({408, 409, 429})
"""Besides every 5xx: the statuses worth asking again (as the SDK's own retries did)."""
MAX_RETRY_AFTER_SECONDS = 60.0
"""A Retry-After beyond this is not waited out: the usual backoff applies instead."""
FIRST_BACKOFF_SECONDS = 0.25
MAX_BACKOFF_SECONDS = 4.0

ChunkSink = Callable[[str, int], Awaitable[None]]
"""Receives each streamed piece of text and the call attempt it belongs to (1, 2, ...)."""


@dataclass
class ToolCallRequest:
    """One function call the model asked for; `arguments_text` is exactly what it sent (JSON
    text, possibly invalid)."""

    id: str
    name: str
    arguments_text: str


@dataclass
class Completion:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 1
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    finish_reason: str | None = None
    model: str | None = None
    """The model that answered, when a fallback chain called it (see `llm.fallback`)."""

    @property
    def tokens_used(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class BrokenStream(Exception):
    """The provider's answer was not a complete chat-completion stream."""


class ProviderAnswered(Exception):
    """The provider refused the request: an HTTP error status, before any stream.

    `message` is `Error code: <status>`, with the provider's own `error.message` after a dash
    when its body has one; `code` is its `error.code`.
    """

    def __init__(
        self, status: int, message: str, code: str | None, headers: Mapping[str, str]
    ) -> None:
        super().__init__(message)
        self.status_code = status
        self.message = message
        self.code = code
        self.headers = headers


class ProviderUnreachable(Exception):
    """No answer came: the connection was refused or dropped, or the request timed out."""

    def __init__(self, cause: Exception, *, timed_out: bool) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__)
        self.timed_out = timed_out


RequestFailure = ProviderAnswered | ProviderUnreachable


@dataclass
class ModelInfo:
    id: str
    provider: str
    owned_by: str | None = None


@dataclass
class _ModelCache:
    models: list[ModelInfo] = field(default_factory=list)
    fetched_at: float = 0.0


class _Connections:
    """A provider's HTTP connections: pools of at most `SHARD` connections each, together as
    many as calls may run at once; a call takes the first pool with a connection to spare. A
    pool is made when it is first needed.

    One pool of hundreds of connections costs CPU on every request: the pool checks each of its
    idle connections (a system call each) whenever a request starts or ends. Filling the first
    pools first keeps a quiet server on one pool and its connections warm.
    """

    SHARD = 16

    def __init__(self, client: Callable[[int], httpx2.AsyncClient], connections: int) -> None:
        pools = -(-connections // self.SHARD)
        self._size = -(-connections // pools)
        self._client = client
        self._pools: list[httpx2.AsyncClient | None] = [None] * pools
        self._busy = [0] * pools

    @contextlib.contextmanager
    def lease(self) -> Iterator[httpx2.AsyncClient]:
        """A client to send one request with (more than the connections: the last pool's
        queue)."""
        index = next((i for i, n in enumerate(self._busy) if n < self._size), -1)
        index %= len(self._pools)
        pool = self._pools[index]
        if pool is None:
            pool = self._pools[index] = self._client(self._size)
        self._busy[index] += 1
        try:
            yield pool
        finally:
            self._busy[index] -= 1

    async def aclose(self) -> None:
        for pool in self._pools:
            if pool is not None:
                await pool.aclose()


class LLMGateway:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._providers = provider_configs(settings)
        self._clients: dict[str, _Connections] = {}
        self._slots = asyncio.Semaphore(settings.llm_max_concurrency)
        self._model_cache: dict[str, _ModelCache] = {}
        self._secrets = configured_keys(settings)
        self.fallbacks = ModelFallbacks(
            parse_model_fallbacks(settings.model_fallbacks),
            remember_seconds=settings.models_cache_seconds,
        )
        if not self._secrets:
            log.warning(
                "No model provider is configured: set CEREBRAS_API_KEY (and CEREBRAS_BASE_URL "
                "to use another OpenAI-compatible server) or OPENAI_API_KEY; model calls fail "
                "until then, everything else is served"
            )

    async def aclose(self) -> None:
        for clients in self._clients.values():
            await clients.aclose()
        self._clients.clear()

    def _client(self, provider: str) -> _Connections:
        config = self._providers[provider]
        if not config.key:
            raise LLMNotConfigured(
                f"No API key for provider {provider!r}: set {config.key_variable}",
                {"provider": provider, "variable": config.key_variable},
            )
        clients = self._clients.get(provider)
        if clients is None:
            base_url, key = config.base_url or OPENAI_BASE_URL, config.key
            timeout = self._settings.llm_timeout_seconds
            # One TLS context for all the pools: building one (the CA bundle) costs ~30 ms.
            tls = httpx2.create_ssl_context()

            def client(connections: int) -> httpx2.AsyncClient:
                return httpx2.AsyncClient(
                    base_url=base_url,
                    headers={"Authorization": f"Bearer {key}", "Accept": "application/json"},
                    timeout=timeout,
                    verify=tls,
                    limits=httpx2.Limits(
                        max_connections=connections, max_keepalive_connections=connections
                    ),
                )

            clients = _Connections(client, self._settings.llm_max_concurrency)
            self._clients[provider] = clients
        return clients

    def check_configured(self, model: str) -> None:
        """Raise LLMNotConfigured now, before a run starts, if `model`'s provider has no key."""
        self._client(resolve(model).provider)

    @property
    def default_model(self) -> str:
        """DEFAULT_MODEL: the model of an agent created without one, and of a built manager."""
        return self._settings.default_model

    def providers(self) -> list[ProviderConfig]:
        return list(self._providers.values())

    def redact(self, text: str) -> str:
        """`text` without the configured keys or anything shaped like a credential."""
        return redact(text, self._secrets)

    async def complete(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        temperature: float,
        top_p: float,
        max_tokens: int,
        on_chunk: ChunkSink | None = None,
        tools: Sequence[Mapping[str, Any]] = (),
        response_format: Mapping[str, Any] | None = None,
    ) -> Completion:
        """One streamed chat completion. `tools` are function specs as providers take them
        (see `engine.tool_loop.function_spec`); with any, the model may answer with tool calls
        instead of text (`tool_choice: "auto"`; never `parallel_tool_calls`, which Cerebras
        refuses). `response_format` is sent as given (see `llm.structured`)."""
        ref = resolve(model)
        client = self._client(ref.provider)
        body: dict[str, Any] = {
            "model": ref.model,
            "messages": list(messages),
            "temperature": temperature,
            "top_p": top_p,
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            body["tools"] = list(tools)
            body["tool_choice"] = "auto"
        if response_format is not None:
            body["response_format"] = dict(response_format)
        attempts = self._settings.llm_max_retries + 1
        delay = 0.0
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                await asyncio.sleep(delay)
            async with self._slots:
                with client.lease() as http:
                    try:
                        result = await _attempt(http, body, on_chunk, attempt)
                    except (ProviderAnswered, ProviderUnreachable) as exc:
                        if attempt == attempts or not _retryable(exc):
                            # `from None`: the failure holds the provider's raw, unredacted text.
                            raise await self._refused(ref, exc, attempt) from None
                        failure: Exception = exc
                    except BrokenStream as exc:
                        if attempt == attempts:
                            raise LLMError(
                                self.redact(f"Model call failed after {attempt} attempt(s): {exc}"),
                                {"provider": ref.provider, "model": ref.model},
                            ) from None
                        failure = exc
                    else:
                        result.attempts = attempt
                        return result
            delay = _backoff(failure, attempt)
            log.warning(
                "model call to %s attempt %d/%d failed, retrying in %.2fs: %s",
                ref.provider,
                attempt,
                attempts,
                delay,
                self.redact(_describe(failure)),
            )
        raise AssertionError("unreachable")

    async def _refused(self, ref: ModelRef, exc: RequestFailure, attempt: int) -> LLMError:
        """The typed error for a call whose last attempt never got a stream going."""
        details: dict[str, Any] = {"provider": ref.provider, "model": ref.model}
        tries = f"{attempt} attempt(s)"
        if isinstance(exc, ProviderAnswered) and exc.status_code == 404:
            return await self._model_not_found(ref)
        if isinstance(exc, ProviderAnswered) and _says_model_is_gone(exc):
            return await self._model_not_found(ref, _short(self.redact(exc.message), 200))
        if isinstance(exc, ProviderAnswered):
            status = exc.status_code
            hint = ""
            if status in (401, 403):
                variable = self._providers[ref.provider].key_variable
                hint = f" (authentication failed: check {variable})"
            message = f"Model provider answered {status}{hint}: {self.redact(exc.message)}"
            if attempt > 1:
                message += f" (after {tries})"
            return LLMError(_short(message, 400), details | {"status": status})
        where = self.redact(self._providers[ref.provider].base_url or OPENAI_BASE_URL)
        if exc.timed_out:
            return LLMError(
                f"Model call to {ref.provider} timed out after "
                f"{self._settings.llm_timeout_seconds:g}s (LLM_TIMEOUT_SECONDS), {tries}",
                details,
            )
        return LLMError(
            f"Could not connect to {ref.provider} at {where} after {tries}: "
            f"{self.redact(_describe(exc))}",
            details | {"base_url": where},
        )

    async def _model_not_found(self, ref: ModelRef, said: str | None = None) -> ModelNotFound:
        """`said`: the provider's own words, when they were not a plain 404."""
        try:
            served = [m.id for m in await self.list_models(ref.provider)]
        except LLMError:
            served = []
        return ModelNotFound(
            f"Model {ref.model!r} is not served by {ref.provider}"
            + (f" (the provider answered: {said})" if said else "")
            + (f"; served models: {', '.join(served)}" if served else ""),
            {"provider": ref.provider, "model": ref.model, "available_models": served},
        )

    async def list_models(self, provider: str) -> list[ModelInfo]:
        cache = self._model_cache.setdefault(provider, _ModelCache())
        if (
            cache.fetched_at
            and time.monotonic() - cache.fetched_at < self._settings.models_cache_seconds
        ):
            return cache.models
        clients = self._client(provider)
        attempts = self._settings.llm_max_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                with clients.lease() as http:
                    listed = await _list(http)
                break
            except (ProviderAnswered, ProviderUnreachable, BrokenStream) as exc:
                if attempt == attempts or isinstance(exc, BrokenStream) or not _retryable(exc):
                    raise LLMError(
                        f"Could not list models of {provider}: {self.redact(_describe(exc))}",
                        {"provider": provider},
                    ) from None
                await asyncio.sleep(_backoff(exc, attempt))
        cache.models = [ModelInfo(m["id"], provider, m.get("owned_by")) for m in listed]
        cache.fetched_at = time.monotonic()
        return cache.models


async def _attempt(
    client: httpx2.AsyncClient, body: Mapping[str, Any], on_chunk: ChunkSink | None, attempt: int
) -> Completion:
    """One request and its whole streamed answer."""
    async with _request(client, "POST", "chat/completions", json=body) as response:
        return await _read(response.aiter_bytes(), on_chunk, attempt)


async def _list(client: httpx2.AsyncClient) -> list[dict[str, Any]]:
    """The provider's `GET /models` listing: its entries that have an `id`."""
    async with _request(client, "GET", "models") as response:
        try:
            data = json.loads(await response.aread()).get("data")
        except (ValueError, AttributeError, httpx2.HTTPError) as exc:
            raise BrokenStream(f"unreadable model listing: {_describe(exc)}") from None
    if not isinstance(data, list):
        raise BrokenStream("the model listing has no `data` list")
    return [m for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]


@contextlib.asynccontextmanager
async def _request(
    client: httpx2.AsyncClient, method: str, path: str, *, json: Any = None
) -> AsyncIterator[httpx2.Response]:
    """The provider's response, its body not read yet; an error status is a
    `ProviderAnswered`, no answer at all a `ProviderUnreachable`. Closed on exit, so the
    connection goes back to the pool (or is dropped when the body was not read to its end)."""
    try:
        response = await client.send(client.build_request(method, path, json=json), stream=True)
    except httpx2.TimeoutException as exc:
        raise ProviderUnreachable(exc, timed_out=True) from None
    except httpx2.TransportError as exc:
        raise ProviderUnreachable(exc, timed_out=False) from None
    try:
        if response.status_code >= 400:
            raise await _answered(response)
        yield response
    finally:
        await response.aclose()


async def _answered(response: httpx2.Response) -> ProviderAnswered:
    """The failure a provider's error status and body say."""
    message, code = f"Error code: {response.status_code}", None
    try:
        body = json.loads(await response.aread())
    except (ValueError, httpx2.HTTPError):
        body = None
    error = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(error, dict):
        said = error.get("message")
        if isinstance(said, str) and said:
            message += f" - {said}"
        if error.get("code") is not None:
            code = str(error["code"])
    return ProviderAnswered(response.status_code, message, code, response.headers)


def _says_model_is_gone(exc: ProviderAnswered) -> bool:
    """A 400/410 refusing the model itself (retired, decommissioned), not the request."""
    if exc.status_code not in RETIRED_STATUSES:
        return False
    return exc.code in RETIRED_CODES or RETIRED_WORDING.search(exc.message) is not None


def _retryable(exc: RequestFailure) -> bool:
    if isinstance(exc, ProviderAnswered):
        status = exc.status_code
        return status in RETRYABLE_STATUSES or status >= 500
    return True  # no answer (refused, dropped, timed out)


def _backoff(failure: Exception, attempt: int) -> float:
    """Seconds to wait before the next attempt: the provider's Retry-After when it gave a
    sensible one, else exponential backoff with jitter."""
    if isinstance(failure, ProviderAnswered):
        asked = _retry_after(failure.headers)
        if asked is not None and 0 <= asked <= MAX_RETRY_AFTER_SECONDS:
            return asked
    ceiling = min(FIRST_BACKOFF_SECONDS * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
    return ceiling * (1 - 0.25 * random.random())


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms`, else `retry-after` in seconds or as an HTTP date."""
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        return seconds if math.isfinite(seconds) else None
    date = headers.get("retry-after")
    parsed = email.utils.parsedate_tz(date) if date else None
    return None if parsed is None else email.utils.mktime_tz(parsed) - time.time()


async def _read(body: AsyncIterator[bytes], on_chunk: ChunkSink | None, attempt: int) -> Completion:
    """Collects a streamed chat completion, handing each piece of text to `on_chunk`.

    Chunks are read as plain JSON, not as the SDK's pydantic models: building a model per
    chunk was the largest part of a streamed call's CPU cost.
    """
    pieces: list[str] = []
    calls: dict[int, _CallPieces] = {}
    completion = Completion(text="")
    chunks = 0
    finished = False
    async for payload in _sse_data(body):
        chunk = _decode_chunk(payload)
        chunks += 1
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            completion.prompt_tokens = _count(usage.get("prompt_tokens"))
            completion.completion_tokens = _count(usage.get("completion_tokens"))
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                raise BrokenStream(f"malformed chunk: a choice is {type(choice).__name__}")
            reason = choice.get("finish_reason")
            if reason is not None:
                finished = True
                completion.finish_reason = str(reason)
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            if delta.get("tool_calls"):
                _add_call_pieces(calls, delta["tool_calls"])
            text = delta.get("content")
            if text:
                if not isinstance(text, str):
                    raise BrokenStream("malformed chunk: content is not text")
                pieces.append(text)
                if on_chunk is not None:
                    await on_chunk(text, attempt)
    if not chunks:
        raise BrokenStream("the provider answered without a stream of completion chunks")
    if not finished:
        raise BrokenStream("the stream ended before the answer was finished")
    completion.text = "".join(pieces)
    completion.tool_calls = [calls[i].request(i) for i in sorted(calls)]
    return completion


@dataclass
class _CallPieces:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)

    def request(self, index: int) -> ToolCallRequest:
        if not self.name:
            raise BrokenStream(f"malformed chunk: tool call {index} has no function name")
        return ToolCallRequest(self.id or f"call_{index}", self.name, "".join(self.arguments))


def _add_call_pieces(calls: dict[int, _CallPieces], deltas: object) -> None:
    """Adds one chunk's tool-call deltas: `id` and `function.name` come once (in the first
    delta of a call), `function.arguments` in pieces; `index` says which call a delta is of."""
    if not isinstance(deltas, list):
        raise BrokenStream("malformed chunk: tool_calls is not a list")
    for delta in deltas:
        if not isinstance(delta, dict) or not isinstance(delta.get("index", 0), int):
            raise BrokenStream("malformed chunk: a tool call delta without an index")
        call = calls.setdefault(delta.get("index", 0), _CallPieces())
        function = delta.get("function") or {}
        if not isinstance(function, dict):
            raise BrokenStream("malformed chunk: a tool call's function is not an object")
        if isinstance(delta.get("id"), str) and delta["id"]:
            call.id = delta["id"]
        if isinstance(function.get("name"), str) and function["name"]:
            call.name = function["name"]
        if isinstance(function.get("arguments"), str):
            call.arguments.append(function["arguments"])


async def _sse_data(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The `data` payloads of a server-sent event stream, up to `[DONE]`, split from the raw
    body (the client's own line iterator stacks three generators per network read).

    The body is read to its end even after `[DONE]`, so the connection goes back to the pool.
    A transport failure while reading (dropped connection, read timeout) is a BrokenStream.
    """
    data: list[bytes] = []
    pending = b""
    done = False
    iterator = aiter(body)
    while True:
        try:
            received = await anext(iterator)
        except StopAsyncIteration:
            return
        except Exception as exc:
            if done:
                return
            raise BrokenStream(f"the stream broke: {_describe(exc)}") from exc
        if done:
            continue
        buffer = pending + received
        held = b""
        if buffer.endswith(b"\r"):  # maybe the first half of a CRLF: decide on the next read
            buffer, held = buffer[:-1], b"\r"
        *lines, rest = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        pending = rest + held
        for line in lines:
            if line.startswith(b"data:"):
                data.append(line[6:] if line.startswith(b"data: ") else line[5:])
            elif not line and data:
                payload = b"\n".join(data)
                data = []
                if payload.startswith(b"[DONE]"):
                    done = True
                    break
                yield payload


def _decode_chunk(payload: bytes) -> dict[str, Any]:
    try:
        chunk = json.loads(payload)
    except ValueError as exc:
        raise BrokenStream(f"malformed chunk: {_preview(payload)!r}") from exc
    if not isinstance(chunk, dict):
        raise BrokenStream(f"malformed chunk: {_preview(payload)!r}")
    error = chunk.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else None
        raise BrokenStream(f"the provider reported an error mid-stream: {message or error}")
    return chunk


def _preview(payload: bytes) -> str:
    return _short(payload[:200].decode(errors="replace"), 80)


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _describe(exc: BaseException) -> str:
    return _short(f"{type(exc).__name__}: {exc}")
