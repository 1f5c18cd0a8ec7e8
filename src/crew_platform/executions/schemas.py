from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from crew_platform.common.schemas import RequestModel


class ExecuteRequest(RequestModel):
    input_data: dict[str, Any] = Field(
        default_factory=dict,
        description="Run inputs; they fill `{placeholders}` in task descriptions.",
    )
    config: dict[str, Any] | None = Field(
        default=None, description="Per-run overrides, e.g. `max_parallel` for parallel workflows."
    )


class ExecutionRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    workflow_id: int
    status: str
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
    percent: float


class ExecutionStatusRead(BaseModel):
    execution_id: int
    workflow_id: int
    status: str
    progress: Progress
    running_tasks: list[RunningTask]
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
