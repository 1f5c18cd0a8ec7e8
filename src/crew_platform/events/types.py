"""Typed events of an execution; the bus carries them, subscribers render them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    WORKFLOW_STARTED = "workflow_started"
    WORKFLOW_COMPLETED = "workflow_completed"
    WORKFLOW_FAILED = "workflow_failed"
    WORKFLOW_PAUSED = "workflow_paused"
    WORKFLOW_RESUMED = "workflow_resumed"
    WORKFLOW_CANCELLED = "workflow_cancelled"
    TASK_STARTED = "task_started"
    TASK_COMPLETED = "task_completed"
    TASK_FAILED = "task_failed"
    TASK_SKIPPED = "task_skipped"
    TASK_CANCELLED = "task_cancelled"
    TASK_OUTPUT_CHUNK = "task_output_chunk"
    TOOL_CALL_STARTED = "tool_call_started"
    TOOL_CALL_COMPLETED = "tool_call_completed"
    TOOL_CALL_FAILED = "tool_call_failed"
    MODEL_FALLBACK = "model_fallback"
    OUTPUT_VALIDATION_FAILED = "output_validation_failed"
    GUARDRAIL_PASSED = "guardrail_passed"
    GUARDRAIL_FAILED = "guardrail_failed"
    INPUT_REQUIRED = "input_required"
    INPUT_RECEIVED = "input_received"
    DELEGATION_STARTED = "delegation_started"
    DELEGATION_COMPLETED = "delegation_completed"
    AGENT_TEST_COMPLETED = "agent_test_completed"


FINAL_EVENTS = frozenset(
    {EventType.WORKFLOW_COMPLETED, EventType.WORKFLOW_FAILED, EventType.WORKFLOW_CANCELLED}
)


@dataclass
class Event:
    type: EventType
    workflow_id: int | None = None
    execution_id: int | None = None
    task_id: int | None = None
    agent_id: int | None = None
    status: str | None = None
    seq: int | None = None
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def is_chunk(self) -> bool:
        return self.type == EventType.TASK_OUTPUT_CHUNK

    def to_message(self) -> dict[str, Any]:
        """Flat JSON message: the spec's fields first, extra data alongside."""
        message: dict[str, Any] = {
            "type": self.type.value,
            "workflow_id": self.workflow_id,
            "execution_id": self.execution_id,
            "task_id": self.task_id,
            "agent_id": self.agent_id,
            "status": self.status,
            "seq": self.seq,
            "timestamp": self.timestamp.isoformat().replace("+00:00", "Z"),
        }
        for key, value in self.data.items():
            message.setdefault(key, value)
        return message

    def to_json_dict(self) -> dict[str, Any]:
        """Every field, for `json.dumps` at once: `data` is shared, not deep-copied."""
        return {
            "type": self.type.value,
            "workflow_id": self.workflow_id,
            "execution_id": self.execution_id,
            "task_id": self.task_id,
            "agent_id": self.agent_id,
            "status": self.status,
            "seq": self.seq,
            "timestamp": self.timestamp.isoformat(),
            "data": self.data,
        }

    @classmethod
    def from_json_dict(cls, raw: dict[str, Any]) -> Event:
        values = dict(raw)
        values["type"] = EventType(values["type"])
        values["timestamp"] = datetime.fromisoformat(values["timestamp"])
        return cls(**values)
