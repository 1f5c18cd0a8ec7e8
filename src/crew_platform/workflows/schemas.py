from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from crew_platform.common.schemas import RequestModel
from crew_platform.common.types import (
    Flag,
    LongText,
    NameStr,
    not_null_in_schema,
    reject_explicit_null,
)

WorkflowType = Literal["linear", "parallel"]
MAX_PARALLEL_CEILING = 256
NOT_NULLABLE = ("name", "workflow_type", "is_active")


def _check_config(config: dict[str, Any] | None) -> dict[str, Any] | None:
    if config is None or "max_parallel" not in config:
        return config
    value = config["max_parallel"]
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (1 <= value <= MAX_PARALLEL_CEILING)
    ):
        raise ValueError(f"max_parallel must be an integer from 1 to {MAX_PARALLEL_CEILING}")
    return config


class WorkflowRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str | None
    workflow_type: str
    config: dict[str, Any] | None
    is_active: bool
    status: Literal["active", "paused"]
    task_count: int
    execution_count: int
    last_executed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    created_by: str | None


class WorkflowCreate(RequestModel):
    read_model = WorkflowRead

    name: NameStr
    description: LongText | None = None
    workflow_type: WorkflowType = Field(
        default="linear",
        description="`linear`: tasks in order, each sees all earlier outputs. "
        "`parallel`: a DAG by `dependencies`, up to `config.max_parallel` (default 4) at once.",
    )
    config: dict[str, Any] | None = None
    is_active: Flag = True

    _config = field_validator("config")(classmethod(lambda cls, v: _check_config(v)))


class WorkflowUpdate(RequestModel):
    """Every field optional; only the fields sent are changed."""

    read_model = WorkflowRead

    name: NameStr | None = None
    description: LongText | None = None
    workflow_type: WorkflowType | None = None
    config: dict[str, Any] | None = None
    is_active: Flag | None = None

    model_config = ConfigDict(json_schema_extra=not_null_in_schema(*NOT_NULLABLE))
    _not_null = reject_explicit_null(*NOT_NULLABLE)
    _config = field_validator("config")(classmethod(lambda cls, v: _check_config(v)))
