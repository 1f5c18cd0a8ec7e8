"""The hub's subscription index against the plain rule it replaces, on the real in-memory bus."""

from __future__ import annotations

import itertools
import json
from typing import Any

from crew_platform.events.bus import InMemoryBus
from crew_platform.events.types import Event, EventType
from crew_platform.realtime.hub import AGENT_EVENTS, Connection, Hub


def wants(connection: Connection, event: Event) -> bool:
    """The delivery rule, written out as a scan of one connection's subscriptions."""
    for (channel, ident), stream in connection.subscriptions.items():
        if event.is_chunk and not stream:
            continue
        if channel == "workflow" and event.workflow_id == ident:
            return True
        if channel == "execution" and event.execution_id == ident:
            return True
        if channel == "agent" and event.agent_id == ident and event.type in AGENT_EVENTS:
            return True
    return False


def drain(connection: Connection) -> list[str]:
    items = []
    while not connection.queue.empty():
        items.append(connection.queue.get_nowait())
    return items


async def test_every_connection_gets_exactly_what_the_rule_says() -> None:
    bus = InMemoryBus()
    hub = Hub(bus, queue_size=10_000)
    hub.start()
    keys = [(c, i) for c in ("workflow", "execution", "agent") for i in (1, 2)]
    connections = []
    # Every combination of up to two subscriptions, with and without streamed chunks.
    for size in (0, 1, 2):
        for combo in itertools.combinations(keys, size):
            for stream in (False, True):
                connection = hub.connect()
                for key in combo:
                    hub.subscribe(connection, key, stream)
                connections.append(connection)
    events = [
        Event(kind, workflow_id=w, execution_id=e, agent_id=a, seq=1)
        for kind in (
            EventType.TASK_COMPLETED,
            EventType.TASK_OUTPUT_CHUNK,
            EventType.WORKFLOW_STARTED,
            EventType.AGENT_TEST_COMPLETED,
        )
        for w, e, a in itertools.product((1, 2, None), (1, 2, None), (1, 2, None))
    ]
    for event in events:
        await bus.publish(event)
        expected = [c for c in connections if wants(c, event)]
        got = [c for c in connections if drain(c)]
        assert got == expected, event
    hub.stop()


async def test_an_agent_subscription_sees_the_delegations_given_to_it() -> None:
    """A coworker's `delegation_*` events carry its id: watching the agent shows when a
    manager hands it work; the manager's own tool calls do not reach it."""
    bus = InMemoryBus()
    hub = Hub(bus, queue_size=10)
    hub.start()
    coworker = hub.connect()
    hub.subscribe(coworker, ("agent", 5), False)
    kinds = (
        EventType.DELEGATION_STARTED,
        EventType.TOOL_CALL_STARTED,
        EventType.DELEGATION_COMPLETED,
        EventType.MODEL_FALLBACK,
    )
    for kind in kinds:
        await bus.publish(Event(kind, workflow_id=1, execution_id=2, task_id=3, agent_id=5, seq=1))
    received = [json.loads(text)["type"] for text in drain(coworker)]
    assert received == ["delegation_started", "delegation_completed", "model_fallback"]
    hub.stop()


async def test_one_text_per_event_shared_by_its_recipients() -> None:
    bus = InMemoryBus()
    hub = Hub(bus, queue_size=10)
    hub.start()
    by_workflow, by_execution, both = hub.connect(), hub.connect(), hub.connect()
    hub.subscribe(by_workflow, ("workflow", 7), False)
    hub.subscribe(by_execution, ("execution", 3), False)
    hub.subscribe(both, ("workflow", 7), False)
    hub.subscribe(both, ("execution", 3), False)
    event = Event(
        EventType.TASK_COMPLETED, workflow_id=7, execution_id=3, task_id=1, agent_id=2, seq=4
    )
    event.data["output"] = "done"
    await bus.publish(event)
    texts = [drain(c) for c in (by_workflow, by_execution, both)]
    assert [len(t) for t in texts] == [1, 1, 1]  # subscribed twice, delivered once
    first = texts[0][0]
    assert all(t[0] is first for t in texts)
    message: dict[str, Any] = json.loads(first)
    assert message == event.to_message()


async def test_unsubscribe_and_disconnect_stop_delivery() -> None:
    bus = InMemoryBus()
    hub = Hub(bus, queue_size=10)
    hub.start()
    stays, leaves, goes = hub.connect(), hub.connect(), hub.connect()
    for connection in (stays, leaves, goes):
        hub.subscribe(connection, ("workflow", 1), False)
    hub.unsubscribe(leaves, ("workflow", 1))
    hub.disconnect(goes)
    hub.subscribe(goes, ("workflow", 1), False)  # a late subscribe of a closed connection
    await bus.publish(Event(EventType.WORKFLOW_STARTED, workflow_id=1, execution_id=1))
    assert [len(drain(c)) for c in (stays, leaves, goes)] == [1, 0, 0]
    assert leaves.subscriptions == {} and goes.subscriptions == {}
    hub.disconnect(stays)
    assert hub.connection_count == 1
    await bus.publish(Event(EventType.WORKFLOW_STARTED, workflow_id=1, execution_id=2))
    assert [len(drain(c)) for c in (stays, leaves, goes)] == [0, 0, 0]


async def test_a_full_queue_marks_the_connection_and_keeps_the_others_going() -> None:
    bus = InMemoryBus()
    hub = Hub(bus, queue_size=2)
    hub.start()
    slow, fast = hub.connect(), hub.connect()
    hub.subscribe(slow, ("workflow", 1), False)
    hub.subscribe(fast, ("workflow", 1), False)
    for seq in range(1, 4):
        await bus.publish(Event(EventType.TASK_STARTED, workflow_id=1, execution_id=1, seq=seq))
        if seq < 3:
            drain(fast)
    assert slow.overflowed and slow.overflow_signal.is_set()
    assert not fast.overflowed
    assert [json.loads(t)["seq"] for t in drain(fast)] == [3]
