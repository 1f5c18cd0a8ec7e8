"""The built-in tools, always listed: calculator, current_time, fetch_url, web_search."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx2

from crew_platform.settings import Settings
from crew_platform.tools.base import ToolError, ToolSource, ToolSpec
from crew_platform.tools.calculator import calculate
from crew_platform.tools.html_text import html_to_text
from crew_platform.tools.transport import USER_AGENT, guarded_client, read_text

MAX_REDIRECTS = 5
SEARCH_RESULTS_DEFAULT = 5
SEARCH_RESULTS_MAX = 10
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_TEXT_TYPES = ("application/json", "application/xml")
_SUFFIXES = ("+json", "+xml")


def _spec(name: str, description: str, properties: dict[str, Any], required: list[str]) -> ToolSpec:
    parameters = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    return ToolSpec(name, description, parameters, ToolSource.BUILTIN)


def current_time(timezone: str | None = None) -> str:
    if not timezone:
        return datetime.now(UTC).isoformat(timespec="seconds")
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ToolError(f"unknown time zone {timezone!r} (use an IANA name such as UTC)") from exc
    return datetime.now(zone).isoformat(timespec="seconds")


def _kind(content_type: str) -> str | None:
    """'html', 'text', or None for content that is not text."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media in _HTML_TYPES:
        return "html"
    if not media or media.startswith("text/") or media in _TEXT_TYPES or media.endswith(_SUFFIXES):
        return "text"
    return None


async def fetch_url(url: str, settings: Settings) -> str:
    """GET `url` (each redirect hop checked by the SSRF guard), its text bounded in bytes."""
    timeout = settings.tool_timeout_seconds
    async with guarded_client(settings.tools_allowed_networks, timeout=timeout) as client:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                async with client.stream("GET", url) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = str(response.url.join(response.headers["location"]))
                        continue
                    if response.status_code >= 400:
                        raise ToolError(f"{url} answered HTTP {response.status_code}")
                    kind = _kind(response.headers.get("content-type", ""))
                    if kind is None:
                        raise ToolError(
                            f"{url} is {response.headers['content-type']}, not text or HTML"
                        )
                    text, truncated = await read_text(response, settings.tool_fetch_max_bytes)
            except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
                raise ToolError(f"fetching {url} failed: {type(exc).__name__}: {exc}") from exc
            text = html_to_text(text) if kind == "html" else text
            if truncated:
                text += f"\n[truncated: only the first {settings.tool_fetch_max_bytes} bytes read]"
            return text
    raise ToolError(f"more than {MAX_REDIRECTS} redirects fetching {url}")


async def web_search(query: str, settings: Settings, max_results: int | None = None) -> str:
    """Search through the SearXNG instance at `WEB_SEARCH_URL` (the operator's own service,
    so it is not held to the SSRF guard)."""
    if not settings.web_search_url:
        raise ToolError(
            "web_search is not configured: set WEB_SEARCH_URL to a SearXNG instance "
            "(with the JSON format enabled)"
        )
    endpoint = settings.web_search_url.rstrip("/") + "/search"
    try:
        async with httpx2.AsyncClient(
            timeout=settings.tool_timeout_seconds,
            trust_env=False,
            headers={"User-Agent": USER_AGENT},
        ) as client:
            response = await client.get(endpoint, params={"q": query, "format": "json"})
            response.raise_for_status()
            results = response.json().get("results", [])
    except (httpx2.HTTPError, ValueError, AttributeError) as exc:
        raise ToolError(f"web search failed: {type(exc).__name__}: {exc}") from exc
    limit = max_results or SEARCH_RESULTS_DEFAULT
    lines = [
        f"{number}. {item.get('title', '')}\n{item.get('url', '')}\n{item.get('content', '')}"
        for number, item in enumerate(results[:limit], start=1)
        if isinstance(item, dict)
    ]
    return "\n\n".join(lines) if lines else f"no results for {query!r}"


ToolFunction = Callable[[Mapping[str, Any], Settings], Awaitable[str]]


async def _calculator(arguments: Mapping[str, Any], settings: Settings) -> str:
    return calculate(arguments["expression"])


async def _current_time(arguments: Mapping[str, Any], settings: Settings) -> str:
    return current_time(arguments.get("timezone"))


async def _fetch_url(arguments: Mapping[str, Any], settings: Settings) -> str:
    return await fetch_url(arguments["url"], settings)


async def _web_search(arguments: Mapping[str, Any], settings: Settings) -> str:
    return await web_search(arguments["query"], settings, arguments.get("max_results"))


@dataclass(frozen=True)
class Builtin:
    spec: ToolSpec
    run: ToolFunction


BUILTINS = {
    builtin.spec.name: builtin
    for builtin in (
        Builtin(
            _spec(
                "calculator",
                "Evaluate an arithmetic expression: numbers, + - * / ** %, parentheses.",
                {"expression": {"type": "string", "description": "e.g. (2+3)*4.5"}},
                ["expression"],
            ),
            _calculator,
        ),
        Builtin(
            _spec(
                "current_time",
                "The current date and time in ISO 8601 (UTC unless a time zone is given).",
                {
                    "timezone": {
                        "type": "string",
                        "description": "IANA time zone, e.g. Europe/Paris",
                    }
                },
                [],
            ),
            _current_time,
        ),
        Builtin(
            _spec(
                "fetch_url",
                "Fetch a web page or document by URL and return its text.",
                {"url": {"type": "string", "description": "http or https URL"}},
                ["url"],
            ),
            _fetch_url,
        ),
        Builtin(
            _spec(
                "web_search",
                "Search the web; returns titles, URLs and snippets of the top results.",
                {
                    "query": {"type": "string"},
                    "max_results": {"type": "integer", "minimum": 1, "maximum": SEARCH_RESULTS_MAX},
                },
                ["query"],
            ),
            _web_search,
        ),
    )
}
