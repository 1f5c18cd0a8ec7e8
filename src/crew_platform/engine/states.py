"""The statuses of executions, task runs and a workflow's run state."""

from __future__ import annotations

from enum import StrEnum


class ExecutionStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    WAITING_FOR_INPUT = "waiting_for_input"
    """A task's draft answer waits for a person (`human_input` tasks); no runner holds it."""
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskRunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING_FOR_INPUT = "waiting_for_input"
    """Its answer is a draft a person approves or answers with feedback."""
    CHANGES_REQUESTED = "changes_requested"
    """Its draft got feedback: the task's next attempt revises it."""
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class WorkflowStatus(StrEnum):
    """Whether a workflow's executions may run (`paused` holds them all)."""

    ACTIVE = "active"
    PAUSED = "paused"


UNFINISHED: frozenset[str] = frozenset(
    {
        ExecutionStatus.PENDING,
        ExecutionStatus.RUNNING,
        ExecutionStatus.PAUSED,
        ExecutionStatus.WAITING_FOR_INPUT,
    }
)
FINISHED: frozenset[str] = frozenset(
    {ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}
)
