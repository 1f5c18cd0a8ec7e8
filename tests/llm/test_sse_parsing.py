"""The gateway splits the provider's event stream itself: every way a body can be cut into
network reads must give the same payloads."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from crew_platform.llm.gateway import BrokenStream, _sse_data

BODY = (
    b": keep-alive comment\n"
    b'data: {"n": 1}\n\n'
    b"event: message\n"
    b'data: {"n": 2}\n\n'
    b"data: first line\n"
    b"data: second line\n\n"
    b"data: [DONE]\n\n"
    b'data: {"n": "after done"}\n\n'
)
EXPECTED = [b'{"n": 1}', b'{"n": 2}', b"first line\nsecond line"]


async def _reads(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def _payloads(body: AsyncIterator[bytes]) -> list[bytes]:
    return [payload async for payload in _sse_data(body)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, 10_000])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
async def test_payloads_are_the_same_however_the_body_is_cut(size: int, newline: bytes) -> None:
    body = BODY.replace(b"\n", newline)
    assert await _payloads(_reads(body, size)) == EXPECTED


async def test_a_read_failing_before_done_is_a_broken_stream() -> None:
    async def dropped() -> AsyncIterator[bytes]:
        yield b'data: {"n": 1}\n\n'
        raise ConnectionResetError("peer closed the connection")

    with pytest.raises(BrokenStream, match="peer closed"):
        await _payloads(dropped())


async def test_a_read_failing_after_done_ends_the_stream_quietly() -> None:
    async def closed_after_done() -> AsyncIterator[bytes]:
        yield b'data: {"n": 1}\n\ndata: [DONE]\n\n'
        raise ConnectionResetError("peer closed the connection")

    assert await _payloads(closed_after_done()) == [b'{"n": 1}']
