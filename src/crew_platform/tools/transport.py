"""HTTP for tools: every request checked by the SSRF guard and sent to the address checked.

The transport resolves the host, checks the addresses and connects to the checked one (the
Host header and TLS SNI keep the name), so DNS cannot answer differently between the check and
the connection (rebinding). Each request is checked, redirects and MCP requests included.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx2

from crew_platform.tools.ssrf import DEFAULT_PORTS, AllowedNetworks, checked_address

USER_AGENT = "crew-platform-tools/0.1"


class GuardedTransport(httpx2.AsyncBaseTransport):
    def __init__(
        self,
        allowed_networks: AllowedNetworks,
        inner: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        self._allowed = allowed_networks
        self._inner = inner or httpx2.AsyncHTTPTransport(trust_env=False)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        host = url.raw_host.decode("ascii")
        port = url.port or DEFAULT_PORTS.get(url.scheme, 80)
        address = await checked_address(host, port, self._allowed)
        if str(address) == host:
            return await self._inner.handle_async_request(request)
        extensions = dict(request.extensions)
        if url.scheme == "https":
            extensions.setdefault("sni_hostname", host)
        pinned = httpx2.Request(
            request.method,
            url.copy_with(host=str(address)),
            headers=request.headers,  # keeps Host: the name, not the address
            stream=request.stream,
            extensions=extensions,
        )
        return await self._inner.handle_async_request(pinned)

    async def aclose(self) -> None:
        await self._inner.aclose()


def guarded_client(
    allowed_networks: AllowedNetworks,
    *,
    timeout: float,
    headers: Mapping[str, str] | None = None,
) -> httpx2.AsyncClient:
    """A client that follows no redirect by itself (each hop is the caller's to check)."""
    return httpx2.AsyncClient(
        transport=GuardedTransport(allowed_networks),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": USER_AGENT, **(headers or {})},
    )


async def read_text(response: httpx2.Response, max_bytes: int) -> tuple[str, bool]:
    """The body of a streamed response as text, reading at most `max_bytes` (decoded) bytes;
    whether it was cut."""
    chunks: list[bytes] = []
    size = 0
    truncated = False
    async for chunk in response.aiter_bytes():
        room = max_bytes - size
        if len(chunk) > room:
            chunks.append(chunk[:room])
            truncated = True
            break
        chunks.append(chunk)
        size += len(chunk)
    body = b"".join(chunks)
    try:
        return body.decode(response.charset_encoding or "utf-8", errors="replace"), truncated
    except LookupError:  # a charset Python does not know
        return body.decode("utf-8", errors="replace"), truncated
