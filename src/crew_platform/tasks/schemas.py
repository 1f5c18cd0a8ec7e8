from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from crew_platform.common.schemas import RequestModel
from crew_platform.common.types import (
    Flag,
    LongText,
    NameStr,
    ResourceRef,
    StrictInt,
    TaskType,
    not_null_in_schema,
    reject_explicit_null,
)
from crew_platform.engine import TaskRunStatus
from crew_platform.llm.structured import schema_problem

Rank = Annotated[StrictInt, Field(ge=-1_000_000, le=1_000_000)]
Dependencies = Annotated[
    list[ResourceRef],
    Field(max_length=1000, description="Ids of tasks of the same workflow that must finish first."),
]
Context = Annotated[
    list[ResourceRef],
    Field(
        max_length=1000,
        description="Ids of tasks of the same workflow whose outputs this task's prompt shows; "
        "null: every earlier task's (linear) or its dependencies' (parallel).",
    ),
]


def _usable_schema(schema: dict[str, Any]) -> dict[str, Any]:
    if (problem := schema_problem(schema)) is not None:
        raise ValueError(problem)
    return schema


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty or blank (null turns the guardrail off)")
    return text


OutputSchema = Annotated[
    dict[str, Any],
    AfterValidator(_usable_schema),
    Field(
        description="JSON Schema (Draft 2020-12, an object at the root) the answer must match; "
        "the task's output is then the parsed object."
    ),
]
Guardrail = Annotated[
    LongText,
    AfterValidator(_not_blank),
    Field(description="An instruction a judge model call checks each answer against."),
]
GuardrailRetries = Annotated[
    StrictInt,
    Field(
        ge=0, le=10, description="Revisions after a failed guardrail check before the task fails."
    ),
]
NOT_NULLABLE = (
    "workflow_id",
    "name",
    "task_type",
    "priority",
    "order",
    "dependencies",
    "is_active",
    "guardrail_max_retries",
    "human_input",
)
TaskStatus = TaskRunStatus
"""A task's status is that of its latest run, `pending` before any."""


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
    context: list[int] | None
    output_schema: dict[str, Any] | None
    guardrail: str | None
    guardrail_max_retries: int
    human_input: bool
    status: TaskStatus = Field(description="State of the task's latest run; `pending` before any.")
    created_at: datetime
    updated_at: datetime
    created_by: str | None


class TaskCreate(RequestModel):
    read_model = TaskRead

    workflow_id: ResourceRef
    agent_id: ResourceRef | None = None
    name: NameStr
    description: LongText | None = None
    expected_output: LongText | None = Field(
        default=None, description="What a good answer looks like (as in CrewAI tasks)."
    )
    task_type: TaskType = "ai_task"
    priority: Rank = 0
    order: Rank = 0
    input_data: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    dependencies: Dependencies = Field(default_factory=list)
    is_active: Flag = True
    context: Context | None = None
    output_schema: OutputSchema | None = None
    guardrail: Guardrail | None = None
    guardrail_max_retries: GuardrailRetries = 2
    human_input: Flag = Field(
        default=False,
        description="A person reviews the agent's answer before the run goes on: it waits "
        "`waiting_for_input` until approved or returned with feedback (CrewAI's human_input).",
    )


class TaskUpdate(RequestModel):
    """Every field optional; only the fields sent are changed. `agent_id: null` unassigns."""

    read_model = TaskRead

    workflow_id: ResourceRef | None = None
    agent_id: ResourceRef | None = None
    name: NameStr | None = None
    description: LongText | None = None
    expected_output: LongText | None = None
    task_type: TaskType | None = None
    priority: Rank | None = None
    order: Rank | None = None
    input_data: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    dependencies: Dependencies | None = None
    is_active: Flag | None = None
    context: Context | None = None
    output_schema: OutputSchema | None = None
    guardrail: Guardrail | None = None
    guardrail_max_retries: GuardrailRetries | None = None
    human_input: Flag | None = None

    model_config = ConfigDict(json_schema_extra=not_null_in_schema(*NOT_NULLABLE))
    _not_null = reject_explicit_null(*NOT_NULLABLE)


class ToolCallRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    call_id: str
    tool: str
    arguments: str = Field(description="As the model sent them (JSON text, possibly invalid)")
    status: str = Field(description="`running`, `completed`, `failed` or `cancelled`")
    result: str | None = Field(description="What the model was given back (the error text too)")
    error: str | None
    iteration: int = Field(description="Which model call of the run asked for it (1-based)")
    delegation_call_id: str | None = Field(
        default=None,
        description="For a coworker's call inside a delegation of a hierarchical run: the "
        "`call_id` of that `delegate_work` or `ask_question` call (listed right after it); "
        "null for the run's own calls",
    )
    started_at: datetime
    completed_at: datetime | None


class TaskRunRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    task_id: int
    execution_id: int
    agent_id: int | None
    status: str
    attempt: int
    model: str | None = Field(
        description="The model called: the agent's, or the fallback that replaced it when the "
        "agent's was not served (null for runs from before this was recorded)"
    )
    input: dict[str, Any] | None
    output: str | dict[str, Any] | None = Field(
        description="The answer: text, or the parsed object of a task with an `output_schema`; "
        "a draft while `waiting_for_input`"
    )
    error: str | None
    feedback: str | None = Field(
        description="What a person answered to this run's draft (`changes_requested`)"
    )
    tokens_used: int
    execution_time: float | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    tool_calls: list[ToolCallRead] = Field(
        default_factory=list, description="The run's tool calls, in the order they were asked"
    )

    @model_validator(mode="before")
    @classmethod
    def _structured_output(cls, run: Any) -> Any:
        """A run row with a parsed answer (`output_json`) shows it as its `output`."""
        parsed = getattr(run, "output_json", None)
        if parsed is None:
            return run
        fields = {name: getattr(run, name) for name in cls.model_fields if hasattr(run, name)}
        return fields | {"output": parsed}
