"""A queue worker's bus listens to the other processes' control events only (cancel, pause),
on the deployment's control channel; a server's bus hears every event, control ones included."""

from __future__ import annotations

import asyncio
import uuid

from crew_platform.events.bus import RedisBus
from crew_platform.events.types import Event, EventType
from tests.conftest import REDIS_URL, require_service
from tests.edge.test_ratelimit import _redis_problem
from tests.flows import eventually


async def test_a_control_only_bus_hears_control_events_and_nothing_else() -> None:
    require_service("Redis", _redis_problem())
    prefix = f"crew_test_{uuid.uuid4().hex[:10]}"
    channels = {"channel": f"{prefix}:events", "control_channel": f"{prefix}:control"}
    api = RedisBus(REDIS_URL, **channels)
    server = RedisBus(REDIS_URL, **channels)
    worker = RedisBus(REDIS_URL, **channels, control_only=True)
    heard: dict[str, list[EventType]] = {"server": [], "worker": []}
    server.subscribe(lambda e: heard["server"].append(e.type))
    worker.subscribe(lambda e: heard["worker"].append(e.type))
    for bus in (api, server, worker):
        await bus.start()
    try:
        sent = [
            EventType.WORKFLOW_STARTED,
            EventType.TASK_OUTPUT_CHUNK,
            EventType.WORKFLOW_PAUSED,
            EventType.WORKFLOW_CANCELLED,
        ]
        for kind in sent:
            await api.publish(Event(kind, workflow_id=1, execution_id=1))
        await eventually(lambda: len(heard["server"]) == len(sent), what="the server to hear all")
        await eventually(lambda: len(heard["worker"]) == 2, what="the worker to hear control")
        await asyncio.sleep(0.1)  # nothing more arrives
    finally:
        for bus in (api, server, worker):
            await bus.stop()
    assert heard["server"] == sent
    assert heard["worker"] == [EventType.WORKFLOW_PAUSED, EventType.WORKFLOW_CANCELLED]


async def test_a_burst_crosses_in_order_in_fewer_messages_than_events() -> None:
    """What the outbox drained together crosses as one message (one parse per batch at each
    reader), in order, and a process still skips its own."""
    import redis.asyncio as redis

    require_service("Redis", _redis_problem())
    prefix = f"crew_test_{uuid.uuid4().hex[:10]}"
    channels = {"channel": f"{prefix}:events", "control_channel": f"{prefix}:control"}
    worker = RedisBus(REDIS_URL, **channels, control_only=True)
    server = RedisBus(REDIS_URL, **channels)
    heard: dict[str, list[int | None]] = {"server": [], "worker": []}
    server.subscribe(lambda e: heard["server"].append(e.seq))
    worker.subscribe(lambda e: heard["worker"].append(e.seq))
    raw = redis.from_url(REDIS_URL)
    tap = raw.pubsub(ignore_subscribe_messages=True)
    await tap.subscribe(channels["channel"])
    for bus in (worker, server):
        await bus.start()
    count = 2000
    try:
        for seq in range(1, count + 1):
            kind = EventType.TASK_OUTPUT_CHUNK if seq % 2 else EventType.TASK_STARTED
            await worker.publish(Event(kind, workflow_id=1, execution_id=1, seq=seq))
        await eventually(lambda: len(heard["server"]) == count, what="every event to cross")
        messages, quiet = 0, 0
        while quiet < 3:  # the subscription's confirmation reads as None too
            if await tap.get_message(timeout=0.2) is None:
                quiet += 1
            else:
                messages, quiet = messages + 1, 0
    finally:
        for bus in (worker, server):
            await bus.stop()
        await tap.aclose()
        await raw.aclose()
    assert heard["server"] == list(range(1, count + 1))
    assert heard["worker"] == heard["server"]  # its own, delivered locally, not twice
    assert 0 < messages < count
