from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from crew_platform.common.limits import LONG_TEXT_LENGTH, NAME_LENGTH, URL_LENGTH
from crew_platform.common.schemas import RequestModel
from crew_platform.common.types import not_null_in_schema, reject_explicit_null
from crew_platform.tools.base import ToolSource
from crew_platform.tools.schemas import schema_problem

MODEL_NAME_MAX = 64
"""Providers accept function names of at most 64 characters."""
TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_.-]{1,64}$"
SERVER_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
MAX_HEADERS = 50
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def _fits_providers(name: str) -> str:
    """Dots become `__` for the model: the name must still be a valid provider name then."""
    if len(name.replace(".", "__")) > MODEL_NAME_MAX:
        raise ValueError(
            f"must stay within {MODEL_NAME_MAX} characters once dots become '__' "
            "(the name the model sees)"
        )
    return name


def _parameters_schema(value: dict[str, Any]) -> dict[str, Any]:
    if (problem := schema_problem(value)) is not None:
        raise ValueError(f"not a valid parameters schema: {problem}")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


ToolName = Annotated[
    str,
    Field(
        max_length=MODEL_NAME_MAX,
        pattern=TOOL_NAME_PATTERN,
        description="Letters, digits, `_`, `.`, `-`; 1-64.",
    ),
    AfterValidator(_fits_providers),
]
ServerName = Annotated[
    str,
    Field(
        max_length=MODEL_NAME_MAX,
        pattern=SERVER_NAME_PATTERN,
        description="Letters, digits, `_`, `-`; 1-64. Its tools are named `<server>.<tool>`.",
    ),
]
Description = Annotated[str, Field(min_length=1, max_length=LONG_TEXT_LENGTH)]
Parameters = Annotated[
    dict[str, Any],
    AfterValidator(_parameters_schema),
    Field(description="JSON Schema of the arguments: an object schema (`type: object`)."),
]
HttpUrl = Annotated[str, Field(min_length=1, max_length=URL_LENGTH), AfterValidator(_http_url)]
HeaderValue = Annotated[str, Field(max_length=URL_LENGTH)]
Headers = Annotated[
    dict[Annotated[str, Field(min_length=1, max_length=NAME_LENGTH)], HeaderValue],
    Field(
        max_length=MAX_HEADERS,
        description="Header values may hold `${ENV_NAME}`: resolved from the server's "
        "environment at call time, stored and shown as written.",
    ),
]
Method = Annotated[
    Literal["GET", "POST", "PUT", "PATCH", "DELETE"],
    BeforeValidator(lambda value: value.upper() if isinstance(value, str) else value),
]


class HttpCall(BaseModel):
    """How an HTTP tool is called: the arguments go as the JSON body (as the query for GET)."""

    model_config = ConfigDict(extra="forbid")

    method: Method = "POST"
    url: HttpUrl
    headers: Headers = Field(default_factory=dict)


class ToolRead(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any]
    source: ToolSource
    server: str | None = Field(description="The MCP server's name, for MCP tools.")
    available: bool = Field(description="False while its MCP server is unreachable.")
    http: HttpCall | None = Field(
        default=None, description="For HTTP tools: how they are called (headers as written)."
    )


class ToolCreate(RequestModel):
    read_model = ToolRead

    name: ToolName
    description: Description
    parameters: Parameters = Field(default_factory=lambda: dict(EMPTY_PARAMETERS))
    http: HttpCall


TOOL_NOT_NULLABLE = ("name", "description", "parameters", "http")


class ToolUpdate(RequestModel):
    """Every field optional; only those sent change (`http` is replaced as a whole)."""

    read_model = ToolRead

    name: ToolName | None = None
    description: Description | None = None
    parameters: Parameters | None = None
    http: HttpCall | None = None

    model_config = ConfigDict(json_schema_extra=not_null_in_schema(*TOOL_NOT_NULLABLE))
    _not_null = reject_explicit_null(*TOOL_NOT_NULLABLE)


class ToolDeleted(BaseModel):
    name: str
    deleted: bool = True
    message: str


class McpToolRead(BaseModel):
    name: str = Field(description="`<server>.<tool>`: the name agents give in `tools`.")
    description: str
    parameters: dict[str, Any]


class McpServerRead(BaseModel):
    id: int
    name: str
    url: str | None
    command: list[str] | None
    headers: dict[str, str] = Field(description="As written: `${ENV_NAME}` is never resolved.")
    reachable: bool
    last_error: str | None = Field(description="Why the last listing failed.")
    tools: list[McpToolRead]
    refreshed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    created_by: str | None


class McpServerCreate(RequestModel):
    read_model = McpServerRead

    name: ServerName
    url: HttpUrl | None = Field(default=None, description="Streamable HTTP endpoint.")
    command: (
        Annotated[
            list[Annotated[str, Field(min_length=1, max_length=URL_LENGTH)]],
            Field(min_length=1, max_length=100),
        ]
        | None
    ) = Field(default=None, description="stdio transport; only with `MCP_ALLOW_STDIO=true`.")
    headers: Headers | None = None
