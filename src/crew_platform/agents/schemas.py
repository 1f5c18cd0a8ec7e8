from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from crew_platform.common.types import (
    DecimalString,
    Label,
    LongText,
    NameStr,
    RequiredText,
    StrictInt,
    Temperature,
    TopP,
    reject_explicit_null,
)

MAX_TOKENS_CEILING = 1_000_000
NOT_NULLABLE = ("name", "role", "goal", "model", "temperature", "max_tokens", "top_p",
                "is_active", "capabilities", "tools")


class AgentBase(BaseModel):
    model_config = ConfigDict(extra="ignore")

    backstory: LongText | None = None
    is_active: bool = True
    config: dict[str, Any] | None = None
    capabilities: list[Label] = Field(default_factory=list, max_length=200)
    tools: list[Label] = Field(default_factory=list, max_length=200)


class AgentCreate(AgentBase):
    name: NameStr
    role: RequiredText
    goal: RequiredText
    model: NameStr | None = Field(
        default=None,
        description="Model id; a bare name goes to Cerebras, `provider:model` elsewhere. "
        "Defaults to DEFAULT_MODEL (llama-4-maverick-17b-128e-instruct).",
    )
    temperature: Temperature = 0.6
    max_tokens: StrictInt = Field(default=32768, ge=1, le=MAX_TOKENS_CEILING)
    top_p: TopP = 0.9


class AgentUpdate(BaseModel):
    """Every field optional; only the fields sent are changed."""

    model_config = ConfigDict(extra="ignore")

    name: NameStr | None = None
    role: RequiredText | None = None
    goal: RequiredText | None = None
    backstory: LongText | None = None
    model: NameStr | None = None
    temperature: Temperature | None = None
    max_tokens: StrictInt | None = Field(default=None, ge=1, le=MAX_TOKENS_CEILING)
    top_p: TopP | None = None
    is_active: bool | None = None
    config: dict[str, Any] | None = None
    capabilities: list[Label] | None = Field(default=None, max_length=200)
    tools: list[Label] | None = Field(default=None, max_length=200)

    _not_null = reject_explicit_null(*NOT_NULLABLE)


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


class AgentTestRequest(BaseModel):
    input: str = Field(min_length=1, max_length=200_000)
    context: dict[str, Any] | None = None


class AgentTestResult(BaseModel):
    agent_id: int
    input: str
    output: str | None
    execution_time: float
    tokens_used: int
    success: bool
    error: str | None
