"""Close connections whose request headers do not arrive in time (uvicorn has no such timeout).

Without it a client that trickles its request line and headers (or sends nothing at all) holds
a connection for as long as it likes. The deadline starts when the connection opens, and for a
later request on a keep-alive connection when its first byte arrives; it ends when the headers
are complete, so a slow body is not cut, and an idle keep-alive connection is left to
`timeout_keep_alive`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from crew_platform.settings import get_settings


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's `http=` protocol (the one `auto` picks, httptools), with the deadline of
    HTTP_HEADER_TIMEOUT_SECONDS. A class, not a configured instance: uvicorn builds one per
    connection, and with --reload passes the class to another process."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = get_settings().http_header_timeout_seconds
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_late(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()
