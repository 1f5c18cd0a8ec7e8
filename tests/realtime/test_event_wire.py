"""Events crossing processes: what `to_json_dict` writes, `from_json_dict` reads back whole."""

from __future__ import annotations

import dataclasses
import json

from crew_platform.events.types import Event, EventType


def test_an_event_survives_the_wire_with_every_field() -> None:
    event = Event(
        EventType.TASK_COMPLETED,
        workflow_id=1,
        execution_id=2,
        task_id=3,
        agent_id=4,
        status="completed",
        seq=5,
        data={"output": {"nested": [1, "two", None]}, "tokens_used": 7},
    )
    wire = event.to_json_dict()
    assert set(wire) == {f.name for f in dataclasses.fields(Event)}
    assert Event.from_json_dict(json.loads(json.dumps(wire))) == event
