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

    async def send(_events: list[Event]) -> None:
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


async def test_what_queues_up_during_a_send_goes_in_the_next_batch_in_order() -> None:
    batches: list[list[int]] = []
    first_sent = asyncio.Event()
    release = asyncio.Event()
    all_sent = asyncio.Event()

    async def send(events: list[Event]) -> None:
        batches.append([e.execution_id or 0 for e in events])
        first_sent.set()
        if sum(len(b) for b in batches) == 6:
            all_sent.set()
        await release.wait()

    async def probe() -> None:
        return None

    outbox = Outbox(send, probe, size=100, send_timeout=30, retry_interval=30)
    outbox.start()
    try:
        outbox.offer(Event(EventType.WORKFLOW_STARTED, workflow_id=1, execution_id=1))
        await asyncio.wait_for(first_sent.wait(), 5)
        for execution_id in range(2, 7):
            outbox.offer(
                Event(EventType.WORKFLOW_STARTED, workflow_id=1, execution_id=execution_id)
            )
        release.set()
        await asyncio.wait_for(all_sent.wait(), 5)
        assert batches == [[1], [2, 3, 4, 5, 6]]
    finally:
        await outbox.stop()
