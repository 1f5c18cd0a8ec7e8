"""Calling a tool a user defined over HTTP (a row of the `tools` table)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx2

from crew_platform.tools.base import ToolError
from crew_platform.tools.secrets import resolve_headers
from crew_platform.tools.ssrf import AllowedNetworks
from crew_platform.tools.transport import guarded_client, read_text

QUERY_METHODS = frozenset({"GET", "HEAD"})
ERROR_BODY_CHARS = 500


def _query_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


async def call_http_tool(
    http: Mapping[str, Any],
    arguments: Mapping[str, Any],
    *,
    allowed_networks: AllowedNetworks,
    timeout: float,
    max_bytes: int,
) -> str:
    """Send the arguments (JSON body, or query string for GET) and return the response text.

    Redirects are not followed: the secret headers must not travel to another address."""
    method = str(http.get("method", "GET")).upper()
    url = str(http["url"])
    headers = resolve_headers(http.get("headers") or {})
    async with guarded_client(allowed_networks, timeout=timeout, headers=headers) as client:
        try:
            if method in QUERY_METHODS:
                params = {key: _query_value(value) for key, value in arguments.items()}
                merged = httpx2.URL(url).copy_merge_params(params)  # keeps the URL's own query
                request = client.build_request(method, merged)
            else:
                request = client.build_request(method, url, json=dict(arguments))
            response = await client.send(request, stream=True)
            try:
                text, truncated = await read_text(response, max_bytes)
            finally:
                await response.aclose()
        except (httpx2.HTTPError, httpx2.InvalidURL) as exc:
            raise ToolError(f"{method} {url} failed: {type(exc).__name__}: {exc}") from exc
    if response.is_redirect:
        location = response.headers.get("location", "")
        raise ToolError(
            f"{method} {url} answered HTTP {response.status_code} (redirect to {location}); "
            "HTTP tools do not follow redirects"
        )
    if response.status_code >= 400:
        raise ToolError(
            f"{method} {url} answered HTTP {response.status_code}: {text[:ERROR_BODY_CHARS]}"
        )
    if truncated:
        text += f"\n[truncated: only the first {max_bytes} bytes read]"
    return text
