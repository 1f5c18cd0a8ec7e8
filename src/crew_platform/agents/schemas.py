from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from crew_platform.common.limits import AGENT_TEST_INPUT_LENGTH, NAME_LENGTH
from crew_platform.common.schemas import RequestModel
from crew_platform.common.types import (
    DecimalString,
    Flag,
    Label,
    LongText,
    NameStr,
    RequiredText,
    StrictInt,
    Temperature,
    TopP,
    not_null_in_schema,
    reject_explicit_null,
)

MAX_TOKENS_CEILING = 1_000_000
MaxTokens = Annotated[StrictInt, Field(ge=1, le=MAX_TOKENS_CEILING)]
Labels = Annotated[list[Label], Field(max_length=200)]
NOT_NULLABLE = (
    "name",
    "role",
    "goal",
    "model",
    "temperature",
    "max_tokens",
    "top_p",
    "is_active",
    "capabilities",
    "tools",
)


CONFIG_DESCRIPTION = (
    "Free-form, except `max_iter` (an integer >= 1, default 15: the most model calls of one "
    "step) and `fallback_models` (a list of model ids called in order when `model` is not "
    "served)."
)


def _check_config(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The keys the engine reads must have a shape it can use: a wrong one is a 422 now, not
    a default silently used at run time."""
    if config is None:
        return config
    if "max_iter" in config:
        value = config["max_iter"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError("max_iter must be an integer of at least 1")
    if "fallback_models" in config:
        models = config["fallback_models"]
        if not isinstance(models, list) or not all(
            isinstance(m, str) and m.strip() and len(m.strip()) <= NAME_LENGTH for m in models
        ):
            raise ValueError(
                "fallback_models must be a list of model ids (non-empty strings of at most "
                f"{NAME_LENGTH} characters)"
            )
        config = config | {"fallback_models": [m.strip() for m in models]}
    return config


class AgentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    role: str
    goal: str
    backstory: str | None
    model: str
    temperature: DecimalString
    max_tokens: int
    top_p: DecimalString
    is_active: bool
    created_at: datetime
    updated_at: datetime
    created_by: str | None
    config: dict[str, Any] | None
    capabilities: list[str]
    tools: list[str]


class AgentBase(RequestModel):
    backstory: LongText | None = None
    is_active: Flag = True
    config: dict[str, Any] | None = Field(default=None, description=CONFIG_DESCRIPTION)
    capabilities: Labels = Field(default_factory=list)
    tools: Labels = Field(default_factory=list)

    _config = field_validator("config")(classmethod(lambda cls, v: _check_config(v)))


class AgentCreate(AgentBase):
    read_model = AgentRead

    name: NameStr
    role: RequiredText
    goal: RequiredText
    model: NameStr | None = Field(
        default=None,
        description="Model id; a bare name goes to Cerebras, `provider:model` elsewhere. "
        "Defaults to DEFAULT_MODEL (llama-4-maverick-17b-128e-instruct).",
    )
    temperature: Temperature = 0.6
    max_tokens: MaxTokens = 32768
    top_p: TopP = 0.9


class AgentUpdate(RequestModel):
    """Every field optional; only the fields sent are changed. Fields that cannot be null may
    be left out but not sent as null (`SkipJsonSchema[None]` keeps null out of the docs)."""

    read_model = AgentRead

    name: NameStr | None = None
    role: RequiredText | None = None
    goal: RequiredText | None = None
    backstory: LongText | None = None
    model: NameStr | None = None
    temperature: Temperature | None = None
    max_tokens: MaxTokens | None = None
    top_p: TopP | None = None
    is_active: Flag | None = None
    config: dict[str, Any] | None = Field(default=None, description=CONFIG_DESCRIPTION)
    capabilities: Labels | None = None
    tools: Labels | None = None

    model_config = ConfigDict(json_schema_extra=not_null_in_schema(*NOT_NULLABLE))
    _not_null = reject_explicit_null(*NOT_NULLABLE)
    _config = field_validator("config")(classmethod(lambda cls, v: _check_config(v)))


class AgentTestRequest(RequestModel):
    input: str = Field(min_length=1, max_length=AGENT_TEST_INPUT_LENGTH)
    context: dict[str, Any] | None = None


class AgentTestResult(BaseModel):
    agent_id: int
    input: str
    output: str | None
    execution_time: float
    tokens_used: int
    success: bool
    error: str | None
    model: str | None = Field(
        default=None,
        description="The model that answered: the agent's, or the fallback that replaced it "
        "when the agent's was not served (null when no model answered)",
    )
