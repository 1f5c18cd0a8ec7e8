"""The one state machine for executions and task runs: statuses and allowed transitions."""

from __future__ import annotations

from enum import StrEnum
from functools import cache


class ExecutionStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskRunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


E = ExecutionStatus
T = TaskRunStatus

EXECUTION_TRANSITIONS: dict[ExecutionStatus, frozenset[ExecutionStatus]] = {
    E.PENDING: frozenset({E.RUNNING, E.PAUSED, E.CANCELLED, E.FAILED}),
    E.RUNNING: frozenset({E.PAUSED, E.COMPLETED, E.FAILED, E.CANCELLED, E.PENDING}),
    E.PAUSED: frozenset({E.PENDING, E.RUNNING, E.CANCELLED}),
    # A retry re-opens a failed or cancelled execution from the retried task.
    E.FAILED: frozenset({E.PENDING}),
    E.CANCELLED: frozenset({E.PENDING}),
    E.COMPLETED: frozenset(),
}

TASK_RUN_TRANSITIONS: dict[TaskRunStatus, frozenset[TaskRunStatus]] = {
    T.PENDING: frozenset({T.RUNNING, T.SKIPPED, T.CANCELLED}),
    T.RUNNING: frozenset({T.COMPLETED, T.FAILED, T.CANCELLED, T.PENDING}),
    T.COMPLETED: frozenset(),
    T.FAILED: frozenset(),
    T.SKIPPED: frozenset(),
    T.CANCELLED: frozenset(),
}

UNFINISHED: frozenset[str] = frozenset({E.PENDING, E.RUNNING, E.PAUSED})
FINISHED: frozenset[str] = frozenset({E.COMPLETED, E.FAILED, E.CANCELLED})


@cache
def sources_of(target: ExecutionStatus) -> tuple[str, ...]:
    """Statuses from which an execution may move to `target` (for compare-and-set updates)."""
    return tuple(
        sorted(src.value for src, targets in EXECUTION_TRANSITIONS.items() if target in targets)
    )


@cache
def task_run_sources_of(target: TaskRunStatus) -> tuple[str, ...]:
    return tuple(
        sorted(src.value for src, targets in TASK_RUN_TRANSITIONS.items() if target in targets)
    )


def can_transition(current: str, target: ExecutionStatus) -> bool:
    return target in EXECUTION_TRANSITIONS.get(ExecutionStatus(current), frozenset())
