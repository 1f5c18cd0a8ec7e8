from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from crew_platform.common.schemas import RequestModel
from crew_platform.common.types import Flag, RequiredLongText, ResourceRef
from crew_platform.engine import ExecutionStatus


class ExecuteRequest(RequestModel):
    input_data: dict[str, Any] = Field(
        default_factory=dict,
        description="Run inputs; they fill `{placeholders}` in task descriptions.",
    )
    config: dict[str, Any] | None = Field(
        default=None, description="Per-run overrides, e.g. `max_parallel` for parallel workflows."
    )


class InputRequest(RequestModel):
    """A person's answer to the draft an execution waits on: approve it, or give feedback."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"approve": True}, {"feedback": "Shorter, please"}]}
    )

    approve: Flag = Field(default=False, description="`true` accepts the draft as the output.")
    feedback: RequiredLongText | None = Field(
        default=None,
        validate_default=True,
        description="Instead of approving: what the agent should change; it revises and asks "
        "again.",
    )
    task_id: ResourceRef | None = Field(
        default=None,
        description="The waiting task answered; needed only when several tasks wait at once.",
    )

    @field_validator("feedback")
    @classmethod
    def _approve_or_feedback(cls, feedback: str | None, info: ValidationInfo) -> str | None:
        if "approve" not in info.data:  # approve itself was invalid, and said so
            return feedback
        if info.data["approve"] and feedback is not None:
            raise ValueError("send either approve: true or feedback, not both")
        if not info.data["approve"] and feedback is None:
            raise ValueError(
                'required unless approve is true: send {"approve": true} to accept the draft '
                'or {"feedback": "..."} to have it revised'
            )
        return feedback


class ExecutionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    workflow_id: int
    status: ExecutionStatus
    started_at: datetime | None
    completed_at: datetime | None
    input_data: dict[str, Any] | None
    output_data: dict[str, Any] | None
    error_message: str | None
    execution_log: list[dict[str, Any]] | None = Field(
        default=None, description="Always null here; read the log from /executions/{id}/logs."
    )
    created_by: str | None
    mode: str = Field(description="`workflow`, or `task` for a single task run")
    config: dict[str, Any] | None
    tokens_used: int
    created_at: datetime


class ControlResult(BaseModel):
    workflow_id: int
    workflow_status: str
    affected_executions: list[ExecutionRead]


class LogEntry(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    timestamp: datetime
    level: str
    event: str
    message: str
    task_id: int | None
    data: dict[str, Any] | None


class RunningTask(BaseModel):
    task_id: int
    name: str | None
    run_id: int
    attempt: int
    started_at: datetime | None


class Progress(BaseModel):
    total: int
    completed: int
    failed: int
    running: int
    pending: int
    skipped: int
    cancelled: int
    waiting_for_input: int = Field(description="Tasks whose draft waits for a person")
    percent: float


class WaitingTask(BaseModel):
    task_id: int
    name: str | None
    run_id: int
    attempt: int
    draft: str | None = Field(description="The answer waiting for approval or feedback")


class ExecutionStatusRead(BaseModel):
    execution_id: int
    workflow_id: int
    status: ExecutionStatus
    progress: Progress
    running_tasks: list[RunningTask]
    waiting_tasks: list[WaitingTask] = Field(
        description="Tasks whose draft waits for input (`POST /executions/{id}/input`)"
    )
    elapsed_seconds: float | None
    started_at: datetime | None
    completed_at: datetime | None
    error_message: str | None


class DayCount(BaseModel):
    date: date
    count: int
    successful: int
    failed: int


class WorkflowCount(BaseModel):
    workflow_id: int
    count: int
    successful: int
    failed: int


class ErrorCount(BaseModel):
    error: str
    count: int


class ExecutionStats(BaseModel):
    total_executions: int
    successful_executions: int
    failed_executions: int
    running_executions: int
    success_rate: float
    average_execution_time: float
    total_tokens_used: int
    total_tool_calls: int = Field(description="Tool calls the counted executions made")
    tool_errors: int = Field(
        description="Those of them that failed (their error went back to the model)"
    )
    executions_by_day: list[DayCount]
    top_workflows: list[WorkflowCount]
    error_breakdown: list[ErrorCount]


class TaskRetryResult(BaseModel):
    task_id: int
    execution_id: int
    retried_run_id: int
    attempt: int = Field(description="Attempt number the re-run will have")
    execution: ExecutionRead
