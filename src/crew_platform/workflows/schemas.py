from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from crew_platform.common.limits import MAX_ID, NAME_LENGTH
from crew_platform.common.schemas import RequestModel
from crew_platform.common.types import (
    Flag,
    LongText,
    NameStr,
    not_null_in_schema,
    reject_explicit_null,
)
from crew_platform.engine import MAX_DELEGATIONS_CEILING

WorkflowType = Literal["linear", "parallel", "hierarchical"]
MAX_PARALLEL_CEILING = 256
NOT_NULLABLE = ("name", "workflow_type", "is_active")


def _whole(value: Any, low: int, high: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and low <= value <= high


def _check_config(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The keys the platform reads must hold what it can use; other keys are free-form."""
    if config is None:
        return config
    if "max_parallel" in config and not _whole(config["max_parallel"], 1, MAX_PARALLEL_CEILING):
        raise ValueError(f"max_parallel must be an integer from 1 to {MAX_PARALLEL_CEILING}")
    if "max_delegations" in config and not _whole(
        config["max_delegations"], 0, MAX_DELEGATIONS_CEILING
    ):
        raise ValueError(f"max_delegations must be an integer from 0 to {MAX_DELEGATIONS_CEILING}")
    if "manager_agent_id" in config and not _whole(config["manager_agent_id"], 1, MAX_ID):
        raise ValueError("manager_agent_id must be an agent id (a positive integer)")
    model = config.get("manager_model")
    if "manager_model" in config and not (
        isinstance(model, str) and model.strip() and len(model) <= NAME_LENGTH
    ):
        raise ValueError(f"manager_model must be a model id (1-{NAME_LENGTH} characters)")
    if "manager_agent_id" in config and "manager_model" in config:
        raise ValueError("give manager_agent_id or manager_model, not both")
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
        "`parallel`: a DAG by `dependencies`, up to `config.max_parallel` (default 4) at once. "
        "`hierarchical`: tasks in order, each answered by a manager (`config.manager_agent_id`, "
        "or one built on `config.manager_model`) that delegates to the tasks' agents.",
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
