from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from crew_platform.common.types import LongText, NameStr, StrictInt, reject_explicit_null

TaskStatus = str
_INT32 = 2**31 - 1


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    workflow_id: StrictInt = Field(ge=1, le=_INT32)
    agent_id: StrictInt | None = Field(default=None, ge=1, le=_INT32)
    name: NameStr
    description: LongText | None = None
    expected_output: LongText | None = Field(
        default=None, description="What a good answer looks like (as in CrewAI tasks)."
    )
    task_type: NameStr = "ai_task"
    priority: StrictInt = Field(default=0, ge=-1_000_000, le=1_000_000)
    order: StrictInt = Field(default=0, ge=-1_000_000, le=1_000_000)
    input_data: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    dependencies: list[StrictInt] = Field(default_factory=list, max_length=1000)
    is_active: bool = True


class TaskUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    workflow_id: StrictInt | None = Field(default=None, ge=1, le=_INT32)
    agent_id: StrictInt | None = Field(default=None, ge=1, le=_INT32)
    name: NameStr | None = None
    description: LongText | None = None
    expected_output: LongText | None = None
    task_type: NameStr | None = None
    priority: StrictInt | None = Field(default=None, ge=-1_000_000, le=1_000_000)
    order: StrictInt | None = Field(default=None, ge=-1_000_000, le=1_000_000)
    input_data: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    dependencies: list[StrictInt] | None = Field(default=None, max_length=1000)
    is_active: bool | None = None

    _not_null = reject_explicit_null(
        "workflow_id", "name", "task_type", "priority", "order", "dependencies", "is_active"
    )


class TaskRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    workflow_id: int
    agent_id: int | None
    name: str
    description: str | None
    expected_output: str | None
    task_type: str
    priority: int
    order: int
    input_data: dict[str, Any] | None
    config: dict[str, Any] | None
    dependencies: list[int]
    is_active: bool
    status: str = Field(description="State of the task's latest run; `pending` before any.")
    created_at: datetime
    updated_at: datetime
    created_by: str | None


class TaskRunRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    task_id: int
    execution_id: int
    agent_id: int | None
    status: str
    attempt: int
    input: dict[str, Any] | None
    output: str | None
    error: str | None
    tokens_used: int
    execution_time: float | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
