"""A listener is given the events it wants (a hub and SSE streams say which ids they watch); an
event another process published that nobody here wants is not decoded at all; a listener that
says nothing is given everything."""

from __future__ import annotations

import uuid

from crew_platform.events.bus import RedisBus
from crew_platform.events.types import Event, EventType
from crew_platform.realtime.hub import Hub
from tests.conftest import REDIS_URL, require_service
from tests.edge.test_ratelimit import _redis_problem
from tests.flows import eventually


async def test_events_nobody_here_watches_are_not_decoded() -> None:
    require_service("Redis", _redis_problem())
    prefix = f"crew_test_{uuid.uuid4().hex[:10]}"
    channels = {"channel": f"{prefix}:events", "control_channel": f"{prefix}:control"}
    worker = RedisBus(REDIS_URL, **channels, control_only=True)
    api = RedisBus(REDIS_URL, **channels)
    hub = Hub(api, queue_size=100)
    hub.start()
    watching = hub.connect()
    hub.subscribe(watching, ("execution", 2), stream=False)
    decoded: list[int | None] = []
    api.subscribe(lambda e: decoded.append(e.execution_id), wants=lambda w, e, a: e == 3)
    for bus in (worker, api):
        await bus.start()
    try:
        for execution_id in (1, 2, 3, 1, 2, 3):
            await worker.publish(
                Event(EventType.TASK_STARTED, workflow_id=9, execution_id=execution_id, agent_id=4)
            )
        await eventually(lambda: watching.queue.qsize() == 2, what="the hub's two events")
        await eventually(lambda: len(decoded) == 2, what="the listener's two events")
        everything: list[int | None] = []
        api.subscribe(lambda e: everything.append(e.execution_id))  # no interest: all of them
        await worker.publish(Event(EventType.TASK_STARTED, workflow_id=9, execution_id=1))
        await eventually(lambda: everything == [1], what="an event nobody else watches")
    finally:
        hub.stop()
        for bus in (worker, api):
            await bus.stop()
    assert decoded == [3, 3]  # a listener is given what it wants, nothing else
    assert watching.queue.qsize() == 2
