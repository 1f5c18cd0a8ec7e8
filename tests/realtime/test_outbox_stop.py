"""The outbox stops when told to, even when a send under way swallows the cancellation (the
Redis client may end a cancelled publish normally or with its own error): a worker under load
once ignored SIGTERM for ever, its outbox waiting on an empty queue while `stop` waited for it."""

from __future__ import annotations

import asyncio

import pytest

from crew_platform.events.outbox import Outbox
from crew_platform.events.types import Event, EventType


@pytest.mark.parametrize("ending", ["returns", "raises"])
async def test_stop_ends_the_drain_even_if_the_send_swallows_the_cancel(ending: str) -> None:
    sending = asyncio.Event()

    async def send(_event: Event) -> None:
        sending.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            if ending == "raises":
                raise ConnectionError("connection closed by the cancel") from None

    async def probe() -> None:
        return None

    outbox = Outbox(send, probe, size=10, send_timeout=30, retry_interval=30)
    outbox.start()
    outbox.offer(Event(EventType.WORKFLOW_STARTED, workflow_id=1, execution_id=1))
    await asyncio.wait_for(sending.wait(), 5)
    await asyncio.wait_for(outbox.stop(), 5)
    assert outbox.is_down is False
